"""Fixed-shape engines: spec, fingerprint, build, save, load, run.

An engine is the whole token-ids -> mel -> wav graph (embedding and vocoder included) compiled for
one `conf/engine/*.yaml` (batch, max input tokens, max output frames) x precision x backend x
vocoder. It is built once and cached on disk under a file name made from its spec. The file carries
a fingerprint (weights, spec, hparams, vocoder, library versions, GPU, our own source); a file whose
fingerprint differs
is rebuilt, with a log line saying what changed. Writes are atomic; a truncated or corrupt file is
reported and rebuilt.

What the backends share lives here once: padding a batch up to the engine's shape, trimming it
back, the too-long-input check, the host side of a call (`HostIO`: pinned staging, copies back only
as far as the speech goes), and the file format. A backend only compiles a graph
(`fastspeech/backends/`).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import hashlib
import itertools
import json
import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np
import torch

from fastspeech.errors import DeviceMemoryError, EngineError, EngineNotBuilt, check_writable
from fastspeech.graph import EngineGraph, Runner
from fastspeech.model import FastSpeech
from fastspeech.vocoder.base import Vocoder

log = logging.getLogger(__name__)

PRECISIONS = {"fp32": torch.float32, "fp16": torch.float16, "bf16": torch.bfloat16}
_MAGIC = b"FASTSPEECH-TRT-ENGINE 1\n"
_ROOT = Path(__file__).resolve().parent.parent
# The source files a compiled engine depends on (the vocoder's are in its own fingerprint). Every
# file of kernels/ and converters/ is taken, so a new op is covered without editing this list (the
# conv1d op was missing from the hand-written one: editing it would not have rebuilt stale engines).
_SOURCES = ("fastspeech/model.py", "fastspeech/engine.py", "fastspeech/graph.py") + tuple(
    f"{folder}/{path.name}"
    for folder in ("kernels", "converters")
    for path in sorted((_ROOT / folder).glob("*.py"))
)


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
    durations (n, max_in) frames per token; wav (n, max_out * hop) int16, 16-bit PCM (the vocoder's
    float samples through `fastspeech.vocoder.to_pcm16` in the graph), zero from mel_lens * hop on (an
    item's audio is wav[i, : mel_lens[i] * hop]; `wav / 32767` for float samples); None for an engine
    built without a vocoder (the model-only benchmark's).
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

    One engine is called from one thread at a time (the batcher's worker thread, or the caller's
    own): a call fills the engine's host staging buffers in place (`HostIO`).

    `stream`: a CUDA stream of the engine's own (None: the caller's current stream). Calls whose
    results go to the host (`submit`, `__call__` with `to_host`) stage, replay and copy out on it, so
    the calls of two engines with their own graph memory pools run at once on the device
    (`pipeline.set_lanes`, `engine_set.streams`); calls of one engine stay in order on it.
    """

    def __init__(
        self, spec: EngineSpec, runner: Runner, device: torch.device, activation_names: tuple[str, ...] = ()
    ):
        self.spec, self.runner, self.device = spec, runner, torch.device(device)
        self.activation_names = activation_names
        # The staged call path (`HostIO`): on CUDA always; tests switch it on for CPU engines, where
        # it runs the same code without pinned memory.
        self.staged = self.device.type == "cuda"
        self._io: HostIO | None = None
        self.stream: torch.cuda.Stream | None = None
        self._caller_call: torch.cuda.Event | None = None  # the last call on the caller's stream

    def _on_stream(self) -> contextlib.AbstractContextManager:
        """The engine's own stream as the current one, after any call of ours on the caller's stream
        (nothing where it has no stream)."""
        if self.stream is None:
            return contextlib.nullcontext()
        if self._caller_call is not None:
            self.stream.wait_event(self._caller_call)
            self._caller_call = None
        return torch.cuda.stream(self.stream)

    def __call__(
        self, token_ids: Sequence[Sequence[int]], alpha: float | Sequence[float] = 1.0, to_host: bool = False
    ) -> EngineOutput:
        """Run up to `spec.batch` token-id lists (each 1..max_in ids). Never crops input.

        The outputs are copies (the runner's buffers are reused by the next call), on the engine's
        device, or with `to_host` on the CPU. A later call never changes them: on CUDA they live in
        pinned host buffers that the engine reuses only once nothing outside it holds them (see
        `HostIO`), so read them, or copy what you keep, without a second copy here.
        """
        n = len(token_ids)
        if to_host and self.staged:
            with self._on_stream():
                outputs = self._outputs(self.io.run(self.runner, token_ids, alpha, wait=True))
                return self.io.to_host(outputs, n)
        caller = torch.cuda.current_stream(self.device) if self.stream is not None else None
        if caller is not None:  # device outputs: on the caller's stream, after any call on ours
            caller.wait_stream(self.stream)
        if not self.staged:
            outputs = self._outputs(self.run(*self.pad(token_ids, alpha)))
        else:
            outputs = self._outputs(self.io.run(self.runner, token_ids, alpha, wait=False))
        result = EngineOutput(*(t[:n].clone() for t in outputs), *([None] * (5 - len(outputs))))
        if caller is not None:
            self._caller_call = caller.record_event()
        return result

    def submit(
        self, token_ids: Sequence[Sequence[int]], alpha: float | Sequence[float] = 1.0
    ) -> Callable[[], EngineOutput]:
        """Start a call -> `wait`, which returns what `__call__(..., to_host=True)` would, once it is
        on the host. Between the two the host is free: the router copies out the previous call's
        results while the device runs this one. Deferred where the call copies whole rows (staged,
        outputs under `two_phase_bytes`; `HostIO.to_host_later`); otherwise the call runs here and
        `wait` hands its result over. Drop a result before the next-but-one call on this engine, or
        the engine allocates another pinned output set (as with `__call__`)."""
        if not self.staged:
            result = self(token_ids, alpha, to_host=True)
            return lambda: result
        with self._on_stream():
            outputs = self._outputs(self.io.run(self.runner, token_ids, alpha, wait=False))
            return self.io.to_host_later(outputs, len(token_ids))

    def _outputs(self, outputs: Sequence[torch.Tensor]) -> Sequence[torch.Tensor]:
        """The runner's outputs that a call returns: (mel, mel_lens, frames, durations[, wav])."""
        if self.spec.vocoder == "none":
            return outputs[:4]  # the graph's (B, 0) placeholder is no audio: wav is None
        return outputs[:5]

    @property
    def io(self) -> HostIO:
        """The staging buffers of the staged call path, made on first use."""
        if self._io is None:
            self._io = HostIO(self.spec, self.device)
        return self._io

    def pad(
        self, token_ids: Sequence[Sequence[int]], alpha: float | Sequence[float] = 1.0
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """-> tokens (batch, max_in) zero-padded and alphas (batch,) (1.0 in unused rows), on the device.

        New tensors each call (`verify`, benchmarks and tests keep them); `__call__` fills the
        engine's staging buffers instead."""
        s = self.spec
        tokens = torch.empty(s.batch, s.max_in, dtype=torch.long)
        alphas = torch.empty(s.batch, dtype=torch.float32)
        fill_inputs(s, token_ids, alpha, tokens.numpy(), alphas.numpy())
        return tokens.to(self.device), alphas.to(self.device)

    def run(self, tokens: torch.Tensor, alphas: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The runner's outputs for a padded batch (`pad`); they may be buffers the next call reuses."""
        with torch.inference_mode():
            return self.runner(tokens, alphas)


def check_inputs(spec: EngineSpec, token_ids: Sequence[Sequence[int]]) -> None:
    """EngineError unless 1..batch texts of at most max_in tokens each."""
    n = len(token_ids)
    if not 1 <= n <= spec.batch:
        raise EngineError(f"engine {spec.name} takes 1 to {spec.batch} texts per call, got {n}")
    longest = max(map(len, token_ids))
    if longest > spec.max_in:
        raise EngineError(
            f"input of {longest} tokens is longer than engine {spec.name} takes ({spec.max_in}); "
            "use a larger engine= or split the text"
        )


def fill_inputs(
    spec: EngineSpec,
    token_ids: Sequence[Sequence[int]],
    alpha: float | Sequence[float],
    tokens: np.ndarray,
    alphas: np.ndarray,
) -> None:
    """Write a call's inputs into host arrays, every element: tokens (batch, max_in) int64 zero-padded
    (rows past the texts all zero), alphas (batch,) float32 (1.0 in unused rows).

    Vectorized numpy writes (`np.fromiter` over all ids, then a row-length mask), not a tensor per
    row: the host cost of a call is what `HostIO` keeps small.
    """
    check_inputs(spec, token_ids)
    n = len(token_ids)
    tokens.fill(0)
    if n == 1:  # batch 1, the latency case: one row, written as it is
        tokens[0, : len(token_ids[0])] = token_ids[0]
    else:
        lens = np.fromiter(map(len, token_ids), dtype=np.int64, count=n)
        flat = np.fromiter(itertools.chain.from_iterable(token_ids), dtype=np.int64, count=int(lens.sum()))
        tokens[:n][np.arange(spec.max_in) < lens[:, None]] = flat
    alphas[n:] = 1.0
    if isinstance(alpha, (int, float)) or (isinstance(alpha, (list, tuple)) and len(alpha) in (1, n)):
        alphas[:n] = alpha
    else:  # a tensor, or a sequence of the wrong length: torch's rules and errors, as before
        torch.from_numpy(alphas)[:n] = torch.as_tensor(alpha, dtype=torch.float32).expand(n)


class _OutputSet:
    """Host buffers for one call's outputs (batch rows), handed to the caller as views `[:n]`.

    `extent[i]`: row i of mel and wav may be non-zero only in its first `extent[i]` frames (a fresh
    set: all of them), so a later call zeroes just the stale part of a row's tail.
    """

    def __init__(self, outputs: Sequence[torch.Tensor], pin: bool):
        self.buffers = tuple(torch.empty(t.shape, dtype=t.dtype, pin_memory=pin) for t in outputs)
        self.extent = np.full(outputs[0].shape[0], outputs[0].shape[1], dtype=np.int64)
        # held once (each counts in `base`), not fetched per call: `free` runs on every call
        self.storages = tuple(t.untyped_storage() for t in self.buffers)
        self.base = tuple(_use_count(s) for s in self.storages)

    def free(self) -> bool:
        """Nothing outside this set holds any of its buffers (no result, slice or view of one)."""
        return all(base is not None and _use_count(s) == base for s, base in zip(self.storages, self.base))


def _use_count(storage: torch.UntypedStorage) -> int | None:
    """References to a tensor's memory: one per tensor viewing it (Inductor's cudagraph trees use the
    same count to see whether a caller still holds a graph output). None where torch lacks the call:
    then no set is ever reused, and every call takes a new one."""
    count = getattr(torch._C, "_storage_Use_Count", None)
    return count(storage._cdata) if count is not None else None


class HostIO:
    """The host side of an engine's calls: inputs staged once, outputs copied only as far as needed.

    A call on CUDA: write the ids and alphas into pinned buffers allocated once (`fill_inputs`), two
    asynchronous copies straight into the runner's static inputs (a runner with `inputs` and
    `replay()`, i.e. a CUDA graph; other runners get the staged tensors copied to the device), the
    replay, then with `to_host` asynchronous copies into a pinned output set and one wait.

    Outputs: mel and wav are most of the bytes (batch 8, max_out 1024: 7 MB, 11 MB before the wav
    became int16), some of it padding.
    Below `two_phase_bytes` of mel + wav rows (every engine of the shipped sets up to batch 64:
    i128_o1024 at batch 64 is 55 MB), one phase copies the rows whole, queued right behind the replay,
    and the call can stay in flight while the host works (`to_host_later`). At or above it, the small
    outputs (lengths, durations) come first, one wait, then each row's mel and wav only up to its
    `mel_lens`, and the host zeroes the rest of the row where an earlier call left data
    (`_OutputSet.extent`). That wait in the middle of the call keeps the next call from being
    submitted before it: with the router's two calls in flight, whole rows won at batch 8 and 32
    (the `default` set 1.32x and 1.33-1.58x the audio per second, H200, docs/performance.md), although
    they copy ~25% more bytes. `benchmarks/bench_engine_call.py` reports both rules at batch 1.

    Results are never overwritten: an output set is reused only when the caller holds nothing of
    it (storage use counts) and no copies into it are pending (`to_host_later` holds its views until
    waited for); otherwise the next call takes another set (up to `max_sets` kept). The router keeps
    at most two calls of one engine in flight and drops each result before its next-but-one call:
    two sets serve a run.

    Not thread-safe: one engine, one calling thread at a time (`fastspeech.batcher` runs every
    engine of a set on one worker thread).
    """

    max_sets = 2

    def __init__(self, spec: EngineSpec, device: torch.device, two_phase_bytes: int = 256 << 20):
        self.spec, self.device, self.two_phase_bytes = spec, device, two_phase_bytes
        self.cuda = device.type == "cuda"
        self.tokens = torch.empty(spec.batch, spec.max_in, dtype=torch.long, pin_memory=self.cuda)
        self.alphas = torch.empty(spec.batch, dtype=torch.float32, pin_memory=self.cuda)
        self._arrays = (self.tokens.numpy(), self.alphas.numpy())  # views of the same memory
        self.sets: list[_OutputSet] = []
        self._inputs_read: torch.cuda.Event | None = None  # set when a call returned before its copies ran

    def run(
        self, runner: Runner, token_ids: Sequence[Sequence[int]], alpha: float | Sequence[float], wait: bool
    ) -> tuple[torch.Tensor, ...]:
        """Stage the inputs and run: the runner's outputs (its own buffers for a CUDA graph).

        `wait`: the caller synchronizes after this call (`to_host`); otherwise an event marks when the
        staging buffers have been read, and the next call waits for it before writing them.
        """
        if self._inputs_read is not None:
            self._inputs_read.synchronize()
            self._inputs_read = None
        fill_inputs(self.spec, token_ids, alpha, *self._arrays)
        with torch.inference_mode():
            static, replay = getattr(runner, "inputs", None), getattr(runner, "replay", None)
            if static is not None and replay is not None:
                static[0].copy_(self.tokens, non_blocking=True)
                static[1].copy_(self.alphas, non_blocking=True)
                outputs = replay()
            else:
                outputs = runner(
                    self.tokens.to(self.device, non_blocking=True),
                    self.alphas.to(self.device, non_blocking=True),
                )
        if self.cuda and not wait:
            self._inputs_read = torch.cuda.Event()
            self._inputs_read.record(torch.cuda.current_stream(self.device))
        return outputs

    def to_host(self, outputs: Sequence[torch.Tensor], n: int) -> EngineOutput:
        """The first n rows of (mel, mel_lens, frames, durations[, wav]) on the host; see the class doc."""
        return self.to_host_later(outputs, n, now=True)()

    def to_host_later(
        self, outputs: Sequence[torch.Tensor], n: int, now: bool = False
    ) -> Callable[[], EngineOutput]:
        """`to_host`, with the wait left to the caller: -> `wait()` returning the same result. Where
        the two-phase rule applies (it reads the lengths in between) the copies finish here. `now`:
        `wait` is called at once, so it waits for the stream (no event to record)."""
        if self._one_phase(outputs, n):
            return self._whole_rows(self._output_set(outputs), outputs, n, event=not now)
        result = self._two_phase(outputs, n)
        return lambda: result

    def _two_phase(self, outputs: Sequence[torch.Tensor], n: int) -> EngineOutput:
        """The lengths and durations first, one wait, then each row of mel and wav up to its length."""
        out = self._output_set(outputs)
        host = out.buffers
        for k in (1, 2, 3):  # lengths and durations: issued while the replay still runs
            host[k][:n].copy_(outputs[k][:n], non_blocking=True)
        self._sync()
        lens, stale = host[1][:n].tolist(), out.extent[:n].tolist()
        for k in (0,) + tuple(range(4, len(outputs))):  # mel, wav: each row up to its length
            src, dst = outputs[k], host[k]
            per = src.shape[1] // outputs[0].shape[1]  # 1 for mel, hop for wav
            for i, (length, old) in enumerate(zip(lens, stale)):
                if length:
                    dst[i, : length * per].copy_(src[i, : length * per], non_blocking=True)
                if old > length:  # what an earlier call left past this row's end
                    dst[i, length * per : old * per].zero_()
        self._sync()
        out.extent[:n] = host[1][:n].numpy()
        # Always views (`[:n]`), never the buffers themselves: a view is what `_OutputSet.free` counts.
        return EngineOutput(*(t[:n] for t in host), *([None] * (5 - len(host))))

    def _one_phase(self, outputs: Sequence[torch.Tensor], n: int) -> bool:
        """Whole rows in one phase: the n rows of mel + wav (padded) are under `two_phase_bytes`."""
        wide = (0,) + tuple(range(4, len(outputs)))  # mel (B, To, num_mels), wav (B, To * hop)
        return n * sum(outputs[k].nbytes // outputs[k].shape[0] for k in wide) < self.two_phase_bytes

    def _whole_rows(
        self, out: _OutputSet, outputs: Sequence[torch.Tensor], n: int, event: bool = True
    ) -> Callable[[], EngineOutput]:
        """Queue copies of the first n rows of every output into `out` -> `wait()`, the result views.
        The views exist from here on, so `out` is not free (not reused) until the caller drops them.
        `event`: mark the copies' end with a CUDA event (the caller waits later), else `wait` waits
        for the stream. (Each slice and event is a few µs of host time: none that is not needed.)"""
        views = tuple(t[:n] for t in out.buffers)  # views, never the buffers: what `_OutputSet.free` counts
        srcs = outputs if n == outputs[0].shape[0] else tuple(t[:n] for t in outputs)
        for src, dst in zip(srcs, views):
            dst.copy_(src, non_blocking=True)
        done = None
        if self.cuda and event:
            done = torch.cuda.Event()
            done.record(torch.cuda.current_stream(self.device))

        def wait() -> EngineOutput:
            if done is not None:
                done.synchronize()
            else:
                self._sync()
            out.extent[:n] = views[1].numpy()
            return EngineOutput(*views, *([None] * (5 - len(views))))

        return wait

    def _output_set(self, outputs: Sequence[torch.Tensor]) -> _OutputSet:
        """A set nobody outside holds, else a new one (the oldest kept set is then let go)."""
        for s in self.sets:
            if s.free():
                return s
        s = _OutputSet(outputs, pin=self.cuda)
        self.sets = (self.sets + [s])[-self.max_sets :]
        return s

    def _sync(self) -> None:
        if self.cuda:
            torch.cuda.current_stream(self.device).synchronize()


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
    backend_options = dict(backend_options or {})
    if spec.backend == "inductor" and vocoder is not None and vocoder.inductor_switches:
        log.info("%s: Inductor switches %s for its graph", kind, vocoder.inductor_switches)
        backend_options.update(vocoder.inductor_switches)
    backend = get_backend(spec.backend, **backend_options)
    backend.check_available(device)
    path = Path(engine_dir) / f"{spec.name}.engine"
    parts = fingerprint_parts(model, spec, device, vocoder)
    # Backend switches (Inductor's enable_pdl, combo_kernels...) change the compiled code too.
    options = {k: v for k, v in backend_options.items() if k != "pool"}
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
        with out_of_memory_is_an_error(spec, device, "loading"):
            runner = backend.load(graph, example, read_engine_file(path)[1])
        log.info("engine %s loaded in %.1f s", path, time.perf_counter() - t0)
        return Engine(spec, runner, device, graph.activation_names)
    if not allow_build:
        raise EngineNotBuilt(
            f"engine {path} is not usable ({reason}); build it with mode=build or allow building"
        )
    check_writable(path.parent, "engine_dir", "engines")  # before the build: a compile can take minutes
    log.info("building engine %s: %s", path, reason)
    t0 = time.perf_counter()
    with out_of_memory_is_an_error(spec, device, "building"):
        runner, payload = backend.build(graph, example)
    write_engine_file(path, parts, payload)
    log.info("engine %s built in %.1f s (%.1f MB)", path, time.perf_counter() - t0, len(payload) / 1e6)
    return Engine(spec, runner, device, graph.activation_names)


@contextlib.contextmanager
def out_of_memory_is_an_error(spec: EngineSpec, device: torch.device, doing: str):
    """A device out of memory while an engine compiles or captures -> one `DeviceMemoryError` line."""
    try:
        yield
    except torch.OutOfMemoryError as exc:
        memory, where, fix = "memory", str(device), "use a smaller batch_size or engine"
        if device.type == "cuda":
            total = torch.cuda.get_device_properties(device).total_memory / 2**30
            memory, where = "GPU memory", f"{device} ({torch.cuda.get_device_name(device)}, {total:.0f} GiB)"
            fix += ", or free the GPU of other processes"
        raise DeviceMemoryError(f"out of {memory} {doing} engine {spec.name} on {where}: {fix}") from exc


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
