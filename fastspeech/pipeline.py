"""Text in, wav out: what `run.py` calls. Read texts, encode, batch by length, run the engine,
vocode, write `results/NNNN_<slug>.wav` + `.npy`, one `mels.png` and `timings.json`. With
`engine_set=NAME` a multi-engine set runs the texts instead of one engine (`route_all`, `router.py`).

Every text is encoded and checked before anything runs, so bad input fails fast with one line;
files are written atomically, so outputs already written stay intact when a later one fails.
"""

from __future__ import annotations

import json
import logging
import math
import os
import re
import shlex
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
from fastspeech.errors import (
    CheckpointError,
    ConfigError,
    EngineError,
    EngineNotBuilt,
    TextError,
    check_writable,
    unwritable,
)
from fastspeech.model import FastSpeech, FastSpeechConfig
from fastspeech.router import Router, RouteStats, check_lengths
from fastspeech.settings import hydra_value
from fastspeech.text import check_texts
from fastspeech.vocoder import AudioConfig, Vocoder, build_vocoder, pcm16

log = logging.getLogger(__name__)

CONF_DIR = Path(__file__).resolve().parent.parent / "conf"


@dataclass
class Utterance:
    """One line of input on its way to a wav file."""

    index: int
    text: str
    ids: list[int]
    label: str = "text"  # how errors and logs name it: "text" or "line N" (N counts blank lines too)
    mel: np.ndarray | None = None  # (frames, num_mels) natural-log mel
    wav: np.ndarray | None = None  # (frames * 256,) int16 16-bit PCM from the engine's vocoder
    files: list[str] = field(default_factory=list)


# ---------------------------------------------------------------------------------------------
# Set-up: device, model, engine


def pick_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name} asked for, but no CUDA GPU is visible; use device=auto or cpu")
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        n = torch.cuda.device_count()
        raise ConfigError(
            f"device={name}: this machine has {n} CUDA GPU(s); use device=cuda:0 .. cuda:{n - 1}"
        )
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
        try:
            load_checkpoint(model, choice)
        except CheckpointError:
            hint = matching_model_config(choice)
            if hint is None or hint == cfg.model.name:
                raise
            raise CheckpointError(
                f"checkpoint {choice} has the hparams of conf/model/{hint}.yaml, not of model={cfg.model.name}; "
                f"add model={hint}"
            ) from None
    return model


def matching_model_config(path: str) -> str | None:
    """The `conf/model/*.yaml` whose hparams the checkpoint at `path` was trained with, if any."""
    state, _ = read_state_dict(path)
    inferred = hparams_from_state_dict(state)
    if not inferred:
        return None
    base = OmegaConf.load(CONF_DIR / "model" / "dle.yaml")
    for yaml in sorted((CONF_DIR / "model").glob("*.yaml")):
        hparams = OmegaConf.merge(base, OmegaConf.load(yaml))
        if all(hparams.get(k, v) == v for k, v in inferred.items() if k != "n_symbols"):
            return yaml.stem
    return None


def resolve_precision(precision: str, device: torch.device) -> str:
    """fp16/bf16 engines are GPU engines; on the CPU we run fp32 and say so (documented fallback).
    A name that is no precision is one line, before any fallback."""
    if precision not in PRECISIONS:
        raise ConfigError(f"precision={precision!r}: use one of {', '.join(PRECISIONS)}")
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
    lane: tuple[Any, torch.cuda.Stream | None] = (None, None),
    vocoder: Vocoder | None = None,
    batch: int | None = None,
) -> Engine:
    """Load (or build, with progress in the log) the engine `cfg.engine` describes: token ids -> mel
    -> wav, the vocoder inside (`vocoder`, else the one `cfg.vocoder` names), `batch` rows per call
    (default `cfg.batch_size`).

    `lane`: (pool, stream) of a set's lane (`engine_lanes`): the CUDA graph memory pool the engine
    shares with the other engines of its lane (Inductor CUDA graphs only), the stream its calls run on.
    """
    from fastspeech.backends import resolve_backend

    engine_cfg = engine_cfg or cfg.engine
    backend, why = resolve_backend(cfg.backend.name, device)
    precision = resolve_precision(cfg.precision.name, device)
    model.to(device=device, dtype=PRECISIONS[precision])  # in place: every engine shares these weights
    vocoder = vocoder or open_vocoder(cfg)  # load_or_build places it (shared when already placed)
    log.info("backend=%s (%s)", backend, why)
    spec = EngineSpec(
        batch=int(batch or cfg.batch_size),
        max_in=int(engine_cfg.max_in),
        max_out=int(engine_cfg.max_out),
        precision=precision,
        backend=backend,
    )
    options = cfg.backend.get(backend)
    options = OmegaConf.to_container(options, resolve=True) if options is not None else {}
    pool, stream = lane
    if pool is not None and backend == "inductor":
        options["pool"] = pool
    engine = load_or_build(
        model,
        spec,
        cfg.engine_dir,
        device,
        options,
        force_build=cfg.force_build,
        allow_build=allow_build,
        vocoder=vocoder,
    )
    engine.stream = stream
    return engine


def open_vocoder(cfg: DictConfig) -> Vocoder:
    """The vocoder `conf/vocoder/*.yaml` names, every setting checked (a one-line `VocoderError`)."""
    return build_vocoder(OmegaConf.to_container(cfg.vocoder, resolve=True))


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


def set_batches(cfg: DictConfig) -> list[int]:
    """The batch sizes each engine of the set is built at: `engine_set.batches`, else [batch_size]."""
    batches = cfg.engine_set.get("batches") or [cfg.batch_size]
    try:
        sizes = sorted({int(b) for b in batches})
    except (TypeError, ValueError):
        sizes = []
    if not sizes or sizes[0] < 1:
        raise ConfigError(f"engine_set.batches={list(batches)} must list batch sizes >= 1, e.g. [1,8]")
    return sizes


def open_engine_set(
    cfg: DictConfig,
    model: FastSpeech,
    device: torch.device,
    vocoder: Vocoder | None = None,
    build_missing: bool | None = None,
) -> Router:
    """Load (or, with `build_missing`, default `engine_set.build_missing`, build) every engine of the
    set -> a `Router`.

    The engines share the model's weights (cast once, in place) and, on CUDA, run on
    `engine_set.streams` lanes of a graph memory pool and a stream each (`set_lanes`): two calls on
    different lanes run at once on the device.
    With building off, every engine that is missing or stale is named in one error with the command
    that builds them.
    """
    vocoder = vocoder or open_vocoder(cfg)
    # One placed copy of the vocoder for every engine of the set.
    vocoder = vocoder.on(device, PRECISIONS[resolve_precision(cfg.precision.name, device)])
    build_missing = bool(cfg.engine_set.build_missing) if build_missing is None else build_missing
    engines, missing = [], []
    for engine_cfg, batch, lane in engine_lanes(cfg, device):
        try:
            engines.append(
                open_engine(
                    cfg, model, device, engine_cfg, build_missing, lane=lane, vocoder=vocoder, batch=batch
                )
            )
        except EngineNotBuilt as exc:  # missing or stale (building is off): named together below
            log.warning("%s", exc)
            missing.append(
                engine_cfg.name if batch == int(cfg.batch_size) else f"{engine_cfg.name} (b{batch})"
            )
    if missing:
        missing = missing[::-1]  # smallest first, as the set lists them
        raise EngineError(
            f"engine set {cfg.engine_set.name}: {len(missing)} engine(s) not built or stale "
            f"({', '.join(missing)}); build them with `{build_command(cfg, missing)}`, "
            "or set engine_set.build_missing=true"
        )
    return Router(engines, split=bool(cfg.engine_set.split), on_unknown=cfg.on_unknown)


def engine_lanes(cfg: DictConfig, device: torch.device) -> list[tuple[DictConfig, int, tuple]]:
    """(engine config, batch size, lane) of every engine of the set, largest first: where and in
    which order `open_engine_set` opens them (`set_lanes`, `lane_of`). Largest first, since a graph
    captured into a pool that a larger one's capture has grown reuses its blocks."""
    lanes = set_lanes(cfg, device)
    configs = sorted(engine_set_configs(cfg), key=lambda e: (int(e.max_in), int(e.max_out)))
    inputs = sorted({int(c.max_in) for c in configs})
    placed = [
        (c, b, lane_of(inputs.index(int(c.max_in)), b, lanes)) for c in configs for b in set_batches(cfg)
    ]
    return placed[::-1]


def set_lanes(cfg: DictConfig, device: torch.device) -> list[tuple[Any, torch.cuda.Stream | None]]:
    """The set's lanes, `engine_set.streams` of them on CUDA: (graph memory pool, stream) each; one
    lane (a shared pool, the caller's stream) elsewhere. Which engine runs on which: `lane_of`.

    Calls on one lane run one after another; calls on different lanes (the router keeps a call in
    flight per lane, `Router.depth`) run at once on the device. At batch 1 a call's ~250 small
    kernels fill a fraction of the GPU. The `default` set at batch 1 against the single engine
    (H200, runs 112 and 115, docs/kernels_history.md): one lane 1.11x for 1.02x its memory, two 1.30x for
    1.12x, three 1.48-1.50x for 1.22x, four 1.53x for 1.31x."""
    if device.type != "cuda":
        return [(None, None)]
    n = int(cfg.engine_set.get("streams") or 1)
    if n == 1:
        return [(torch.cuda.graph_pool_handle(), None)]
    return [(torch.cuda.graph_pool_handle(), torch.cuda.Stream(device)) for _ in range(n)]


def lane_of(turn: int, batch: int, lanes: list) -> Any:
    """The lane of an engine of the set's `turn`-th input size (smallest first) at `batch`. Batch-1
    engines take turns by input size, so neighbouring input sizes sit on different lanes however
    many output sizes a set has (`speech_rate`'s i128_o1024 runs only what overflows its i128_o768
    and shares its lane; three lanes give that set 1.59x the single engine, run 115). Larger batches
    stay on the first lane: at batch 8 two lanes held 1.37x the single engine's memory and gave
    less than one lane (1.15x against 1.26x, run 116)."""
    return lanes[turn % len(lanes)] if batch == 1 else lanes[0]


def build_command(cfg: DictConfig, engines: list[str]) -> str:
    """The `run.py` sweep that builds `engines` as this run would load them (same weights, sizes and
    vocoder: the engine's fingerprint covers them all), quoted for a POSIX shell."""
    args = [
        f"engine={','.join(engines)}",
        f"model={cfg.model.name}",
        f"precision={cfg.precision.name}",
        f"backend={cfg.backend.name}",
        f"batch_size={','.join(str(b) for b in set_batches(cfg))}",
        f"engine_dir={hydra_value(cfg.engine_dir)}",
        f"vocoder={cfg.vocoder.name}",
    ]
    args += [f"vocoder.{k}={hydra_value(v)}" for k, v in cfg.vocoder.items() if k != "name" and v is not None]
    args += [f"checkpoint={hydra_value(cfg.checkpoint)}"] if cfg.checkpoint else [f"seed={cfg.seed}"]
    return "python run.py -m " + " ".join(shlex.quote(a) for a in args) + " mode=build"


# ---------------------------------------------------------------------------------------------
# Input


def check_alpha(alpha: Any) -> float:
    """`alpha` (speed) as a float; a finite number > 0, so that no run can write an empty wav."""
    try:
        value = float(alpha)
    except (TypeError, ValueError):
        value = math.nan
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"alpha={alpha} is not a finite number > 0; use e.g. alpha=1.0 (> 1 speaks slower)")
    return value


def read_texts(cfg: DictConfig) -> list[str]:
    """`text=` (one utterance) or `input=` (a UTF-8 file, one utterance a line, blank lines skipped;
    `input=-` reads standard input). Lines are trimmed; the line numbers in errors count every line."""
    if cfg.text is not None and cfg.input is not None:
        raise ConfigError("give either text=... or input=FILE, not both")
    if cfg.input is not None:
        source = str(cfg.input)
        if source == "-":
            data, where = sys.stdin.buffer.read(), "standard input"
        else:
            path = Path(source)
            if path.is_dir():
                raise ConfigError(
                    f"input={path} is a folder; pass input=PATH to a text file (one utterance a line)"
                )
            if not path.is_file():
                raise ConfigError(f"input file not found: {path}; pass input=PATH to a text file")
            data, where = path.read_bytes(), f"input file {path}"
        # Lines end at \n, \r\n or \r only: str.splitlines also breaks at form feeds, U+2028 and other
        # separators inside a line, which `wc -l` and editors count as one line.
        lines = [line.strip() for line in re.split(r"\r\n|\r|\n", decode_text(data, where))]
        if lines and not lines[-1]:
            lines.pop()  # the final newline ends the last line; it starts none
        if not any(lines):
            raise TextError(f"{where} has no text; write one utterance a line")
        return lines
    if cfg.text is None:
        raise ConfigError('nothing to say: give text="..." or input=FILE (input=- reads standard input)')
    return [str(cfg.text)]


def decode_text(data: bytes, where: str) -> str:
    """UTF-8 text (a BOM allowed); binary or undecodable data is a one-line `TextError`."""
    if b"\0" in data[:65536]:
        raise TextError(f"{where} looks binary (it holds NUL bytes), not text; pass a UTF-8 text file")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise TextError(
            f"{where} is not UTF-8 text (byte 0x{data[exc.start]:02x} on line {line}); save it as UTF-8"
        ) from None


def encode_all(texts: list[str], on_unknown: str, max_tokens: int | None = None) -> list[Utterance]:
    """Encode every non-blank line up front; one `TextError` names every bad line, not only the
    first (`fastspeech.text.check_texts`). Blank lines in a file are skipped but keep their numbers.

    `max_tokens` (optional): refuse lines longer than that (verify's single engine call); the
    synthesis path splits long lines instead.
    """
    numbers = [i + 1 for i, t in enumerate(texts) if t.strip() or len(texts) == 1]
    kept = [texts[n - 1] for n in numbers]
    ids = check_texts(kept, on_unknown, numbers if len(texts) > 1 else None)
    labels = [f"line {n}" if len(texts) > 1 else "text" for n in numbers]
    too_long = [
        f"{label} is {len(one)} tokens"
        for label, one in zip(labels, ids)
        if max_tokens and len(one) > max_tokens
    ]
    if too_long:
        raise TextError(f"{'; '.join(too_long[:10])}: longer than {max_tokens} tokens; shorten them")
    return [
        Utterance(k, text, one, label=label) for k, (text, one, label) in enumerate(zip(kept, ids, labels))
    ]


# ---------------------------------------------------------------------------------------------
# Synthesis: texts -> router (one engine is a set of one) -> wav files


def open_router(
    cfg: DictConfig, model: FastSpeech, device: torch.device, vocoder: Vocoder | None = None
) -> Router:
    """The engines this run uses, behind the router: `engine_set=NAME`, or `engine=` as a set of one.

    Either way a text longer than the engine is split at sentence, clause and word boundaries (never
    cropped); with `engine_set.split=false` such a text is refused before any engine is loaded.
    """
    if cfg.get("engine_set") is None:
        return Router(
            [open_engine(cfg, model, device, vocoder=vocoder)], split=True, on_unknown=cfg.on_unknown
        )
    return open_engine_set(cfg, model, device, vocoder)


def synthesize(cfg: DictConfig) -> list[Utterance]:
    """The main job: texts -> wav/npy files under `cfg.results_dir`, plus this run's mel plot and
    timings in `results_dir/runs/<run>/`. Every check that can fail runs before the first engine call."""
    alpha = check_alpha(cfg.alpha)
    texts = read_texts(cfg)
    utterances = encode_all(texts, cfg.on_unknown)
    if cfg.get("engine_set") is not None and not bool(cfg.engine_set.split):
        largest = max(engine_set_configs(cfg), key=lambda e: (e.max_in, e.max_out))
        check_lengths(
            [u.ids for u in utterances], int(largest.max_in), [u.label for u in utterances], largest.name
        )
    vocoder = open_vocoder(cfg)
    out, run_dir = prepare_results(cfg)
    device = pick_device(cfg.device)
    model = load_model(cfg)
    router = open_router(cfg, model, device, vocoder)
    stats = speak(router, utterances, alpha)
    write_results(cfg, out, run_dir, utterances, stats.calls, device)
    return utterances


def speak(router: Router, utterances: list[Utterance], alpha: float) -> RouteStats:
    """The utterances through the router: each one's mel and wav set (the CLI and `fastspeech.TTS`)."""
    routed, stats = router(
        [u.text for u in utterances], [u.ids for u in utterances], alpha, [u.label for u in utterances]
    )
    for u, r in zip(utterances, routed):
        u.mel, u.wav = r.mel.numpy(), r.wav.numpy()
        if r.frames == 0:
            log.warning("%s: the model predicted no frames (random weights?)", u.label)
    log.info(
        "%d calls %s, %d reroutes, %d splits, %.0f%% of the work was padding",
        len(stats.calls),
        stats.engine_calls(),
        stats.reroutes,
        stats.splits,
        100 * stats.padded_fraction,
    )
    return stats


def trimmed_wav(u: Utterance) -> np.ndarray:
    """The engine's 16-bit PCM of an utterance, exactly its mel frames x 256 samples (float input is
    encoded as the server does): never a padded tail."""
    return pcm16(np.asarray(u.wav)[: len(u.mel) * AudioConfig.hop_length])


def prepare_results(cfg: DictConfig) -> tuple[Path, Path]:
    """Create (and check writable) `results_dir` and this run's own `runs/<stamp>` folder, before any
    synthesis: a folder that cannot be written fails here, not after the work."""
    out = Path(cfg.results_dir)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    try:
        out.mkdir(parents=True, exist_ok=True)
        for k in range(1000):  # two runs in one second get their own folders
            run_dir = out / "runs" / (stamp if k == 0 else f"{stamp}-{k}")
            try:
                run_dir.mkdir(parents=True)
                break
            except FileExistsError:
                continue
    except OSError as exc:
        raise unwritable(out, "results_dir", "results", exc) from None
    check_writable(run_dir, "results_dir", "results")
    return out, run_dir


def write_results(
    cfg: DictConfig, out: Path, run_dir: Path, utterances: list[Utterance], timings: list[dict], device
) -> None:
    """`NNNN_<slug>.wav` (16-bit PCM, exactly mel frames x 256 samples) and `.npy` (the mel) per line
    in `out`; `mels.png` and `timings.json` (with the list of files written) in `run_dir`."""
    import soundfile
    from tqdm import tqdm

    t0 = time.perf_counter()
    for u in tqdm(utterances, desc="writing", unit="wav", disable=len(utterances) < 2):
        stem = out / f"{u.index:04d}_{slug(u.text)}"
        wav = trimmed_wav(u)
        _atomic(
            f"{stem}.wav",
            lambda p, wav=wav: soundfile.write(
                p, wav, AudioConfig.sample_rate, format="WAV", subtype="PCM_16"
            ),
        )
        _atomic(f"{stem}.npy", lambda p, mel=u.mel: _save_npy(p, mel))
        u.files = [f"{stem}.wav", f"{stem}.npy"]
        log.info("wrote %s.wav (%.2f s): %s", stem, len(wav) / AudioConfig.sample_rate, u.text)
    write_s = time.perf_counter() - t0
    if cfg.plot:
        _atomic(str(run_dir / "mels.png"), lambda p: plot_mels(utterances, p))
    engine_s = sum(t["latency_s"] for t in timings)
    audio_s = sum(t["audio_s"] for t in timings)
    summary = {
        "device": str(device),
        "note": (
            "latency_s is the engine call incl. the copy to the host, counted from its submission or, "
            "when the router queued it behind the call before, from that call's results; "
            "rtf = audio seconds per compute second"
        ),
        "files": [f for u in utterances for f in u.files],
        "batches": timings,
        "engine_s": engine_s,
        "write_s": write_s,
        "audio_s": audio_s,
        "rtf_engine": audio_s / engine_s if engine_s else None,
        "rtf_end_to_end": audio_s / (engine_s + write_s) if engine_s + write_s else None,
    }
    _atomic(str(run_dir / "timings.json"), lambda p: Path(p).write_text(json.dumps(summary, indent=2)))
    log.info("this run's timings and mel plot: %s", run_dir)


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
    """Write through a temp file and rename: a file is whole or absent, never partial (Ctrl-C too)."""
    tmp = f"{path}.{os.getpid()}.tmp"
    try:
        write(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def build(cfg: DictConfig) -> list[Engine]:
    """`mode=build`: load or build the engine `engine=` names, or every engine of `engine_set=` (each
    batch size of `engine_set.batches`), with the vocoder inside as a run loads them; then stop."""
    device, model = pick_device(cfg.device), load_model(cfg)
    if cfg.get("engine_set") is None:
        return [open_engine(cfg, model, device)]
    return open_engine_set(cfg, model, device, build_missing=True).all_engines  # building is what was asked
