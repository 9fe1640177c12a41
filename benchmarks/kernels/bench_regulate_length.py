"""GB/s of `fastspeech::regulate_length` vs DLE's PyTorch length regulator and vs copy bandwidth.

Run on a CUDA GPU:  python -m benchmarks.kernels.bench_regulate_length --results results/kernels/regulate_length.json
Bytes = x (B, Ti, H) + durations (B, Ti) read once + out (B, To, H) written once. Durations are random in
[0, 2 To / Ti], so totals land near To: some rows are cropped, some end in zeros.
Columns: `kernel` = the Triton launch into a preallocated output; `op` = the eager custom op (allocates the
output and checks durations >= 0 on the host: one device sync); `DLE ref` = per-item repeat_interleave +
pad_sequence (DLE's eager code, host syncs included); `gather ref` = our CPU path (searchsorted + gather).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.nn.utils.rnn import pad_sequence

from benchmarks.kernels import common
from kernels.regulate_length import launch_regulate_length, regulate_length_reference

SWEEP = [  # (block_to, block_h, num_warps) variants timed at the goal shape with --sweep; first = default
    (16, 512, 4),
    (8, 512, 4),
    (16, 512, 8),
    (32, 512, 4),
    (8, 512, 2),
    (16, 256, 4),
    (32, 128, 4),
    (16, 128, 2),
]


def dle_reference(x: torch.Tensor, durations: torch.Tensor, max_out: int) -> torch.Tensor:
    """DLE's eager LengthRegulator: repeat_interleave per item, pad_sequence, then crop/pad to max_out."""
    rows = [torch.repeat_interleave(x[b], durations[b], dim=0) for b in range(x.shape[0])]
    out = pad_sequence(rows, batch_first=True)[:, :max_out]
    return F.pad(out, (0, 0, 0, max_out - out.shape[1]))


def make_inputs(B: int, Ti: int, To: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.randn(B, Ti, common.HIDDEN, device="cuda").to(dtype)
    durations = torch.randint(0, 2 * To // Ti + 1, (B, Ti), device="cuda")
    return x, durations


def measure(B: int, Ti: int, To: int, name: str, dtype: torch.dtype, peak: float) -> dict:
    x, durations = make_inputs(B, Ti, To, dtype)
    out = torch.full((B, To, common.HIDDEN), float("nan"), dtype=dtype, device="cuda")
    launch_regulate_length(x, durations, out)
    correct = torch.equal(out, dle_reference(x, durations, To))
    nbytes = x.nbytes + durations.nbytes + out.nbytes
    t_kernel = common.time_us(common.direct_launch(lambda: launch_regulate_length(x, durations, out)))
    t_op = common.time_us(lambda: torch.ops.fastspeech.regulate_length(x, durations, To))
    t_dle = common.time_us(lambda: dle_reference(x, durations, To))
    t_gather = common.time_us(lambda: regulate_length_reference(x, durations, To))
    same_size_copy = common.copy_gbps(nbytes)
    kernel_gbps = nbytes / t_kernel / 1e3
    return {
        "B": B, "Ti": Ti, "To": To, "dtype": name, "MB": nbytes / 1e6, "correct": correct,
        "kernel_us": t_kernel, "op_us": t_op, "dle_ref_us": t_dle, "gather_ref_us": t_gather,
        "kernel_gbps": kernel_gbps, "dle_ref_gbps": nbytes / t_dle / 1e3, "gather_ref_gbps": nbytes / t_gather / 1e3,
        "copy_same_size_gbps": same_size_copy, "pct_of_peak_copy": 100 * kernel_gbps / peak,
        "pct_of_same_size_copy": 100 * kernel_gbps / same_size_copy,
        "speedup_vs_dle": t_dle / t_kernel, "speedup_vs_gather": t_gather / t_kernel,
    }  # fmt: skip


def sweep(dtype_name: str, dtype: torch.dtype, peak: float) -> list[dict]:
    B, (Ti, To) = 64, (128, 1024)
    x, durations = make_inputs(B, Ti, To, dtype)
    expected = dle_reference(x, durations, To)
    nbytes = x.nbytes + durations.nbytes + expected.nbytes
    rows = []
    for block_to, block_h, warps in SWEEP:
        blocks = {"block_to": block_to, "block_h": block_h, "num_warps": warps}
        out = torch.full_like(expected, float("nan"))
        launch_regulate_length(x, durations, out, **blocks)
        t = common.time_us(
            common.direct_launch(
                lambda out=out, blocks=blocks: launch_regulate_length(x, durations, out, **blocks)
            )
        )
        rows.append({
            "dtype": dtype_name, "block_to": block_to, "block_h": block_h, "num_warps": warps,
            "correct": torch.equal(out, expected), "us": t, "gbps": nbytes / t / 1e3,
            "pct_of_peak_copy": 100 * nbytes / t / 1e3 / peak,
        })  # fmt: skip
    return rows


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0], "results/kernels/regulate_length.json")
    torch.manual_seed(0)
    peak = common.peak_copy_gbps()
    dtypes = [d for d in args.dtypes.split(",") if d]
    rows = [
        measure(B, Ti, To, name, common.DTYPES[name], peak)
        for name in dtypes
        for B in common.SIZES_B
        for Ti, To in common.SIZES_TI_TO
    ]
    sweep_rows = [r for name in dtypes for r in sweep(name, common.DTYPES[name], peak)] if args.sweep else []
    common.report(
        args.results, peak, rows, [
            ("B", "B"), ("Ti", "Ti"), ("To", "To"), ("dtype", "dtype"), ("MB", "MB moved"),
            ("kernel_us", "kernel µs"), ("op_us", "op µs"), ("dle_ref_us", "DLE ref µs"), ("gather_ref_us", "gather ref µs"),
            ("kernel_gbps", "kernel GB/s"), ("dle_ref_gbps", "DLE ref GB/s"), ("copy_same_size_gbps", "copy same size GB/s"),
            ("pct_of_peak_copy", "% peak copy"), ("speedup_vs_dle", "x vs DLE ref"), ("correct", "correct"),
        ],
        sweep_rows, [
            ("dtype", "dtype"), ("block_to", "BLOCK_TO"), ("block_h", "BLOCK_H"), ("num_warps", "warps"),
            ("correct", "correct"), ("us", "µs"), ("gbps", "GB/s"), ("pct_of_peak_copy", "% copy"),
        ],
        sweep_title="B=64, Ti=128, To=1024, H=384",
        goal_label=lambda r: f"B=64 (128, 1024) {r['dtype']}",
    )  # fmt: skip


if __name__ == "__main__":
    main()
