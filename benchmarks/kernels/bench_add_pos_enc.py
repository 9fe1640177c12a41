"""GB/s of `fastspeech::add_pos_enc` vs DLE's PyTorch positional encoding and vs copy bandwidth.

Run on a CUDA GPU:  python -m benchmarks.kernels.bench_add_pos_enc --results results/kernels/add_pos_enc.json
FastSpeech adds the encoding twice: on the encoder input (T = Ti) and on the decoder input (T = To), so
each (Ti, To) pair gives two rows. Bytes = x (B, T, H) read once + out written once + lengths (B,).
Columns: `kernel` = the Triton launch into a preallocated output; `op` = the eager custom op (allocates
the output); `DLE ref` = `x + position_enc(pos)`, DLE's embedding gather of the table (in x's dtype,
positions precomputed, 0 on padding) plus the add.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.kernels import common
from kernels.add_pos_enc import add_pos_enc_reference, launch_add_pos_enc, sinusoid_table

SWEEP = [  # (block_t, block_h, b_per_prog or None = auto, num_warps) at the goal shape; first = default
    (16, 128, None, 4),
    (32, 128, None, 4),
    (8, 128, None, 4),
    (16, 128, None, 8),
    (16, 256, None, 4),
    (8, 256, None, 4),
    (16, 128, 1, 4),
    (16, 128, 4, 4),
    (16, 128, 16, 4),
    (32, 64, None, 2),
]


def make_inputs(B: int, T: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(B, T, common.HIDDEN, device="cuda").to(dtype)
    lengths = torch.randint(1, T + 1, (B,), device="cuda")
    lengths[0] = T
    return x, lengths


def dle_positions(lengths: torch.Tensor, T: int) -> torch.Tensor:
    """DLE's text_pos / mel_pos: 1..length, 0 on padding (an input of DLE's model, so not timed)."""
    t = torch.arange(T, device=lengths.device)[None, :]
    return torch.where(t < lengths[:, None], t + 1, 0)


def measure(B: int, T: int, name: str, dtype: torch.dtype, peak: float) -> dict:
    x, lengths = make_inputs(B, T, dtype)
    table = sinusoid_table(T + 1, common.HIDDEN, dtype).cuda()  # DLE's frozen nn.Embedding weight
    pos = dle_positions(lengths, T)
    out = torch.full_like(x, float("nan"))
    launch_add_pos_enc(x, lengths, out)
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    correct = torch.allclose(out, add_pos_enc_reference(x, lengths), atol=tol, rtol=tol)
    nbytes = 2 * x.nbytes + lengths.nbytes
    t_kernel = common.time_us(common.direct_launch(lambda: launch_add_pos_enc(x, lengths, out)))
    t_op = common.time_us(lambda: torch.ops.fastspeech.add_pos_enc(x, lengths))
    t_dle = common.time_us(lambda: x + F.embedding(pos, table))
    same_size_copy = common.copy_gbps(nbytes)
    kernel_gbps = nbytes / t_kernel / 1e3
    return {
        "B": B, "T": T, "dtype": name, "MB": nbytes / 1e6, "correct": correct,
        "kernel_us": t_kernel, "op_us": t_op, "dle_ref_us": t_dle,
        "kernel_gbps": kernel_gbps, "dle_ref_gbps": nbytes / t_dle / 1e3,
        "copy_same_size_gbps": same_size_copy, "pct_of_peak_copy": 100 * kernel_gbps / peak,
        "pct_of_same_size_copy": 100 * kernel_gbps / same_size_copy, "speedup_vs_dle": t_dle / t_kernel,
    }  # fmt: skip


def sweep(dtype_name: str, dtype: torch.dtype, peak: float) -> list[dict]:
    B, T = 64, 1024
    x, lengths = make_inputs(B, T, dtype)
    expected = add_pos_enc_reference(x, lengths)
    nbytes = 2 * x.nbytes + lengths.nbytes
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    rows = []
    for block_t, block_h, b_per_prog, warps in SWEEP:
        blocks = {"block_t": block_t, "block_h": block_h, "b_per_prog": b_per_prog, "num_warps": warps}
        out = torch.full_like(x, float("nan"))
        launch_add_pos_enc(x, lengths, out, **blocks)
        t = common.time_us(
            common.direct_launch(lambda out=out, blocks=blocks: launch_add_pos_enc(x, lengths, out, **blocks))
        )
        rows.append({
            "dtype": dtype_name, "block_t": block_t, "block_h": block_h, "b_per_prog": b_per_prog or "auto",
            "num_warps": warps, "correct": torch.allclose(out, expected, atol=tol, rtol=tol), "us": t,
            "gbps": nbytes / t / 1e3, "pct_of_peak_copy": 100 * nbytes / t / 1e3 / peak,
        })  # fmt: skip
    return rows


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0], "results/kernels/add_pos_enc.json")
    torch.manual_seed(0)
    peak = common.peak_copy_gbps()
    dtypes = [d for d in args.dtypes.split(",") if d]
    rows = []
    for name in dtypes:
        for B in common.SIZES_B:
            for Ti, To in common.SIZES_TI_TO:
                for T in (Ti, To):
                    rows.append({"Ti": Ti, "To": To, **measure(B, T, name, common.DTYPES[name], peak)})
    sweep_rows = [r for name in dtypes for r in sweep(name, common.DTYPES[name], peak)] if args.sweep else []
    common.report(
        args.results, peak, rows, [
            ("B", "B"), ("T", "T"), ("dtype", "dtype"), ("MB", "MB moved"), ("kernel_us", "kernel µs"),
            ("op_us", "op µs"), ("dle_ref_us", "DLE ref µs"), ("kernel_gbps", "kernel GB/s"), ("dle_ref_gbps", "DLE ref GB/s"),
            ("copy_same_size_gbps", "copy same size GB/s"), ("pct_of_peak_copy", "% peak copy"),
            ("speedup_vs_dle", "x vs DLE ref"), ("correct", "correct"),
        ],
        sweep_rows, [
            ("dtype", "dtype"), ("block_t", "BLOCK_T"), ("block_h", "BLOCK_H"), ("b_per_prog", "rows/program"),
            ("num_warps", "warps"), ("correct", "correct"), ("us", "µs"), ("gbps", "GB/s"), ("pct_of_peak_copy", "% copy"),
        ],
        sweep_title="B=64, T=1024, H=384",
        goal_label=lambda r: f"B=64 T={r['T']} {r['dtype']}",
    )  # fmt: skip


if __name__ == "__main__":
    main()
