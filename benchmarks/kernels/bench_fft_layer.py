"""µs per FFT block: the `fft_layer` kernel against the block as sublayers, both as the engine runs them.

Run on a CUDA GPU:  python -m benchmarks.kernels.bench_fft_layer --dtypes fp16 --results results/kernels/fft_layer.json
Shapes: (B, T) in SHAPES (the phoneme and mel sides of the i32_o256 and i128_o1024 engines at batch 1,
and a few batches), DLE's sizes (H 384, 2 heads of d 64, D_inner 1536, k 3), lengths 0.88 T.
A stack of LAYERS blocks with their own random weights (one side of the model: 6 x 7 MB of weights,
so a layer's weights are not all in L2 from the previous call), run as the engine runs it: compiled
with `torch.compile(fullgraph=True, dynamic=False)` and captured in one CUDA graph. Time: mean over
many replays, divided by LAYERS. Columns: `fused` = each block one `fft_layer` kernel (the model's
default up to FUSED_MAX_ROWS rows); `sublayers` = the blocks as before the op (cuBLAS GEMMs, the
attention op, Inductor's LayerNorm/pointwise kernels); kernels per layer from the profiler; `err` =
max |out - the sublayers in fp32| over the stack's output, relative to max |fp32|.
`--sweep` also times the fused stack with each tile configuration in SWEEP (launching the kernel
directly, in a CUDA graph) and prints the best per shape.
"""

from __future__ import annotations

import argparse
import statistics
from typing import Any

import torch

from benchmarks.kernels import common
from fastspeech.model import FastSpeechConfig, FFTBlock, set_fused_layers
from kernels.fft_layer import Blocks, default_blocks, launch_fft_layer

SHAPES = ((1, 32), (1, 128), (1, 256), (1, 1024), (4, 256), (8, 128), (2, 1024))
LAYERS = 6
FILL = 0.88
SWEEP = [  # Blocks(block_m, block_n, block_k, block_r, block_kr, split_k, num_warps, num_stages)
    Blocks(64, 64, 64, 16, 32, 1, 4, 3),
    Blocks(64, 64, 64, 16, 32, 2, 4, 3),
    Blocks(64, 128, 64, 16, 32, 1, 8, 3),
    Blocks(128, 64, 64, 16, 32, 1, 8, 3),
    Blocks(32, 64, 64, 16, 32, 2, 4, 3),
    Blocks(32, 64, 64, 16, 32, 4, 4, 3),
    Blocks(32, 32, 64, 16, 32, 4, 4, 3),
    Blocks(16, 32, 64, 16, 64, 8, 4, 3),
    Blocks(16, 64, 128, 16, 64, 4, 4, 2),
    Blocks(64, 64, 32, 16, 32, 2, 4, 4),
]


def make_stack(B: int, T: int, dtype: torch.dtype):
    """LAYERS FFT blocks (random weights, LayerNorm affines perturbed), x and lengths."""
    torch.manual_seed(0)
    cfg = FastSpeechConfig()
    blocks = torch.nn.ModuleList(FFTBlock(cfg, 2, 1536) for _ in range(LAYERS))
    with torch.no_grad():
        for m in blocks.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.add_(0.1 * torch.randn_like(m.weight))
                m.bias.add_(0.1 * torch.randn_like(m.bias))
    blocks = blocks.to("cuda", dtype).eval()
    lengths = torch.full((B,), max(1, round(FILL * T)), device="cuda")
    x = torch.randn(B, T, cfg.d_model, device="cuda", dtype=dtype)
    x = x * (torch.arange(T, device="cuda")[None, :, None] < lengths[:, None, None])
    return blocks, x, lengths


def run_stack(blocks, x, lengths):
    row_valid = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None])[..., None].to(x.dtype)
    for block in blocks:
        x = block(x, lengths, row_valid, None, "layer")
    return x


def graph_us(fn, replays: int = 200) -> float:
    """fn warmed up, captured in a CUDA graph; median over 5 rounds of the mean replay time, µs."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    rounds = []
    for _ in range(5):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        graph.replay()
        start.record()
        for _ in range(replays):
            graph.replay()
        end.record()
        torch.cuda.synchronize()
        rounds.append(1e3 * start.elapsed_time(end) / replays)
    stats = common.kernel_profile(graph.replay, calls=10)
    return statistics.median(rounds), stats["kernels"]


def reference_stack(blocks, x, lengths) -> torch.Tensor:
    """The stack as sublayers in float32 (what verify's reference runs)."""
    set_fused_layers(blocks, False)
    try:
        with torch.no_grad():
            return run_stack(blocks.float(), x.float(), lengths)
    finally:
        blocks.to(x.dtype)
        set_fused_layers(blocks, True)


def measure(B: int, T: int, dtype: torch.dtype, sweep: bool) -> dict[str, Any]:
    blocks, x, lengths = make_stack(B, T, dtype)
    row: dict[str, Any] = {"B": B, "T": T, "dtype": str(dtype).removeprefix("torch.")}
    outs = {}
    for name, fused in (("fused", True), ("sublayers", False)):
        set_fused_layers(blocks, fused)
        torch._dynamo.reset()
        compiled = torch.compile(run_stack, fullgraph=True, dynamic=False)
        with torch.no_grad():
            us, kernels = graph_us(lambda: compiled(blocks, x, lengths))  # noqa: B023 - used at once
            outs[name] = compiled(blocks, x, lengths)
        row[f"{name}_us"], row[f"{name}_kernels"] = us / LAYERS, kernels / LAYERS
    set_fused_layers(blocks, True)
    want = reference_stack(blocks, x, lengths).double()
    scale = want.abs().max().item()
    row["speedup"] = row["sublayers_us"] / row["fused_us"]
    row["fused_err"] = (outs["fused"].double() - want).abs().max().item() / scale
    row["sublayers_err"] = (outs["sublayers"].double() - want).abs().max().item() / scale
    row["correct"] = row["fused_err"] <= 5 * max(
        row["sublayers_err"], 1e-3 if dtype != torch.float32 else 1e-5
    )
    row["blocks"] = list(
        default_blocks(B * T, 384, 1536, 3, torch.cuda.get_device_properties(0).multi_processor_count, dtype)
    )
    if sweep:
        row["sweep"] = sweep_rows(blocks, x, lengths)
        print({str(r["blocks"]): round(r["us"], 2) for r in row["sweep"]}, flush=True)
        best = min(row["sweep"], key=lambda r: r["us"])
        row["best_us"], row["best_blocks"] = best["us"], best["blocks"]
    print(row, flush=True)
    return row


def sweep_rows(blocks, x, lengths) -> list[dict[str, Any]]:
    """The fused stack launched directly with each tile configuration, and with the default tiles
    one phase per launch (`split`: what the grid barriers save over kernel boundaries)."""
    weights = [
        [b.slf_attn.linear.weight, b.slf_attn.linear.bias, b.slf_attn.fc.weight, b.slf_attn.fc.bias,
         b.slf_attn.layer_norm.weight, b.slf_attn.layer_norm.bias, b.pos_ffn.w_1.weight.permute(2, 0, 1),
         b.pos_ffn.w_1.bias, b.pos_ffn.w_2.weight.permute(2, 0, 1), b.pos_ffn.w_2.bias,
         b.pos_ffn.layer_norm.weight, b.pos_ffn.layer_norm.bias]
        for b in blocks
    ]  # fmt: skip
    outs = [torch.empty_like(x) for _ in blocks]
    rows = []
    split = tuple((p, p) for p in range(6))
    for cfg in ["split", *SWEEP]:

        def run(cfg=cfg):
            h = x
            for w, out in zip(weights, outs):
                kw = {"phases": split} if cfg == "split" else {"blocks": cfg}
                h = launch_fft_layer(h, lengths, tuple(t.contiguous() for t in w), 2, 1, 1e-5, out, **kw)
            return h

        try:
            with torch.no_grad():
                us, _ = graph_us(run)
            rows.append({"blocks": cfg if cfg == "split" else list(cfg), "us": us / LAYERS})
        except Exception as err:  # noqa: BLE001 - a config that does not fit is skipped, as autotuners do
            rows.append({"blocks": list(cfg), "us": float("inf"), "error": str(err).splitlines()[0][:200]})
    return rows


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--dtypes", nargs="+", default=["fp16"], choices=list(common.DTYPES))
    p.add_argument("--shapes", nargs="+", default=[f"{b}x{t}" for b, t in SHAPES], help="BxT, e.g. 1x1024")
    p.add_argument("--sweep", action="store_true")
    p.add_argument("--results", default="results/kernels/fft_layer.json")
    args = p.parse_args()
    shapes = [tuple(int(v) for v in s.split("x")) for s in args.shapes]
    rows = [measure(B, T, common.DTYPES[d], args.sweep) for d in args.dtypes for B, T in shapes]
    common.write_json(args.results, {"env": common.environment(), "layers": LAYERS, "rows": rows})
    print(f"\n{common.environment()}  all correct: {all(r['correct'] for r in rows)}\n")
    columns = [("B", "B"), ("T", "T"), ("dtype", "dtype"), ("fused_us", "fused µs/layer"),
               ("sublayers_us", "sublayers µs/layer"), ("speedup", "speed-up"),
               ("fused_kernels", "kernels/layer fused"), ("sublayers_kernels", "kernels/layer sublayers"),
               ("fused_err", "fused err"), ("sublayers_err", "sublayers err")]  # fmt: skip
    if args.sweep:
        columns.append(("best_us", "best swept µs"))
    print(common.markdown_table(rows, columns))
    if args.sweep:
        for r in rows:
            print(
                r["B"],
                r["T"],
                "best",
                r["best_blocks"],
                f"{r['best_us']:.2f} µs (default {r['fused_us']:.2f})",
            )


if __name__ == "__main__":
    main()
