"""µs of `fastspeech::attention` vs its reference and vs `F.scaled_dot_product_attention`, FastSpeech's shapes.

Run on a CUDA GPU:  python -m benchmarks.kernels.bench_attention --results results/kernels/attention.json
Shapes: 2 heads, d 64 (DLE's), T = 128 (phoneme side of i128) / 256 / 1024 (mel side of o1024), B 1/8/64,
every row valid (lengths = T, so all columns do the same work) and, in `kernel 88%`, lengths = 0.88 T
(the latency benchmark's sample fills ~900 of 1024 frames: the op skips the rest).
Columns: `kernel` = the Triton launch into a preallocated output; `op` = the eager custom op (allocates
the output); `reference` = `attention_reference`, what the model ran before (SDPA on the fused
projection's views with a key-padding mask, then the head transpose and padding zeros); `SDPA mask` =
SDPA alone on those views with the mask; `SDPA flash` = SDPA with no mask on contiguous q, k, v (the
flash backend: a lower bound for a masked-free, copy-free call, but it can't skip padding).
TFLOP/s count 4 B H T^2 d (every key of every row). Times: median, cold L2 (benchmarks/kernels/common.py).
"""

from __future__ import annotations

from functools import partial

import torch
import torch.nn.functional as F

from benchmarks.kernels import common
from kernels.attention import attention_reference, default_blocks, launch_attention

N_HEAD, D = 2, 64
SIZES_B = (1, 8, 64)
SIZES_T = (128, 256, 1024)
SWEEP = {  # (block_m, block_n, num_warps) at B=1 and B=64, T=1024; the default tiles are listed first
    1: [(16, 128, 4), (16, 64, 4), (16, 128, 2), (16, 128, 8), (16, 256, 4), (32, 128, 4), (64, 128, 4)],
    64: [(128, 64, 8), (128, 64, 4), (64, 64, 4), (128, 128, 8), (64, 128, 4), (128, 32, 8), (64, 32, 4)],
}
# fp32 (IEEE fp32 dot products: FMA, no tensor cores) at B 1/8/64, T=1024: the default tiles first
SWEEP_FP32 = {
    B: [
        None,
        (16, 128, 4),
        (16, 64, 4),
        (16, 32, 4),
        (32, 64, 4),
        (32, 32, 4),
        (64, 64, 4),
        (64, 32, 8),
        (128, 64, 8),
    ]
    for B in (1, 8, 64)
}
TOL = {torch.float16: 1e-2, torch.bfloat16: 2e-2, torch.float32: 2e-5}


def make_inputs(B: int, T: int, dtype: torch.dtype, fill: float = 1.0) -> tuple[torch.Tensor, torch.Tensor]:
    qkv = torch.randn(B, T, N_HEAD * 3 * D, device="cuda").to(dtype)
    lengths = torch.full((B,), max(1, round(fill * T)), device="cuda", dtype=torch.long)
    return qkv, lengths


def sdpa_inputs(qkv: torch.Tensor, lengths: torch.Tensor):
    """The old model's q, k, v views (B, H, T, d) and its (B, 1, 1, T) key mask; and contiguous copies."""
    B, T, _ = qkv.shape
    q, k, v = qkv.view(B, T, N_HEAD, 3 * D).transpose(1, 2).split(D, dim=-1)
    mask = (torch.arange(T, device=qkv.device)[None, :] < lengths[:, None])[:, None, None, :]
    return (q, k, v), mask, tuple(t.contiguous() for t in (q, k, v))


def measure(B: int, T: int, name: str, dtype: torch.dtype) -> dict:
    qkv, lengths = make_inputs(B, T, dtype)
    out = torch.full((B, T, N_HEAD * D), float("nan"), device="cuda", dtype=dtype)
    launch_attention(qkv, lengths, N_HEAD, out)
    tol = TOL[dtype]
    correct = torch.allclose(out, attention_reference(qkv, lengths, N_HEAD), atol=tol, rtol=tol)
    views, mask, dense = sdpa_inputs(qkv, lengths)
    part_qkv, part_len = make_inputs(B, T, dtype, fill=0.88)
    t_kernel = common.time_us(common.direct_launch(lambda: launch_attention(qkv, lengths, N_HEAD, out)))
    t_part = common.time_us(common.direct_launch(lambda: launch_attention(part_qkv, part_len, N_HEAD, out)))
    t_op = common.time_us(lambda: torch.ops.fastspeech.attention(qkv, lengths, N_HEAD))
    t_ref = common.time_us(lambda: attention_reference(qkv, lengths, N_HEAD))
    t_mask = common.time_us(lambda: F.scaled_dot_product_attention(*views, attn_mask=mask))
    t_flash = common.time_us(lambda: F.scaled_dot_product_attention(*dense))
    flops = 4 * B * N_HEAD * T * T * D
    return {
        "B": B, "T": T, "dtype": name, "correct": correct,
        "kernel_us": t_kernel, "kernel_88_us": t_part, "op_us": t_op, "reference_us": t_ref,
        "sdpa_mask_us": t_mask, "sdpa_flash_us": t_flash, "kernel_tflops": flops / t_kernel / 1e6,
        "speedup_vs_reference": t_ref / t_kernel, "speedup_vs_sdpa_mask": t_mask / t_kernel,
        "speedup_vs_sdpa_flash": t_flash / t_kernel,
    }  # fmt: skip


def sweep(dtype_name: str, dtype: torch.dtype) -> list[dict]:
    rows = []
    for B, configs in (SWEEP_FP32 if dtype == torch.float32 else SWEEP).items():
        qkv, lengths = make_inputs(B, 1024, dtype)
        expected = attention_reference(qkv, lengths, N_HEAD)
        default = default_blocks(B, 1024, N_HEAD, dtype)
        for block_m, block_n, warps in [c or default for c in configs]:
            blocks = {"block_m": block_m, "block_n": block_n, "num_warps": warps}
            out = torch.full(expected.shape, float("nan"), device="cuda", dtype=dtype)
            launch_attention(qkv, lengths, N_HEAD, out, **blocks)
            t = common.time_us(
                common.direct_launch(partial(launch_attention, qkv, lengths, N_HEAD, out, **blocks))
            )
            rows.append({
                "dtype": dtype_name, "B": B, "block_m": block_m, "block_n": block_n, "num_warps": warps,
                "correct": torch.allclose(out, expected, atol=TOL[dtype], rtol=TOL[dtype]), "us": t,
                "tflops": 4 * B * N_HEAD * 1024 * 1024 * D / t / 1e6,
            })  # fmt: skip
    return rows


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0], "results/kernels/attention.json")
    torch.manual_seed(0)
    dtypes = [d for d in args.dtypes.split(",") if d]
    rows = [measure(B, T, name, common.DTYPES[name]) for name in dtypes for B in SIZES_B for T in SIZES_T]
    sweep_rows = [r for name in dtypes for r in sweep(name, common.DTYPES[name])] if args.sweep else []
    common.write_json(args.results, {"env": common.environment(), "rows": rows, "sweep": sweep_rows})
    if sweep_rows:
        print("\nTile sweep at T=1024 (the first row of each B is the default):\n")
        print(common.markdown_table(sweep_rows, [
            ("dtype", "dtype"), ("B", "B"), ("block_m", "BLOCK_M"), ("block_n", "BLOCK_N"),
            ("num_warps", "warps"), ("correct", "correct"), ("us", "µs"), ("tflops", "TFLOP/s"),
        ]))  # fmt: skip
    print(f"\n{common.environment()}; all correct: {all(r['correct'] for r in rows)}\n")
    print(common.markdown_table(rows, [
        ("B", "B"), ("T", "T"), ("dtype", "dtype"), ("kernel_us", "kernel µs"), ("kernel_88_us", "kernel 88% µs"),
        ("op_us", "op µs"), ("reference_us", "reference µs"), ("sdpa_mask_us", "SDPA mask µs"),
        ("sdpa_flash_us", "SDPA flash µs"), ("kernel_tflops", "kernel TFLOP/s"),
        ("speedup_vs_reference", "x vs ref"), ("speedup_vs_sdpa_mask", "x vs SDPA mask"),
        ("speedup_vs_sdpa_flash", "x vs SDPA flash"), ("correct", "correct"),
    ]))  # fmt: skip


if __name__ == "__main__":
    main()
