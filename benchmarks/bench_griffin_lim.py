"""Griffin-Lim inside the engine: its written-out STFT/ISTFT against earlier paths, per engine call.

    python -m benchmarks.bench_griffin_lim --shapes i32_o256,i128_o1024 --batches 1,32 --profile
    python -m benchmarks.bench_griffin_lim --smoke            # CPU: tiny model, checks the script

Rows, per engine shape and batch (fp16 Inductor engines, one CUDA graph replay per call, the same
random DLE-size model as benchmarks/latency.py calibrated to ~88% of max_out frames):
  mel_only        the model alone (no vocoder): what Griffin-Lim adds is the difference
  gl_torch_stft   Griffin-Lim (32 iterations) with `torch.stft` / `torch.istft` (its own fallback)
  gl_stored_signal  `gl` with the overlap-add op's plain PyTorch reference in its place: Inductor's
                  two kernels (overlap-add into a stored signal, then the next STFT's framing), the
                  path before `kernels/overlap_add_frames.py`
  gl              Griffin-Lim as `fastspeech/vocoder/griffin_lim.py` runs it: on CUDA half-length
                  complex FFTs with the `griffin_lim_step` and `overlap_add_frames` ops between them
                  (4 kernels per iteration)
Times: the variants of a shape and batch are built first, then timed in `--rounds` rounds of `--calls`
replays each (`engine.runner`, device-synchronized), the variants taking turns round by round so that
drift hits all alike; ms per call is the median of all of a variant's replays. `--profile` adds
kernels per call, kernel time and the largest kernels (torch.profiler over 20 calls) at batch 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from benchmarks.kernels.common import kernel_profile
from benchmarks.latency import calibrate_durations, calibrated_model, sample_tokens, sync
from fastspeech.engine import PRECISIONS, EngineSpec, load_or_build
from fastspeech.model import FastSpeech, FastSpeechConfig
from fastspeech.vocoder.griffin_lim import GriffinLim

log = logging.getLogger("benchmarks.bench_griffin_lim")
VARIANTS = ("mel_only", "gl_torch_stft", "gl_stored_signal", "gl")


def make_model(ids: list[int], frames: int, device: torch.device, smoke: bool) -> FastSpeech:
    """benchmarks/latency.py's calibrated DLE-size model; for --smoke a one-layer 64-wide one."""
    if not smoke:
        return calibrated_model(ids, frames, device)
    torch.manual_seed(0)
    cfg = FastSpeechConfig(
        d_model=64, phoneme_side_n_layer=1, mel_side_n_layer=1, phoneme_side_head=1, mel_side_head=1,
        phoneme_side_conv1d_filter_size=128, mel_side_conv1d_filter_size=128,
    )  # fmt: skip
    model = FastSpeech(cfg).eval().to(device)
    calibrate_durations(model, torch.tensor([ids], device=device), frames)
    return model


def time_replays(fns: dict[str, Callable[[], object]], calls: int, rounds: int) -> dict[str, float]:
    """Median ms of one synchronized call of each fn: `rounds` rounds of `calls` calls (after 10
    warm-up calls) per fn, the fns taking turns round by round."""
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(rounds):
        for name, fn in fns.items():
            for _ in range(10 if not times[name] else 0):
                fn()
            sync()
            for _ in range(calls):
                t0 = time.perf_counter()
                fn()
                sync()
                times[name].append(time.perf_counter() - t0)
    return {name: float(np.median(t)) * 1e3 for name, t in times.items()}


def build(model, variant, tokens, alpha, max_in, max_out, precision, args) -> Callable[[], object]:
    """One variant's engine for tokens (batch, max_in), built afresh; returns one replay of it."""
    torch._dynamo.reset()  # each variant compiles afresh (Dynamo's cache ignores the switches below)
    vocoder = None if variant == "mel_only" else GriffinLim()
    if variant == "gl_torch_stft":
        vocoder.written_out = False  # torch.stft / torch.istft, GriffinLim's own fallback
    kind = "none" if vocoder is None else vocoder.kind
    backend = "eager" if args.smoke else "inductor"
    spec = EngineSpec(tokens.shape[0], max_in, max_out, precision, backend, vocoder=kind)
    if variant == "gl_stored_signal":
        vocoder.fused_overlap_add = False  # the op's plain PyTorch reference, which Inductor fuses
    if vocoder is not None and args.smoke:
        vocoder.packed = True  # the CUDA loop's code, on the CPU
    engine = load_or_build(
        model, spec, Path(args.engine_dir) / variant, tokens.device, force_build=True, vocoder=vocoder
    )

    def call():
        with torch.inference_mode():
            return engine.runner(tokens, alpha)

    return call


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default="i32_o256,i128_o1024", help="engine shapes i<max_in>_o<max_out>")
    p.add_argument("--batches", default="1,32")
    p.add_argument("--precision", default="fp16")
    p.add_argument("--variants", default=",".join(VARIANTS), help="a comma list of: " + " ".join(VARIANTS))
    p.add_argument("--calls", type=int, default=50, help="timed replays per variant and round")
    p.add_argument("--rounds", type=int, default=4, help="rounds of --calls replays, variants taking turns")
    p.add_argument("--profile", action="store_true", help="kernel counts and kernel time at batch 1")
    p.add_argument("--engine-dir", default="engines/bench_griffin_lim")
    p.add_argument("--out", default="benchmarks/results/bench_griffin_lim.json")
    p.add_argument("--smoke", action="store_true", help="CPU: tiny model, eager engines, few calls")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    device = torch.device("cpu" if args.smoke else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("bench_griffin_lim needs a CUDA GPU (or --smoke for the CPU check)")
    unknown = set(args.variants.split(",")) - set(VARIANTS)
    if unknown:
        raise SystemExit(
            f"--variants: unknown {', '.join(sorted(unknown))}; choose from {','.join(VARIANTS)}"
        )
    precision = "fp32" if args.smoke else args.precision
    calls, rounds = (3, 1) if args.smoke else (args.calls, args.rounds)
    rows = []
    for shape in args.shapes.split(","):
        max_in, max_out = (int(n) for n in shape.removeprefix("i").split("_o"))
        ids = sample_tokens(max_in)
        model = make_model(ids, round(max_out * 0.88), device, args.smoke).to(PRECISIONS[precision])
        for batch in (int(b) for b in args.batches.split(",")):
            tokens = torch.tensor([ids] * batch, device=device)
            alpha = torch.ones(batch, device=device)
            calls_of = {
                variant: build(model, variant, tokens, alpha, max_in, max_out, precision, args)
                for variant in args.variants.split(",")
            }
            ms = time_replays(calls_of, calls, rounds)
            for variant, call in calls_of.items():
                row = {"shape": shape, "batch": batch, "variant": variant, "ms": ms[variant]}
                if args.profile and batch == 1 and device.type == "cuda":
                    row |= kernel_profile(call)
                log.info(json.dumps(row))
                rows.append(row)
    report(rows, args, device)


def report(rows: list[dict], args, device: torch.device) -> None:
    """Markdown table (with the Griffin-Lim share = row - mel_only) and the JSON file."""
    ms = {(r["shape"], r["batch"], r["variant"]): r["ms"] for r in rows}
    print(
        "\n| shape | batch | variant | ms per call | Griffin-Lim ms | vs torch.stft path | vs stored signal "
        "| kernels | kernel ms |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        shape, batch, variant = r["shape"], r["batch"], r["variant"]
        base = ms.get((shape, batch, "mel_only"))
        share = f"{r['ms'] - base:.3f}" if base is not None and variant != "mel_only" else ""
        ratio, ratio_stored = (
            f"{ms[(shape, batch, before)] / r['ms']:.2f}x"
            if variant == "gl" and (shape, batch, before) in ms
            else ""
            for before in ("gl_torch_stft", "gl_stored_signal")
        )
        kernels = f"{r['kernels']:.0f}" if "kernels" in r else ""
        kernel_ms = f"{r['kernel_ms']:.3f}" if "kernel_ms" in r else ""
        print(
            f"| {shape} | {batch} | {variant} | {r['ms']:.3f} | {share} | {ratio} | {ratio_stored} | {kernels} "
            f"| {kernel_ms} |"
        )
    meta = {
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "precision": args.precision,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print(f"\nwrote {out}")


if __name__ == "__main__":
    main()
