"""WaveGlow (Prenger et al. 2019) from DLE's checkpoints (`Tacotron2/waveglow`), weight norm folded.

The seed's vocoder. A DLE checkpoint is `{"state_dict": ..., ...}` (keys may carry `module.`), with
`weight_g`/`weight_v` pairs; every hyper-parameter (flows, group, early outputs, WN layers,
channels: 256 or 512, kernel) is read from the tensor shapes, so both public variants load.

Inference (DLE's `infer`): upsample the mel with a transposed conv (k 1024, stride 256), cut the
768-sample tail, fold into groups of `n_group` samples, start from noise z * sigma, and run the flows
backwards: affine coupling (WN: dilated convs gated by tanh * sigmoid, conditioned on the mel) then
the inverse of the invertible 1x1 conv; early outputs are re-joined with fresh noise. An optional
denoiser subtracts `denoiser_strength` x the spectrum of the model's output for a zero mel (DLE's
`Denoiser`, its bias computed once at load).

Differences from DLE: the noise is a fixed function of (channel, sample, flow) (`hash_normal`), not
`torch.randn`: the same for every call, item and device (an engine is reproducible, verify can
compare it, CUDA graphs need no generator state); with sigma = 0 both are the same deterministic map.
The 1x1 convs' inverses are computed once at load in float64. The denoiser uses `torch.stft`/`istft`
(the same transform as DLE's conv-based STFT class, up to float rounding).
"""

from __future__ import annotations

import dataclasses
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from fastspeech.errors import VocoderError
from fastspeech.vocoder.base import (
    AudioConfig,
    Vocoder,
    fold_weight_norm,
    hash_normal,
    load_strict,
    read_checkpoint,
    record,
    strip_prefix,
)

log = logging.getLogger(__name__)

EXPECTED = "a DLE WaveGlow checkpoint (DeepLearningExamples Tacotron2/waveglow: 'state_dict' with WN.* and upsample.*)"


@dataclass(frozen=True)
class WaveGlowConfig:
    """DLE's WaveGlow hyper-parameters (`waveglow/arg_parser.py` names); defaults: the 512-channel model."""

    n_mel_channels: int = 80
    n_flows: int = 12
    n_group: int = 8
    n_early_every: int = 4
    n_early_size: int = 2
    wn_layers: int = 8
    wn_channels: int = 512
    wn_kernel_size: int = 3

    def channels(self) -> list[int]:
        """Audio channels each flow k sees (early outputs leave every n_early_every flows)."""
        out, c = [], self.n_group
        for k in range(self.n_flows):
            if k % self.n_early_every == 0 and k > 0:
                c -= self.n_early_size
            out.append(c)
        return out


class WN(nn.Module):
    """The affine coupling's network: non-causal dilated convs, gated, conditioned on the mel."""

    def __init__(self, n_in: int, n_cond: int, cfg: WaveGlowConfig):
        super().__init__()
        C, k = cfg.wn_channels, cfg.wn_kernel_size
        self.n_channels = C
        self.start = nn.Conv1d(n_in, C, 1)
        self.in_layers = nn.ModuleList(
            nn.Conv1d(C, 2 * C, k, dilation=2**i, padding=(k * 2**i - 2**i) // 2)
            for i in range(cfg.wn_layers)
        )
        self.cond_layers = nn.ModuleList(nn.Conv1d(n_cond, 2 * C, 1) for _ in range(cfg.wn_layers))
        self.res_skip_layers = nn.ModuleList(
            nn.Conv1d(C, 2 * C if i < cfg.wn_layers - 1 else C, 1) for i in range(cfg.wn_layers)
        )
        self.end = nn.Conv1d(C, 2 * n_in, 1)

    def forward(self, audio: torch.Tensor, spect: torch.Tensor) -> torch.Tensor:
        C = self.n_channels
        x = self.start(audio)
        skip = None
        for i, (inp, cond, res_skip) in enumerate(
            zip(self.in_layers, self.cond_layers, self.res_skip_layers)
        ):
            z = inp(x) + cond(spect)
            acts = torch.tanh(z[:, :C]) * torch.sigmoid(z[:, C:])
            rs = res_skip(acts)
            if i < len(self.in_layers) - 1:
                x = x + rs[:, :C]
                rs = rs[:, C:]
            skip = rs if skip is None else skip + rs
        return self.end(skip)


class Invertible1x1Conv(nn.Module):
    """Holds the trained 1x1 conv (`conv.weight`, as DLE) and its inverse, computed at load."""

    def __init__(self, c: int):
        super().__init__()
        self.conv = nn.Conv1d(c, c, 1, bias=False)
        self.register_buffer("inverse", torch.eye(c)[:, :, None], persistent=False)

    def invert(self) -> None:
        with torch.no_grad():
            w = self.conv.weight[:, :, 0].double()
            self.inverse.copy_(torch.linalg.inv(w)[:, :, None].to(self.inverse.dtype))


class WaveGlow(Vocoder):
    """mel (B, To, 80) natural-log -> wav (B, To * 256); `sigma`, `denoiser_strength` settings."""

    kind = "waveglow"
    sources = Vocoder.sources + ("fastspeech/vocoder/waveglow.py",)
    # Every WN layer's conditioning conv reads only the mel, so Inductor's combo kernels ran all 96 of
    # them (12 flows x 8 layers) up front and kept their outputs alive: the engine's build peak and
    # graph pool were 21.1 GiB at batch 8 (3.6 with the switch off, the same speed) and batch 32 ran
    # out of an H100's 80 GB (14.3 GiB off; run 125, docs/performance.md).
    inductor_switches: ClassVar[dict[str, bool]] = {"combo_kernels": False}

    def __init__(
        self,
        cfg: WaveGlowConfig | None = None,
        sigma: float = 0.9,
        denoiser_strength: float = 0.0,
        audio: AudioConfig | None = None,
    ):
        cfg = cfg or WaveGlowConfig()
        if not float(sigma) >= 0:
            raise VocoderError(
                f"vocoder.sigma={sigma!r}: WaveGlow's noise scale must be >= 0 (DLE infers with 0.9)"
            )
        if not float(denoiser_strength) >= 0:
            raise VocoderError(
                f"vocoder.denoiser_strength={denoiser_strength!r}: use 0 (off) or more, e.g. 0.01"
            )
        settings = {
            "config": dataclasses.asdict(cfg),
            "sigma": float(sigma),
            "denoiser_strength": float(denoiser_strength),
        }
        super().__init__(audio, settings)
        self.cfg, self.sigma, self.denoiser_strength = cfg, float(sigma), float(denoiser_strength)
        if cfg.n_group % 2 or self.audio.hop_length % cfg.n_group:
            raise VocoderError(
                f"WaveGlow n_group={cfg.n_group} must be even and divide the hop {self.audio.hop_length}"
            )
        self.upsample = nn.ConvTranspose1d(cfg.n_mel_channels, cfg.n_mel_channels, 1024, stride=256)
        channels = cfg.channels()
        self.n_remaining = channels[-1]
        self.convinv = nn.ModuleList(Invertible1x1Conv(c) for c in channels)
        self.WN = nn.ModuleList(WN(c // 2, cfg.n_mel_channels * cfg.n_group, cfg) for c in channels)
        self.register_buffer("bias_spec", torch.zeros(self.audio.n_fft // 2 + 1, 1), persistent=False)

    def finish_loading(self) -> WaveGlow:
        """After the weights are in: invert the 1x1 convs, measure the denoiser's bias spectrum."""
        for conv in self.convinv:
            conv.invert()
        if self.denoiser_strength > 0:
            with torch.no_grad():
                mel = torch.zeros(1, 88, self.cfg.n_mel_channels)  # DLE: a zero (log) mel of 88 frames
                bias = self.flows(mel.to(self.upsample.weight.dtype), sigma=0.0).float()
                self.bias_spec.copy_(self._stft(bias).abs()[0, :, :1])
        return self

    def noise(self, B: int, channels: int, length: int, salt: int, like: torch.Tensor) -> torch.Tensor:
        """z (B, channels, length): fixed normal noise per (channel, sample, salt), the same in every item."""
        c = torch.arange(channels, device=like.device)[:, None]
        t = torch.arange(length, device=like.device)[None, :]
        return hash_normal(c, t, salt=salt).to(like.dtype).expand(B, -1, -1)

    def flows(
        self, mel: torch.Tensor, sigma: float, acts: dict[str, torch.Tensor] | None = None
    ) -> torch.Tensor:
        """DLE's `infer` on a time-first mel (B, To, 80) in the module's dtype -> (B, To * 256)."""
        g = self.cfg.n_group
        spect = self.upsample(mel.transpose(1, 2))  # (B, 80, To * 256 + 768)
        spect = spect[:, :, : spect.shape[2] - (self.upsample.kernel_size[0] - self.upsample.stride[0])]
        B, n_mel, n_samples = spect.shape
        L = n_samples // g
        # (B, 80, L, g) -> (B, L, 80, g) -> (B, 80 * g, L): channel index = mel * g + sample in group
        spect = spect.reshape(B, n_mel, L, g).permute(0, 2, 1, 3).reshape(B, L, n_mel * g).transpose(1, 2)
        record(acts, "spect", spect)
        audio = sigma * self.noise(B, self.n_remaining, L, 0, spect)
        for k in reversed(range(self.cfg.n_flows)):
            n_half = audio.shape[1] // 2
            a0, a1 = audio[:, :n_half], audio[:, n_half:]
            out = self.WN[k](a0, spect)
            s, b = out[:, n_half:], out[:, :n_half]
            audio = torch.cat([a0, (a1 - b) / torch.exp(s)], 1)
            audio = F.conv1d(audio, self.convinv[k].inverse)
            if k % self.cfg.n_early_every == 0 and k > 0:
                audio = torch.cat([sigma * self.noise(B, self.cfg.n_early_size, L, k, spect), audio], 1)
            record(acts, f"flow.{k}", audio)
        return audio.transpose(1, 2).reshape(B, -1)  # (B, L, g) -> (B, L * g)

    def vocode(
        self, mel: torch.Tensor, valid: torch.Tensor, acts: dict[str, torch.Tensor] | None
    ) -> torch.Tensor:
        wav = self.flows(mel.to(self.upsample.weight.dtype), self.sigma, acts).float()
        if self.denoiser_strength > 0:
            spec = self._stft(wav)
            magnitude = (spec.abs() - self.bias_spec.float() * self.denoiser_strength).clamp_min(0)
            a = self.audio
            wav = torch.istft(
                torch.polar(magnitude, spec.angle()), a.n_fft, a.hop_length, a.win_length, self._window(wav),
                center=True, length=wav.shape[1],
            )  # fmt: skip
        return wav

    def _window(self, like: torch.Tensor) -> torch.Tensor:
        return torch.hann_window(self.audio.win_length, device=like.device)  # float32 in any precision

    def _stft(self, wav: torch.Tensor) -> torch.Tensor:
        a = self.audio
        return torch.stft(
            wav.float(), a.n_fft, a.hop_length, a.win_length, self._window(wav), center=True,
            pad_mode="reflect", return_complex=True,
        )  # fmt: skip


def config_from_state_dict(state: dict[str, torch.Tensor], path: Path) -> WaveGlowConfig:
    """Every hyper-parameter from the tensor shapes (both public variants: 256 and 512 channels)."""
    try:
        n_flows = len({int(m.group(1)) for k in state if (m := re.match(r"WN\.(\d+)\.", k))})
        channels = [state[f"convinv.{k}.conv.weight"].shape[0] for k in range(n_flows)]
        drops = [k for k in range(1, n_flows) if channels[k] != channels[k - 1]]
        n_layers = len({int(m.group(1)) for k in state if (m := re.match(r"WN\.0\.in_layers\.(\d+)\.", k))})
        in0 = state["WN.0.in_layers.0.weight"]
        return WaveGlowConfig(
            n_mel_channels=state["upsample.weight"].shape[0],
            n_flows=n_flows,
            n_group=channels[0],
            n_early_every=drops[0] if drops else n_flows,
            n_early_size=channels[drops[0] - 1] - channels[drops[0]] if drops else 2,
            wn_layers=n_layers,
            wn_channels=in0.shape[1],
            wn_kernel_size=in0.shape[2],
        )
    except (KeyError, IndexError) as exc:
        raise VocoderError(f"vocoder checkpoint {path} is not {EXPECTED}: no tensor {exc}") from None


def load_waveglow(
    path: str | Path, sigma: float = 0.9, denoiser_strength: float = 0.0, audio: AudioConfig | None = None
) -> WaveGlow:
    """Read a DLE WaveGlow checkpoint strictly -> WaveGlow in eval mode, float32, on the CPU."""
    path = Path(path)
    obj = read_checkpoint(path, EXPECTED)
    state = obj.get("state_dict", obj.get("model", obj))
    if not isinstance(state, dict) or not any(re.match(r"(module\.)?WN\.0\.", str(k)) for k in state):
        raise VocoderError(
            f"vocoder checkpoint {path} is not {EXPECTED}: found top-level keys {sorted(map(str, obj))[:8]}"
        )
    state = fold_weight_norm(strip_prefix(state))
    cfg = config_from_state_dict(state, path)
    voc = WaveGlow(cfg, sigma, denoiser_strength, audio)
    load_strict(voc, state, path, f"DLE WaveGlow ({cfg.wn_channels} channels, {cfg.n_flows} flows)")
    log.info("WaveGlow (%d channels, %d flows) loaded from %s", cfg.wn_channels, cfg.n_flows, path)
    return voc.eval().finish_loading()
