"""Probe: what fills a batch-1 engine's CUDA graph memory pool?

Each lane of an engine set holds its own graph pool (`pipeline.set_lanes`), and at batch 1 those
pools are most of what a lane costs: 44-84 MiB each (H200, docs/kernels_history.md, "Runs 106-110"). This
probe builds one engine with the allocator's history recorded, then replays the allocation trace
inside the engine's pool: the pool's reserved size, its peak of live bytes, and the largest blocks
live at that peak with the code that allocated them (the first frame in our code or in Inductor's
generated code).

Run on a CUDA GPU: python -m benchmarks.probe_engine_memory [--shape 128,1024] [--n-iter 32] [--top 15]
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import torch

from benchmarks.kernels.common import environment
from benchmarks.latency import calibrated_model, sample_tokens
from fastspeech.engine import EngineSpec, load_or_build
from fastspeech.vocoder import load_vocoder

MiB = 2**20


def where(frames: list[dict]) -> str:
    """The first frame of ours or of Inductor's generated code, else the innermost Python frame."""
    for f in frames:
        name = f.get("filename", "")
        if any(k in name for k in ("/fastspeech/", "/kernels/", "torchinductor")):
            return f"{Path(name).name}:{f.get('line')} {f.get('name')}"
    python = [f for f in frames if f.get("filename", "").endswith(".py")]
    return f"{Path(python[0]['filename']).name}:{python[0].get('line')}" if python else "?"


def pool_trace(
    snapshot: dict, device: int = 0
) -> tuple[float, float, float, list[tuple[int, str]], list[dict]]:
    """-> (pool MiB reserved, MiB live at the end, peak MiB live, [(bytes, where)] live at the peak,
    the frames of the largest block then) over the segments of the graph pools (pool id other than
    (0, 0))."""
    segments = [s for s in snapshot["segments"] if tuple(s["segment_pool_id"]) != (0, 0)]
    trace = snapshot["device_traces"][device]
    # A pool segment's memory may have held other blocks before the pool allocated it (an
    # autotuner's buffer, freed): count only what was allocated after the segment's last allocation.
    since = {e["addr"]: i for i, e in enumerate(trace) if e["action"] == "segment_alloc"}
    ranges = [(s["address"], s["address"] + s["total_size"], since.get(s["address"], -1)) for s in segments]

    def in_pool(addr: int, i: int) -> bool:
        return any(lo <= addr < hi and i > start for lo, hi, start in ranges)

    live: dict[int, tuple[int, str]] = {}
    frames_of: dict[int, list[dict]] = {}
    total = peak = 0
    largest: list[dict] = []  # the frames of the largest block live at the peak
    at_peak: list[tuple[int, str]] = []
    for i, event in enumerate(trace):
        addr = event["addr"]
        if event["action"] == "alloc" and in_pool(addr, i):
            live[addr] = (event["size"], where(event.get("frames", [])))
            frames_of[addr] = event.get("frames", [])
            total += event["size"]
            if total > peak:
                peak, at_peak = total, sorted(live.values(), reverse=True)
                largest = frames_of[max(live, key=lambda a: live[a][0])]
        elif event["action"] == "free_completed" and addr in live:
            total -= live.pop(addr)[0]
    reserved = sum(s["total_size"] for s in segments)
    end = sum(b["size"] for s in segments for b in s["blocks"] if b["state"] == "active_allocated")
    return reserved / MiB, end / MiB, peak / MiB, at_peak, largest


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="128,1024", help="max_in,max_out")
    parser.add_argument("--n-iter", type=int, default=32, help="Griffin-Lim iterations (0: mel only)")
    parser.add_argument("--top", type=int, default=15)
    args = parser.parse_args()
    print(environment())
    dev = torch.device("cuda")
    max_in, max_out = (int(x) for x in args.shape.split(","))
    ids = sample_tokens(max_in)
    model = calibrated_model(ids, target_frames=int(0.9 * max_out), device=dev).half()
    vocoder = load_vocoder(None, "griffin_lim", n_iter=args.n_iter) if args.n_iter else None
    torch.cuda.memory._record_memory_history(stacks="python", max_entries=1_000_000)
    with tempfile.TemporaryDirectory() as folder, torch.inference_mode():
        spec = EngineSpec(1, max_in, max_out, "fp16", "inductor")
        # the backend's default switches (enable_pdl, combo_kernels), as conf/backend/auto.yaml
        engine = load_or_build(model, spec, Path(folder), dev, force_build=True, vocoder=vocoder)
        torch.cuda.synchronize()
        snapshot = torch.cuda.memory._snapshot()
        torch.cuda.memory._record_memory_history(enabled=None)
        reserved, end, peak, at_peak, largest = pool_trace(snapshot, torch.cuda.current_device())
        print(
            f"{spec.name}: graph pool {reserved:.1f} MiB reserved, {end:.1f} MiB live after capture "
            f"(outputs), peak {peak:.1f} MiB live during capture; {len(at_peak)} blocks live at the peak"
        )
        by_site: dict[str, list[int]] = {}
        for size, site in at_peak:
            by_site.setdefault(site, []).append(size)
        rows = sorted(by_site.items(), key=lambda kv: -sum(kv[1]))[: args.top]
        print("| MiB live at the peak | blocks | allocated at |\n|---|---|---|")
        for site, sizes in rows:
            print(f"| {sum(sizes) / MiB:.2f} | {len(sizes)} | {site} |")
        print("the largest block's stack, innermost first:")
        for f in largest[:12]:
            print(f"  {f.get('filename')}:{f.get('line')} {f.get('name')}")
        del engine


if __name__ == "__main__":
    main()
