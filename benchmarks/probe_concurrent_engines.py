"""Probe: do two engines' batch-1 calls overlap on the device when each replays on its own stream?

At batch 1 a call is a chain of ~250 small kernels (the model's 112, then Griffin-Lim's), most of
them filling a few of the GPU's SMs, and the router runs its engines' calls one after another on one
stream (they share one CUDA graph memory pool, so they must). This probe builds engines with their
own pools and replays pairs of them `n` times each:
- `one stream`: A, B, A, B... on the current stream (what the router does now);
- `two streams`: A's replays on one stream, B's on another, launched alternately.
It prints the wall time per pair (µs) of each, over interleaved rounds, and checks that the
outputs of concurrent replays equal those of replays alone.

Run on a CUDA GPU: python -m benchmarks.probe_concurrent_engines [--calls 200] [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.kernels.common import environment
from benchmarks.latency import calibrated_model, sample_tokens
from fastspeech.engine import EngineSpec, load_or_build
from fastspeech.vocoder import load_vocoder


def wall_per_pair(pair, streams, calls: int) -> float:
    """µs of wall time per (A, B) replay pair, each engine on its stream (None: the current one)."""
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(calls):
        for runner, stream in zip(pair, streams):
            if stream is None:
                runner.replay()
            else:
                with torch.cuda.stream(stream):
                    runner.replay()
    torch.cuda.synchronize()
    return (time.perf_counter() - t0) * 1e6 / calls


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--n-iter", type=int, default=32, help="Griffin-Lim iterations (0: mel only)")
    args = parser.parse_args()
    print(environment())
    dev = torch.device("cuda")
    ids = sample_tokens(128)
    model = calibrated_model(ids, target_frames=900, device=dev).half()
    vocoder = load_vocoder(None, "griffin_lim", n_iter=args.n_iter) if args.n_iter else None
    with tempfile.TemporaryDirectory() as folder, torch.inference_mode():

        def build(name: str, max_in: int, max_out: int):
            torch._dynamo.reset()
            spec = EngineSpec(1, max_in, max_out, "fp16", "inductor")
            # the backend's default switches (enable_pdl, combo_kernels), as conf/backend/auto.yaml
            engine = load_or_build(model, spec, Path(folder) / name, dev, force_build=True, vocoder=vocoder)
            runner = engine.runner  # a CudaGraphRunner with its own private pool
            n = min(len(ids), max_in)
            runner.inputs[0].zero_()
            runner.inputs[0][0, :n] = torch.tensor(ids[:n], device=dev)
            return runner

        big, big2, small, small2 = (
            build("a", 128, 1024),
            build("b", 128, 1024),
            build("c", 32, 256),
            build("d", 32, 256),
        )
        # outputs alone, then after concurrent replays (each with its own inputs): equal bit for bit
        alone = {}
        for key, r in (("big", big), ("small", small)):
            r.replay()
            torch.cuda.synchronize()
            alone[key] = [t.clone() for t in r.outputs]
        s1, s2 = torch.cuda.Stream(), torch.cuda.Stream()
        wall_per_pair((big, small), (s1, s2), 20)
        same = all(
            torch.equal(a, b)
            for key, r in (("big", big), ("small", small))
            for a, b in zip(alone[key], r.outputs)
        )
        print("outputs after concurrent replays equal those alone:", same, flush=True)

        pairs = {
            "i128_o1024 + i32_o256": (big, small),
            "i128_o1024 + i128_o1024 (two instances)": (big, big2),
            "i32_o256 + i32_o256 (two instances)": (small, small2),
        }
        rows = {name: {"one stream": [], "two streams": []} for name in pairs}
        for name, pair in pairs.items():  # warm-up
            wall_per_pair(pair, (None, None), 20)
            wall_per_pair(pair, (s1, s2), 20)
        for _ in range(args.rounds):
            for name, pair in pairs.items():
                rows[name]["one stream"].append(wall_per_pair(pair, (None, None), args.calls))
                rows[name]["two streams"].append(wall_per_pair(pair, (s1, s2), args.calls))
        alone_us = {}
        for key, r in (("i128_o1024", big), ("i32_o256", small)):
            alone_us[key] = statistics.median(wall_per_pair((r,), (None,), args.calls) for _ in range(3))
        print("one engine alone, µs per replay:", {k: round(v, 1) for k, v in alone_us.items()})
        print("| pair | one stream µs/pair | two streams µs/pair | gain |")
        print("|---|---|---|---|")
        for name, cols in rows.items():
            one, two = statistics.median(cols["one stream"]), statistics.median(cols["two streams"])
            print(f"| {name} | {one:.1f} | {two:.1f} | {one / two:.2f}x |")


if __name__ == "__main__":
    main()
