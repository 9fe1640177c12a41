"""Host overhead of an engine call: `Engine.__call__(..., to_host=True)` against its replay alone.

    python -m benchmarks.bench_engine_call                                   # GPU: DLE-size, fp16, default set
    python -m benchmarks.bench_engine_call --engines i32_o256,i128_o1024 --calls 300

Issue 17's goal: a call costs at most 50 µs more than its replay. Per engine of `--engine-set` (or
`--engines`), at batch `--batch` (1), with one text of `--fill` x max_in random token ids (the
duration head calibrated to `--frames-per-token`, so the output is speech-length, not max_out):

- replay: `engine.run` on tensors padded beforehand (the runner's input copies on the device and the
  graph replay, then a synchronize): `replay_ms` of `bench_router`, the device side;
- call: `engine(ids, alpha, to_host=True)`, which returns host results (staging, replay, copies,
  one wait), with the output copy rule as configured (`two_phase_bytes`, `HostIO`), and with each
  rule forced (two-phase: per-row copies up to mel_lens; one phase: whole rows);
- unstaged: the call as it was before `HostIO` (pad with a tensor per row and pinned copies, run,
  one pinned copy per whole output, one wait), for a before/after on the same machine.

host_overhead_us = median call - median replay, per variant; host_overhead_paired_us = the median
over rounds of (call - that round's replay), the table's figure. The variants run interleaved, one
call each per round in a shuffled order, so drift and order hit all alike; `call_again` runs the
configured call a second time, so the table shows the noise beside the figure. Then, with two or more engines, each engine's replay
with the engines taking turns (one replay each per round, as a set serves mixed lengths) against
its replay alone: what switching engines costs the device side; and each engine's replays 1-4 after
one replay of another engine, wall and device (CUDA event) time: whether that cost is one-off and
where it lands. Prints a markdown table; writes `--out` (JSON). CUDA
only (the staged path pins memory and copies into the CUDA graph's own buffers).
"""

from __future__ import annotations

import argparse
import json
import logging
import random
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.bench_router import compose, short
from benchmarks.latency import calibrate_durations
from fastspeech import pipeline
from fastspeech.engine import Engine

log = logging.getLogger("bench_engine_call")
GOAL_US = 50.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="dle", help="conf/model/<name>.yaml")
    p.add_argument("--checkpoint", default=None, help="trained weights; default: random, calibrated")
    p.add_argument("--frames-per-token", type=float, default=4.9)
    p.add_argument("--engine-set", default="default", help="conf/engine_set name")
    p.add_argument(
        "--engines", default=None, help="comma-separated subset of the set, e.g. i32_o256,i128_o1024"
    )
    p.add_argument("--precision", default="fp16")
    p.add_argument("--compile-mode", default="default")
    p.add_argument("--batch", type=int, default=1, help="engine batch (the call holds one text per row)")
    p.add_argument("--fill", type=float, default=0.75, help="tokens per text as a fraction of max_in")
    p.add_argument("--calls", type=int, default=200, help="timed calls per variant and engine")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--engine-dir", default="engines/bench_engine_call")
    p.add_argument("--out", default="results/bench_engine_call.json")
    return p.parse_args(argv)


def unstaged_call(engine: Engine, ids: list[list[int]], alpha: list[float]) -> list[torch.Tensor]:
    """`Engine.__call__(to_host=True)` before `HostIO`, line for line (the 'before' figure)."""
    s, n = engine.spec, len(ids)
    tokens = torch.zeros(s.batch, s.max_in, dtype=torch.long)
    for i, one in enumerate(ids):
        tokens[i, : len(one)] = torch.as_tensor(list(one), dtype=torch.long)
    alphas = torch.ones(s.batch, dtype=torch.float32)
    alphas[:n] = torch.as_tensor(alpha, dtype=torch.float32).expand(n)
    tokens = tokens.pin_memory().to(engine.device, non_blocking=True)
    alphas = alphas.pin_memory().to(engine.device, non_blocking=True)
    outputs = engine.run(tokens, alphas)[:5]
    if s.vocoder == "none":
        outputs = outputs[:4]
    host = [t[:n].to("cpu", non_blocking=True) for t in outputs]
    torch.cuda.current_stream(engine.device).synchronize()
    return host


def measure(engine: Engine, ids: list[list[int]], calls: int) -> dict[str, Any]:
    """Median ms of each variant (interleaved), and each call's host overhead over the replay, µs."""
    alpha = [1.0] * len(ids)
    tokens, alphas = engine.pad(ids, alpha)
    default_rule = engine.io.two_phase_bytes

    def call(rule: int):
        def run():
            engine.io.two_phase_bytes = rule
            engine(ids, alpha, to_host=True)

        return run

    variants = {
        "replay": replay(engine, (tokens, alphas)),
        "call": call(default_rule),
        "call_again": call(default_rule),  # the same path twice: the spread between them is the noise
        "call_two_phase": call(0),
        "call_one_phase": call(1 << 60),
        "unstaged_call": lambda: unstaged_call(engine, ids, alpha),
    }
    times = interleaved(variants, calls, order=random.Random(0))
    engine.io.two_phase_bytes = default_rule
    ms = {k: 1e3 * float(np.median(v)) for k, v in times.items()}
    out = engine(ids, alpha, to_host=True)
    base = np.asarray(times["replay"])
    return {
        "median_ms": ms,
        "p90_ms": {k: 1e3 * float(np.percentile(v, 90)) for k, v in times.items()},
        "host_overhead_us": {k: 1e3 * (v - ms["replay"]) for k, v in ms.items() if k != "replay"},
        # per round: the variant's call minus that round's replay, then the median (drift cancels)
        "host_overhead_paired_us": {
            k: 1e6 * float(np.median(np.asarray(v) - base)) for k, v in times.items() if k != "replay"
        },
        "two_phase_bytes": default_rule,
        "padded_output_bytes": sum(t.nbytes for t in (out.mel, out.wav) if t is not None),
        "tokens": [len(one) for one in ids],
        "frames": out.frames.tolist(),
    }


def replay(engine: Engine, padded: tuple[torch.Tensor, ...]) -> Callable[[], None]:
    """The device side of a call: the graph replay on inputs padded beforehand, then a synchronize."""

    def run() -> None:
        engine.run(*padded)
        torch.cuda.synchronize()

    return run


def interleaved(
    variants: dict[str, Callable[[], Any]], calls: int, order: random.Random | None = None
) -> dict[str, list[float]]:
    """Seconds of each call of each variant, the variants taking turns (one call each per round, after
    20 warm-up rounds), so that drift hits all alike; the device is idle when each call starts. With
    `order`, each round runs the variants in a shuffled order (what runs just before a call shifts
    its time: run 50 measured one path 12 µs apart by its place in the round)."""
    times: dict[str, list[float]] = {name: [] for name in variants}
    names = list(variants)
    for round_ in range(calls + 20):
        if order is not None:
            order.shuffle(names)
        for name in names:
            fn = variants[name]
            torch.cuda.synchronize()
            t0 = time.perf_counter()
            fn()
            dt = time.perf_counter() - t0
            if round_ >= 20:
                times[name].append(dt)
    return times


def taking_turns(engines: dict[str, tuple[Engine, list[list[int]]]], calls: int) -> dict[str, float]:
    """Median ms of each engine's replay when the engines replay in turn (round-robin)."""
    variants = {
        name: replay(engine, engine.pad(ids, [1.0] * len(ids))) for name, (engine, ids) in engines.items()
    }
    return {name: 1e3 * float(np.median(v)) for name, v in interleaved(variants, calls).items()}


def after_switch(
    engines: dict[str, tuple[Engine, list[list[int]]]], calls: int, runs: int = 4
) -> dict[str, dict[str, Any]]:
    """Where the cost of taking turns lands: per engine X (and Y, the set's next engine), `calls` rounds
    of one replay of Y then `runs` replays of X; X's median wall ms (replay + synchronize) and device ms
    (CUDA events around the replay) at each position after the switch. A one-off cost shows in
    position 1 only; a cost that stays shows in every position."""
    names = list(engines)
    padded = {name: engine.pad(ids, [1.0] * len(ids)) for name, (engine, ids) in engines.items()}
    out: dict[str, dict[str, Any]] = {}
    for i, name in enumerate(names):
        other = names[(i + 1) % len(names)]
        engine, other_engine = engines[name][0], engines[other][0]
        wall: list[list[float]] = [[] for _ in range(runs)]
        device: list[list[float]] = [[] for _ in range(runs)]
        events = [
            (torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)) for _ in range(runs)
        ]
        for round_ in range(calls + 5):
            other_engine.run(*padded[other])
            torch.cuda.synchronize()
            for k, (start, end) in enumerate(events):
                t0 = time.perf_counter()
                start.record()
                engine.run(*padded[name])
                end.record()
                torch.cuda.synchronize()
                if round_ >= 5:
                    wall[k].append(1e3 * (time.perf_counter() - t0))
                    device[k].append(start.elapsed_time(end))
        out[name] = {
            "after": other,
            "wall_ms": [float(np.median(w)) for w in wall],
            "device_ms": [float(np.median(d)) for d in device],
        }
    return out


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    if not torch.cuda.is_available():
        raise SystemExit("bench_engine_call measures the CUDA call path: it needs a CUDA GPU")
    device = torch.device("cuda", torch.cuda.current_device())
    opts = SimpleNamespace(
        model=args.model,
        precision=args.precision,
        compile_mode=args.compile_mode,
        engine_dir=args.engine_dir,
        seed=args.seed,
        checkpoint=args.checkpoint,
    )
    cfg = compose(opts, device, "inductor", args.batch, args.engine_set)
    configs = pipeline.engine_set_configs(cfg)
    if args.engines:
        wanted = args.engines.split(",")
        configs = [c for c in configs if f"i{c.max_in}_o{c.max_out}" in wanted]
    model = pipeline.load_model(cfg)
    rng = np.random.default_rng(args.seed)
    if not args.checkpoint:
        sample = torch.as_tensor(rng.integers(1, 148, size=(8, 96)))
        calibrate_durations(model, sample, args.frames_per_token * sample.numel())
    pool = torch.cuda.graph_pool_handle()
    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "args": vars(args),
        "goal_us": GOAL_US,
        "engines": {},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    engines: dict[str, tuple[Engine, list[list[int]]]] = {}
    for engine_cfg in configs:
        engine = pipeline.open_engine(cfg, model, device, engine_cfg, lane=(pool, None))
        s = engine.spec
        length = max(1, round(args.fill * s.max_in))
        ids = [rng.integers(1, 148, size=length).tolist() for _ in range(s.batch)]
        engines[s.name] = (engine, ids)
        log.info("%s: %d calls per variant", s.name, args.calls)
        results["engines"][s.name] = measure(engine, ids, args.calls)
        out.write_text(json.dumps(results, indent=2))
    if len(engines) > 1:
        log.info("the %d engines taking turns: %d replays each", len(engines), args.calls)
        for name, ms in taking_turns(engines, args.calls).items():
            results["engines"][name]["median_ms"]["replay_taking_turns"] = ms
        results["after_switch"] = after_switch(engines, args.calls)
        out.write_text(json.dumps(results, indent=2))
    rows = [
        (
            "| engine | frames | replay ms | call ms | host µs (goal <= 50) | the same call again µs "
            "| two-phase µs | one-phase µs | unstaged µs | replay ms, engines taking turns |"
        ),
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, r in results["engines"].items():
        ms, us = r["median_ms"], r["host_overhead_paired_us"]
        turns = f"{ms['replay_taking_turns']:.3f}" if "replay_taking_turns" in ms else ""
        rows.append(
            f"| {short(name)} | {max(r['frames'])} | {ms['replay']:.3f} | {ms['call']:.3f} | {us['call']:.0f} "
            f"| {us['call_again']:.0f} | {us['call_two_phase']:.0f} | {us['call_one_phase']:.0f} "
            f"| {us['unstaged_call']:.0f} | {turns} |"
        )
    print(
        f"\n{results['device']}, torch {torch.__version__}, {cfg.precision.name}, batch {args.batch}; JSON: {out}\n"
    )
    print("\n".join(rows))
    if "after_switch" in results:
        print(
            "\n| engine | after a replay of | wall ms, replays 1 / 2 / 3 / 4 after it | device ms, 1 / 2 / 3 / 4 |"
        )
        print("|---|---|---|---|")
        for name, r in results["after_switch"].items():
            wall, device = (" / ".join(f"{v:.3f}" for v in r[k]) for k in ("wall_ms", "device_ms"))
            print(f"| {short(name)} | {short(r['after'])} | {wall} | {device} |")
    return results


if __name__ == "__main__":
    main()
