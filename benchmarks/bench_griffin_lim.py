"""Griffin-Lim inside the engine: its written-out STFT/ISTFT against earlier paths, per engine call.

    python -m benchmarks.bench_griffin_lim --shapes i32_o256,i128_o1024 --batches 1,32 --profile
    python -m benchmarks.bench_griffin_lim --smoke            # CPU: tiny model, checks the script

Rows, per engine shape and batch (fp16 Inductor engines, one CUDA graph replay per call, the same
random DLE-size model as benchmarks/latency.py calibrated to ~88% of max_out frames):
  mel_only        the model alone (no vocoder): what Griffin-Lim adds is the difference
  gl_torch_stft   Griffin-Lim (32 iterations) with `torch.stft` / `torch.istft` (its own fallback)
  gl              Griffin-Lim as `fastspeech/vocoder/griffin_lim.py` runs it: pad + strided frames +
                  `rfft`, unscaled `irfft` + a shifted-slice overlap-add, so that Inductor fuses each
                  iteration's framing, windowing, overlap-add, envelope and magnitude step
Times: median of `--calls` replays (`engine.runner`, device-synchronized), ms per call. `--profile`
adds kernels per call, kernel time and the largest kernels (torch.profiler over 20 calls) at batch 1.
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.kernels.common import kernel_profile
from benchmarks.latency import calibrate_durations, calibrated_model, sample_tokens, sync
from fastspeech.engine import PRECISIONS, EngineSpec, load_or_build
from fastspeech.model import FastSpeech, FastSpeechConfig
from fastspeech.vocoder.griffin_lim import GriffinLim

log = logging.getLogger("benchmarks.bench_griffin_lim")
VARIANTS = ("mel_only", "gl_torch_stft", "gl")


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


def time_replays(fn, calls: int) -> float:
    """Median ms of one synchronized call."""
    for _ in range(10):
        fn()
    sync()
    times = []
    for _ in range(calls):
        t0 = time.perf_counter()
        fn()
        sync()
        times.append(time.perf_counter() - t0)
    return float(np.median(times)) * 1e3


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default="i32_o256,i128_o1024", help="engine shapes i<max_in>_o<max_out>")
    p.add_argument("--batches", default="1,32")
    p.add_argument("--precision", default="fp16")
    p.add_argument("--variants", default=",".join(VARIANTS), help="a comma list of: " + " ".join(VARIANTS))
    p.add_argument("--calls", type=int, default=200)
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
    backend, precision = ("eager", "fp32") if args.smoke else ("inductor", args.precision)
    calls = 3 if args.smoke else args.calls
    rows = []
    for shape in args.shapes.split(","):
        max_in, max_out = (int(n) for n in shape.removeprefix("i").split("_o"))
        ids = sample_tokens(max_in)
        model = make_model(ids, round(max_out * 0.88), device, args.smoke).to(PRECISIONS[precision])
        for batch in (int(b) for b in args.batches.split(",")):
            tokens = torch.tensor([ids] * batch, device=device)
            alpha = torch.ones(batch, device=device)
            for variant in args.variants.split(","):
                torch._dynamo.reset()  # each variant compiles afresh (Dynamo's cache ignores `written_out`)
                vocoder = None if variant == "mel_only" else GriffinLim()
                if variant == "gl_torch_stft":
                    vocoder.written_out = False  # torch.stft / torch.istft, GriffinLim's own fallback
                kind = "none" if vocoder is None else vocoder.kind
                spec = EngineSpec(batch, max_in, max_out, precision, backend, vocoder=kind)
                engine = load_or_build(
                    model,
                    spec,
                    Path(args.engine_dir) / variant,
                    device,
                    force_build=True,
                    vocoder=vocoder,
                )

                def call(engine=engine, tokens=tokens, alpha=alpha):
                    with torch.inference_mode():
                        return engine.runner(tokens, alpha)

                row = {
                    "shape": shape,
                    "batch": batch,
                    "variant": variant,
                    "ms": time_replays(call, calls),
                }
                if args.profile and batch == 1 and device.type == "cuda":
                    row |= kernel_profile(call)
                log.info(json.dumps(row))
                rows.append(row)
    report(rows, args, device)


def report(rows: list[dict], args, device: torch.device) -> None:
    """Markdown table (with the Griffin-Lim share = row - mel_only) and the JSON file."""
    ms = {(r["shape"], r["batch"], r["variant"]): r["ms"] for r in rows}
    print(
        "\n| shape | batch | variant | ms per call | Griffin-Lim ms | vs torch.stft path | kernels | kernel ms |"
    )
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        shape, batch, variant = r["shape"], r["batch"], r["variant"]
        base = ms.get((shape, batch, "mel_only"))
        share = f"{r['ms'] - base:.3f}" if base is not None and variant != "mel_only" else ""
        previous = ms.get((shape, batch, "gl_torch_stft"))
        ratio = f"{previous / r['ms']:.2f}x" if variant == "gl" and previous is not None else ""
        kernels = f"{r['kernels']:.0f}" if "kernels" in r else ""
        kernel_ms = f"{r['kernel_ms']:.3f}" if "kernel_ms" in r else ""
        print(
            f"| {shape} | {batch} | {variant} | {r['ms']:.3f} | {share} | {ratio} | {kernels} | {kernel_ms} |"
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
