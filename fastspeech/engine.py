"""Fixed-shape engines: spec, fingerprint, build, save, load, run.

An engine is the whole token-ids -> mel -> wav graph (embedding and vocoder included) compiled for
one `conf/engine/*.yaml` (batch, max input tokens, max output frames) x precision x backend x
vocoder. It is built once and cached on disk under a file name made from its spec. The file carries
a fingerprint (weights, spec, hparams, vocoder, library versions, GPU, our own source); a file whose
fingerprint differs
is rebuilt, with a log line saying what changed. Writes are atomic; a truncated or corrupt file is
reported and rebuilt.

What the backends share lives here once: padding a batch up to the engine's shape, trimming it
back, the too-long-input check, and the file format. A backend only compiles a graph
(`fastspeech/backends/`).
"""

from __future__ import annotations

import copy
import dataclasses
import hashlib
import json
import logging
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import torch

from fastspeech.errors import EngineError
from fastspeech.graph import EngineGraph, Runner
from fastspeech.model import FastSpeech
from fastspeech.vocoder.base import Vocoder

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_MAGIC = b"FASTSPEECH-TRT-ENGINE 1\n"
_SOURCES = (
    "fastspeech/model.py",
    "fastspeech/engine.py",
    "fastspeech/graph.py",
    "kernels/add_pos_enc.py",
    "kernels/regulate_length.py",
    "kernels/attention.py",
    "converters/__init__.py",
    "converters/add_pos_enc.py",
    "converters/regulate_length.py",
    "converters/attention.py",
)
_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class EngineSpec:
    """What an engine is compiled for; everything that changes the graph's shapes or kernels."""

    batch: int
    max_in: int
    max_out: int
    precision: str = "fp32"
    backend: str = "eager"
    debug: bool = False  # verify builds: every named activation is an extra output (`EngineGraph`)
    vocoder: str = "none"  # the vocoder's kind; "none": mel only (the model-only latency benchmark)

    def __post_init__(self) -> None:
        if self.precision not in PRECISIONS:
            raise EngineError(f"unknown precision {self.precision!r}; use one of {', '.join(PRECISIONS)}")
        if min(self.batch, self.max_in, self.max_out) < 1:
            raise EngineError(f"engine sizes must be >= 1, got {self}")

    @property
    def name(self) -> str:
        name = f"fastspeech.{self.precision}.b{self.batch}.i{self.max_in}.o{self.max_out}"
        name += f".{self.backend}" if self.vocoder == "none" else f".{self.vocoder}.{self.backend}"
        return f"{name}.debug" if self.debug else name

    @property
    def dtype(self) -> torch.dtype:
        return PRECISIONS[self.precision]


class EngineOutput(NamedTuple):
    """One engine call, trimmed to the items asked for (n <= spec.batch).

    mel (n, max_out, num_mels) float32, zero past mel_lens; mel_lens (n,) = min(frames, max_out);
    frames (n,) the untruncated predicted length, so callers see when speech did not fit;
    durations (n, max_in) frames per token; wav (n, max_out * hop) float32 in [-1, 1], zero from
    mel_lens * hop on (an item's audio is wav[i, : mel_lens[i] * hop]); None for an engine built
    without a vocoder (the model-only benchmark's).
    """

    mel: torch.Tensor
    mel_lens: torch.Tensor
    frames: torch.Tensor
    durations: torch.Tensor
    wav: torch.Tensor | None = None


class Engine:
    """A loaded engine: pads requests to its fixed shape, runs, trims back.

    Debug engines (`spec.debug`) also return the activations named in `activation_names`: see
    `run`, which returns the runner's raw outputs for the whole padded batch.
    """

    def __init__(
        self, spec: EngineSpec, runner: Runner, device: torch.device, activation_names: tuple[str, ...] = ()
    ):
        self.spec, self.runner, self.device = spec, runner, torch.device(device)
        self.activation_names = activation_names

    def __call__(
        self, token_ids: Sequence[Sequence[int]], alpha: float | Sequence[float] = 1.0, to_host: bool = False
    ) -> EngineOutput:
        """Run up to `spec.batch` token-id lists (each 1..max_in ids). Never crops input.

        The outputs are copies (the runner's buffers are reused by the next call), on the engine's
        device, or with `to_host` on the CPU: copied there straight from the buffers.
        """
        n = len(token_ids)
        outputs = self.run(*self.pad(token_ids, alpha))[:5]
        if self.spec.vocoder == "none":
            outputs = outputs[:4]  # the graph's (B, 0) placeholder is no audio: wav is None
        if to_host and self.device.type == "cuda":
            # One asynchronous copy per output into pinned memory and one wait, not blocking copies.
            host = [t[:n].to("cpu", non_blocking=True) for t in outputs]
            torch.cuda.current_stream(self.device).synchronize()
            return EngineOutput(*host, *([None] * (5 - len(host))))
        return EngineOutput(*(t[:n].clone() for t in outputs), *([None] * (5 - len(outputs))))

    def pad(
        self, token_ids: Sequence[Sequence[int]], alpha: float | Sequence[float] = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> tokens (batch, max_in) zero-padded and alphas (batch,) (1.0 in unused rows), on the device."""
        s = self.spec
        n = len(token_ids)
        if not 1 <= n <= s.batch:
            raise EngineError(f"engine {s.name} takes 1 to {s.batch} texts per call, got {n}")
        too_long = [len(ids) for ids in token_ids if len(ids) > s.max_in]
        if too_long:
            raise EngineError(
                f"input of {max(too_long)} tokens is longer than engine {s.name} takes ({s.max_in}); "
                "use a larger engine= or split the text"
            )
        tokens = torch.zeros(s.batch, s.max_in, dtype=torch.long)
        for i, ids in enumerate(token_ids):
            tokens[i, : len(ids)] = torch.as_tensor(list(ids), dtype=torch.long)
        alphas = torch.ones(s.batch, dtype=torch.float32)
        alphas[:n] = torch.as_tensor(alpha, dtype=torch.float32).expand(n)
        if self.device.type == "cuda":  # from pinned memory: asynchronous, no staging copy
            return tokens.pin_memory().to(self.device, non_blocking=True), alphas.pin_memory().to(
                self.device, non_blocking=True
            )
        return tokens.to(self.device), alphas.to(self.device)

    def run(self, tokens: torch.Tensor, alphas: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The runner's outputs for a padded batch (`pad`); they may be buffers the next call reuses."""
        with torch.inference_mode():
            return self.runner(tokens, alphas)


def model_on(model: FastSpeech, device: torch.device, dtype: torch.dtype) -> FastSpeech:
    """`model` itself when its weights already live on `device` in `dtype`, else a cast copy.

    The caller's model is never changed. Engines share weights when the caller passes a model
    already on the engines' device and dtype (the pipeline does).
    """
    if all(p.device == device and p.dtype == dtype for p in model.parameters()):
        return model
    return copy.deepcopy(model).to(device=device, dtype=dtype)


# ---------------------------------------------------------------------------------------------
# Fingerprint and file format


def fingerprint_parts(
    model: FastSpeech, spec: EngineSpec, device: torch.device, vocoder: Vocoder | None = None
) -> dict[str, str]:
    """Everything a compiled engine depends on, one readable entry each (so a rebuild can say why)."""
    weights = hashlib.sha256()
    for name, tensor in model.state_dict().items():
        weights.update(name.encode())
        weights.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
    source = hashlib.sha256()
    for rel in _SOURCES + (f"fastspeech/backends/{spec.backend}.py",):
        path = _ROOT / rel
        source.update(path.read_bytes() if path.exists() else rel.encode())
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        gpu = f"{props.name} sm_{props.major}{props.minor}"
    else:
        gpu = "cpu"
    try:
        import triton

        triton_version = triton.__version__
    except ImportError:
        triton_version = "none"
    return {
        "weights": weights.hexdigest()[:16],
        "spec": json.dumps(dataclasses.asdict(spec), sort_keys=True),
        "hparams": json.dumps(dataclasses.asdict(model.cfg), sort_keys=True),
        "vocoder": json.dumps(vocoder.fingerprint() if vocoder is not None else None, sort_keys=True),
        "versions": f"torch {torch.__version__}, triton {triton_version}",
        "device": gpu,
        "source": source.hexdigest()[:16],
    }


def write_engine_file(path: Path, parts: dict[str, str], payload: bytes) -> None:
    """Header (magic, JSON with fingerprint and payload hash) + payload; temp file then rename."""
    header = json.dumps(
        {
            "fingerprint": parts,
            "payload_sha256": hashlib.sha256(payload).hexdigest(),
            "payload_bytes": len(payload),
        }
    ).encode()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        f.write(_MAGIC + len(header).to_bytes(8, "little") + header + payload)
    os.replace(tmp, path)


def read_engine_file(path: Path) -> tuple[dict[str, str], bytes]:
    """-> (fingerprint parts, payload); EngineError naming the fault when the file is not intact."""
    if path.is_dir():
        raise EngineError(
            f"engine path {path} is a folder, not an engine file; remove it or use another engine_dir"
        )
    data = path.read_bytes()
    if not data.startswith(_MAGIC):
        raise EngineError(f"engine file {path} is not an engine file (bad header)")
    start = len(_MAGIC) + 8
    size = int.from_bytes(data[len(_MAGIC) : start], "little")
    try:
        header = json.loads(data[start : start + size])
    except ValueError:
        raise EngineError(f"engine file {path} is corrupt (unreadable header)") from None
    if not isinstance(header, dict) or not isinstance(header.get("fingerprint"), dict):
        raise EngineError(f"engine file {path} is corrupt (header is not an engine header)")
    payload = data[start + size :]
    if len(payload) != header.get("payload_bytes") or hashlib.sha256(payload).hexdigest() != header.get(
        "payload_sha256"
    ):
        raise EngineError(f"engine file {path} is truncated or corrupt (payload checksum mismatch)")
    return header["fingerprint"], payload


def load_or_build(
    model: FastSpeech,
    spec: EngineSpec,
    engine_dir: str | os.PathLike,
    device: torch.device | str,
    backend_options: dict[str, Any] | None = None,
    force_build: bool = False,
    allow_build: bool = True,
    vocoder: Vocoder | None = None,
) -> Engine:
    """Load the engine for `spec` from `engine_dir` when its fingerprint matches, else build it.

    `vocoder` (a `fastspeech.vocoder` module) is compiled into the graph: the engine then returns
    the wav too, and `spec.vocoder` is set to its kind (the file name and fingerprint see it).
    Engines share the caller's model and vocoder when these already live on the device in the
    engine's dtype (Griffin-Lim: float32 always); otherwise each engine casts a copy. None: a
    mel-only engine (the model-only latency benchmark); the product path always passes one.
    """
    from fastspeech.backends import get_backend

    device = torch.device(device)
    if device.type == "cuda" and device.index is None:  # "cuda" is "cuda:N": share the caller's weights
        device = torch.device("cuda", torch.cuda.current_device())
    kind = vocoder.kind if vocoder is not None else "none"
    if spec.vocoder not in ("none", kind):
        raise EngineError(
            f"engine spec {spec.name} names vocoder {spec.vocoder}, but load_or_build got {kind}"
        )
    spec = dataclasses.replace(spec, vocoder=kind)
    backend = get_backend(spec.backend, **(backend_options or {}))
    backend.check_available(device)
    path = Path(engine_dir) / f"{spec.name}.engine"
    parts = fingerprint_parts(model, spec, device, vocoder)
    # Backend switches (Inductor's enable_pdl, combo_kernels...) change the compiled code too.
    options = {k: v for k, v in (backend_options or {}).items() if k != "pool"}
    parts["backend_options"] = json.dumps(options, sort_keys=True, default=str)
    model = model_on(model, device, spec.dtype)
    vocoder = vocoder.on(device, spec.dtype).eval() if vocoder is not None else None
    graph = EngineGraph(model, spec.max_out, vocoder, spec.debug, trim=spec.backend == "eager").eval()
    example = (
        torch.zeros(spec.batch, spec.max_in, dtype=torch.long, device=device),
        torch.ones(spec.batch, dtype=torch.float32, device=device),
    )
    reason = "forced (force_build=true)" if force_build else _stale_reason(path, parts)
    if reason is None:
        t0 = time.perf_counter()
        runner = backend.load(graph, example, read_engine_file(path)[1])
        log.info("engine %s loaded in %.1f s", path, time.perf_counter() - t0)
        return Engine(spec, runner, device, graph.activation_names)
    if not allow_build:
        raise EngineError(
            f"engine {path} is not usable ({reason}); build it with mode=build or allow building"
        )
    log.info("building engine %s: %s", path, reason)
    t0 = time.perf_counter()
    runner, payload = backend.build(graph, example)
    write_engine_file(path, parts, payload)
    log.info("engine %s built in %.1f s (%.1f MB)", path, time.perf_counter() - t0, len(payload) / 1e6)
    return Engine(spec, runner, device, graph.activation_names)


def _stale_reason(path: Path, parts: dict[str, str]) -> str | None:
    """Why the file at `path` cannot be used as is (None when it can)."""
    if not path.exists():
        return "no engine file yet"
    if path.is_dir():
        read_engine_file(path)  # a folder cannot be replaced: its one-line error
    try:
        stored, _ = read_engine_file(path)
    except EngineError as exc:
        log.warning("%s; rebuilding", exc)
        return "the old file was corrupt"
    changed = [k for k in parts if stored.get(k) != parts[k]]
    return f"fingerprint changed ({', '.join(changed)})" if changed else None
