"""Drop-in compilation: `fastspeech.compile(model)` and `torch.compile(model, backend="fastspeech")`.

    model = fastspeech.FastSpeech(cfg).eval()            # any hparams, DLE weights loaded or not
    fast = fastspeech.compile(model, precision="fp16")   # engines: TensorRT / Inductor / eager
    mel, mel_lens, durations = fast(tokens)              # same call, same outputs as model(tokens)
    fast2 = torch.compile(model, backend="fastspeech")   # or: plain torch.compile, our backend

`fastspeech.compile` runs the model through the project's fixed-shape engines
(`fastspeech.engine`): the same backends, files and fingerprints as `run.py`. How a call of any
shape maps onto fixed engines:
- Batch: one engine per batch size B seen (or `engine`'s batch, the call split into chunks of it).
- Input: tokens (B, Ti) zero-padded at the end; Ti is rounded up to a multiple of 32 (`max_in`).
  The model's output does not depend on padding, so a bigger engine gives the same result.
- Output frames: with `max_out` given, an engine with exactly that To (eager semantics: speech is
  cropped at max_out and the mel side sees only the kept frames). With max_out None (eager: To is
  the longest predicted length), an engine with To = 8 x max_in first; when speech is longer, once
  more with To rounded up to 256 frames (capped at the model's max_seq_len); the result is trimmed
  to what eager returns. Each new shape builds an engine once (seconds to minutes, logged); files
  are cached in `engine_dir`, so the next process loads them.
- `engine="i64_o512"` (or an object / mapping with max_in, max_out and optionally batch) pins one
  engine shape instead; a call it cannot reproduce exactly raises `EngineError` naming the fix.
Outputs: `ModelOutput(mel, mel_lens, durations)` as eager: mel (B, To, num_mels) in the model's
parameter dtype (whatever `precision` computes in), zeros past mel_lens; durations (B, Ti) int64;
all on the tokens' device. Passing `acts=` (the verify mode's dict) runs the eager model instead,
since engines return no activations. Weights are copied into the engines when compiled: later
changes to `model` are not seen.

`torch.compile(model, backend="fastspeech")` is the other path: the backend, registered when
`fastspeech` is imported, compiles each graph dynamo captures with Inductor, and with CUDA graphs
when its inputs are on CUDA (outputs are then overwritten by the next call, as with
mode="reduce-overhead"). max_out None gives a graph break at the data-dependent length; pass
max_out for one graph.
"""

from __future__ import annotations

import logging
import operator
import os
import re
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from fastspeech.engine import PRECISIONS, Engine, EngineSpec, load_or_build, model_on
from fastspeech.errors import ConfigError, EngineError
from fastspeech.model import FastSpeech, ModelOutput

log = logging.getLogger(__name__)

IN_STEP = 32  # input tokens are padded up to a multiple of this
OUT_STEP = 256  # a second try at max_out None rounds the speech length up to a multiple of this
FRAMES_PER_TOKEN = 8  # first guess at To for max_out None (the conf/engine/*.yaml ratio)


def compile(  # shadows the builtin inside this module, as torch.compile does
    model: FastSpeech,
    backend: str = "auto",
    engine: str | Any | None = None,
    precision: str | None = None,
    device: torch.device | str | None = None,
    engine_dir: str | os.PathLike | None = None,
    options: dict[str, Any] | None = None,
) -> CompiledFastSpeech:
    """A module called exactly like `model`, run by fixed-shape engines (see the module docstring).

    backend: auto | eager | inductor | tensorrt (auto: TensorRT where installed with a GPU, else
    Inductor on CUDA, else eager on the CPU). precision: fp32 | fp16 | bf16, default the model's
    dtype (CPU: fp32). device: cpu | cuda | cuda:N | auto, default the model's. engine_dir: default
    $XDG_CACHE_HOME/fastspeech-trt/engines. options: the backend's (conf/backend/auto.yaml).
    """
    return CompiledFastSpeech(model, backend, engine, precision, device, engine_dir, options)


class CompiledFastSpeech(nn.Module):
    """`FastSpeech` behind engines: forward(tokens, alpha=1.0, max_out=None, acts=None) -> ModelOutput."""

    def __init__(
        self,
        model: FastSpeech,
        backend: str = "auto",
        engine: str | Any | None = None,
        precision: str | None = None,
        device: torch.device | str | None = None,
        engine_dir: str | os.PathLike | None = None,
        options: dict[str, Any] | None = None,
    ):
        from fastspeech.backends import get_backend, resolve_backend
        from fastspeech.pipeline import resolve_precision

        if not isinstance(model, FastSpeech):
            raise TypeError(
                f"fastspeech.compile takes a fastspeech.FastSpeech module, got {type(model).__name__}; "
                "build one with fastspeech.FastSpeech(cfg) (a compiled one: pass its ._orig_mod)"
            )
        super().__init__()
        self._orig_mod = model  # what acts= calls run; named as torch.compile's wrapper names it
        first = next(model.parameters())
        self.device = check_device(device) if device is not None else first.device
        if self.device.type == "cuda" and self.device.index is None:
            self.device = torch.device("cuda", torch.cuda.current_device())
        self.out_dtype = first.dtype
        if precision is None:
            precision = next((name for name, dtype in PRECISIONS.items() if dtype == first.dtype), "fp32")
        self.precision = resolve_precision(precision, self.device)
        self.backend, why = resolve_backend(backend, self.device)
        log.info("fastspeech.compile: backend=%s (%s), precision=%s", self.backend, why, self.precision)
        if options is not None and not isinstance(options, dict):
            raise TypeError(
                f"options={options!r}: give a dict of the backend's settings (conf/backend/*.yaml)"
            )
        self.options = dict(options or {})
        get_backend(self.backend, **self.options).check_available(self.device)  # e.g. TensorRT on a CPU: now
        self.engine_dir = Path(engine_dir) if engine_dir is not None else default_engine_dir()
        self.pinned = engine_shape(engine) if engine is not None else None
        weights = model_on(model, self.device, PRECISIONS[self.precision])
        object.__setattr__(self, "_weights", weights.eval())  # not a submodule: no second state dict
        self._engines: dict[EngineSpec, Engine] = {}

    def forward(
        self,
        tokens: torch.Tensor,
        alpha: torch.Tensor | float = 1.0,
        max_out: int | None = None,
        acts: dict[str, torch.Tensor] | None = None,
    ) -> ModelOutput:
        """As `FastSpeech.forward`: tokens (B, Ti) int, zero-padded at the end; alpha scalar or (B,)."""
        ids, alphas = check_call(tokens, alpha, max_out, self._weights.cfg.n_symbols)
        if acts is not None:
            return self._orig_mod(tokens, alpha, max_out, acts)
        B, Ti = tokens.shape
        max_len = max(map(len, ids), default=0)
        cap = self._weights.cfg.max_seq_len

        if self.pinned is not None:
            batch, max_in, engine_out = self.pinned
            batch = batch or B
            if max_len > max_in:
                raise EngineError(
                    f"input of {max_len} tokens is longer than the pinned engine's max_in={max_in}; "
                    "pin a larger engine= or leave engine=None"
                )
        else:
            batch = B
            max_in = min(round_up(max(max_len, 1), IN_STEP), cap)
            engine_out = max_out if max_out is not None else min(FRAMES_PER_TOKEN * max_in, cap)
        out = self._run(ids, alphas, batch, max_in, engine_out)
        if max_out is None and self.pinned is None:
            longest = int(out[2].max()) if B else 0
            if longest > engine_out and engine_out < cap:
                engine_out = min(round_up(longest, OUT_STEP), cap)
                out = self._run(ids, alphas, batch, max_in, engine_out)
        return self._as_eager(out, engine_out, max_out, Ti, tokens.device)

    def _run(self, ids, alphas, batch, max_in, max_out) -> tuple[torch.Tensor, ...]:
        """All items through the engine for this shape, in chunks of its batch -> mel, lens, frames, durations."""
        spec = EngineSpec(batch, max_in, max_out, self.precision, self.backend)
        engine = self._engines.get(spec)
        if engine is None:
            engine = load_or_build(self._weights, spec, self.engine_dir, self.device, self.options)
            self._engines[spec] = engine
        parts = [engine(ids[i : i + batch], alphas[i : i + batch]) for i in range(0, len(ids), batch)]
        return tuple(
            torch.cat([getattr(p, f) for p in parts]) for f in ("mel", "mel_lens", "frames", "durations")
        )

    def _as_eager(self, out, engine_out: int, max_out: int | None, Ti: int, device) -> ModelOutput:
        """Engine outputs -> exactly what `FastSpeech.forward(tokens, alpha, max_out)` returns."""
        mel, _, frames, durations = out
        longest = int(frames.max()) if len(frames) else 0
        To = max_out if max_out is not None else max(1, min(longest, self._weights.cfg.max_seq_len))
        if engine_out != To and longest > min(engine_out, To):
            # The mel side attends over all kept frames: cropping at another length changes them.
            raise EngineError(
                f"speech of {longest} frames with max_out={max_out} needs an engine with max_out={To}, "
                f"the pinned engine has {engine_out}; pin engine max_out={To} or leave engine=None"
            )
        mel = fit(mel, 1, To)
        durations = fit(durations, 1, Ti)
        mel_lens = frames.clamp_max(To)
        return ModelOutput(
            mel.to(device=device, dtype=self.out_dtype), mel_lens.to(device), durations.to(device)
        )


def check_call(tokens, alpha, max_out, n_symbols: int) -> tuple[list[list[int]], list[float]]:
    """The forward's arguments checked before any engine runs (eager would fail deep in torch, or
    an engine would silently drop tokens after a 0 inside a row) -> each row's ids (its padding
    dropped) and alpha per row. The ids are checked on one host copy (no device work per check)."""
    if not isinstance(tokens, torch.Tensor) or tokens.dim() != 2:
        got = tuple(tokens.shape) if isinstance(tokens, torch.Tensor) else type(tokens).__name__
        raise TypeError(
            f"tokens must be a (B, Ti) tensor of token ids, got {got}; one text of Ti ids is tokens[None]"
        )
    if tokens.dtype not in (torch.int64, torch.int32):
        raise TypeError(f"tokens must be integer ids (torch.long), got {tokens.dtype}; use tokens.long()")
    if tokens.shape[0] == 0:
        raise ValueError(f"tokens has no rows (shape {tuple(tokens.shape)}); pass at least one text")
    host = tokens.detach().cpu().numpy()
    if host.size and (host.min() < 0 or host.max() >= n_symbols):
        bad = host[(host < 0) | (host >= n_symbols)][0]
        raise ValueError(
            f"token id {bad} is outside the model's 0..{n_symbols - 1}; take ids from fastspeech.text.text_to_ids"
        )
    real = host != 0
    lens = real.sum(1)
    wrong = real != (np.arange(host.shape[1]) < lens[:, None])
    if wrong.any():  # the first difference is a 0 before a real token
        b, t = (int(i) for i in np.argwhere(wrong)[0])
        raise ValueError(
            f"tokens row {b} has padding (0) at position {t}, before real tokens; pad only at the end"
        )
    if max_out is not None and not (_whole(max_out) and max_out >= 1):
        raise ValueError(f"max_out={max_out!r}: give a number of frames >= 1, or None for the whole speech")
    try:
        alphas = torch.as_tensor(alpha, dtype=torch.float32).flatten()
    except (TypeError, ValueError, RuntimeError):
        raise TypeError(f"alpha={alpha!r}: give a number or one per row, a ({len(tokens)},) tensor") from None
    if len(alphas) not in (1, len(tokens)):
        raise ValueError(f"alpha has {len(alphas)} values for {len(tokens)} rows; give one, or one per row")
    if not (alphas.isfinite() & (alphas >= 0)).all():
        raise ValueError(f"alpha={alpha!r}: give finite values >= 0 (durations x alpha; 1.0: as trained)")
    ids = [row[:n] for row, n in zip(host.tolist(), lens.tolist())]
    return ids, alphas.expand(len(tokens)).tolist()


def check_device(device: torch.device | str | int) -> torch.device:
    """`device=` -> a torch.device this machine has (auto, cpu, cuda, cuda:N), or one line naming the fix."""
    from fastspeech.pipeline import pick_device

    try:
        name = "auto" if device == "auto" else str(torch.device(device))
    except (RuntimeError, TypeError):
        name = None
    if name is None or name.split(":")[0] not in ("auto", "cpu", "cuda"):
        raise ConfigError(f"device={device!r}: use 'cpu', 'cuda', 'cuda:N' or 'auto'")
    return pick_device(name)  # no CUDA, or a GPU index this machine lacks: one line


def fit(x: torch.Tensor, dim: int, size: int) -> torch.Tensor:
    """Crop or zero-pad `x` along `dim` to `size`."""
    if x.shape[dim] >= size:
        return x.narrow(dim, 0, size)
    pad = [0, 0] * (x.dim() - dim - 1) + [0, size - x.shape[dim]]
    return torch.nn.functional.pad(x, pad)


def round_up(n: int, step: int) -> int:
    return -(-n // step) * step


def default_engine_dir() -> Path:
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(cache) / "fastspeech-trt" / "engines"


def engine_shape(engine: str | Any) -> tuple[int | None, int, int]:
    """`engine=` -> (batch or None, max_in, max_out): a conf/engine name like "i64_o512", an
    `EngineSpec`, a mapping or an object with max_in, max_out (and optionally batch)."""
    if isinstance(engine, str):
        match = re.fullmatch(r"i(\d+)_o(\d+)", engine)
        if not match:
            raise ConfigError(f"engine={engine!r}: use a name like 'i64_o512' (max_in 64, max_out 512)")
        sizes = None, int(match[1]), int(match[2])
    else:
        get = engine.get if isinstance(engine, dict) else lambda key: getattr(engine, key, None)
        sizes = get("batch"), get("max_in"), get("max_out")
        if sizes[1] is None or sizes[2] is None:
            raise ConfigError(f"engine={engine!r}: give max_in and max_out (e.g. engine='i64_o512')")
    if not all(n is None or (_whole(n) and n >= 1) for n in sizes):
        raise ConfigError(f"engine={engine!r}: batch, max_in and max_out must be whole numbers >= 1")
    return tuple(n if n is None else operator.index(n) for n in sizes)


def _whole(n: Any) -> bool:
    """An int (or numpy/torch integer), not a bool, float or string."""
    try:
        operator.index(n)
    except TypeError:
        return False
    return not isinstance(n, bool)


# ---------------------------------------------------------------------------------------------
# torch.compile(model, backend="fastspeech")


def fastspeech_backend(gm: torch.fx.GraphModule, example_inputs: list) -> Any:
    """Dynamo backend: Inductor, with CUDA graphs (cudagraph trees) when the inputs are on CUDA.

    Inference only, like the model: graphs compile and run under no_grad (our custom ops have no
    backward), so the caller needs no `torch.no_grad()` and outputs carry no autograd history.
    """
    from torch._inductor.compile_fx import compile_fx

    cuda = any(isinstance(t, torch.Tensor) and t.is_cuda for t in example_inputs)
    with torch.no_grad():
        compiled = compile_fx(gm, example_inputs, config_patches={"triton.cudagraphs": cuda})

    def run(*args):
        with torch.no_grad():
            return compiled(*args)

    return run


def register() -> None:
    """Make `torch.compile(..., backend="fastspeech")` work (idempotent; run on `import fastspeech`)."""
    from torch._dynamo import list_backends, register_backend

    if "fastspeech" not in list_backends(exclude_tags=()):
        register_backend(fastspeech_backend, name="fastspeech")


register()
