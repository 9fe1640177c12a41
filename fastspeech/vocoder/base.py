"""What every vocoder shares: DLE's audio convention, the module contract, padding, strict loading.

The contract (`Vocoder.forward`): mel (B, To, num_mels), natural log of the magnitude mel, time first
(the model's output layout) and optional mel_lens (B,) -> wav (B, To * hop) float32 in [-1, 1].
Frames at or past mel_lens are padding: they are treated as silence (log(clamp), i.e. zero magnitude)
and the wav is exactly zero from mel_lens * hop on, so a fixed-shape engine's padding never leaks
into the audio and an item gives the same wav in any batch.
"""

from __future__ import annotations

import copy
import hashlib
import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import nn

from fastspeech.errors import VocoderError

_LIST_AT_MOST = 6  # tensor names listed per category in an error message


@dataclass(frozen=True)
class AudioConfig:
    """DLE's audio settings (`base.yaml`; Tacotron2/WaveGlow and FastPitch/HiFi-GAN use the same)."""

    sample_rate: int = 22050
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    num_mels: int = 80
    mel_fmin: float = 0.0
    mel_fmax: float = 8000.0
    clamp: float = 1e-5  # log(max(mel, clamp))


def to_pcm16(wav: torch.Tensor) -> torch.Tensor:
    """Float samples -> 16-bit PCM (int16): clipped to [-1, 1], x 32767, rounded half to even.

    The one formula every sink's samples come from: the engine graph's last step (`EngineGraph`), so
    a call's wav crosses to the host at 2 bytes a sample, and `fastspeech.vocoder.pcm16` for float
    audio on the host. In place after the first multiply (one new tensor; fine under torch.compile).
    """
    return wav.float().mul(32767.0).clamp_(-32767.0, 32767.0).round_().to(torch.int16)


def record(acts: dict[str, torch.Tensor] | None, name: str, x: torch.Tensor) -> None:
    """Keep one intermediate for verify mode (`EngineGraph(debug=True)`); no-op otherwise."""
    if acts is not None:
        acts[f"vocoder.{name}"] = x


class Vocoder(nn.Module):
    """Base class: mel (B, To, num_mels) natural-log, time first -> wav (B, To * hop) float32.

    Subclasses set `kind` and `settings` (what the engine fingerprint and file name see), implement
    `vocode` on an already padded-as-silence mel, and list their own source files in `sources`.
    """

    kind: str = ""
    sources: tuple[str, ...] = ("fastspeech/vocoder/base.py",)
    keeps_fp32: bool = False  # True: runs in float32 whatever the engine precision (Griffin-Lim)
    # Silent frames after the last real one that make the wav exactly what the full padded length
    # gives (None: no such bound). Eager engines then vocode only up to the batch's longest mel.
    context_frames: int | None = None
    # Inductor switches (conf/backend: enable_pdl, combo_kernels, ...) this vocoder's graph needs set
    # a certain way; `engine.load_or_build` applies them over the conf's for Inductor engines.
    inductor_switches: ClassVar[dict[str, bool]] = {}

    def __init__(self, audio: AudioConfig | None = None, settings: dict[str, Any] | None = None):
        super().__init__()
        self.audio = audio or AudioConfig()
        self.settings = dict(settings or {})

    def forward(
        self,
        mel: torch.Tensor,
        mel_lens: torch.Tensor | None = None,
        acts: dict[str, torch.Tensor] | None = None,
    ) -> torch.Tensor:
        """mel (B, To, num_mels), mel_lens (B,) or None (every frame valid) -> wav (B, To * hop)."""
        B, To, _ = mel.shape
        hop = self.audio.hop_length
        if mel_lens is None:
            mel_lens = torch.full((B,), To, dtype=torch.long, device=mel.device)
        valid = torch.arange(To, device=mel.device)[None, :] < mel_lens[:, None]  # (B, To)
        mel = mel.float().masked_fill(~valid[:, :, None], math.log(self.audio.clamp))
        wav = self.vocode(mel, valid, acts)  # (B, To * hop)
        keep = torch.arange(To * hop, device=mel.device)[None, :] < (mel_lens * hop)[:, None]
        wav = torch.where(keep, wav.float().clamp(-1.0, 1.0), torch.zeros_like(wav, dtype=torch.float32))
        record(acts, "wav", wav)
        return wav

    def vocode(
        self, mel: torch.Tensor, valid: torch.Tensor, acts: dict[str, torch.Tensor] | None
    ) -> torch.Tensor:
        """mel (B, To, num_mels) float32 with padding already silence; valid (B, To) -> (B, To * hop)."""
        raise NotImplementedError

    @property
    def dtype(self) -> torch.dtype:
        p = next(iter(self.parameters()), None)
        return p.dtype if p is not None else torch.float32

    def on(self, device: torch.device | str, dtype: torch.dtype) -> Vocoder:
        """This module when it already lives on `device` in `dtype` (engines then share it), else a
        cast copy; the caller's module is never changed. Float32-only vocoders ignore `dtype`."""
        device = torch.device(device)
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        want = torch.float32 if self.keeps_fp32 else dtype
        if all(b.device == device for b in self.buffers()) and all(
            p.device == device and p.dtype == want for p in self.parameters()
        ):
            return self
        moved = copy.deepcopy(self).to(device=device)
        return moved if self.keeps_fp32 else moved.to(dtype=dtype)

    def fingerprint(self) -> dict[str, str]:
        """Everything an engine built with this vocoder depends on: kind, settings, weights, sources."""
        weights = hashlib.sha256()
        for name, tensor in self.state_dict().items():
            weights.update(name.encode())
            weights.update(tensor.detach().cpu().contiguous().view(torch.uint8).numpy().tobytes())
        source = hashlib.sha256()
        root = Path(__file__).resolve().parents[2]
        for rel in self.sources:
            path = root / rel
            source.update(path.read_bytes() if path.exists() else rel.encode())
        return {
            "kind": self.kind,
            "settings": json.dumps(self.settings, sort_keys=True, default=str),
            "weights": weights.hexdigest()[:16],
            "source": source.hexdigest()[:16],
        }


# ---------------------------------------------------------------------------------------------
# Deterministic noise: the same numbers on every device, for any shape, without a generator


def hash_uniform(*index: torch.Tensor, salt: int = 0) -> torch.Tensor:
    """Uniform [0, 1) numbers from integer coordinates (broadcast), by an integer hash.

    Exact int64 arithmetic (kept below 2**63), so CPU and GPU give the same values, shapes are
    free (an engine of any To), and the graph needs no random generator state (CUDA-graph safe).
    Different coordinates or salts give independent-looking values.
    """
    mask = 0xFFFFFFFF
    h: torch.Tensor | int = (salt * 0x9E3779B1) & mask
    for i in index:
        h = (h ^ (i.to(torch.int64) & mask)) & mask
        h = ((h ^ (h >> 16)) * 0x7FEB352D) & mask
        h = ((h ^ (h >> 15)) * 0x846CA68B) & mask
        h = h ^ (h >> 16)
    return h.to(torch.float64).div(2.0**32).float()


def hash_normal(*index: torch.Tensor, salt: int = 0) -> torch.Tensor:
    """Standard normal numbers from integer coordinates (Box-Muller over two `hash_uniform`s)."""
    u1 = hash_uniform(*index, salt=2 * salt + 1)
    u2 = hash_uniform(*index, salt=2 * salt + 2)
    return torch.sqrt(-2.0 * torch.log(u1 + 2.0**-33)) * torch.cos(2.0 * math.pi * u2)


# ---------------------------------------------------------------------------------------------
# Strict checkpoint loading


def read_checkpoint(path: str | Path, expected: str) -> dict[str, Any]:
    """torch.load a vocoder checkpoint (tensors only) -> its top-level dict; VocoderError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise VocoderError(
            f"vocoder checkpoint not found: {path}; pass vocoder.checkpoint=PATH to {expected}"
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - truncated zip, pickle of a class, not torch at all
        raise VocoderError(
            f"cannot read vocoder checkpoint {path} ({type(exc).__name__}: truncated, or not a torch.save "
            f"file of tensors); expected {expected}"
        ) from None
    if not isinstance(obj, dict):
        raise VocoderError(f"vocoder checkpoint {path} holds a {type(obj).__name__}; expected {expected}")
    return obj


def strip_prefix(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Drop DataParallel's `module.` prefixes; keep tensors only."""
    return {re.sub(r"^module\.", "", k): v for k, v in state.items() if isinstance(v, torch.Tensor)}


def fold_weight_norm(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """weight_g/weight_v (torch.nn.utils.weight_norm) or parametrizations.weight.original0/1 (the
    newer parametrization) -> weight = g * v / ||v||, the norm over every dim where g has size 1."""
    out: dict[str, torch.Tensor] = {}
    pairs = {}
    for k, v in state.items():
        m = re.match(r"(.*)\.(weight_g|weight_v|parametrizations\.weight\.original[01])$", k)
        if m:
            role = "g" if m.group(2) in ("weight_g", "parametrizations.weight.original0") else "v"
            pairs.setdefault(m.group(1), {})[role] = v
        else:
            out[k] = v
    for prefix, gv in pairs.items():
        if set(gv) != {"g", "v"}:
            out[f"{prefix}.weight_{next(iter(gv))}"] = next(iter(gv.values()))  # reported as unexpected
            continue
        g, v = gv["g"].double(), gv["v"].double()
        if g.dim() != v.dim():
            out[f"{prefix}.weight_g"] = gv["g"]
            continue
        dims = [d for d in range(v.dim()) if g.shape[d] == 1]
        norm = v.pow(2).sum(dim=dims, keepdim=True).sqrt() if dims else v.abs()
        out[f"{prefix}.weight"] = (g * v / norm).to(gv["v"].dtype)
    return out


def load_strict(module: nn.Module, state: dict[str, torch.Tensor], path: Path | str, expected: str) -> None:
    """Load `state` into `module`; any missing, unexpected or misshaped tensor is one VocoderError."""
    own = module.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [
        f"{k} {tuple(state[k].shape)} (expected {tuple(own[k].shape)})"
        for k in own
        if k in state and tuple(state[k].shape) != tuple(own[k].shape)
    ]
    if missing or unexpected or shapes:
        parts = []
        for what, names in (("missing", missing), ("unexpected", unexpected), ("wrong shape", shapes)):
            if names:
                parts.append(f"{len(names)} {what}: {_listing(names)}")
        raise VocoderError(f"vocoder checkpoint {path} does not match {expected}: {'; '.join(parts)}")
    with torch.no_grad():
        for k, t in own.items():
            t.copy_(state[k].to(t.dtype))


def _listing(names: Iterable[str]) -> str:
    names = list(names)
    more = f" ... (+{len(names) - _LIST_AT_MOST})" if len(names) > _LIST_AT_MOST else ""
    return ", ".join(names[:_LIST_AT_MOST]) + more
