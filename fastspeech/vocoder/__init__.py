"""mel -> wav in DLE's mel convention: Griffin-Lim (torch, the default) or a public neural vocoder.

DLE's mels (the Tacotron2/WaveGlow and FastPitch/HiFi-GAN convention): 22050 Hz, n_fft 1024, hop 256,
window 1024, 80 Slaney mel bands from 0 to 8000 Hz over the *magnitude* STFT, natural log of the
magnitude clamped at 1e-5 (`AudioConfig`, `wav_to_mel`).

Every vocoder is an `nn.Module` with one contract (`base.Vocoder`): `voc(mel, mel_lens=None)`, mel
(B, To, 80) natural-log and time first, -> wav (B, To * 256) float32 in [-1, 1], exactly zero from
mel_lens * 256 on. The engine compiles it with the model into one graph (`fastspeech/graph.py`),
which ends in 16-bit PCM (`to_pcm16`): engines return int16 samples, what every sink writes.

    from fastspeech.vocoder import load_vocoder
    voc = load_vocoder("g_02500000")                      # kind detected from the file
    voc = load_vocoder("waveglow.pt", sigma=0.0)          # settings by keyword
    voc = load_vocoder(None, "griffin_lim", n_iter=32)    # no weights needed

`build_vocoder(cfg.vocoder)` does the same from a `conf/vocoder/*.yaml`, checking every setting first.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fastspeech.errors import VocoderError
from fastspeech.vocoder.base import AudioConfig, Vocoder, read_checkpoint, strip_prefix, to_pcm16
from fastspeech.vocoder.griffin_lim import GriffinLim, slaney_mel_filters

__all__ = [
    "KINDS",
    "AudioConfig",
    "GriffinLim",
    "Vocoder",
    "build_vocoder",
    "load_vocoder",
    "pcm16",
    "to_pcm16",
    "wav_to_mel",
]

# kind -> the settings it takes (besides `checkpoint`), with their defaults
KINDS: dict[str, dict[str, Any]] = {
    "griffin_lim": {"n_iter": 32, "momentum": 0.99},
    "hifigan": {"variant": None, "config": None},
    "waveglow": {"sigma": 0.9, "denoiser_strength": 0.0},
}


def load_vocoder(path: str | Path | None, kind: str | None = None, **settings: Any) -> Vocoder:
    """A vocoder in eval mode (float32, CPU) from a public checkpoint; `kind` detected when None.

    kinds: `griffin_lim` (no file), `hifigan` (DLE HiFiGAN or original jik876 g_XXXXXXXX; settings
    `variant`=v1|v2|v3, `config`=PATH.json), `waveglow` (DLE Tacotron2/waveglow; settings `sigma`,
    `denoiser_strength`). A wrong file or setting is one `VocoderError` line.
    """
    if kind is not None and kind not in KINDS:
        raise VocoderError(f"unknown vocoder {kind!r}; use one of {', '.join(KINDS)}")
    if path is None:
        if kind in (None, "griffin_lim"):
            return GriffinLim(**_settings("griffin_lim", settings)).eval()
        raise VocoderError(f"vocoder={kind} needs a checkpoint: pass vocoder.checkpoint=PATH")
    if kind == "griffin_lim":
        raise VocoderError(
            "vocoder=griffin_lim takes no checkpoint; drop vocoder.checkpoint or pick another vocoder"
        )
    kind = kind or detect_kind(path)
    settings = _settings(kind, settings)
    if kind == "hifigan":
        from fastspeech.vocoder.hifigan import load_hifigan

        return load_hifigan(path, **settings)
    from fastspeech.vocoder.waveglow import load_waveglow

    return load_waveglow(path, **settings)


def detect_kind(path: str | Path) -> str:
    """`hifigan` or `waveglow` from a checkpoint's keys; VocoderError naming what was found."""
    obj = read_checkpoint(path, "a HiFi-GAN (DLE or original) or DLE WaveGlow checkpoint")
    for key in ("generator", "state_dict", "model", None):
        state = obj.get(key) if key else obj
        if isinstance(state, Mapping):
            names = strip_prefix(dict(state))
            if any(k.startswith("conv_pre.") for k in names):
                return "hifigan"
            if any(k.startswith("WN.") for k in names):
                return "waveglow"
    raise VocoderError(
        f"vocoder checkpoint {path} is neither HiFi-GAN (generator with conv_pre.*) nor DLE WaveGlow "
        f"(state_dict with WN.*): found top-level keys {sorted(map(str, obj))[:8]}; pass vocoder=<kind> "
        "and the right file"
    )


def build_vocoder(cfg: Mapping | str, **overrides: Any) -> Vocoder:
    """The vocoder a `conf/vocoder/*.yaml` describes (`name`, `checkpoint`, settings), every setting
    checked before anything is loaded. Also `build_vocoder("griffin_lim", n_iter=4)`."""
    values = dict(cfg.items()) if isinstance(cfg, Mapping) else {"name": cfg}
    values.update(overrides)
    name = values.pop("name", None)
    checkpoint = values.pop("checkpoint", None)
    if name not in KINDS:
        raise VocoderError(f"unknown vocoder={name}; use one of {', '.join(KINDS)}")
    settings = _settings(name, values)
    if name == "griffin_lim" and checkpoint is not None:
        raise VocoderError(
            f"vocoder.checkpoint={checkpoint} is given but vocoder=griffin_lim takes none; add "
            "vocoder=hifigan or vocoder=waveglow for it (docs/vocoders.md), or drop vocoder.checkpoint"
        )
    if name != "griffin_lim":
        if checkpoint is None:
            raise VocoderError(
                f"vocoder={name} needs vocoder.checkpoint=PATH to its checkpoint (see docs/vocoders.md), "
                "or use vocoder=griffin_lim"
            )
        if not Path(str(checkpoint)).is_file():
            raise VocoderError(f"vocoder.checkpoint={checkpoint}: no such file")
    return load_vocoder(None if name == "griffin_lim" else str(checkpoint), name, **settings)


def _settings(kind: str, given: Mapping[str, Any]) -> dict[str, Any]:
    """`given` checked against the kind's known settings, with defaults filled and types checked."""
    known = KINDS[kind]
    unknown = sorted(set(given) - set(known))
    if unknown:
        raise VocoderError(
            f"vocoder={kind} has no setting {', '.join(unknown)}; its settings: {', '.join(known) or 'none'}"
        )
    out = {**known, **{k: v for k, v in given.items()}}
    if kind == "griffin_lim":
        n = out["n_iter"]
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise VocoderError(
                f"vocoder.n_iter={n!r}: Griffin-Lim needs a whole number of iterations >= 1, e.g. 32"
            )
        if not isinstance(out["momentum"], (int, float)) or not 0 <= out["momentum"] < 1:
            raise VocoderError(
                f"vocoder.momentum={out['momentum']!r}: use 0 (plain Griffin-Lim) up to below 1"
            )
    elif kind == "waveglow":
        for key, hint in (
            ("sigma", "DLE infers with 0.9; 0 is deterministic"),
            ("denoiser_strength", "0 = off, DLE uses 0.01"),
        ):
            v = out[key]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not v >= 0:
                raise VocoderError(f"vocoder.{key}={v!r}: must be a number >= 0 ({hint})")
    elif kind == "hifigan":
        if out["variant"] is not None and out["variant"] not in ("v1", "v2", "v3"):
            raise VocoderError(
                f"vocoder.variant={out['variant']}: HiFi-GAN variants are v1, v2, v3 (or null)"
            )
        if out["config"] is not None and not Path(str(out["config"])).is_file():
            raise VocoderError(f"vocoder.config={out['config']}: no such file (a HiFi-GAN config.json)")
    return out


def pcm16(wav) -> np.ndarray:
    """Samples (a numpy array or CPU tensor) -> 16-bit PCM, little-endian: int16 as it is (what
    engines return), float clipped to [-1, 1], x 32767, rounded half to even (`base.to_pcm16`, the
    formula the engine graph ends with). What every audio sink writes (the CLI's wav files, the
    server's wav/pcm/flac/mp3), so a text gives the same samples from either.
    """
    wav = np.asarray(wav)
    if wav.dtype != np.int16:
        wav = to_pcm16(torch.as_tensor(np.ascontiguousarray(wav, dtype=np.float32))).numpy()
    return np.ascontiguousarray(wav.astype("<i2", copy=False))


def wav_to_mel(wav: np.ndarray, audio: AudioConfig | None = None) -> np.ndarray:
    """DLE's mel of a waveform: (frames, num_mels) float32, natural log of the clamped magnitude mel.

    Centred, zero-padded STFT with a periodic Hann window (librosa's `melspectrogram(power=1)`, which
    the tests check it equals), in torch: no librosa needed.
    """
    a = audio or AudioConfig()
    x = torch.as_tensor(np.asarray(wav, dtype=np.float32))
    spec = torch.stft(
        x, a.n_fft, a.hop_length, a.win_length, torch.hann_window(a.win_length), center=True,
        pad_mode="constant", return_complex=True,
    ).abs()  # fmt: skip
    mel = torch.from_numpy(slaney_mel_filters(a)).float() @ spec
    return torch.log(mel.clamp_min(a.clamp)).T.numpy()
