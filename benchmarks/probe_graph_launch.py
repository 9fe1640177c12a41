"""Probe: how much of a batch-1 engine call is the host submitting the CUDA graph?

Run 93 (docs/kernels_history.md, "Run 93"): an i128_o1024 engine's kernels took 430 µs a call whatever else
was going on, while the span of its `graph.replay()` on the device moved from 411 to 537 µs with the
host's speed. A graph launch is not one push: the driver submits the graph's nodes, and the device
waits where the host lags. This probe captures the engine's compiled function again (the same
kernels, the same inputs) into a graph kept for inspection, counts its nodes by type, and times
launches of it, in interleaved rounds:
- `torch`: `CUDAGraph.replay()`, as engines launch today;
- `exec`: the same graph instantiated by the driver (`cuGraphInstantiateWithFlags`, flags 0) and
  launched with `cuGraphLaunch` (no Python in between);
- `upload`: instantiated with the upload flag and uploaded before the first launch;
- `device`: instantiated for device launch (the whole graph lives on the device), launched from the host.
Each launch is timed by `probe_engines_alive.split`: on the host (until it returns, before any
synchronize), on the device (CUDA events around it) and in wall time (with a synchronize), back to
back and with `--gap-ms` of idle host time before each launch (a server between requests). All
variants' outputs are checked equal. (Run 94 timed with a copy of that function whose host time left
out the two event records around the launch; the host figures below are that code's. Run 98, a smoke
run of this code on an H200 machine, read 27-29 µs back to back: another host and another timer,
not separated.)

Result (run 94, an H100 machine; docs/kernels_history.md "Runs 93-96"): 110 nodes, all kernels; a launch
returns in 5-7 µs (10-15 after an idle gap); the upload flag is refused; the driver's exec spans
0.5-1.7% less than torch's replay, the device-launch instance no less: launching differently does
not lower batch 1.

Run on a CUDA GPU: python -m benchmarks.probe_graph_launch [--calls 400] [--rounds 4] [--gap-ms 2]
"""

from __future__ import annotations

import argparse
import ctypes
import statistics
import tempfile
from collections import Counter
from pathlib import Path

import torch

from benchmarks.kernels.common import environment
from benchmarks.latency import calibrated_model, sample_tokens
from benchmarks.probe_engines_alive import split
from fastspeech.engine import EngineSpec, load_or_build

NODE_TYPES = {0: "kernel", 1: "memcpy", 2: "memset", 3: "host", 4: "child graph", 5: "empty", 6: "event wait",
              7: "event record", 10: "mem alloc", 11: "mem free", 12: "batch mem op", 13: "conditional"}  # fmt: skip
FLAGS = {"exec": 0, "upload": 2, "device": 4}  # CUDA_GRAPH_INSTANTIATE_FLAG_UPLOAD = 2, _DEVICE_LAUNCH = 4

cuda: ctypes.CDLL | None = None  # the driver library, loaded by `main` (importing needs no GPU)


def check(result: int, what: str) -> None:
    if result:
        name = ctypes.c_char_p()
        cuda.cuGetErrorName(result, ctypes.byref(name))
        raise RuntimeError(f"{what}: {name.value.decode() if name.value else result}")


def node_census(graph: int) -> Counter:
    count = ctypes.c_size_t(0)
    check(cuda.cuGraphGetNodes(ctypes.c_void_p(graph), None, ctypes.byref(count)), "cuGraphGetNodes")
    nodes = (ctypes.c_void_p * count.value)()
    check(cuda.cuGraphGetNodes(ctypes.c_void_p(graph), nodes, ctypes.byref(count)), "cuGraphGetNodes")
    kinds: Counter = Counter()
    kind = ctypes.c_int()
    for node in nodes:
        check(cuda.cuGraphNodeGetType(ctypes.c_void_p(node), ctypes.byref(kind)), "cuGraphNodeGetType")
        kinds[NODE_TYPES.get(kind.value, str(kind.value))] += 1
    return kinds


def instantiate(graph: int, flags: int, stream: int) -> ctypes.c_void_p:
    exec_ = ctypes.c_void_p()
    check(
        cuda.cuGraphInstantiateWithFlags(
            ctypes.byref(exec_), ctypes.c_void_p(graph), ctypes.c_ulonglong(flags)
        ),
        f"cuGraphInstantiateWithFlags({flags})",
    )
    if flags & (2 | 4):
        check(cuda.cuGraphUpload(exec_, ctypes.c_void_p(stream)), "cuGraphUpload")
    return exec_


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--gap-ms", type=float, default=2.0)
    parser.add_argument("--shapes", default="128x1024,32x256", help="max_in x max_out, comma-separated")
    args = parser.parse_args()
    global cuda
    cuda = ctypes.CDLL("libcuda.so.1")
    print(environment())
    dev = torch.device("cuda")
    stream = torch.cuda.current_stream().cuda_stream
    ids = sample_tokens(128)
    model = calibrated_model(ids, target_frames=900, device=dev).half()
    with tempfile.TemporaryDirectory() as folder, torch.inference_mode():
        for shape in args.shapes.split(","):
            max_in, max_out = map(int, shape.split("x"))
            torch._dynamo.reset()
            spec = EngineSpec(1, max_in, max_out, "fp16", "inductor")
            engine = load_or_build(model, spec, Path(folder) / shape, dev, {}, force_build=True)
            runner = engine.runner
            tokens = torch.tensor([ids[:max_in]], device=dev)
            runner.inputs[0].copy_(tokens)
            runner.inputs[1].fill_(1.0)
            kept = torch.cuda.CUDAGraph(keep_graph=True)
            with torch.cuda.graph(kept):
                outputs = runner.fn(*runner.inputs)
            kept.instantiate()
            raw = kept.raw_cuda_graph()
            print(f"{spec.name}: nodes {dict(node_census(raw))}", flush=True)
            variants = {"torch": kept.replay}
            for name, flags in FLAGS.items():
                try:
                    exec_ = instantiate(raw, flags, stream)
                except RuntimeError as exc:
                    print(f"  {name}: not instantiable ({exc})")
                    continue
                variants[name] = lambda e=exec_: check(
                    cuda.cuGraphLaunch(e, ctypes.c_void_p(stream)), "launch"
                )
            want = None
            for name, fn in variants.items():  # every way of launching gives the same outputs
                for t in outputs:
                    t.zero_()
                fn()
                torch.cuda.synchronize()
                got = [t.clone() for t in outputs]
                if want is None:
                    want = got
                same = all(torch.equal(a, b) for a, b in zip(want, got))
                print(f"  {name}: outputs {'equal' if same else 'DIFFER'} to torch's", flush=True)
            results: dict[tuple[str, float], list[dict]] = {}
            for r in range(args.rounds):
                for gap in (0.0, args.gap_ms / 1e3):
                    for name, fn in variants.items():
                        results.setdefault((name, gap), []).append(split(fn, args.calls, gap))
            print(
                f"  {'variant':8} {'gap ms':>6}  host µs / gpu µs / wall µs (median of rounds; each round's median)"
            )
            for (name, gap), rows in results.items():
                med = {k: statistics.median(row[k] for row in rows) for k in ("host", "gpu", "wall")}
                each = " ".join(f"{row['gpu']:.0f}" for row in rows)
                print(f"  {name:8} {gap * 1e3:6.1f}  {med['host']:7.1f} / {med['gpu']:7.1f} / {med['wall']:7.1f}   gpu by round: {each}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
