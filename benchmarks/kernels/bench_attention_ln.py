"""µs of `fastspeech::attention_ln` (one kernel) vs the unfused sublayer the model ran before, FastSpeech's shapes.

Run on a CUDA GPU:  python -m benchmarks.kernels.bench_attention_ln --sweep --results results/kernels/attention_ln.json
Shapes: DLE's self-attention sublayer, H 384, 2 heads, d 64; T = 128 (phoneme side of i128) / 1024 (mel
side of o1024), B 1/8/64; lengths = 0.88 T (the latency benchmark's sample fills ~900 of 1024 frames).
fp16 by default (`--dtypes fp16,bf16,fp32`).
Columns: `kernel` = the Triton launch into a preallocated output; `op` = the eager custom op (allocates
the output); `unfused eager` / `unfused Inductor` = what `fastspeech/model.py` ran before the op for the
same sublayer: the `attention` op -> F.linear (fc) -> + x -> F.layer_norm -> row mask, eagerly (the
attention op's own Triton kernel, cuBLAS, two pointwise / normalization kernels) and under
`torch.compile(fullgraph=True, dynamic=False)` as the engine compiles it (the weights are graph
inputs there, as in the engine; Inductor fuses the add, LayerNorm and mask into one kernel after the
GEMM). Times: median, cold L2 (benchmarks/kernels/common.py). `--sweep` times the (block_m, block_n,
num_warps, num_stages) variants in SWEEP (and the default) at T = 1024 for every B and prints the best per shape.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial

import torch
import torch.nn.functional as F

from benchmarks.kernels import common
from kernels.attention import attention
from kernels.attention_ln import Blocks, attention_ln_reference, default_blocks, launch_attention_ln

N_HEAD, D, HIDDEN = 2, 64, 384
EPS = 1e-5
SIZES_B = (1, 8, 64)
SIZES_T = (128, 1024)
FILL = 0.88
DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
SWEEP = [  # tried at T = 1024 for every B (num_stages: Blocks' default unless given)
    Blocks(16, 128, 4),
    Blocks(16, 64, 4),
    Blocks(16, 128, 8),
    Blocks(16, 32, 4),
    Blocks(32, 64, 4),
    Blocks(32, 128, 4),
    Blocks(32, 64, 8),
    Blocks(32, 64, 4, 3),
    Blocks(64, 64, 8),
    Blocks(64, 64, 4),
    Blocks(64, 32, 8),
    Blocks(64, 64, 8, 3),
]
TOL = {torch.float16: 1e-2, torch.bfloat16: 3e-2, torch.float32: 2e-5}


def parse_args() -> argparse.Namespace:
    """common.parse_args's options, with fp16 alone by default and bf16 accepted."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--results", default="results/kernels/attention_ln.json", help="JSON file for the numbers"
    )
    parser.add_argument("--dtypes", default="fp16", help="comma-separated subset of fp16,bf16,fp32")
    parser.add_argument("--sweep", action="store_true", help="also time tile variants at T = 1024")
    args = parser.parse_args()
    args.dtypes = [d for d in args.dtypes.split(",") if d]
    unknown = [d for d in args.dtypes if d not in DTYPES]
    if unknown:
        parser.error(f"--dtypes: unknown {unknown}; choose from {sorted(DTYPES)}")
    return args


def make_inputs(B: int, T: int, dtype: torch.dtype) -> tuple:
    """The op's arguments: qkv and x ~ N(0, 1), fc and LayerNorm at nn.Linear's / a trained-like scale,
    lengths = FILL * T."""
    fc = torch.nn.Linear(N_HEAD * D, HIDDEN).to("cuda", dtype).requires_grad_(False)
    qkv = torch.randn(B, T, N_HEAD * 3 * D, device="cuda").to(dtype)
    x = torch.randn(B, T, HIDDEN, device="cuda").to(dtype)
    ln_weight = (torch.rand(HIDDEN, device="cuda") + 0.5).to(dtype)
    ln_bias = (torch.rand(HIDDEN, device="cuda") - 0.5).to(dtype)
    lengths = torch.full((B,), max(1, round(FILL * T)), device="cuda", dtype=torch.long)
    return qkv, x, lengths, N_HEAD, fc.weight, fc.bias, ln_weight, ln_bias, EPS


def unfused(qkv, x, lengths, n_head, fc_weight, fc_bias, ln_weight, ln_bias, eps) -> torch.Tensor:
    """The model's sublayer before the op: attention op -> fc -> residual -> LayerNorm -> row mask."""
    out = F.linear(attention(qkv, lengths, n_head), fc_weight, fc_bias) + x
    out = F.layer_norm(out, (x.shape[-1],), ln_weight, ln_bias, eps)
    valid = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]  # (B, T)
    return out * valid[..., None]


def compiled_unfused(args: tuple):
    """`unfused` under torch.compile as the engine compiles it (a fresh Dynamo per shape)."""
    torch._dynamo.reset()
    fn = torch.compile(unfused, fullgraph=True, dynamic=False)
    fn(*args)  # compile outside the timing
    return partial(fn, *args)


def close(a: torch.Tensor, b: torch.Tensor, dtype: torch.dtype) -> bool:
    return torch.allclose(a.float(), b.float(), atol=TOL[dtype], rtol=TOL[dtype])


def measure(B: int, T: int, dtype_name: str) -> dict:
    dtype = DTYPES[dtype_name]
    args = make_inputs(B, T, dtype)
    out = torch.full(args[1].shape, float("nan"), device="cuda", dtype=dtype)
    launch_attention_ln(*args, out)
    expected = attention_ln_reference(*args)
    inductor = compiled_unfused(args)
    correct = (
        close(out, expected, dtype)
        and close(unfused(*args), expected, dtype)
        and close(inductor(), expected, dtype)
    )
    t_kernel = common.time_us(common.direct_launch(lambda: launch_attention_ln(*args, out)))
    t_op = common.time_us(lambda: torch.ops.fastspeech.attention_ln(*args))
    t_eager = common.time_us(lambda: unfused(*args))
    t_inductor = common.time_us(inductor)
    return {
        "B": B, "T": T, "dtype": dtype_name, "tiles": tiles(default_blocks(B, T, dtype)),
        "correct": correct, "kernel_us": t_kernel, "op_us": t_op, "unfused_eager_us": t_eager,
        "unfused_inductor_us": t_inductor, "speedup_vs_inductor": t_inductor / t_kernel,
        "speedup_vs_eager": t_eager / t_kernel,
    }  # fmt: skip


def sweep(B: int, T: int, dtype_name: str) -> list[dict]:
    dtype = DTYPES[dtype_name]
    args = make_inputs(B, T, dtype)
    expected = attention_ln_reference(*args)
    default = default_blocks(B, T, dtype)
    rows = []
    for blocks in [default] + [b for b in SWEEP if b != default]:
        row = {"B": B, "T": T, "dtype": dtype_name, **blocks._asdict(), "default": blocks == default}
        out = torch.full(expected.shape, float("nan"), device="cuda", dtype=dtype)
        launch = partial(launch_attention_ln, *args, out, **blocks._asdict())
        try:
            launch()
            t = common.time_us(common.direct_launch(launch))
        except Exception as error:  # noqa: BLE001 - e.g. a tile that needs more shared memory than the GPU has
            rows.append({**row, "correct": False, "us": float("inf"), "error": str(error)[:200]})
            continue
        rows.append({**row, "correct": close(out, expected, dtype), "us": t})
    return rows


def tiles(blocks: Blocks) -> str:
    return f"{blocks.block_m}x{blocks.block_n}/{blocks.num_warps}w{blocks.num_stages}s"


def best_per_shape(sweep_rows: list[dict]) -> list[dict]:
    """The fastest correct configuration of each (B, T, dtype), beside the default's time."""
    best: dict[tuple, dict] = {}
    for r in sweep_rows:
        entry = best.setdefault((r["B"], r["T"], r["dtype"]), {"B": r["B"], "T": r["T"], "dtype": r["dtype"]})
        if r["default"]:
            entry["default_us"] = r["us"]
        if r["correct"] and r["us"] < entry.get("best_us", float("inf")):
            entry["best_us"], entry["best"] = r["us"], tiles(Blocks(*(r[k] for k in Blocks._fields)))
    for entry in best.values():
        entry["default_over_best"] = entry.get("default_us", float("nan")) / entry.get(
            "best_us", float("nan")
        )
    return list(best.values())


def main() -> None:
    args = parse_args()
    if not torch.cuda.is_available():
        sys.exit(
            "bench_attention_ln needs a CUDA GPU (the kernel's timings mean nothing on the CPU interpreter)"
        )
    torch.manual_seed(0)
    rows = [measure(B, T, dtype) for dtype in args.dtypes for B in SIZES_B for T in SIZES_T]
    sweep_rows = (
        [r for dtype in args.dtypes for B in SIZES_B for r in sweep(B, 1024, dtype)] if args.sweep else []
    )
    best = best_per_shape(sweep_rows)
    common.write_json(
        args.results, {"env": common.environment(), "rows": rows, "sweep": sweep_rows, "best": best}
    )
    if best:
        print(
            "\nTile sweep at T=1024: the fastest correct configuration per shape (BLOCK_M x BLOCK_N / warps, stages):\n"
        )
        print(common.markdown_table(best, [
            ("B", "B"), ("T", "T"), ("dtype", "dtype"), ("default_us", "default µs"), ("best_us", "best µs"),
            ("best", "best config"), ("default_over_best", "default / best"),
        ]))  # fmt: skip
    print(f"\n{common.environment()}; all correct: {all(r['correct'] for r in rows)}\n")
    print(common.markdown_table(rows, [
        ("B", "B"), ("T", "T"), ("dtype", "dtype"), ("tiles", "tiles"), ("kernel_us", "kernel µs"),
        ("op_us", "op µs"), ("unfused_inductor_us", "unfused Inductor µs"),
        ("unfused_eager_us", "unfused eager µs"), ("speedup_vs_inductor", "x vs Inductor"),
        ("speedup_vs_eager", "x vs eager"), ("correct", "correct"),
    ]))  # fmt: skip


if __name__ == "__main__":
    main()
