"""The multi-engine router against the single largest engine: throughput, padding, GPU memory.

    python -m benchmarks.bench_router                                  # GPU: DLE model, fp16, Inductor
    python -m benchmarks.bench_router --model tiny --n 50 --batch 1,4  # CPU smoke check (eager)

Texts: `--n` sentences from the seeded English grammar of `scripts/make_corpus.py`, drawn so that
their lengths in *cleaned* characters (what the model reads: one token each, numbers and
abbreviations spelled out) follow 10 + 170 * Beta(2.2, 2.0): mean ~99, quartiles ~70 / ~100 / ~130,
like a read-speech corpus (LJSpeech's transcripts average ~100 characters, 17 words). About a quarter
are longer than the largest engine (128) and are split, in both configurations alike.

Every configuration goes through `fastspeech.router.Router` (same splitting and joining); "single" is a
set of one engine (i128_o1024), the others the sets named by `--engine-sets` (`conf/engine_set/`:
`default`, the issue's four engines; `speech_rate`, output sizes of 6 frames per input token, near
real speech, plus i128_o1024 for slow speech). Engines come from `pipeline.open_engine`, exactly as
`run.py engine_set=NAME` opens them: one copy of the weights, one CUDA graph memory pool and stream per
lane (`engine_set.streams`; `default:streams=1` is the default set on one lane).

Measured, per batch size B (every engine of a run has batch B):
- throughput: audio seconds produced per wall second, all texts through the router in one call
  (padding, engine calls with the configured vocoder inside, copies to the host, joining), after one warm-up call per engine;
  the median of `--repeat` such runs, in rounds that take every configuration in turn (one run is
  ~1 s on the GPU, and consecutive runs of one configuration varied by up to 2x, runs 88-89); the
  speed-up is the median over rounds of the single engine's wall time over the set's;
- padded fraction: the share of computed token + frame slots that held no real token or frame
  (empty batch rows, padding, and the whole row of an output that overflowed and ran again);
- engine latency: the median time of one engine call (padding, replay, copies out; the router keeps
  calls in flight, so a call counts from the previous call's results when it was queued behind
  that call), per engine, and of the replay alone (the device side), and their difference
  (`host_overhead_us`, the host's share of a call; `benchmarks/bench_engine_call.py` measures it
  alone); and the throughput the set would reach if nothing but engine calls took time ("engines only");
- GPU memory after building (`torch.cuda.memory_reserved` after `empty_cache`: weights, CUDA graph
  pools, static buffers, cuBLAS workspaces) for the largest engine alone and for each whole set,
  and after each engine of a set; peak allocated too.

Without `--checkpoint` the weights are random and the duration head's bias is calibrated on the
texts (`--frames-per-token`, default 4.9: the demo voice's measured rate) so the length regulator
and the output sizes see speech-like work. Prints a markdown table last; writes `--out` (JSON).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import platform
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from benchmarks.latency import calibrate_durations
from fastspeech import pipeline
from fastspeech.router import HOP_S, Router
from fastspeech.text import text_to_ids

log = logging.getLogger("bench_router")
GOAL_SPEEDUP_B1 = 2.0
GOAL_MEMORY_RATIO = 1.3


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="dle", help="conf/model/<name>.yaml (tiny for a CPU smoke check)")
    p.add_argument("--checkpoint", default=None, help="trained weights; default: random with --duration-bias")
    p.add_argument(
        "--frames-per-token",
        type=float,
        default=4.9,
        help="speaking rate the random weights are calibrated to",
    )
    p.add_argument(
        "--engine-sets",
        default="default,speech_rate",
        help="conf/engine_set names to compare; NAME:KEY=VALUE sets one of its keys (default:streams=1)",
    )
    p.add_argument("--precision", default="fp16", help="fp16 | bf16 | fp32 (the CPU always runs fp32)")
    p.add_argument("--backend", default=None, help="inductor (GPU default) | eager (CPU default) | tensorrt")
    p.add_argument(
        "--compile-mode",
        default="default",
        help="torch.compile mode for Inductor engines "
        "(max-autotune-no-cudagraphs: ~4 min per engine, no faster at B=1 on our H100)",
    )
    p.add_argument("--batch", default="1,8", help="comma-separated engine batch sizes")
    p.add_argument("--n", type=int, default=1000, help="number of sentences")
    p.add_argument(
        "--repeat", type=int, default=5, help="runs of all texts per configuration; the median counts"
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--engine-dir", default="engines/bench_router")
    p.add_argument("--out", default="results/bench_router.json")
    p.add_argument(
        "--two-phase-mib",
        type=float,
        default=None,
        help="set every engine's HostIO.two_phase_bytes (MiB; default: the engine's own rule)",
    )
    return p.parse_args(argv)


# ---------------------------------------------------------------------------------------------
# Texts


def sentences(n: int, seed: int) -> list[str]:
    """`n` sentences whose cleaned lengths follow 10 + 170 * Beta(2.2, 2.0) (see the module docstring)."""
    sys.path.insert(0, str(ROOT / "scripts"))
    from make_corpus import SentenceGenerator  # the demo corpus's grammar: statements, numbers, money...

    from fastspeech.text import clean_text

    gen, rng = SentenceGenerator(seed), np.random.default_rng(seed)
    by_length: dict[int, list[str]] = {}
    for _ in range(max(6 * n, 3000)):  # a pool to draw from, raw targets spread over 10..180
        text = gen.sentence(int(rng.integers(8, 170)))
        length = len(clean_text(text))
        if 10 <= length <= 180:
            by_length.setdefault(length, []).append(text)
    lengths = np.array(sorted(by_length))
    out = []
    for target in 10 + 170 * rng.beta(2.2, 2.0, size=n):
        length = int(lengths[np.abs(lengths - target).argmin()])  # nearest length the pool has
        pool = by_length[length]
        out.append(pool.pop(int(rng.integers(len(pool)))) if len(pool) > 1 else pool[0])
    return out


def length_summary(texts: list[str], ids: list[list[int]]) -> dict[str, Any]:
    chars, tokens = np.array([len(t) for t in texts]), np.array([len(i) for i in ids])
    return {
        "raw_chars": {"mean": float(chars.mean()), "min": int(chars.min()), "max": int(chars.max())},
        "tokens": {
            "mean": float(tokens.mean()),
            "p10": float(np.percentile(tokens, 10)),
            "p50": float(np.percentile(tokens, 50)),
            "p90": float(np.percentile(tokens, 90)),
            "min": int(tokens.min()),
            "max": int(tokens.max()),
        },
        "tokens_by_engine_input": {
            f"<={hi}": float(((tokens > lo) & (tokens <= hi)).mean())
            for lo, hi in ((0, 32), (32, 64), (64, 96), (96, 128))
        }
        | {">128 (split)": float((tokens > 128).mean())},
    }


# ---------------------------------------------------------------------------------------------
# Measuring


def gpu_memory(device: torch.device) -> dict[str, float] | None:
    """What stays on the GPU now (after freeing cached blocks) and the peak since the last reset, MiB."""
    if device.type != "cuda":
        return None
    torch.cuda.synchronize()
    gc.collect()
    torch.cuda.empty_cache()
    by_stream: dict[str, float] = defaultdict(float)  # reserved segments by stream and graph pool
    for seg in torch.cuda.memory_snapshot():
        by_stream[f"stream {seg['stream']:#x} pool {seg['segment_pool_id']}"] += seg["total_size"] / 2**20
    return {
        "reserved_mib": torch.cuda.memory_reserved() / 2**20,
        "allocated_mib": torch.cuda.memory_allocated() / 2**20,
        "peak_allocated_mib": torch.cuda.max_memory_allocated() / 2**20,
        "reserved_by_stream_mib": dict(by_stream),
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def warm_up(router: Router, alpha: float) -> None:
    """One full call per engine."""
    for engine in router.engines:
        engine([[1] * engine.spec.max_in] * engine.spec.batch, alpha)


def run_once(router: Router, texts: list[str], ids: list[list[int]], alpha: float, device) -> tuple:
    """All texts through `router` once -> (wall seconds, routed texts, stats)."""
    gc.collect()
    sync(device)
    t0 = time.perf_counter()
    routed, stats = router(texts, ids, alpha)
    sync(device)
    return time.perf_counter() - t0, routed, stats


def summarize(router: Router, runs: list[tuple], device) -> dict[str, Any]:
    """The figures of the median run (by wall time) of `runs` (`run_once` results)."""
    walls = [r[0] for r in runs]
    wall, routed, stats = sorted(runs, key=lambda r: r[0])[len(runs) // 2]
    audio_s = sum(r.frames for r in routed) * HOP_S
    engine_s = sum(c["latency_s"] for c in stats.calls)
    latencies: dict[str, list[float]] = {}
    for c in stats.calls:
        latencies.setdefault(c["engine"], []).append(c["latency_s"])
    engine_ms = {k: 1e3 * float(np.median(v)) for k, v in latencies.items()}
    replay = {e.spec.name: replay_ms(e, device) for e in router.engines}
    return {
        "wall_s": wall,
        "wall_s_all_runs": walls,
        "engine_s": engine_s,
        "audio_s": audio_s,
        "throughput": audio_s / wall,  # audio seconds per second
        "throughput_engines_only": audio_s / engine_s,
        "engine_latency_ms": engine_ms,
        "replay_latency_ms": replay,
        # per call, over its replay: the host's share (issue 17: <= 50 µs; at B=1 the router's calls
        # and the replay's padded batch are alike; benchmarks/bench_engine_call.py isolates it)
        "host_overhead_us": {k: 1e3 * (v - replay[k]) for k, v in engine_ms.items() if k in replay},
        "padded_fraction": stats.padded_fraction,
        "padded_fraction_in": stats.padded_fraction_in,
        "padded_fraction_out": stats.padded_fraction_out,
        "calls": stats.engine_calls(),
        "reroutes": stats.reroutes,
        "splits": stats.splits,
        "split_texts": sum(len(r.pieces) > 1 for r in routed),
        "frames_per_token": sum(r.frames for r in routed) / sum(len(r.durations) for r in routed),
        "frames": [r.frames for r in routed],
    }


def replay_ms(engine, device, calls: int = 50) -> float:
    """Median time of the runner alone on a padded batch (no padding, no copies out): the device side."""
    tokens, alphas = engine.pad([[1] * engine.spec.max_in] * engine.spec.batch)
    times = []
    for _ in range(calls):
        sync(device)
        t0 = time.perf_counter()
        engine.run(tokens, alphas)
        sync(device)
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times))


def open_set(cfg, model, device, largest_only: bool = False) -> tuple[list, list[dict[str, Any]]]:
    """The engines of `cfg.engine_set` on the lanes and in the order `pipeline.open_engine_set` opens
    them (`engine_lanes`: largest first) -> (engines, memory after each)."""
    placed = pipeline.engine_lanes(cfg, device)
    engines, memory = [], []
    for engine_cfg, _, lane in placed[:1] if largest_only else placed:
        engines.append(pipeline.open_engine(cfg, model, device, engine_cfg, lane=lane))
        memory.append({"engine": engine_cfg.name, **(gpu_memory(device) or {})})
    return engines, memory


def run_batch(args, device, backend, batch, model, texts, ids) -> dict[str, Any]:
    """Each configuration (the largest engine alone, then each set) built from scratch for its memory
    figure and freed; then all of them opened again (from their engine files) and timed in `--repeat`
    interleaved rounds, all texts through each configuration per round. Consecutive runs of one
    configuration drifted by up to 2x in wall time on our GPU hosts (runs 88-89), so the speed-up is
    the median over rounds of the single engine's wall time over the set's in the same round."""
    names = ["single"] + [s for s in args.engine_sets.split(",") if s]  # "": the single engine only
    cfgs = {
        name: compose(args, device, backend, batch, "default" if name == "single" else name) for name in names
    }
    built: dict[str, dict[str, Any]] = {}
    for name, cfg in cfgs.items():
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        t0 = time.perf_counter()
        engines, memory = open_set(cfg, model, device, largest_only=name == "single")
        built[name] = {
            "engines": [e.spec.name for e in engines],
            "build_or_load_s": time.perf_counter() - t0,
            "memory": memory[-1] if device.type == "cuda" else None,
            "memory_after_each_engine": memory if device.type == "cuda" else None,
        }
        del engines
        gpu_memory(device)  # free this configuration's engines (and graph pool) before the next
    routers = {}
    for name, cfg in cfgs.items():
        engines, _ = open_set(cfg, model, device, largest_only=name == "single")
        if args.two_phase_mib is not None:  # the copy rule under test (docs/performance.md)
            for e in engines:
                e.io.two_phase_bytes = int(args.two_phase_mib * 2**20)
        routers[name] = Router(engines, progress=False)
        warm_up(routers[name], args.alpha)
    runs: dict[str, list[tuple]] = {name: [] for name in names}
    for _ in range(args.repeat):
        for name, router in routers.items():
            runs[name].append(run_once(router, texts, ids, args.alpha, device))
    result: dict[str, Any] = {"single": None, "sets": {}}
    frames = {}
    for name, router in routers.items():
        m = summarize(router, runs[name], device)
        frames[name] = m.pop("frames")
        m.update(built[name])
        if name == "single":
            result["single"] = m
            continue
        single = result["single"]
        paired = [s[0] / r[0] for s, r in zip(runs["single"], runs[name])]  # same round, same host state
        m["speedup"] = float(np.median(paired))
        m["speedup_each_round"] = paired
        m["speedup_engines_only"] = m["throughput_engines_only"] / single["throughput_engines_only"]
        m["texts_with_other_frame_counts"] = sum(x != y for x, y in zip(frames["single"], frames[name]))
        if m["memory"]:
            m["memory_ratio"] = m["memory"]["reserved_mib"] / single["memory"]["reserved_mib"]
        result["sets"][name] = m
    del routers
    gpu_memory(device)
    return result


# ---------------------------------------------------------------------------------------------


def compose(args: argparse.Namespace, device: torch.device, backend: str, batch: int, engine_set: str):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    overrides = [
        f"model={args.model}",
        f"precision={args.precision}",
        f"backend={backend}",
        f"backend.inductor.mode={args.compile_mode}",
        f"batch_size={batch}",
        f"engine_set={engine_set.partition(':')[0]}",
        f"engine_dir={args.engine_dir}",
        f"device={device}",
        f"seed={args.seed}",
    ]
    overrides.append(f"checkpoint={args.checkpoint or 'random'}")
    if ":" in engine_set:  # default:streams=1 -> engine_set=default engine_set.streams=1
        overrides.append(f"engine_set.{engine_set.partition(':')[2]}")
    with initialize_config_dir(config_dir=str(pipeline.CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def calibrate(model, ids: list[list[int]], frames_per_token: float) -> None:
    """Set the duration head so the first 64 texts average `frames_per_token` (random weights)."""
    sample = [one[:128] for one in ids[:64]]
    tokens = torch.zeros(len(sample), 128, dtype=torch.long)
    for i, one in enumerate(sample):
        tokens[i, : len(one)] = torch.tensor(one)
    n_tokens = sum(map(len, sample))
    total = calibrate_durations(model, tokens, frames_per_token * n_tokens)
    log.info(
        "random weights: duration bias calibrated to %.2f frames per token (got %.2f)",
        frames_per_token,
        total / n_tokens,
    )


def short(engine_name: str) -> str:
    """fastspeech.fp16.b1.i32.o256.inductor -> i32_o256"""
    return "_".join(engine_name.split(".")[3:5])


def size(engine_name: str) -> tuple[int, int]:
    return tuple(int(part[1:]) for part in engine_name.split(".")[3:5])


def markdown(results: dict[str, Any]) -> str:
    header = (
        "| B | engines | audio s / s | speedup | engines only | padded (in / out) | calls | reroutes "
        "| split texts | GPU MiB held (peak alloc.) | median ms per call (replay alone) |"
    )
    rows = [header, "|---|---|---|---|---|---|---|---|---|---|---|"]
    for batch, r in results["batches"].items():
        for name, m in [("i128_o1024 alone", r["single"])] + list(r["sets"].items()):
            mem = m["memory"]
            mem_s = f"{mem['reserved_mib']:.0f} ({mem['peak_allocated_mib']:.0f})" if mem else "n/a"
            if "memory_ratio" in m:
                mem_s += f" = {m['memory_ratio']:.2f}x"
            speedup = f"**{m['speedup']:.2f}x**" if "speedup" in m else "1.00x"
            only = f"{m['speedup_engines_only']:.2f}x" if "speedup" in m else "1.00x"
            lat = ", ".join(
                f"{short(k)} {v:.2f} ({m['replay_latency_ms'][k]:.2f})"
                for k, v in sorted(m["engine_latency_ms"].items(), key=lambda kv: size(kv[0]))
            )
            rows.append(
                f"| {batch} | {name} | {m['throughput']:.1f} | {speedup} | {only} | "
                f"{100 * m['padded_fraction']:.0f}% ({100 * m['padded_fraction_in']:.0f}% / "
                f"{100 * m['padded_fraction_out']:.0f}%) | {sum(m['calls'].values())} | {m['reroutes']} | "
                f"{m['split_texts']} | {mem_s} | {lat} |"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("fastspeech.router").setLevel(logging.WARNING)  # one line per split text otherwise
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backend = args.backend or ("inductor" if device.type == "cuda" else "eager")
    batches = [int(b) for b in args.batch.split(",")]

    texts = sentences(args.n, args.seed)
    ids = [text_to_ids(t) for t in texts]
    model = pipeline.load_model(compose(args, device, backend, batches[0], "default"))
    if not args.checkpoint:
        calibrate(model, ids, args.frames_per_token)

    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "args": vars(args),
        "backend": backend,
        "precision": pipeline.resolve_precision(args.precision, device),
        "texts": length_summary(texts, ids),
        "batches": {},
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    for batch in batches:
        log.info(
            "B=%d: building/loading engines, then %d texts through each configuration", batch, len(texts)
        )
        results["batches"][batch] = run_batch(args, device, backend, batch, model, texts, ids)
        out.write_text(json.dumps(results, indent=2))  # a run cut short keeps what it measured
    b1 = results["batches"].get(1)
    if b1:
        best = max(m["speedup"] for m in b1["sets"].values())
        results["goal_speedup_b1"] = {"goal": GOAL_SPEEDUP_B1, "got": best, "met": best >= GOAL_SPEEDUP_B1}
    ratios = [
        m["memory_ratio"]
        for r in results["batches"].values()
        for m in r["sets"].values()
        if "memory_ratio" in m
    ]
    if ratios:
        results["goal_memory_ratio"] = {
            "goal": GOAL_MEMORY_RATIO,
            "got": max(ratios),
            "met": max(ratios) <= GOAL_MEMORY_RATIO,
        }
    out.write_text(json.dumps(results, indent=2))
    t = results["texts"]
    weights = (
        f"from {args.checkpoint}" if args.checkpoint else f"random ({args.frames_per_token} frames/token)"
    )
    print(
        f"\n{args.n} texts, cleaned length {t['tokens']['min']}-{t['tokens']['max']} tokens (mean "
        f"{t['tokens']['mean']:.0f}); {100 * t['tokens_by_engine_input']['>128 (split)']:.0f}% longer than 128 "
        f"(split); {results['device']}, {backend}, {results['precision']}, weights {weights}"
    )
    for batch, r in results["batches"].items():
        for name, m in r["sets"].items():
            mem = f"; memory set / largest alone = {m['memory_ratio']:.2f}x" if "memory_ratio" in m else ""
            print(
                f"B={batch} {name}: {m['frames_per_token']:.1f} frames per token; texts whose frame count "
                f"differs from the single engine's: {m['texts_with_other_frame_counts']}{mem}"
            )
    for key, goal in (("goal_speedup_b1", "throughput at B=1"), ("goal_memory_ratio", "memory")):
        if key in results:
            g = results[key]
            print(f"goal {goal} {g['goal']}x: got {g['got']:.2f}x, {'met' if g['met'] else 'NOT met'}")
    print(f"JSON: {out}\n")
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
