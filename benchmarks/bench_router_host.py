"""The router's own host time per engine call: `bench_router`'s texts through engines that answer at once.

    python -m benchmarks.bench_router_host                      # 1,000 texts, single engine and `default` set
    python -m benchmarks.bench_router_host --n 200 --repeat 3

Runs anywhere (CPU). The engines are stand-ins of DLE's shapes (i32_o256 ... i128_o1024, batch 1,
Griffin-Lim's wav) that return zero mels and wavs of ~5 frames per token at once, so what is timed
is everything `Router.__call__` does around its engine calls: placing and splitting texts, the
scheduler picking each call, copying each result out of the engine's buffers, joining pieces. On the
GPU that time adds to every call (`bench_router`'s wall time against its engine time). Prints ms per
call (median of `--repeat` runs) and the top of a cProfile of one run with `--profile`.
"""

from __future__ import annotations

import argparse
import cProfile
import pstats
import time

import numpy as np
import torch

from benchmarks.bench_router import sentences
from fastspeech.engine import EngineOutput, EngineSpec
from fastspeech.router import Router
from fastspeech.text import text_to_ids

SETS = {"single": [(128, 1024)], "default": [(32, 256), (64, 512), (96, 768), (128, 1024)]}
FRAMES_PER_TOKEN = 5


class InstantEngine:
    """What `Router` uses of an `Engine` (spec, device, a host call), answering at once from host
    buffers it reuses, as `Engine`'s are: `frames_per_token` frames a token (past `max_out`: an
    overflow, as a real engine reports it), after `seconds` of sleep (a GPU's time, the GIL let go)."""

    def __init__(
        self,
        max_in: int,
        max_out: int,
        batch: int = 1,
        frames_per_token: float = FRAMES_PER_TOKEN,
        seconds=0.0,
    ):
        self.spec = EngineSpec(batch, max_in, max_out, "fp16", "inductor", vocoder="griffin_lim")
        self.device = torch.device("cpu")
        self.fpt, self.seconds = frames_per_token, seconds
        self.mel = torch.zeros(batch, max_out, 80)
        self.wav = torch.zeros(batch, max_out * 256, dtype=torch.int16)
        self.durations = torch.full((batch, max_in), round(frames_per_token))

    def __call__(self, ids, alpha, to_host: bool = False) -> EngineOutput:
        if self.seconds:
            time.sleep(self.seconds)
        frames = torch.tensor([round(self.fpt * len(one)) for one in ids])
        n = len(ids)
        lens = frames.clamp(max=self.spec.max_out)
        return EngineOutput(self.mel[:n], lens, frames, self.durations[:n], self.wav[:n])


def measure(name: str, texts: list[str], ids: list[list[int]], repeat: int) -> dict:
    router = Router([InstantEngine(i, o) for i, o in SETS[name]], progress=False)
    runs = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        routed, stats = router(texts, ids, 1.0)
        runs.append(time.perf_counter() - t0)
    assert len(routed) == len(texts)
    calls = len(stats.calls)
    return {
        "set": name,
        "calls": calls,
        "ms_per_call": 1e3 * float(np.median(runs)) / calls,
        "router": router,
    }


def main(argv: list[str] | None = None) -> list[dict]:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n", type=int, default=1000, help="texts (bench_router's generator)")
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--sets", default="single,default", help="a comma list of: " + ", ".join(SETS))
    p.add_argument("--profile", action="store_true", help="cProfile of one run of each set")
    args = p.parse_args(argv)
    texts = sentences(args.n, 0)
    ids = [text_to_ids(t) for t in texts]
    rows = [measure(name, texts, ids, args.repeat) for name in args.sets.split(",")]
    print(f"\n{args.n} texts, torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| engines | calls | router host ms per call |\n|---|---|---|")
    for r in rows:
        print(f"| {r['set']} | {r['calls']} | {r['ms_per_call']:.3f} |")
    if args.profile:
        for r in rows:
            profile = cProfile.Profile()
            profile.runcall(r["router"], texts, ids, 1.0)
            print(f"\n{r['set']}:")
            pstats.Stats(profile).sort_stats("cumulative").print_stats(12)
    return [{k: v for k, v in r.items() if k != "router"} for r in rows]


if __name__ == "__main__":
    main()
