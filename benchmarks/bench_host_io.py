"""The Python side of an engine call, on any machine: `Engine.__call__(..., to_host=True)` around a
runner that answers at once.

    python -m benchmarks.bench_host_io                         # i32_o256 and i128_o1024, batch 1
    python -m benchmarks.bench_host_io --batch 8 --calls 5000
    git worktree add /tmp/before HEAD~1 && python -m benchmarks.bench_host_io --against /tmp/before

Issue 17's host-overhead goal is measured on the GPU (`bench_engine_call`: a call against its CUDA
graph replay). This isolates the host work of the staged path (`HostIO`): staging the ids, the
copies into the runner's static inputs, picking the output set, the copies out, the result. The
replay is a runner that returns preallocated outputs of the engine's shapes (Griffin-Lim inside:
int16 wav), so what is timed is Python, torch's dispatch and, on the CPU, the copies as memcpys
(on CUDA they are asynchronous DMA). Each call holds one text of 0.75 x max_in ids per row; the
result is dropped before the next call, as the router does.

`--against DIR`: also time `DIR/fastspeech/engine.py` (another checkout's, loaded beside this one),
the two engines' calls alternating in one loop, and report the median of the per-pair differences.
Prints a markdown table: median and p90 µs per call.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path
from types import ModuleType

import numpy as np
import torch

from fastspeech import engine as this_engine


class InstantRunner:
    """A CUDA graph runner's contract (static `inputs`, `replay()` returning the same output buffers)
    with no work: outputs shaped like an engine's with a vocoder inside."""

    def __init__(self, spec, device: torch.device, num_mels: int = 80, hop: int = 256):
        B, frames = spec.batch, spec.max_out
        self.inputs = (
            torch.zeros(B, spec.max_in, dtype=torch.long, device=device),
            torch.ones(B, device=device),
        )
        lens = torch.full((B,), frames // 2, dtype=torch.long, device=device)
        self.outputs = (
            torch.zeros(B, frames, num_mels, device=device),
            lens,
            lens.clone(),
            torch.zeros(B, spec.max_in, dtype=torch.long, device=device),
            torch.zeros(B, frames * hop, dtype=torch.int16, device=device),
        )

    def replay(self) -> tuple[torch.Tensor, ...]:
        return self.outputs

    def __call__(self, tokens: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.outputs


def load_engine_module(checkout: str) -> ModuleType:
    """`checkout`/fastspeech/engine.py as its own module (the rest of `fastspeech` is this tree's)."""
    path = Path(checkout) / "fastspeech" / "engine.py"
    if not path.is_file():
        raise SystemExit(f"--against {checkout}: no fastspeech/engine.py there; pass another checkout")
    spec = importlib.util.spec_from_file_location("engine_against", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["engine_against"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


def measure(modules: dict[str, ModuleType], shape: str, batch: int, device, calls: int) -> dict:
    """Per module: median and p90 µs of `engine(ids, to_host=True)`, the modules' calls alternating
    (order flipped every round), after 200 warm-up rounds; with two, the median paired difference."""
    max_in, max_out = (int(n) for n in shape.removeprefix("i").split("_o"))
    rng = np.random.default_rng(0)
    ids = [rng.integers(1, 148, size=max(1, round(0.75 * max_in))).tolist() for _ in range(batch)]
    engines = {}
    for name, mod in modules.items():
        spec = mod.EngineSpec(batch, max_in, max_out, "fp16", "inductor", vocoder="griffin_lim")
        engines[name] = mod.Engine(spec, InstantRunner(spec, device), device)
        engines[name].staged = True  # the CUDA path's code, also on the CPU
    times: dict[str, list[float]] = {name: [] for name in engines}
    order = list(engines)
    for i in range(calls + 200):
        for name in order if i % 2 else order[::-1]:
            t0 = time.perf_counter()
            engines[name](ids, to_host=True)
            if i >= 200:
                times[name].append(time.perf_counter() - t0)
    row = {"shape": shape}
    for name, t in times.items():
        row[name] = {"median_us": 1e6 * float(np.median(t)), "p90_us": 1e6 * float(np.percentile(t, 90))}
    if len(times) == 2:
        a, b = (np.asarray(t) for t in times.values())
        row["paired_diff_us"] = 1e6 * float(np.median(a - b))
    return row


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default="i32_o256,i128_o1024", help="engine shapes i<max_in>_o<max_out>")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--calls", type=int, default=3000)
    p.add_argument("--device", default="cpu", help="cpu, or cuda (pinned staging and asynchronous copies)")
    p.add_argument("--against", default=None, help="another checkout whose engine.py to time alongside")
    args = p.parse_args(argv)
    modules = {"against": load_engine_module(args.against)} if args.against else {}
    modules["this tree"] = this_engine
    device = torch.device(args.device)
    print(f"\n{args.device}, torch {torch.__version__}, batch {args.batch}, {args.calls} calls\n")
    head = " | ".join(f"{name}: median µs | p90 µs" for name in modules)
    extra = " | against - this tree, µs (paired median)" if args.against else ""
    print(f"| engine | {head}{extra} |\n|---" + "|---" * (2 * len(modules) + bool(extra)) + "|")
    rows = []
    for shape in args.shapes.split(","):
        row = measure(modules, shape, args.batch, device, args.calls)
        rows.append(row)
        cells = " | ".join(f"{row[n]['median_us']:.1f} | {row[n]['p90_us']:.1f}" for n in modules)
        diff = f" | {row['paired_diff_us']:.1f}" if args.against else ""
        print(f"| {shape} | {cells}{diff} |")
    return rows


if __name__ == "__main__":
    main()
