"""The multi-engine router against the single largest engine: throughput, padding, GPU memory.

    python -m benchmarks.bench_router                                  # GPU: DLE model, fp16, Inductor
    python -m benchmarks.bench_router --model tiny --n 50 --batch 1,4  # CPU smoke check (eager)

Texts: `--n` sentences from the seeded English grammar of `scripts/make_corpus.py`, drawn so that
their lengths in *cleaned* characters (what the model reads: one token each, numbers and
abbreviations spelled out) follow 10 + 170 * Beta(2.2, 2.0): mean ~99, quartiles ~70 / ~100 / ~130,
like a read-speech corpus (LJSpeech's transcripts average ~100 characters, 17 words). About a quarter
are longer than the largest engine (128) and are split, in both configurations alike.

Both configurations go through `fastspeech.router.Router` (same splitting and joining); "single" is a
set of one engine (i128_o1024), "router" the four engines of `conf/engine_set/default.yaml`. Engines
come from `pipeline.open_engine`, exactly as `run.py engine_set=default` opens them: one copy of the
weights, one CUDA graph memory pool per set.

Measured, per batch size B (every engine of a run has batch B):
- throughput: audio seconds produced per wall second, all texts through the router in one call
  (padding, engine calls, copies to the host, joining; no vocoder), after one warm-up call per engine;
- padded fraction: the share of computed token + frame slots that held no real token or frame
  (empty batch rows, padding, and the whole row of an output that overflowed and ran again);
- GPU memory after building (`torch.cuda.memory_reserved` after `empty_cache`: weights, CUDA graph
  pools, static buffers) for the largest engine alone and for the whole set; peak allocated too.

Without `--checkpoint` the weights are random and the duration head's bias is set (`--duration-bias`,
default 1.9: ~6 frames per token, about LJSpeech's speaking rate) so the length regulator does real
work. Prints a markdown table last; writes everything to `--out` (JSON).
"""

from __future__ import annotations

import argparse
import gc
import json
import logging
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch._dynamo

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

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
    p.add_argument("--duration-bias", type=float, default=1.9, help="duration head bias for random weights")
    p.add_argument("--precision", default="fp16", help="fp16 | bf16 | fp32 (the CPU always runs fp32)")
    p.add_argument("--backend", default=None, help="inductor (GPU default) | eager (CPU default) | tensorrt")
    p.add_argument(
        "--compile-mode",
        default="default",
        help="torch.compile mode for Inductor engines "
        "(max-autotune-no-cudagraphs: faster engines, ~2 min each to compile)",
    )
    p.add_argument("--batch", default="1,8", help="comma-separated engine batch sizes")
    p.add_argument("--n", type=int, default=1000, help="number of sentences")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--alpha", type=float, default=1.0)
    p.add_argument("--engine-dir", default="engines/bench_router")
    p.add_argument("--out", default="results/bench_router.json")
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
    return {
        "reserved_mib": torch.cuda.memory_reserved() / 2**20,
        "allocated_mib": torch.cuda.memory_allocated() / 2**20,
        "peak_allocated_mib": torch.cuda.max_memory_allocated() / 2**20,
    }


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def measure(router: Router, texts: list[str], ids: list[list[int]], alpha: float, device) -> dict[str, Any]:
    for engine in router.engines:  # warm-up: one full call per engine
        engine([[1] * engine.spec.max_in] * engine.spec.batch, alpha)
    sync(device)
    t0 = time.perf_counter()
    routed, stats = router(texts, ids, alpha)
    sync(device)
    wall = time.perf_counter() - t0
    audio_s = sum(r.frames for r in routed) * HOP_S
    return {
        "wall_s": wall,
        "engine_s": sum(c["latency_s"] for c in stats.calls),
        "audio_s": audio_s,
        "throughput": audio_s / wall,  # audio seconds per second
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


def run_batch(cfg, model, device, texts, ids, alpha: float) -> dict[str, Any]:
    """Build the largest engine (memory), then the rest of the set (memory), then time both routers."""
    configs = sorted(pipeline.engine_set_configs(cfg), key=lambda e: (e.max_in, e.max_out))
    pool = torch.cuda.graph_pool_handle() if device.type == "cuda" else None
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    before = gpu_memory(device)
    t0 = time.perf_counter()
    largest = pipeline.open_engine(cfg, model, device, configs[-1], pool=pool)
    memory_single = gpu_memory(device)
    others = [pipeline.open_engine(cfg, model, device, c, pool=pool) for c in configs[:-1]]
    memory_set = gpu_memory(device)
    build_s = time.perf_counter() - t0
    single = Router([largest], progress=False)
    routed = Router(others + [largest], progress=False)
    result = {
        "build_or_load_s": build_s,
        "memory": {"before": before, "single": memory_single, "set": memory_set},
        "single": measure(single, texts, ids, alpha, device),
        "router": measure(routed, texts, ids, alpha, device),
    }
    a, b = result["single"].pop("frames"), result["router"].pop("frames")
    result["texts_with_other_frame_counts"] = sum(x != y for x, y in zip(a, b))  # fp16 rounding, if any
    result["speedup"] = result["router"]["throughput"] / result["single"]["throughput"]
    if memory_single:
        result["memory_ratio"] = memory_set["reserved_mib"] / memory_single["reserved_mib"]
    del largest, others, single, routed
    gpu_memory(device)  # free this batch size's engines before the next
    return result


# ---------------------------------------------------------------------------------------------


def compose(args: argparse.Namespace, device: torch.device, backend: str, batch: int):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    overrides = [
        f"model={args.model}",
        f"precision={args.precision}",
        f"backend={backend}",
        f"backend.inductor.mode={args.compile_mode}",
        f"batch_size={batch}",
        "engine_set=default",
        f"engine_dir={args.engine_dir}",
        f"device={device}",
        f"seed={args.seed}",
    ]
    if args.checkpoint:
        overrides.append(f"checkpoint={args.checkpoint}")
    with initialize_config_dir(config_dir=str(pipeline.CONF_DIR), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=overrides)


def markdown(results: dict[str, Any]) -> str:
    header = (
        "| B | engines | audio s / s | speedup | padded (in / out) | calls | reroutes | split texts "
        "| GPU MiB held (peak alloc.) |"
    )
    rows = [header, "|---|---|---|---|---|---|---|---|---|"]
    for batch, r in results["batches"].items():
        for name in ("single", "router"):
            m = r[name]
            mem = r["memory"]["single" if name == "single" else "set"]
            mem_s = f"{mem['reserved_mib']:.0f} ({mem['peak_allocated_mib']:.0f})" if mem else "n/a"
            speedup = f"**{r['speedup']:.2f}x**" if name == "router" else "1.00x"
            engines = "i128_o1024" if name == "single" else "default set (4)"
            rows.append(
                f"| {batch} | {engines} | {m['throughput']:.1f} | {speedup} | {100 * m['padded_fraction']:.0f}% "
                f"({100 * m['padded_fraction_in']:.0f}% / {100 * m['padded_fraction_out']:.0f}%) | "
                f"{sum(m['calls'].values())} | {m['reroutes']} | {m['split_texts']} | {mem_s} |"
            )
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    logging.getLogger("fastspeech.router").setLevel(logging.WARNING)  # one line per split text otherwise
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    backend = args.backend or ("inductor" if device.type == "cuda" else "eager")
    # Every engine is one more compiled variant of the same forward; Dynamo's default limit is 8.
    for name in ("recompile_limit", "cache_size_limit"):
        if hasattr(torch._dynamo.config, name):
            setattr(torch._dynamo.config, name, 64)
    batches = [int(b) for b in args.batch.split(",")]

    texts = sentences(args.n, args.seed)
    ids = [text_to_ids(t) for t in texts]
    cfg = compose(args, device, backend, batches[0])
    model = pipeline.load_model(cfg)
    if not args.checkpoint:
        with torch.no_grad():
            model.length_regulator.duration_predictor.linear_layer.bias.fill_(args.duration_bias)

    results: dict[str, Any] = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else platform.processor() or "cpu",
        "torch": torch.__version__,
        "args": vars(args),
        "backend": backend,
        "precision": pipeline.resolve_precision(args.precision, device),
        "texts": length_summary(texts, ids),
        "batches": {},
    }
    for batch in batches:
        log.info("B=%d: building/loading engines, then %d texts through each router", batch, len(texts))
        cfg = compose(args, device, backend, batch)
        results["batches"][batch] = run_batch(cfg, model, device, texts, ids, args.alpha)
    b1 = results["batches"].get(1)
    if b1:
        results["goal_speedup_b1"] = {
            "goal": GOAL_SPEEDUP_B1,
            "got": b1["speedup"],
            "met": b1["speedup"] >= GOAL_SPEEDUP_B1,
        }
    ratios = [r["memory_ratio"] for r in results["batches"].values() if "memory_ratio" in r]
    if ratios:
        results["goal_memory_ratio"] = {
            "goal": GOAL_MEMORY_RATIO,
            "got": max(ratios),
            "met": max(ratios) <= GOAL_MEMORY_RATIO,
        }

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2))
    t = results["texts"]
    print(
        f"\n{args.n} texts, cleaned length {t['tokens']['min']}-{t['tokens']['max']} tokens (mean "
        f"{t['tokens']['mean']:.0f}); {100 * t['tokens_by_engine_input']['>128 (split)']:.0f}% longer than 128 "
        f"(split); {results['device']}, {backend}, {results['precision']}, weights "
        f"{'from ' + args.checkpoint if args.checkpoint else f'random (duration bias {args.duration_bias})'}"
    )
    for batch, r in results["batches"].items():
        mem = f"; memory set / largest alone = {r['memory_ratio']:.2f}x" if "memory_ratio" in r else ""
        print(
            f"B={batch}: {r['router']['frames_per_token']:.1f} frames per token; texts whose frame count "
            f"differs between the two: {r['texts_with_other_frame_counts']}{mem}"
        )
    if b1:
        print(
            f"goal >= {GOAL_SPEEDUP_B1}x at B=1: {'met' if results['goal_speedup_b1']['met'] else 'NOT met'}"
        )
    if ratios:
        print(
            f"goal memory <= {GOAL_MEMORY_RATIO}x: {'met' if results['goal_memory_ratio']['met'] else 'NOT met'}"
        )
    print(f"JSON: {out}\n")
    print(markdown(results))
    return results


if __name__ == "__main__":
    main()
