"""Probe: why is an engine's batch-1 call slower once other engines exist in the process?

Run 83 (docs/kernels_history.md, "Runs 78-86"): the same i128_o1024 engine took 0.450 ms a call when timed
first and 0.470-0.487 ms when timed after two more engines were built. This probe times one engine
(A) alone, after more engines are built, and after they are freed, and splits each call:
- `wall`: the call and a synchronize, as `benchmarks.latency` times it;
- `gpu`: CUDA events around the call (the device's time from the first copy to the graph's end);
- `host`: how long the call takes to return, before any synchronize (its Python and launches).

Result (runs 85-86, H200; docs/kernels_history.md "Runs 78-86"): the drift is in the device time, with
the SM clock steady at 1980 MHz. It grew with the engines built in run 85 (438 -> 475 µs; 462
after freeing them). In run 86 it moved with the host's part of a call (38-116 µs between blocks),
which the device waits on: 445 µs first, 467-504 later, 477 after 30 s idle. Run 93 (`--kernels`,
H200): the kernels took 429-434 µs (112) in every state while the replay's span moved 411-537 µs
with the host's part (58-246 µs): the device waits on a host whose speed varies.

With `--kernels` each line also has the graph's replay alone (`replay_gpu`: CUDA events around
`graph.replay()`, the inputs as they are) and the profiler's kernel time and count per call, to tell
slower kernels from gaps between them.

Run on a CUDA GPU: python -m benchmarks.probe_engines_alive [--calls 500] [--idle 30] [--kernels]
"""

from __future__ import annotations

import argparse
import gc
import statistics
import subprocess
import tempfile
import time
from functools import partial
from pathlib import Path

import torch

from benchmarks.kernels.common import environment, kernel_profile
from benchmarks.latency import calibrated_model, sample_tokens
from fastspeech.engine import EngineSpec, load_or_build


def split(fn, calls: int, gap_s: float = 0.0) -> dict[str, float]:
    """Median wall, GPU and host time of one call, in µs (`gap_s` of idle host before each call)."""
    for _ in range(20):
        fn()
    torch.cuda.synchronize()
    wall, gpu, host = [], [], []
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    for _ in range(calls):
        if gap_s:
            time.sleep(gap_s)
        t0 = time.perf_counter()
        start.record()
        fn()
        end.record()
        t1 = time.perf_counter()
        torch.cuda.synchronize()
        t2 = time.perf_counter()
        wall.append((t2 - t0) * 1e6)
        host.append((t1 - t0) * 1e6)
        gpu.append(start.elapsed_time(end) * 1e3)
    return {k: round(statistics.median(v), 1) for k, v in (("wall", wall), ("gpu", gpu), ("host", host))}


def gpu_state() -> str:
    """SM clock, temperature and power now (nvidia-smi), to tell clock drift from anything else."""
    query = "--query-gpu=clocks.sm,temperature.gpu,power.draw"
    done = subprocess.run(
        ["nvidia-smi", query, "--format=csv,noheader"], capture_output=True, text=True, check=False
    )
    return done.stdout.strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    parser.add_argument("--idle", type=float, default=30.0, help="seconds the GPU idles before a re-measure")
    parser.add_argument(
        "--kernels", action="store_true", help="also the graph's replay alone and its kernels' profiled time"
    )
    args = parser.parse_args()
    print(environment())
    dev = torch.device("cuda")
    ids = sample_tokens(128)
    model = calibrated_model(ids, target_frames=900, device=dev).half()
    tokens, alpha = torch.tensor([ids], device=dev), torch.ones(1, device=dev)
    with tempfile.TemporaryDirectory() as folder, torch.inference_mode():

        def build(name: str, max_in: int, max_out: int):
            torch._dynamo.reset()
            spec = EngineSpec(1, max_in, max_out, "fp16", "inductor")
            return load_or_build(model, spec, Path(folder) / name, dev, {}, force_build=True)

        a = build("a", 128, 1024)
        run_a = partial(a.runner, tokens, alpha)

        def report(label: str, fn=run_a) -> None:
            parts = split(fn, args.calls)
            if args.kernels and fn is run_a:  # the graph alone (inputs as they are) and its kernels
                profiled = kernel_profile(run_a, calls=50)
                parts |= {
                    "replay_gpu": split(a.runner.replay, args.calls)["gpu"],
                    "kernel_us": round(1e3 * profiled["kernel_ms"], 1),
                    "kernels": round(profiled["kernels"], 1),
                }
            print(f"{label}:", parts, gpu_state(), flush=True)

        report("A alone")
        report("A alone again")
        others = [build("b", 128, 1024)]
        report("A after building B (same shape)")
        others.append(build("c", 32, 256))
        report("A after building C (i32_o256)")
        others += [build(f"d{i}", 64, 512) for i in range(2)]
        report("A with 4 more engines")
        time.sleep(args.idle)
        report(f"A with 4 more engines, after {args.idle} s idle")
        for _ in range(20 * args.calls):
            run_a()
        report("A with 4 more engines, after 20x its calls")
        report("B (built second)", partial(others[0].runner, tokens, alpha))
        del others
        gc.collect()
        torch.cuda.empty_cache()
        report("A after freeing them")
        gc.freeze()
        report("A after gc.freeze()")
        time.sleep(args.idle)
        report(f"A after freeing them, after {args.idle} s idle")


if __name__ == "__main__":
    main()
