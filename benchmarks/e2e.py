"""Text -> wav end to end, the vocoder inside the engine, side by side with the paths users have today.

    python -m benchmarks.e2e --out benchmarks/results/e2e.json              # on the GPU (~6 min, H100)
    python -m benchmarks.e2e --vocoders griffin_lim --batches 1             # one row group
    python -m benchmarks.e2e --smoke --out /tmp/e2e.json                    # CPU: tiny sizes, checks the script

Rows (same random DLE-size FastSpeech as benchmarks/latency.py, the seed's 128-token sample text
calibrated to ~900 of 1024 frames = ~10.5 s of audio per item, i128/o1024, fp16, Inductor engines):
  engine+griffin_lim     our engine with torch Griffin-Lim (32 iterations) inside: one CUDA graph replay
  engine+hifigan_v1      our engine with HiFi-GAN V1 inside (random weights, written and loaded as a DLE
                         HiFi-GAN checkpoint)
  engine+waveglow_256    our engine with WaveGlow-256 inside (random weights, a DLE WaveGlow checkpoint)
  engine,librosa_cpu     today's path: a mel-only engine, then librosa Griffin-Lim (32 it.) on the CPU
                         (batch 1 by default: ~3 s per item)
  engine,torchaudio_gpu  what a user would write: a mel-only engine, then torchaudio's InverseMelScale +
                         GriffinLim (32 it., momentum 0.99), eager on the GPU
Stages, each timed alone per call (synchronized): frontend (text -> token ids), engine (padding,
graph replay incl. the vocoder; for the baselines the mel-only engine), vocoder (baselines only),
copy to host, wav encoding (the server's `fastspeech.serve.audio.encode_whole`: 16-bit PCM in
memory, cut to mel_lens * 256). total = their sum; rtf = audio seconds / total seconds (the batch's
audio).

Each configuration's timing stops after `--seconds` (at least 3 calls); the build (compile) time of
each engine is reported apart. Results: JSON (`--out`) and a Markdown table on stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.latency import SAMPLE_TEXT, calibrate_durations, sync
from fastspeech.engine import PRECISIONS, EngineSpec, load_or_build
from fastspeech.model import FastSpeech, FastSpeechConfig
from fastspeech.serve import audio
from fastspeech.text import text_to_ids
from fastspeech.vocoder import load_vocoder
from fastspeech.vocoder.hifigan import PRESETS, HiFiGAN, HiFiGANConfig
from fastspeech.vocoder.waveglow import WaveGlow, WaveGlowConfig

log = logging.getLogger("benchmarks.e2e")
HOP, SR = 256, 22050
VOCODERS = ("griffin_lim", "hifigan_v1", "waveglow_256")
BASELINES = ("librosa_cpu", "torchaudio_gpu")


# ---------------------------------------------------------------------------------------------
# Random vocoders in their public checkpoint formats (so the benchmark also loads them as users do)


def weight_normed(state: dict[str, torch.Tensor], names: list[str]) -> dict[str, torch.Tensor]:
    """Plain conv weights -> weight_g / weight_v pairs (torch weight_norm, dim 0), as trainers save."""
    out = dict(state)
    for k in names:
        w = out.pop(f"{k}.weight")
        out[f"{k}.weight_g"] = w.pow(2).sum(dim=tuple(range(1, w.dim())), keepdim=True).sqrt()
        out[f"{k}.weight_v"] = w
    return out


def random_hifigan(folder: Path, cfg: HiFiGANConfig) -> Path:
    torch.manual_seed(0)
    gen = HiFiGAN(cfg)
    convs = [n for n, m in gen.named_modules() if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d))]
    state = weight_normed(gen.state_dict(), convs)
    config = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(cfg).items()}
    config["resblock_dilation_sizes"] = [list(d) for d in cfg.resblock_dilation_sizes]
    path = folder / "hifigan_gen_checkpoint.pt"
    torch.save({"generator": {f"module.{k}": v for k, v in state.items()}, "config": config}, path)
    return path


def random_waveglow(folder: Path, cfg: WaveGlowConfig) -> Path:
    torch.manual_seed(0)
    glow = WaveGlow(cfg)
    with torch.no_grad():
        for k, conv in enumerate(glow.convinv):  # orthogonal, as DLE initializes them
            c = conv.conv.weight.shape[0]
            conv.conv.weight.copy_(torch.linalg.qr(torch.randn(c, c))[0][:, :, None])
        for wn in glow.WN:  # DLE starts `end` at zero; a little noise keeps the flows doing work
            wn.end.weight.normal_(0, 1e-3)
            wn.end.bias.zero_()
    convs = [n for n, m in glow.named_modules() if n.startswith("WN.") and isinstance(m, torch.nn.Conv1d)
             and not n.endswith(".end")]  # start, in_layers, cond_layers, res_skip_layers, as DLE  # fmt: skip
    state = weight_normed(glow.state_dict(), convs)
    path = folder / "waveglow_256.pt"
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}, "epoch": 0}, path)
    return path


def make_vocoder(name: str, folder: Path, smoke: bool):
    if name == "griffin_lim":
        return load_vocoder(None, "griffin_lim", n_iter=2 if smoke else 32)
    if name == "hifigan_v1":
        cfg = PRESETS["v1"]
        if smoke:
            cfg = dataclasses.replace(cfg, upsample_initial_channel=32, resblock_kernel_sizes=(3,),
                                      resblock_dilation_sizes=((1, 3, 5),))  # fmt: skip
        return load_vocoder(random_hifigan(folder, cfg))
    cfg = WaveGlowConfig(wn_channels=256)
    if smoke:
        cfg = dataclasses.replace(cfg, n_flows=2, wn_layers=2, wn_channels=16)
    return load_vocoder(random_waveglow(folder, cfg), sigma=0.9)


# ---------------------------------------------------------------------------------------------
# Timing


def timed(stages: dict[str, list[float]], name: str, fn):
    t0 = time.perf_counter()
    out = fn()
    sync()
    stages.setdefault(name, []).append(time.perf_counter() - t0)
    return out


def run_config(call, seconds: float, warmup: int = 2) -> tuple[dict[str, list[float]], float]:
    """Call `call(stages)` (which times its own stages) until `seconds` pass (3..200 calls)."""
    for _ in range(warmup):
        call({})
    stages: dict[str, list[float]] = {}
    audio_s, t_end, n = 0.0, time.perf_counter() + seconds, 0
    while n < 3 or (time.perf_counter() < t_end and n < 200):
        audio_s = call(stages)
        n += 1
    return stages, audio_s


def summarize(path: str, batch: int, stages: dict[str, list[float]], audio_s: float, build_s: float) -> dict:
    ms = {k: float(np.mean(v)) * 1e3 for k, v in stages.items()}
    total = sum(ms.values())
    return {
        "path": path,
        "batch": batch,
        "stages_ms": ms,
        "total_ms": total,
        "p90_total_ms": float(np.percentile(np.sum([np.asarray(v) for v in stages.values()], 0), 90)) * 1e3,
        "calls": len(next(iter(stages.values()))),
        "audio_s": audio_s,
        "rtf": audio_s / (total / 1e3) if total else None,
        "build_s": build_s,
    }


def engine_call(engine, texts: list[str], max_in: int, baseline=None):
    """One text -> wav call with stages timed; `baseline(mel, lens) -> wavs` for mel-only engines."""

    def call(stages: dict[str, list[float]]) -> float:
        ids = timed(stages, "frontend", lambda: [text_to_ids(t)[:max_in] for t in texts])
        outputs = timed(stages, "engine", lambda: engine.run(*engine.pad(ids)))
        n = len(ids)
        if baseline is None:
            # as Engine.__call__(to_host=True): asynchronous copies (pinned on CUDA), one wait
            wav, lens = timed(
                stages,
                "to_host",
                lambda: [t[:n].to("cpu", non_blocking=True) for t in (outputs[4], outputs[1])],
            )
            wavs = [w[: int(m) * HOP].numpy() for w, m in zip(wav, lens)]
        else:
            wavs = timed(stages, "vocoder", lambda: baseline(outputs[0][:n], outputs[1][:n]))
            wavs = timed(
                stages, "to_host", lambda: [w.cpu().numpy() if torch.is_tensor(w) else w for w in wavs]
            )
        timed(stages, "encode", lambda: [audio.encode_whole(w, "wav") for w in wavs])
        return sum(len(w) for w in wavs) / SR

    return call


def librosa_baseline(mel: torch.Tensor, lens: torch.Tensor) -> list[np.ndarray]:
    from fastspeech.vocoder.griffin_lim import librosa_griffin_lim

    mel, lens = mel.float().cpu().numpy(), lens.cpu().tolist()
    return [librosa_griffin_lim(m[:n], n_iter=32) for m, n in zip(mel, lens)]


def torchaudio_baseline(device):
    import torchaudio  # the GPU image has it; imported only for this row

    inverse = torchaudio.transforms.InverseMelScale(
        n_stft=513, n_mels=80, sample_rate=SR, f_min=0.0, f_max=8000.0, norm="slaney", mel_scale="slaney"
    ).to(device)
    griffin_lim = torchaudio.transforms.GriffinLim(
        n_fft=1024, n_iter=32, win_length=1024, hop_length=HOP, power=1.0, momentum=0.99
    ).to(device)

    def vocode(mel: torch.Tensor, lens: torch.Tensor) -> list[torch.Tensor]:
        with torch.no_grad():
            T = int(lens.max())  # what a user does: cut the batch to its longest item
            wav = griffin_lim(inverse(mel[:, :T].float().exp().transpose(1, 2)))
        return [w[: int(n) * HOP] for w, n in zip(wav, lens.tolist())]

    return vocode


# ---------------------------------------------------------------------------------------------


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="benchmarks/results/e2e.json")
    p.add_argument("--batches", type=int, nargs="+", default=[1, 8, 32])
    p.add_argument("--vocoders", nargs="+", default=list(VOCODERS), choices=VOCODERS)
    p.add_argument("--baselines", nargs="*", default=list(BASELINES), choices=BASELINES)
    p.add_argument("--librosa-batches", type=int, nargs="*", default=[1], help="librosa is ~3 s per item")
    p.add_argument("--precision", default="fp16", choices=list(PRECISIONS))
    p.add_argument("--max-in", type=int, default=128)
    p.add_argument("--max-out", type=int, default=1024)
    p.add_argument("--seconds", type=float, default=3.0, help="timing budget per configuration")
    p.add_argument("--mode", default="default", help="Inductor mode (conf/backend)")
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--engine-dir", default="engines/e2e")
    p.add_argument("--smoke", action="store_true", help="CPU check of this script: tiny model and vocoders")
    p.add_argument(
        "--append", action="store_true", help="merge into --out's rows (same path and batch: replaced)"
    )
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.smoke:
        args.batches, args.max_in, args.max_out = [b for b in args.batches if b <= 2] or [1], 32, 96
        args.seconds, args.librosa_batches = min(args.seconds, 1.0), [1]
    dev = torch.device(args.device)
    precision = args.precision if dev.type == "cuda" else "fp32"
    backend = "inductor" if dev.type == "cuda" else "eager"
    options = {"mode": args.mode, "cuda_graphs": True} if backend == "inductor" else {}

    cfg = FastSpeechConfig()
    if args.smoke:
        cfg = dataclasses.replace(cfg, d_model=64, phoneme_side_n_layer=1, mel_side_n_layer=1, phoneme_side_head=1,
                                  mel_side_head=1, phoneme_side_conv1d_filter_size=128,
                                  mel_side_conv1d_filter_size=128)  # fmt: skip
    torch.manual_seed(0)
    model = FastSpeech(cfg).eval().to(dev)
    tokens = text_to_ids(SAMPLE_TEXT)[: args.max_in]
    frames = calibrate_durations(model, torch.tensor([tokens], device=dev), 0.88 * args.max_out)
    model = model.to(PRECISIONS[precision])  # in place, once: every engine shares these weights
    log.info("sample text: %d tokens -> %d frames (%.2f s of audio)", len(tokens), frames, frames * HOP / SR)
    text = SAMPLE_TEXT
    rows = []

    def build(batch, vocoder=None):
        spec = EngineSpec(batch, args.max_in, args.max_out, precision, backend)
        t0 = time.perf_counter()
        engine = load_or_build(model, spec, args.engine_dir, dev, options, vocoder=vocoder)
        return engine, time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        for name in args.vocoders:
            voc = make_vocoder(name, Path(tmp), args.smoke).on(dev, PRECISIONS[precision])
            for batch in args.batches:
                engine, build_s = build(batch, voc)
                stages, audio_s = run_config(engine_call(engine, [text] * batch, args.max_in), args.seconds)
                rows.append(summarize(f"engine+{name}", batch, stages, audio_s, build_s))
                log.info("%s", rows[-1])
                del engine
    for base in args.baselines:
        if base == "torchaudio_gpu":
            try:
                vocode = torchaudio_baseline(dev)
            except ImportError:
                log.warning("torchaudio is not installed here: no engine,torchaudio_gpu rows")
                continue
            batches = args.batches
        else:
            try:
                import librosa  # noqa: F401 - the dev extra; not on our GPU image unless carried
            except ImportError:
                log.warning("librosa is not installed here (pip install librosa): no engine,librosa_cpu rows")
                continue
            vocode, batches = librosa_baseline, [b for b in args.batches if b in args.librosa_batches]
        for batch in batches:
            engine, build_s = build(batch)
            stages, audio_s = run_config(
                engine_call(engine, [text] * batch, args.max_in, vocode), args.seconds, warmup=1
            )
            rows.append(summarize(f"engine,{base}", batch, stages, audio_s, build_s))
            log.info("%s", rows[-1])

    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else "cpu"
    meta = {
        "device": gpu,
        "torch": torch.__version__,
        "precision": precision,
        "backend": backend,
        "inductor_mode": args.mode,
        "max_in": args.max_in,
        "max_out": args.max_out,
        "frames_per_item": frames,
        "audio_s_per_item": frames * HOP / SR,
        "cpu_threads": torch.get_num_threads(),
        "smoke": args.smoke,
        "seconds_per_config": args.seconds,
    }
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    if args.append and out.exists():  # one command per vocoder on a machine with a per-command limit
        new = {(r["path"], r["batch"]) for r in rows}
        rows = [r for r in json.loads(out.read_text())["rows"] if (r["path"], r["batch"]) not in new] + rows
    out.write_text(json.dumps({"meta": meta, "rows": rows}, indent=1))
    print_table(rows, meta)
    plot(rows, meta, out.with_suffix(".png"))
    log.info("wrote %s and its plot", out)


def plot(rows: list[dict], meta: dict, path: Path) -> None:
    """Text -> wav latency per path against batch, log scale (the README's plot)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for name in dict.fromkeys(r["path"] for r in rows):
        mine = [r for r in rows if r["path"] == name]
        other = mine[0].get("device")  # a row kept from another machine's run says which
        label = f"{name} ({other.split(' (')[0]})" if other else name
        ax.plot(*zip(*sorted((r["batch"], r["total_ms"]) for r in mine)), marker="o", label=label)
    ax.set(xscale="log", yscale="log", xlabel="batch", ylabel="text -> wav, ms per call")
    ax.set_title(
        f"{meta['device']}, {meta['precision']}, {meta['audio_s_per_item']:.1f} s of audio per item",
        fontsize=9,
    )
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)
    plt.close(fig)


def print_table(rows: list[dict], meta: dict) -> None:
    stages = ["frontend", "engine", "vocoder", "to_host", "encode"]
    print(
        f"\nText -> wav, {meta['device']}, {meta['precision']}, i{meta['max_in']}/o{meta['max_out']}, "
        f"{meta['frames_per_item']} frames = {meta['audio_s_per_item']:.2f} s of audio per item"
    )
    print(
        "| path | batch | " + " | ".join(f"{s} ms" for s in stages) + " | total ms | x real time | build s |"
    )
    print("|---|---|" + "---|" * len(stages) + "---|---|---|")
    for r in rows:
        cells = [f"{r['stages_ms'][s]:.3f}" if s in r["stages_ms"] else "" for s in stages]
        rtf = f"{r['rtf']:,.0f}" if r["rtf"] and math.isfinite(r["rtf"]) else ""
        print(
            f"| {r['path']} | {r['batch']} | "
            + " | ".join(cells)
            + f" | {r['total_ms']:.3f} | {rtf} | {r['build_s']:.1f} |"
        )


if __name__ == "__main__":
    main()
