"""HiFi-GAN generator (Kong et al. 2020), from either public checkpoint layout, weight norm folded.

Two formats, one module:
- DLE (DeepLearningExamples `PyTorch/SpeechSynthesis/HiFiGAN`, what DLE FastPitch ships): a dict
  with `generator` (state dict, `weight_g`/`weight_v` pairs, residual blocks nested
  `resblocks.<upsample>.<kernel>.`) and `config` (the generator's hyper-parameters).
- The original (jik876/hifi-gan): `g_XXXXXXXX` files, `{"generator": state dict}` with the residual
  blocks flat (`resblocks.<upsample * n_kernels + kernel>.`), the hyper-parameters in the
  `config.json` beside the file, or named by variant (v1, v2, v3; also recognized by the shapes).

Generator: conv_pre (80 -> C, k7) -> per upsample stage i: leaky_relu(0.1), transposed conv
(stride u_i), mean of one residual block per kernel size (ResBlock1: three dilated + three plain
convs; ResBlock2: two dilated convs) -> leaky_relu(0.01) -> conv_post (k7, 1 channel) -> tanh.
Differences from the originals: weight norm is folded into plain weights at load (as both do before
inference); the input is our time-first (B, To, 80) mel with padding frames as silence.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from fastspeech.errors import VocoderError
from fastspeech.vocoder.base import (
    AudioConfig,
    Vocoder,
    fold_weight_norm,
    load_strict,
    read_checkpoint,
    record,
    strip_prefix,
)

log = logging.getLogger(__name__)

EXPECTED = "a HiFi-GAN generator (DLE HiFiGAN checkpoint, or an original jik876/hifi-gan g_XXXXXXXX file)"
LRELU_SLOPE = 0.1


@dataclass(frozen=True)
class HiFiGANConfig:
    """The generator's hyper-parameters, named as in both repositories' config files."""

    resblock: str = "1"
    upsample_rates: tuple[int, ...] = (8, 8, 2, 2)
    upsample_kernel_sizes: tuple[int, ...] = (16, 16, 4, 4)
    upsample_initial_channel: int = 512
    resblock_kernel_sizes: tuple[int, ...] = (3, 7, 11)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = ((1, 3, 5), (1, 3, 5), (1, 3, 5))
    num_mels: int = 80

    @classmethod
    def from_dict(cls, values: dict[str, Any], source: str) -> HiFiGANConfig:
        names = {f.name for f in dataclasses.fields(cls)}
        missing = [n for n in names - {"num_mels"} if n not in values]
        if missing:
            raise VocoderError(f"HiFi-GAN config {source} lacks {', '.join(sorted(missing))}")

        def tup(v):
            return tuple(tup(x) for x in v) if isinstance(v, (list, tuple)) else int(v)

        kwargs = {n: (str(values[n]) if n == "resblock" else tup(values[n])) for n in names if n in values}
        return cls(**kwargs)


PRESETS = {
    "v1": HiFiGANConfig(),
    "v2": HiFiGANConfig(upsample_initial_channel=128),
    "v3": HiFiGANConfig(
        resblock="2",
        upsample_rates=(8, 8, 4),
        upsample_kernel_sizes=(16, 16, 8),
        upsample_initial_channel=256,
        resblock_kernel_sizes=(3, 5, 7),
        resblock_dilation_sizes=((1, 2), (2, 6), (3, 12)),
    ),
}


def _same(kernel: int, dilation: int = 1) -> int:
    return (kernel * dilation - dilation) // 2


class ResBlock(nn.Module):
    """ResBlock1 (`convs1` dilated + `convs2` plain, pairwise) or ResBlock2 (`convs`, dilated)."""

    def __init__(self, kind: str, channels: int, kernel: int, dilations: tuple[int, ...]):
        super().__init__()
        self.kind = kind

        def conv(d: int) -> nn.Conv1d:
            return nn.Conv1d(channels, channels, kernel, 1, _same(kernel, d), d)

        if kind == "1":
            self.convs1 = nn.ModuleList(conv(d) for d in dilations)
            self.convs2 = nn.ModuleList(conv(1) for _ in dilations)
        else:
            self.convs = nn.ModuleList(conv(d) for d in dilations)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.kind == "1":
            for c1, c2 in zip(self.convs1, self.convs2):
                x = x + c2(F.leaky_relu(c1(F.leaky_relu(x, LRELU_SLOPE)), LRELU_SLOPE))
        else:
            for c in self.convs:
                x = x + c(F.leaky_relu(x, LRELU_SLOPE))
        return x


class HiFiGAN(Vocoder):
    """mel (B, To, 80) natural-log -> wav (B, To * prod(upsample_rates)) in [-1, 1] (tanh)."""

    kind = "hifigan"
    sources = Vocoder.sources + ("fastspeech/vocoder/hifigan.py",)

    def __init__(self, cfg: HiFiGANConfig | None = None, audio: AudioConfig | None = None, fmt: str = "dle"):
        cfg = cfg or HiFiGANConfig()
        super().__init__(audio, {"format": fmt, "config": dataclasses.asdict(cfg)})
        self.cfg = cfg
        if math.prod(cfg.upsample_rates) != self.audio.hop_length:
            raise VocoderError(
                f"HiFi-GAN upsample_rates {list(cfg.upsample_rates)} make {math.prod(cfg.upsample_rates)} "
                f"samples per frame; this project's mels have a hop of {self.audio.hop_length}"
            )
        C = cfg.upsample_initial_channel
        self.conv_pre = nn.Conv1d(cfg.num_mels, C, 7, 1, padding=3)
        self.ups = nn.ModuleList(
            nn.ConvTranspose1d(C // 2**i, C // 2 ** (i + 1), k, u, padding=(k - u) // 2)
            for i, (u, k) in enumerate(zip(cfg.upsample_rates, cfg.upsample_kernel_sizes))
        )
        self.resblocks = nn.ModuleList(
            nn.ModuleList(
                ResBlock(cfg.resblock, C // 2 ** (i + 1), k, d)
                for k, d in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes)
            )
            for i in range(len(self.ups))
        )
        self.conv_post = nn.Conv1d(C // 2 ** len(self.ups), 1, 7, 1, padding=3)

    def vocode(
        self, mel: torch.Tensor, valid: torch.Tensor, acts: dict[str, torch.Tensor] | None
    ) -> torch.Tensor:
        x = self.conv_pre(mel.to(self.conv_pre.weight.dtype).transpose(1, 2))  # (B, C, To)
        record(acts, "conv_pre", x)
        for i, (up, blocks) in enumerate(zip(self.ups, self.resblocks)):
            x = up(F.leaky_relu(x, LRELU_SLOPE))  # (B, C / 2^(i+1), To * u_0 ... u_i)
            x = sum(block(x) for block in blocks) / len(blocks)
            record(acts, f"ups.{i}", x)
        x = torch.tanh(self.conv_post(F.leaky_relu(x)))  # F.leaky_relu's default slope, as the originals
        return x[:, 0]


# ---------------------------------------------------------------------------------------------
# Loading


def load_hifigan(
    path: str | Path, variant: str | None = None, config: str | None = None, audio: AudioConfig | None = None
) -> HiFiGAN:
    """Read a HiFi-GAN checkpoint (either layout) strictly -> HiFiGAN in eval mode, float32, CPU.

    Hyper-parameters, first found: `config` (a JSON path), `variant` (v1/v2/v3), the checkpoint's own
    `config` (DLE), `config.json` beside the file (the original's training directory), the preset
    whose tensor shapes the file matches.
    """
    path = Path(path)
    audio = audio or AudioConfig()
    obj = read_checkpoint(path, EXPECTED)
    state = obj.get("generator", obj)
    if not isinstance(state, dict) or not any(re.match(r"(module\.)?conv_pre\.", str(k)) for k in state):
        raise VocoderError(
            f"vocoder checkpoint {path} is not {EXPECTED}: no 'generator' with conv_pre.* (found top-level "
            f"keys {sorted(map(str, obj))[:8]})"
        )
    state = fold_weight_norm(strip_prefix(state))
    fmt = (
        "dle" if "config" in obj or any(re.match(r"resblocks\.\d+\.\d+\.", k) for k in state) else "original"
    )
    if variant is not None and variant not in PRESETS:
        raise VocoderError(f"vocoder.variant={variant}: HiFi-GAN variants are {', '.join(PRESETS)}")
    if config is not None:
        cfg = _config_from_json(Path(config))
    elif variant is not None:
        cfg = PRESETS[variant]
    elif isinstance(obj.get("config"), dict):
        cfg = HiFiGANConfig.from_dict(obj["config"], f"in {path}")
        _check_audio(obj.get("train_setup") or {}, audio, f"{path} (train_setup)")
    elif (path.parent / "config.json").is_file():
        cfg = _config_from_json(path.parent / "config.json")
        log.info("HiFi-GAN: hyper-parameters from %s", path.parent / "config.json")
    else:
        cfg = _match_preset(state, path)
    n_kernels = len(cfg.resblock_kernel_sizes)
    state = _nest_resblocks(state, n_kernels)
    voc = HiFiGAN(cfg, audio, fmt)
    load_strict(voc, state, path, f"HiFi-GAN {fmt} generator with config {_short(cfg)}")
    log.info("HiFi-GAN (%s layout, %s) loaded from %s", fmt, _short(cfg), path)
    return voc.eval()


def _config_from_json(path: Path) -> HiFiGANConfig:
    try:
        values = json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise VocoderError(
            f"cannot read HiFi-GAN config {path} ({type(exc).__name__}); pass vocoder.variant=v1|v2|v3"
        ) from None
    _check_audio(values, AudioConfig(), str(path))
    return HiFiGANConfig.from_dict(values, str(path))


def _check_audio(values: dict[str, Any], audio: AudioConfig, source: str) -> None:
    """A generator trained on another mel convention would make noise: refuse it by name."""
    ours = {
        "sampling_rate": audio.sample_rate,
        "hop_size": audio.hop_length,
        "hop_length": audio.hop_length,
        "num_mels": audio.num_mels,
    }
    wrong = [f"{k}={values[k]} (ours {v})" for k, v in ours.items() if k in values and int(values[k]) != v]
    if wrong:
        raise VocoderError(f"HiFi-GAN {source} was trained on other audio settings: {', '.join(wrong)}")


def _nest_resblocks(state: dict[str, torch.Tensor], n_kernels: int) -> dict[str, torch.Tensor]:
    """The original's flat `resblocks.<i * n_kernels + j>.` -> DLE's nested `resblocks.<i>.<j>.`."""
    out = {}
    for k, v in state.items():
        m = re.match(r"resblocks\.(\d+)\.(convs[12]?)\.(.*)$", k)
        if m:
            n = int(m.group(1))
            k = f"resblocks.{n // n_kernels}.{n % n_kernels}.{m.group(2)}.{m.group(3)}"
        out[k] = v
    return out


def _match_preset(state: dict[str, torch.Tensor], path: Path) -> HiFiGANConfig:
    """The one preset whose shapes the state dict has, else an error saying what to pass."""
    found = []
    for name, cfg in PRESETS.items():
        with torch.device("meta"):
            shapes = {k: tuple(v.shape) for k, v in HiFiGAN(cfg).state_dict().items()}
        nested = _nest_resblocks(state, len(cfg.resblock_kernel_sizes))
        if shapes == {k: tuple(v.shape) for k, v in nested.items()}:
            found.append(name)
    if len(found) == 1:
        log.info("HiFi-GAN: no config found beside %s; its shapes are variant %s", path, found[0])
        return PRESETS[found[0]]
    raise VocoderError(
        f"HiFi-GAN checkpoint {path} has no config and matches no variant by shape; put its config.json "
        "beside it, or pass vocoder.config=PATH.json or vocoder.variant=v1|v2|v3"
    )


def _short(cfg: HiFiGANConfig) -> str:
    return (
        f"resblock {cfg.resblock}, {cfg.upsample_initial_channel} channels, rates {list(cfg.upsample_rates)}"
    )
