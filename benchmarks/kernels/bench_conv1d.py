"""µs and TFLOP/s of `fastspeech::conv1d` vs the model's previous conv path and vs the reference.

Run on a CUDA GPU:  python -m benchmarks.kernels.bench_conv1d --dtypes fp16 --sweep --results results/kernels/conv1d.json
Shapes: FastSpeech's k=3, padding 1 convs: the FFN's w_1 (384 -> 1536, relu) and w_2 (1536 -> 384), the
duration predictor's conv1d_1 (384 -> 256, relu) and conv1d_2 (256 -> 256, relu) (`--convs`); B 1/8/64
(`--batches`), T 128/1024 (`--lengths`); lengths = 0.88 T (`--fill`). The kernel skips the K steps of
row tiles wholly past an item's length (zeros stored); at 0.88 T with 128-row tiles no tile is.
Columns: `kernel` = the Triton launch into a preallocated output; `op` = the eager custom op (allocates
the output); `model eager` / `model Inductor` = what `fastspeech/model.py` ran before the op for the same
step: `conv1d_time_last(x, conv)` on an nn.Conv1d (unfold copy + GEMM for C_in <= C_out, GEMM to
taps + shifted sum otherwise), then relu * row mask where the model applies them (w_2: no relu, no
mask), eagerly and under `torch.compile(fullgraph=True, dynamic=False)` as the engine compiles it
(the weight is a graph input there, as in the engine); `cuBLAS GEMM` = that path's GEMM alone, its
weight laid out beforehand (w_1: on an already unfolded x; w_2: into the taps), the floor of the
multiply-first path; `reference` = `conv1d_reference` (fp32 conv).
TFLOP/s count 2 B T C_in C_out k. Times: median, cold L2 (benchmarks/kernels/common.py).
`--sweep` times the tile configurations in SWEEP (and the default) at every shape and prints the best
per shape.
"""

from __future__ import annotations

import sys
from functools import partial

import torch
import torch.nn.functional as F

from benchmarks.kernels import common
from kernels.conv1d import Blocks, conv1d_reference, default_blocks, launch_conv1d

CONVS = {  # name -> (C_in, C_out, relu); all k=3, padding 1
    "ffn.w_1": (384, 1536, True),
    "ffn.w_2": (1536, 384, False),
    "dp.conv1d_1": (384, 256, True),
    "dp.conv1d_2": (256, 256, True),
}
K, PADDING = 3, 1
SIZES_B = (1, 8, 64)
SIZES_T = (128, 1024)
FILL = 0.88
SWEEP = [  # Blocks(block_m, block_n, block_k, num_warps, num_stages, group_m, programs, subtile)
    Blocks(128, 256, 64, 8, 3),
    Blocks(128, 256, 64, 8, 4, subtile=True),
    Blocks(256, 128, 64, 8, 3),
    Blocks(128, 128, 64, 8, 4),
    Blocks(128, 128, 64, 4, 4),
    Blocks(128, 128, 64, 4, 5),
    Blocks(128, 64, 64, 4, 4),
    Blocks(64, 128, 64, 4, 4),
]
TOL = {torch.float16: 1e-2, torch.bfloat16: 2e-2, torch.float32: 1e-4}


def make_inputs(B: int, T: int, name: str, dtype: torch.dtype, fill: float = FILL):
    """x (rows past the length zeroed, as the model feeds the convs), the nn.Conv1d, the op's weight
    (k, C_out, C_in) and bias, lengths and the model's (B, T, 1) row mask."""
    c_in, c_out, _ = CONVS[name]
    conv = torch.nn.Conv1d(c_in, c_out, K, padding=PADDING).to("cuda", dtype).requires_grad_(False)
    lengths = torch.full((B,), max(1, round(fill * T)), device="cuda", dtype=torch.long)
    row_valid = (torch.arange(T, device="cuda")[None, :] < lengths[:, None])[..., None].to(dtype)
    x = torch.randn(B, T, c_in, device="cuda").to(dtype) * row_valid
    weight = conv.weight.permute(2, 0, 1).contiguous()
    return x, conv, weight, conv.bias, lengths, row_valid


def conv1d_time_last(x: torch.Tensor, conv: torch.nn.Conv1d) -> torch.Tensor:
    """The model's conv before the `conv1d` op: `conv` on x (B, T, C_in) -> (B, T, C_out) as one
    cuBLAS GEMM, no transposes, the bias added, no relu or mask. Which shifted copies the GEMM runs
    over is chosen by what is narrower:
    - C_in <= C_out (w_1: 384 -> 1536): unfold the input to (B, T, C_in, k); flattened, that is the
      layout of a contiguous weight viewed as (C_out, C_in * k), so the weight needs no copy.
    - C_in > C_out (w_2: 1536 -> 384): multiply first, (B, T, k * C_out), then add the k outputs
      shifted in time (Inductor fuses the sum into the epilogue); the weight is re-laid-out to
      (k * C_out, C_in), a copy on every call unless it is stored tap-major.
    Zero padding as the conv's own (stride 1, dilation 1, `padding` rows each side).
    """
    k, pad = conv.kernel_size[0], conv.padding[0]
    B, T, c_in = x.shape
    c_out = conv.out_channels
    if c_in <= c_out:
        padded = F.pad(x, (0, 0, pad, k - 1 - pad))  # (B, T + k - 1, C_in)
        unfolded = torch.stack([padded[:, j : j + T] for j in range(k)], dim=-1)  # (B, T, C_in, k)
        return F.linear(unfolded.flatten(2), conv.weight.reshape(c_out, -1), conv.bias)
    taps = F.linear(x, conv.weight.permute(2, 0, 1).reshape(k * c_out, c_in))  # (B, T, k * C_out)
    taps = F.pad(taps.view(B, T, k, c_out), (0, 0, 0, 0, pad, k - 1 - pad))  # (B, T + k - 1, k, C_out)
    out = conv.bias
    for j in range(k):  # y[t] = sum_j taps[t + j - pad, j]
        out = out + taps[:, j : j + T, j]
    return out


def model_path(x: torch.Tensor, conv: torch.nn.Conv1d, row_valid: torch.Tensor, relu: bool) -> torch.Tensor:
    """What fastspeech/model.py ran for this conv before the op: the FFN's w_1 and the duration
    predictor's convs are followed by relu * row mask; w_2's output is masked later, after the
    residual and LN."""
    out = conv1d_time_last(x, conv)
    return F.relu(out) * row_valid if relu else out


def compiled_model_path(x, conv, row_valid, relu: bool):
    """`model_path` under torch.compile as the engine compiles it (a fresh Dynamo per shape)."""
    torch._dynamo.reset()
    fn = torch.compile(model_path, fullgraph=True, dynamic=False)
    fn(x, conv, row_valid, relu)  # compile outside the timing
    return partial(fn, x, conv, row_valid, relu)


def measure(B: int, T: int, name: str, dtype_name: str, fill: float = FILL) -> dict:
    dtype = common.DTYPES[dtype_name]
    c_in, c_out, relu = CONVS[name]
    x, conv, weight, bias, lengths, row_valid = make_inputs(B, T, name, dtype, fill)
    out = torch.full((B, T, c_out), float("nan"), device="cuda", dtype=dtype)
    launch_conv1d(x, weight, bias, lengths, PADDING, relu, out)
    expected = conv1d_reference(x, weight, bias, lengths, PADDING, relu)
    tol = TOL[dtype]
    baseline = model_path(x, conv, row_valid, relu) * row_valid  # same numbers on valid rows
    correct = torch.allclose(out, expected, atol=tol, rtol=tol) and torch.allclose(
        baseline, expected, atol=tol, rtol=tol
    )
    t_kernel = common.time_us(
        common.direct_launch(lambda: launch_conv1d(x, weight, bias, lengths, PADDING, relu, out))
    )
    t_op = common.time_us(lambda: torch.ops.fastspeech.conv1d(x, weight, bias, lengths, PADDING, relu))
    t_eager = common.time_us(lambda: model_path(x, conv, row_valid, relu))
    t_inductor = common.time_us(compiled_model_path(x, conv, row_valid, relu))
    t_ref = common.time_us(lambda: conv1d_reference(x, weight, bias, lengths, PADDING, relu))
    t_gemm = common.time_us(gemm_alone(x, weight))
    blocks = default_blocks(B, T, c_out, c_in, dtype)
    return {
        "conv": name, "C_in": c_in, "C_out": c_out, "relu": relu, "B": B, "T": T, "fill": fill, "dtype": dtype_name,
        "tiles": f"{blocks.block_m}x{blocks.block_n}x{blocks.block_k}/{blocks.num_warps}w{blocks.num_stages}s",
        "correct": correct, "kernel_us": t_kernel, "op_us": t_op, "model_eager_us": t_eager,
        "model_inductor_us": t_inductor, "reference_us": t_ref, "gemm_us": t_gemm,
        "speedup_vs_gemm": t_gemm / t_kernel,
        "kernel_tflops": flops(B, T, c_in, c_out) / t_kernel / 1e6,
        "speedup_vs_inductor": t_inductor / t_kernel, "speedup_vs_eager": t_eager / t_kernel,
    }  # fmt: skip


def gemm_alone(x: torch.Tensor, weight: torch.Tensor):
    """The multiply-first path's cuBLAS GEMM with its operands laid out beforehand: on an unfolded x
    for C_in <= C_out, into the taps otherwise (`conv1d_time_last`)."""
    B, T, c_in = x.shape
    k, c_out, _ = weight.shape
    if c_in <= c_out:
        a = torch.empty(B * T, k * c_in, device=x.device, dtype=x.dtype)
        w = weight.permute(0, 2, 1).reshape(k * c_in, c_out)
    else:
        a = x.reshape(B * T, c_in)
        w = weight.reshape(k * c_out, c_in).t()
    out = torch.empty(a.shape[0], w.shape[1], device=x.device, dtype=x.dtype)
    return partial(torch.mm, a, w, out=out)


def flops(B: int, T: int, c_in: int, c_out: int) -> int:
    return 2 * B * T * c_in * c_out * K


def sweep(B: int, T: int, name: str, dtype_name: str, fill: float = FILL) -> list[dict]:
    dtype = common.DTYPES[dtype_name]
    c_in, c_out, relu = CONVS[name]
    x, _, weight, bias, lengths, _ = make_inputs(B, T, name, dtype, fill)
    expected = conv1d_reference(x, weight, bias, lengths, PADDING, relu)
    default = default_blocks(B, T, c_out, c_in, dtype)
    rows = []
    for blocks in [default] + [b for b in SWEEP if b != default]:
        out = torch.full(expected.shape, float("nan"), device="cuda", dtype=dtype)
        row = {
            "conv": name,
            "B": B,
            "T": T,
            "dtype": dtype_name,
            **blocks._asdict(),
            "default": blocks == default,
        }
        try:
            launch_conv1d(x, weight, bias, lengths, PADDING, relu, out, blocks=blocks)
            t = common.time_us(
                common.direct_launch(
                    partial(launch_conv1d, x, weight, bias, lengths, PADDING, relu, out, blocks=blocks)
                )
            )
        except Exception as error:  # noqa: BLE001 - e.g. a tile that needs more shared memory than the GPU has
            rows.append(
                {**row, "correct": False, "us": float("inf"), "tflops": 0.0, "error": str(error)[:200]}
            )
            continue
        correct = torch.allclose(out, expected, atol=TOL[dtype], rtol=TOL[dtype])
        rows.append({**row, "correct": correct, "us": t, "tflops": flops(B, T, c_in, c_out) / t / 1e6})
    return rows


def best_per_shape(sweep_rows: list[dict]) -> list[dict]:
    """The fastest correct configuration of each (conv, B, T, dtype), beside the default's time."""
    best: dict[tuple, dict] = {}
    for r in sweep_rows:
        key = (r["conv"], r["B"], r["T"], r["dtype"])
        entry = best.setdefault(key, {"conv": r["conv"], "B": r["B"], "T": r["T"], "dtype": r["dtype"]})
        if r["default"]:
            entry["default_us"] = r["us"]
        if r["correct"] and r["us"] < entry.get("best_us", float("inf")):
            entry["best_us"], entry["tflops"] = r["us"], r["tflops"]
            entry["best"] = (
                f"{r['block_m']}x{r['block_n']}x{r['block_k']}/{r['num_warps']}w{r['num_stages']}s g{r['group_m']}"
            )
    for entry in best.values():
        entry["default_over_best"] = entry.get("default_us", float("nan")) / entry.get(
            "best_us", float("nan")
        )
    return list(best.values())


def _arguments(parser) -> None:
    parser.add_argument("--batches", nargs="+", type=int, default=list(SIZES_B))
    parser.add_argument("--lengths", nargs="+", type=int, default=list(SIZES_T), help="T")
    parser.add_argument("--convs", nargs="+", default=list(CONVS), choices=list(CONVS))
    parser.add_argument("--fill", type=float, default=FILL, help="lengths = fill * T")


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0], "results/kernels/conv1d.json", _arguments)
    if not torch.cuda.is_available():
        sys.exit("bench_conv1d needs a CUDA GPU (the kernel's timings mean nothing on the CPU interpreter)")
    torch.manual_seed(0)
    dtypes = [d for d in args.dtypes.split(",") if d]
    shapes = [(B, T, name) for B in args.batches for T in args.lengths for name in args.convs]
    rows = [measure(B, T, name, dtype, args.fill) for dtype in dtypes for B, T, name in shapes]
    sweep_shapes = shapes if args.sweep else []
    sweep_rows = [
        r for dtype in dtypes for B, T, name in sweep_shapes for r in sweep(B, T, name, dtype, args.fill)
    ]
    best = best_per_shape(sweep_rows)
    common.write_json(
        args.results, {"env": common.environment(), "rows": rows, "sweep": sweep_rows, "best": best}
    )
    if best:
        print("\nTile sweep: the fastest correct configuration per shape (BMxBNxBK/warps stages, group):\n")
        print(common.markdown_table(best, [
            ("conv", "conv"), ("B", "B"), ("T", "T"), ("dtype", "dtype"), ("default_us", "default µs"),
            ("best_us", "best µs"), ("best", "best config"), ("tflops", "best TFLOP/s"),
            ("default_over_best", "default / best"),
        ]))  # fmt: skip
    print(f"\n{common.environment()}; all correct: {all(r['correct'] for r in rows)}\n")
    print(common.markdown_table(rows, [
        ("conv", "conv"), ("B", "B"), ("T", "T"), ("dtype", "dtype"), ("tiles", "tiles"),
        ("kernel_us", "kernel µs"), ("op_us", "op µs"), ("gemm_us", "cuBLAS GEMM µs"),
        ("model_inductor_us", "model Inductor µs"),
        ("model_eager_us", "model eager µs"), ("reference_us", "reference µs"),
        ("kernel_tflops", "kernel TFLOP/s"), ("speedup_vs_gemm", "x vs GEMM"), ("speedup_vs_inductor", "x vs Inductor"),
        ("speedup_vs_eager", "x vs eager"), ("correct", "correct"),
    ]))  # fmt: skip


if __name__ == "__main__":
    main()
