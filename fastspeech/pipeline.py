"""Text in, wav out: what `run.py` calls. Read texts, encode, batch by length, run the engine,
vocode, write `results/NNNN_<slug>.wav` + `.npy`, one `mels.png` and `timings.json`. With
`engine_set=NAME` a multi-engine set runs the texts instead of one engine (`route_all`, `router.py`).

Every text is encoded and checked before anything runs, so bad input fails fast with one line;
files are written atomically, so outputs already written stay intact when a later one fails.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from omegaconf import DictConfig, OmegaConf

from fastspeech.checkpoint import hparams_from_state_dict, load_checkpoint, read_state_dict
from fastspeech.engine import PRECISIONS, Engine, EngineSpec, load_or_build
from fastspeech.errors import ConfigError, EngineError, TextError
from fastspeech.model import FastSpeech, FastSpeechConfig
from fastspeech.router import Router, check_lengths
from fastspeech.text import text_to_ids

log = logging.getLogger(__name__)

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


@dataclass
class Utterance:
    """One line of input on its way to a wav file."""

    index: int
    text: str
    ids: list[int]
    mel: np.ndarray | None = None  # (frames, num_mels) natural-log mel
    files: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Set-up: device, model, engine


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name} asked for, but no CUDA GPU is visible; use device=auto or cpu")
    return device


DEMO_VOICE = Path(__file__).resolve().parent / "assets" / "demo_voice.pt"


def load_model(cfg: DictConfig) -> FastSpeech:
    """The model and its weights, by `cfg.checkpoint`.

    `demo` (the default): the demo voice shipped in the package, its hparams read from the file
    (`model=` is not used). `random`: `model=` hparams with random weights, said loudly. Anything
    else: a checkpoint path, loaded strictly into `model=`.
    """
    torch.manual_seed(cfg.seed)
    choice = str(cfg.checkpoint) if cfg.checkpoint is not None else "random"
    if choice == "demo":
        state, _ = read_state_dict(DEMO_VOICE)
        model = FastSpeech(FastSpeechConfig.from_dict(hparams_from_state_dict(state))).eval()
        load_checkpoint(model, DEMO_VOICE)
        log.info(
            "no checkpoint= given: speaking with the DEMO VOICE (%s, trained by this project on eSpeak NG "
            "speech; its hparams come from the file). Pass checkpoint=PATH for your own model.",
            DEMO_VOICE.name,
        )
        return model
    model = FastSpeech(FastSpeechConfig.from_dict(OmegaConf.to_container(cfg.model, resolve=True))).eval()
    if choice == "random":
        log.warning(
            "checkpoint=random: running on RANDOM WEIGHTS (seed %d); the audio is noise. "
            "Pass checkpoint=PATH to a trained FastSpeech (DLE format), or leave it out for the demo voice.",
            cfg.seed,
        )
    else:
        load_checkpoint(model, choice)
    return model


def resolve_precision(precision: str, device: torch.device) -> str:
    """fp16/bf16 engines are GPU engines; on the CPU we run fp32 and say so (documented fallback)."""
    if device.type == "cpu" and precision != "fp32":
        log.warning(
            "precision=%s on the CPU falls back to fp32 (half-precision CPU kernels are slow)", precision
        )
        return "fp32"
    return precision


def open_engine(
    cfg: DictConfig,
    model: FastSpeech,
    device: torch.device,
    engine_cfg: DictConfig | None = None,
    allow_build: bool = True,
    pool: Any = None,
) -> Engine:
    """Load (or build, with progress in the log) the engine `cfg.engine` describes.

    `pool`: a CUDA graph memory pool shared by the engines of a set (Inductor CUDA graphs only).
    """
    from fastspeech.backends import resolve_backend

    engine_cfg = engine_cfg or cfg.engine
    backend, why = resolve_backend(cfg.backend.name, device)
    precision = resolve_precision(cfg.precision.name, device)
    model.to(device=device, dtype=PRECISIONS[precision])  # in place: every engine shares these weights
    log.info("backend=%s (%s)", backend, why)
    spec = EngineSpec(
        batch=int(cfg.batch_size),
        max_in=int(engine_cfg.max_in),
        max_out=int(engine_cfg.max_out),
        precision=precision,
        backend=backend,
    )
    options = cfg.backend.get(backend)
    options = OmegaConf.to_container(options, resolve=True) if options is not None else {}
    if pool is not None and backend == "inductor":
        options["pool"] = pool
    return load_or_build(
        model, spec, cfg.engine_dir, device, options, force_build=cfg.force_build, allow_build=allow_build
    )


def engine_set_configs(cfg: DictConfig) -> list[DictConfig]:
    """The `conf/engine/<name>.yaml` of each engine named in `cfg.engine_set.engines`."""
    names = list(cfg.engine_set.engines or [])
    if not names:
        raise ConfigError(f"engine_set {cfg.engine_set.name} lists no engines; set engine_set.engines=[...]")
    configs = []
    for name in names:
        path = CONF_DIR / "engine" / f"{name}.yaml"
        if not path.is_file():
            known = ", ".join(sorted(p.stem for p in (CONF_DIR / "engine").glob("*.yaml")))
            raise ConfigError(
                f"engine_set.engines names {name}, which is not in conf/engine/; use one of {known}"
            )
        configs.append(OmegaConf.load(path))
    return configs


def open_engine_set(cfg: DictConfig, model: FastSpeech, device: torch.device) -> Router:
    """Load (or, with `engine_set.build_missing`, build) every engine of the set -> a `Router`.

    The engines share the model's weights (cast once, in place) and, on CUDA, one graph memory pool.
    With building off, every engine that is missing or stale is named in one error with the command
    that builds them.
    """
    pool = torch.cuda.graph_pool_handle() if device.type == "cuda" else None
    build_missing = bool(cfg.engine_set.build_missing)
    engines, missing = [], []
    for engine_cfg in engine_set_configs(cfg):
        try:
            engines.append(open_engine(cfg, model, device, engine_cfg, allow_build=build_missing, pool=pool))
        except EngineError as exc:
            if build_missing:
                raise
            log.warning("%s", exc)
            missing.append(engine_cfg.name)
    if missing:
        raise EngineError(
            f"engine set {cfg.engine_set.name}: {len(missing)} engine(s) not built or stale "
            f"({', '.join(missing)}); build them with `{build_command(cfg, missing)}`, "
            "or set engine_set.build_missing=true"
        )
    return Router(engines, split=bool(cfg.engine_set.split), on_unknown=cfg.on_unknown)


def build_command(cfg: DictConfig, engines: list[str]) -> str:
    """The `run.py` sweep that builds `engines` as this run would load them (same weights, sizes)."""
    args = [
        f"engine={','.join(engines)}",
        f"model={cfg.model.name}",
        f"precision={cfg.precision.name}",
        f"backend={cfg.backend.name}",
        f"batch_size={cfg.batch_size}",
        f"engine_dir={cfg.engine_dir}",
    ]
    args += [f"checkpoint={cfg.checkpoint}"] if cfg.checkpoint else [f"seed={cfg.seed}"]
    return "python run.py -m " + " ".join(args) + " mode=build"


# ---------------------------------------------------------------------------------------------
# Input


def read_texts(cfg: DictConfig) -> list[str]:
    """`text=` (one utterance) or `input=` (a file, one utterance a line; blank lines skipped)."""
    if cfg.text is not None and cfg.input is not None:
        raise ConfigError("give either text=... or input=FILE, not both")
    if cfg.input is not None:
        path = Path(cfg.input)
        if not path.is_file():
            raise ConfigError(f"input file not found: {path}; pass input=PATH to a text file")
        lines = [line.strip() for line in path.read_text(encoding="utf-8").splitlines()]
        texts = [line for line in lines if line]
        if not texts:
            raise TextError(f"input file {path} has no text; write one utterance a line")
        return texts
    if cfg.text is None:
        raise ConfigError('nothing to say: give text="..." or input=FILE')
    return [str(cfg.text)]


def encode_all(texts: list[str], on_unknown: str, max_positions: int) -> list[Utterance]:
    """Encode every text up front; errors name the line."""
    utterances = []
    for i, text in enumerate(texts):
        where = f"line {i + 1}" if len(texts) > 1 else "text"
        try:
            ids = text_to_ids(text, on_unknown=on_unknown)
        except TextError as exc:
            raise TextError(f"{where}: {exc}") from None
        if len(ids) > max_positions:
            raise TextError(
                f"{where} is {len(ids)} tokens, longer than the model's {max_positions} positions; split it"
            )
        utterances.append(Utterance(i, text, ids))
    return utterances


def length_sorted_batches(utterances: list[Utterance], batch_size: int) -> list[list[Utterance]]:
    """Longest first, so each batch pads little; callers restore input order by `index`."""
    ordered = sorted(utterances, key=lambda u: len(u.ids), reverse=True)
    return [ordered[i : i + batch_size] for i in range(0, len(ordered), batch_size)]


# ---------------------------------------------------------------------------------------------
# Synthesis


def run_batches(
    engine_for: Callable[[list[Utterance]], Engine], batches: list[list[Utterance]], alpha: float
) -> list[dict[str, Any]]:
    """Run each batch on the engine `engine_for` picks; fill `u.mel`; return per-batch timings."""
    from tqdm import tqdm

    timings = []
    for batch in tqdm(batches, desc="synthesizing", unit="batch", disable=len(batches) < 2):
        engine = engine_for(batch)
        t0 = time.perf_counter()
        out = engine([u.ids for u in batch], alpha, to_host=True)  # the copy to the host waits for the GPU
        mel = out.mel.numpy()
        latency = time.perf_counter() - t0
        for u, m, n, frames in zip(batch, mel, out.mel_lens.tolist(), out.frames.tolist()):
            if frames > engine.spec.max_out:
                raise EngineError(
                    f"predicted speech for line {u.index + 1} is {frames} frames, longer than engine "
                    f"{engine.spec.name}'s {engine.spec.max_out}; use a larger engine= or a smaller alpha"
                )
            if frames == 0:
                log.warning("line %d: the model predicted no frames (random weights?)", u.index + 1)
            u.mel = m[:n].copy()  # own memory: `mel` is pinned host memory, kept only for this batch
        audio_s = sum(len(u.mel) for u in batch) * 256 / 22050
        timings.append(
            {
                "engine": engine.spec.name,
                "items": len(batch),
                "latency_s": latency,
                "audio_s": audio_s,
                "rtf": audio_s / latency,
            }
        )
    return timings


def synthesize(cfg: DictConfig) -> list[Utterance]:
    """The main job: texts -> wav/npy files, a mel plot and timings.json under `cfg.results_dir`."""
    from fastspeech.vocoder import build_vocoder

    texts = read_texts(cfg)
    device = pick_device(cfg.device)
    model = load_model(cfg)
    if cfg.get("engine_set") is not None:
        utterances, timings = route_all(cfg, texts, model, device)
    else:
        utterances = encode_all(texts, cfg.on_unknown, model.cfg.max_seq_len)
        engine = open_engine(cfg, model, device)
        batches = length_sorted_batches(utterances, int(cfg.batch_size))
        timings = run_batches(lambda batch: engine, batches, float(cfg.alpha))
    vocoder = build_vocoder(cfg.vocoder.name, n_iter=cfg.vocoder.n_iter)
    write_results(cfg, utterances, vocoder, timings, device)
    return utterances


def route_all(
    cfg: DictConfig, texts: list[str], model: FastSpeech, device: torch.device
) -> tuple[list[Utterance], list[dict[str, Any]]]:
    """`engine_set=NAME`: every text through the set's router (`fastspeech/router.py`).

    Texts longer than any engine are split when `engine_set.split` is on (so no length limit here);
    with it off they are refused before any engine is loaded.
    """
    split = bool(cfg.engine_set.split)
    utterances = encode_all(texts, cfg.on_unknown, sys.maxsize if split else model.cfg.max_seq_len)
    labels = [f"line {u.index + 1}" if len(texts) > 1 else "text" for u in utterances]
    if not split:
        largest = max(engine_set_configs(cfg), key=lambda e: (e.max_in, e.max_out))
        check_lengths([u.ids for u in utterances], int(largest.max_in), labels, largest.name)
    router = open_engine_set(cfg, model, device)
    routed, stats = router(
        [u.text for u in utterances], [u.ids for u in utterances], float(cfg.alpha), labels
    )
    for u, r in zip(utterances, routed):
        u.mel = r.mel.numpy()
        if r.frames == 0:
            log.warning("line %d: the model predicted no frames (random weights?)", u.index + 1)
    log.info(
        "engine set %s: %d calls %s, %d reroutes, %d splits, %.0f%% of the work was padding",
        cfg.engine_set.name,
        len(stats.calls),
        stats.engine_calls(),
        stats.reroutes,
        stats.splits,
        100 * stats.padded_fraction,
    )
    return utterances, stats.calls


def write_results(cfg: DictConfig, utterances: list[Utterance], vocoder, timings: list[dict], device) -> None:
    import soundfile
    from tqdm import tqdm

    out = Path(cfg.results_dir)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    for u in tqdm(utterances, desc="vocoding", unit="wav", disable=len(utterances) < 2):
        stem = out / f"{u.index:04d}_{slug(u.text)}"
        wav = vocoder(u.mel) if len(u.mel) else np.zeros(0, dtype=np.float32)
        peak = float(np.abs(wav).max()) if len(wav) else 0.0
        if peak > 1.0:
            wav = wav / peak  # keep the wav from clipping
        _atomic(
            f"{stem}.wav", lambda p, wav=wav: soundfile.write(p, wav, vocoder.audio.sample_rate, format="WAV")
        )
        _atomic(f"{stem}.npy", lambda p, mel=u.mel: _save_npy(p, mel))
        u.files = [f"{stem}.wav", f"{stem}.npy"]
        log.info("wrote %s.wav (%.2f s): %s", stem, len(wav) / vocoder.audio.sample_rate, u.text)
    vocoder_s = time.perf_counter() - t0
    if cfg.plot:
        _atomic(str(out / "mels.png"), lambda p: plot_mels(utterances, p))
    engine_s = sum(t["latency_s"] for t in timings)
    audio_s = sum(t["audio_s"] for t in timings)
    summary = {
        "device": str(device),
        "note": "latency_s is the engine call incl. the copy to the host; rtf = audio seconds per compute second",
        "batches": timings,
        "engine_s": engine_s,
        "vocoder_s": vocoder_s,
        "audio_s": audio_s,
        "rtf_engine": audio_s / engine_s if engine_s else None,
        "rtf_end_to_end": audio_s / (engine_s + vocoder_s) if engine_s + vocoder_s else None,
    }
    _atomic(str(out / "timings.json"), lambda p: Path(p).write_text(json.dumps(summary, indent=2)))


def plot_mels(utterances: list[Utterance], path: str, at_most: int = 8) -> None:
    """One PNG: the first `at_most` mels, one panel each."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    shown = utterances[:at_most]
    fig, axes = plt.subplots(len(shown), 1, figsize=(10, 2.2 * len(shown)), squeeze=False)
    for ax, u in zip(axes[:, 0], shown):
        if len(u.mel):
            ax.imshow(u.mel.T, origin="lower", aspect="auto", interpolation="none")
        ax.set_title(f"{u.index:04d}: {u.text[:80]}", fontsize=8)
        ax.set_ylabel("mel bin")
    axes[-1, 0].set_xlabel("frame (256 samples at 22050 Hz)")
    fig.tight_layout()
    fig.savefig(path, format="png", dpi=80)
    plt.close(fig)


def slug(text: str, limit: int = 40) -> str:
    """A file-name-safe slug of the text (ASCII letters and digits, '_' between words)."""
    from unidecode import unidecode

    return re.sub(r"[^a-z0-9]+", "_", unidecode(text).lower()).strip("_")[:limit] or "utterance"


def _save_npy(path: str, array: np.ndarray) -> None:
    with open(path, "wb") as f:  # np.save(str) would append ".npy" to the temp name
        np.save(f, array.astype(np.float32))


def _atomic(path: str, write: Callable[[str], Any]) -> None:
    tmp = f"{path}.{os.getpid()}.tmp"
    write(tmp)
    os.replace(tmp, path)


def build(cfg: DictConfig) -> Engine:
    """`mode=build`: load or build the engine for `cfg.engine`, then stop."""
    device = pick_device(cfg.device)
    return open_engine(cfg, load_model(cfg), device)
