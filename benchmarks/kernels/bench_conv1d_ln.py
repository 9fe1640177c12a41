"""µs and TFLOP/s of `fastspeech::conv1d_ln` vs the model's unfused projection + residual + LayerNorm.

Run on a CUDA GPU:  python -m benchmarks.kernels.bench_conv1d_ln --sweep --results results/kernels/conv1d_ln.json
Shapes: the ends of FastSpeech's two FFT sublayers, each followed by the residual add, LayerNorm(384,
eps 1e-5) and the row mask (`--projs`): the attention's `fc`, an nn.Linear (128 -> 384) run as a k=1
conv (the op's weight `fc.weight[None]`, padding 0), and the FFN's `w_2`, an nn.Conv1d (1536 -> 384,
k=3, padding 1; the op's weight `weight.permute(2, 0, 1)`, tap-major as the model stores it); no relu.
B 1/4/8/16/64 (`--batches`), T 128/1024 (`--lengths`); lengths = round(0.88 T) (`--fill`); x's rows
past the length are zero (as the model feeds them), the residual is random, the LayerNorm's weight and
bias random around 1 and 0. fp16 unless `--dtypes` says otherwise.
Columns: `kernel` = `launch_conv1d_ln` into a preallocated output, its default tiles; `unfused Inductor`
= what `fastspeech/model.py` runs where it does not fuse, `project_add_norm` (fc: F.linear; w_2: the
model's `conv1d`, which runs the `conv1d` op or cuBLAS + a shifted sum by row count; then residual +
LayerNorm + row mask, which Inductor fuses into one pass), under `torch.compile(fullgraph=True,
dynamic=False)` as the engine compiles it (parameters are graph inputs), compiled outside the timing;
`speedup` = unfused / kernel; `correct` = the kernel's output and the unfused path's valid rows both
within atol = rtol = 2e-2 (fp16; 1e-4 fp32) of `conv1d_ln_reference` (fp32; cuDNN's TF32 off).
TFLOP/s count 2 B T C_in C_out k. Times: median, cold L2 (benchmarks/kernels/common.py), of each call
captured in a CUDA graph, as the engine runs the model (`--no-graphs`: called directly, as bench_conv1d
does; on the lent H200 a direct `launch_conv1d_ln` costs 110-220 µs of host time, more than the L2
flush hides, so the small shapes' times are then the host's).
`--sweep` times the tile configurations in SWEEP (and the default) at every shape and prints the best
per shape; a configuration that fails to launch (e.g. more shared memory than the GPU has) is a row
with its error.
"""

from __future__ import annotations

import sys
from functools import partial
from typing import NamedTuple

import torch
from torch import nn

from benchmarks.kernels import common
from fastspeech import model
from kernels.conv1d_ln import Blocks, conv1d_ln_reference, default_blocks, launch_conv1d_ln

PROJS = {  # name -> (C_in, C_out, k, padding); no relu; C_out is also the LayerNorm's width
    "attn.fc": (128, 384, 1, 0),  # nn.Linear as a k=1 conv
    "ffn.w_2": (1536, 384, 3, 1),
}
SIZES_B = (1, 4, 8, 16, 64)
SIZES_T = (128, 1024)
FILL = 0.88
EPS = 1e-5
SWEEP = [  # Blocks(block_m, block_n, block_k, num_warps, num_stages, programs)
    Blocks(64, 128, 64, 8, 3),
    Blocks(64, 128, 64, 8, 2),
    Blocks(64, 128, 64, 4, 3),
    Blocks(32, 128, 64, 4, 3),
    Blocks(32, 128, 64, 4, 4),
    Blocks(16, 128, 64, 4, 4),
    Blocks(64, 128, 32, 8, 4),
    Blocks(128, 128, 64, 8, 2),
]
TOL = {torch.float16: 2e-2, torch.float32: 1e-4}


class Inputs(NamedTuple):
    """One shape: x (B, T, C_in), rows past the length zeroed; the model's projection (nn.Linear, or a
    tap-major nn.Conv1d) and nn.LayerNorm; the op's (k, C_out, C_in) weight (a view of the projection's)
    and padding; lengths (B,); the residual (B, T, C_out); the model's (B, T, 1) row mask in x's dtype."""

    x: torch.Tensor
    proj: nn.Linear | nn.Conv1d
    norm: nn.LayerNorm
    weight: torch.Tensor
    padding: int
    lengths: torch.Tensor
    residual: torch.Tensor
    row_valid: torch.Tensor

    def op_args(self) -> tuple:
        """The op's arguments: (x, weight, bias, lengths, padding, relu, residual, ln_weight, ln_bias, eps)."""
        return (
            self.x, self.weight, self.proj.bias, self.lengths, self.padding, False, self.residual,
            self.norm.weight, self.norm.bias, self.norm.eps,
        )  # fmt: skip


def make_inputs(
    B: int, T: int, name: str, dtype: torch.dtype, fill: float = FILL, device: str = "cuda"
) -> Inputs:
    """The model's layers for `name` (PyTorch's default init; LayerNorm weight ~ 1 and bias ~ 0, random)
    and its inputs; the op's weight is the layer's own storage, as the model passes it."""
    c_in, c_out, k, padding = PROJS[name]
    if k == 1:
        proj = nn.Linear(c_in, c_out)
    else:
        proj = model.tap_major(nn.Conv1d(c_in, c_out, k, padding=padding))
    norm = nn.LayerNorm(c_out, eps=EPS)
    with torch.no_grad():
        norm.weight.normal_(1.0, 0.1)
        norm.bias.normal_(0.0, 0.1)
    proj, norm = (m.to(device, dtype).requires_grad_(False) for m in (proj, norm))
    weight = proj.weight[None] if k == 1 else proj.weight.permute(2, 0, 1).contiguous()
    lengths = torch.full((B,), max(1, round(fill * T)), device=device, dtype=torch.long)
    row_valid = (torch.arange(T, device=device)[None, :] < lengths[:, None])[..., None].to(dtype)
    x = torch.randn(B, T, c_in, device=device).to(dtype) * row_valid
    residual = torch.randn(B, T, c_out, device=device).to(dtype)
    return Inputs(x, proj, norm, weight, padding, lengths, residual, row_valid)


def unfused(inp: Inputs, compiled: bool = False):
    """The model's unfused path on `inp` as a call with no arguments: `project_add_norm` eagerly, or
    under torch.compile as the engine compiles it (a fresh Dynamo per shape; compiled here, so outside
    any timing)."""
    args = (inp.x, inp.proj, inp.lengths, inp.residual, inp.norm, inp.row_valid, None, "b")
    fn = model.project_add_norm
    if compiled:
        torch._dynamo.reset()
        fn = torch.compile(fn, fullgraph=True, dynamic=False)
        fn(*args)
    return partial(fn, *args)


def unfused_conv(inp: Inputs) -> str:
    """Which projection the unfused path runs: `conv1d` picks its op or cuBLAS by row count."""
    if isinstance(inp.proj, nn.Linear):
        return "F.linear"
    c_out, c_in = inp.weight.shape[1:]
    return "conv1d op" if model.uses_op(inp.x, c_in, c_out) else "cuBLAS + shifted sum"


def reference(inp: Inputs) -> torch.Tensor:
    """`conv1d_ln_reference` (fp32, cast to x's dtype) with cuDNN's TF32 off: by default torch lets cuDNN
    run fp32 convolutions in TF32, ~1e-3 off, more than fp32's tolerance."""
    tf32, torch.backends.cudnn.allow_tf32 = torch.backends.cudnn.allow_tf32, False
    try:
        return conv1d_ln_reference(*inp.op_args())
    finally:
        torch.backends.cudnn.allow_tf32 = tf32


def matches(out: torch.Tensor, expected: torch.Tensor, dtype: torch.dtype) -> bool:
    return torch.allclose(out, expected, atol=TOL[dtype], rtol=TOL[dtype])


def graphed(fn, graphs: bool = True):
    """`fn` captured in a CUDA graph (warmed up on a side stream first) as its replay, or `fn` itself."""
    if not graphs:
        return fn
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph.replay


def flops(B: int, T: int, name: str) -> int:
    c_in, c_out, k, _ = PROJS[name]
    return 2 * B * T * c_in * c_out * k


def measure(B: int, T: int, name: str, dtype_name: str, fill: float = FILL, graphs: bool = True) -> dict:
    dtype = common.DTYPES[dtype_name]
    c_in, c_out, k, padding = PROJS[name]
    inp = make_inputs(B, T, name, dtype, fill)
    expected = reference(inp)
    blocks = default_blocks(B, T, c_out, c_in, dtype)
    row = {
        "proj": name, "C_in": c_in, "C_out": c_out, "k": k, "padding": padding, "B": B, "T": T, "fill": fill,
        "dtype": dtype_name,
        "tiles": f"{blocks.block_m}x{blocks.block_n}x{blocks.block_k}/{blocks.num_warps}w{blocks.num_stages}s",
        "unfused_conv": unfused_conv(inp),
    }  # fmt: skip
    out = torch.full(expected.shape, float("nan"), device="cuda", dtype=dtype)
    try:
        launch = graphed(common.direct_launch(partial(launch_conv1d_ln, *inp.op_args(), out)), graphs)
    except Exception as error:  # noqa: BLE001 - e.g. default tiles that need more shared memory than the GPU has
        row["error"] = str(error)[:200]
        kernel_correct, t_kernel = False, float("inf")
    else:
        out.fill_(float("nan"))
        launch()  # what is timed writes every element
        kernel_correct = matches(out, expected, dtype)
        t_kernel = common.time_us(launch)
    run_unfused = unfused(inp, compiled=True)
    unfused_correct = matches(run_unfused() * inp.row_valid, expected, dtype)  # valid rows (the rest: 0)
    t_unfused = common.time_us(graphed(run_unfused, graphs))
    return {
        **row, "correct": kernel_correct and unfused_correct, "kernel_correct": kernel_correct,
        "unfused_correct": unfused_correct, "kernel_us": t_kernel, "unfused_inductor_us": t_unfused,
        "kernel_tflops": flops(B, T, name) / t_kernel / 1e6, "speedup": t_unfused / t_kernel,
    }  # fmt: skip


def sweep(B: int, T: int, name: str, dtype_name: str, fill: float = FILL, graphs: bool = True) -> list[dict]:
    dtype = common.DTYPES[dtype_name]
    c_in, c_out, _, _ = PROJS[name]
    inp = make_inputs(B, T, name, dtype, fill)
    expected = reference(inp)
    default = default_blocks(B, T, c_out, c_in, dtype)
    rows = []
    for blocks in [default] + [b for b in SWEEP if b != default]:
        out = torch.full(expected.shape, float("nan"), device="cuda", dtype=dtype)
        row = {
            "proj": name,
            "B": B,
            "T": T,
            "dtype": dtype_name,
            **blocks._asdict(),
            "default": blocks == default,
        }
        try:
            launch = graphed(
                common.direct_launch(partial(launch_conv1d_ln, *inp.op_args(), out, blocks=blocks)), graphs
            )
            out.fill_(float("nan"))
            launch()
            t = common.time_us(launch)
        except Exception as error:  # noqa: BLE001 - e.g. a tile that needs more shared memory than the GPU has
            rows.append(
                {**row, "correct": False, "us": float("inf"), "tflops": 0.0, "error": str(error)[:200]}
            )
            continue
        rows.append(
            {**row, "correct": matches(out, expected, dtype), "us": t, "tflops": flops(B, T, name) / t / 1e6}
        )
    return rows


def best_per_shape(sweep_rows: list[dict]) -> list[dict]:
    """The fastest correct configuration of each (proj, B, T, dtype), beside the default's time."""
    best: dict[tuple, dict] = {}
    for r in sweep_rows:
        key = (r["proj"], r["B"], r["T"], r["dtype"])
        entry = best.setdefault(key, {"proj": r["proj"], "B": r["B"], "T": r["T"], "dtype": r["dtype"]})
        if r["default"]:
            entry["default_us"] = r["us"]
        if r["correct"] and r["us"] < entry.get("best_us", float("inf")):
            entry["best_us"], entry["tflops"] = r["us"], r["tflops"]
            entry["best"] = (
                f"{r['block_m']}x{r['block_n']}x{r['block_k']}/{r['num_warps']}w{r['num_stages']}s"
            )
    for entry in best.values():  # a shape where no configuration was correct: no best, NaNs
        entry.setdefault("best_us", float("nan"))
        entry.setdefault("tflops", float("nan"))
        entry.setdefault("best", "none correct")
        entry["default_over_best"] = entry.get("default_us", float("nan")) / entry["best_us"]
    return list(best.values())


def _arguments(parser) -> None:
    parser.add_argument("--batches", nargs="+", type=int, default=list(SIZES_B))
    parser.add_argument("--lengths", nargs="+", type=int, default=list(SIZES_T), help="T")
    parser.add_argument("--projs", nargs="+", default=list(PROJS), choices=list(PROJS))
    parser.add_argument("--fill", type=float, default=FILL, help="lengths = round(fill * T), at least 1")
    parser.add_argument(
        "--no-graphs", dest="graphs", action="store_false", help="time direct calls, not CUDA graph replays"
    )
    parser.set_defaults(dtypes="fp16")  # common's --dtypes defaults to fp16,fp32; here fp16 unless asked


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0], "results/kernels/conv1d_ln.json", _arguments)
    if not torch.cuda.is_available():
        sys.exit(
            "bench_conv1d_ln needs a CUDA GPU (the kernel's timings mean nothing on the CPU interpreter)"
        )
    torch.manual_seed(0)
    dtypes = [d for d in args.dtypes.split(",") if d]
    shapes = [(B, T, name) for B in args.batches for T in args.lengths for name in args.projs]
    rows = [measure(B, T, name, dtype, args.fill, args.graphs) for dtype in dtypes for B, T, name in shapes]
    sweep_shapes = shapes if args.sweep else []
    sweep_rows = [
        r
        for dtype in dtypes
        for B, T, name in sweep_shapes
        for r in sweep(B, T, name, dtype, args.fill, args.graphs)
    ]
    best = best_per_shape(sweep_rows)
    env = {**common.environment(), "cuda_graphs": args.graphs}
    common.write_json(args.results, {"env": env, "rows": rows, "sweep": sweep_rows, "best": best})
    if best:
        print("\nTile sweep: the fastest correct configuration per shape (BMxBNxBK/warps stages):\n")
        print(common.markdown_table(best, [
            ("proj", "proj"), ("B", "B"), ("T", "T"), ("dtype", "dtype"), ("default_us", "default µs"),
            ("best_us", "best µs"), ("best", "best config"), ("tflops", "best TFLOP/s"),
            ("default_over_best", "default / best"),
        ]))  # fmt: skip
    failed = [f"{r['proj']} B={r['B']} T={r['T']} {r['dtype']}: {r['error']}" for r in rows if "error" in r]
    for line in failed:
        print(f"kernel failed to launch: {line}")
    print(f"\n{env}; all correct: {all(r['correct'] for r in rows)}\n")
    print(common.markdown_table(rows, [
        ("proj", "proj"), ("B", "B"), ("T", "T"), ("dtype", "dtype"), ("tiles", "tiles"),
        ("kernel_us", "kernel µs"), ("kernel_tflops", "kernel TFLOP/s"),
        ("unfused_inductor_us", "unfused Inductor µs"), ("speedup", "speedup"), ("correct", "correct"),
    ]))  # fmt: skip


if __name__ == "__main__":
    main()
