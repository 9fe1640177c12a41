"""Griffin-Lim in torch: needs no weights, so every machine speaks; the default vocoder.

mel (natural log, Slaney mel bands over the magnitude STFT, DLE's convention) -> linear magnitude by
the least-squares inverse of the mel filterbank (its pseudo-inverse, negatives clipped to zero) ->
phase by Griffin-Lim with momentum (Perraudin et al. 2013's "fast Griffin-Lim", librosa's default
0.99) over `n_iter` iterations. Shapes are fixed by To, the loop has a fixed count and the initial
phase is a fixed function of (frequency bin, frame) (`hash_uniform`), so the output is reproducible,
batch-invariant and the same code runs eagerly on the CPU and compiled inside an engine's CUDA
graph. The STFT pair is written out rather than `torch.stft`/`torch.istft` (equal to float rounding):
pad + strided frames + window before the forward FFT, and the overlap-add divided by the summed
squared windows after the inverse, pointwise work Inductor fuses. On CUDA the spectra stay *packed*:
each real FFT of n_fft points is a complex FFT of the frame's n_fft / 2 sample pairs, and what lies
between the forward and the next inverse FFT (unpacking, the momentum and magnitude step, packing)
is one Triton kernel, `kernels/griffin_lim_step.py`; the overlap-add, the envelope division and the
next STFT's framing are another, `kernels/overlap_add_frames.py` (no stored signal in between): 7
kernels per iteration became 4 (no irfft input copy or scaling kernel). Against torch.stft/istft an
engine call is 1.25-1.28x faster (run 8, H100); frame-major spectra and the step op made it another
~1.28x (i32_o256, batch 1) / ~1.23x (i128_o1024, batch 32) on an H200 (docs/kernels_history.md, runs 9-10),
and the overlap-add op another 1.08-1.11x at batch 1, 1.04-1.05x at batch 32 (run 13). The CPU keeps
`torch.fft.rfft`/`irfft` (faster there).

Precision: always float32 inside, whatever the engine precision (fp16 phases drift over 32
iterations and the pseudo-inverse needs the range); the model's fp16/bf16 mel is cast on entry.

Differences from librosa's `mel_to_stft` + `griffinlim` (the reference in tests/vocoder/): the
magnitude is the clipped least-squares solution, not librosa's iterative non-negative least squares
(measured: same spectral convergence within noise); the phase starts from a hash, not a random
generator; the output has To * hop samples (DLE's length: the last hop is zero).
"""

from __future__ import annotations

import math

import numpy as np
import torch

from fastspeech.errors import VocoderError
from fastspeech.vocoder.base import AudioConfig, Vocoder, hash_uniform, record
from kernels.griffin_lim_step import griffin_lim_step, pack_irfft
from kernels.overlap_add_frames import (
    istft_tail,
    overlap_add_frames,
    overlap_add_frames_reference,
    stft_frames,
)


def slaney_mel_filters(audio: AudioConfig) -> np.ndarray:
    """The Slaney-style mel filterbank (num_mels, n_fft // 2 + 1), area-normalized, as librosa's
    `filters.mel(htk=False, norm="slaney")` computes it (tests check they agree to 1e-7)."""
    f_sp, min_log_hz = 200.0 / 3, 1000.0
    min_log_mel, logstep = min_log_hz / f_sp, math.log(6.4) / 27.0

    def hz_to_mel(f: np.ndarray) -> np.ndarray:
        f = np.asarray(f, dtype=np.float64)
        return np.where(
            f >= min_log_hz, min_log_mel + np.log(np.maximum(f, 1e-10) / min_log_hz) / logstep, f / f_sp
        )

    def mel_to_hz(m: np.ndarray) -> np.ndarray:
        return np.where(m >= min_log_mel, min_log_hz * np.exp(logstep * (m - min_log_mel)), f_sp * m)

    fft_freqs = np.linspace(0, audio.sample_rate / 2, audio.n_fft // 2 + 1)
    edges = mel_to_hz(np.linspace(hz_to_mel(audio.mel_fmin), hz_to_mel(audio.mel_fmax), audio.num_mels + 2))
    ramps = edges[:, None] - fft_freqs[None, :]
    lower = -ramps[:-2] / np.diff(edges)[:-1, None]
    upper = ramps[2:] / np.diff(edges)[1:, None]
    weights = np.maximum(0, np.minimum(lower, upper))
    return weights * (2.0 / (edges[2:] - edges[:-2]))[:, None]


class GriffinLim(Vocoder):
    """Torch Griffin-Lim: mel (B, To, 80) natural-log -> wav (B, To * 256) float32 in [-1, 1]."""

    kind = "griffin_lim"
    sources = Vocoder.sources + ("fastspeech/vocoder/griffin_lim.py",)
    keeps_fp32 = True
    # A frame's window reaches 2 frames either side (n_fft 1024 = 4 hops, centred): 4 silent frames
    # already give bit-identical samples to a 1024-frame padding (tests/vocoder); 8 for margin.
    context_frames = 8

    def __init__(self, n_iter: int = 32, momentum: float = 0.99, audio: AudioConfig | None = None):
        if not (isinstance(n_iter, int) and n_iter >= 1):
            raise VocoderError(f"vocoder.n_iter={n_iter!r}: Griffin-Lim needs at least 1 iteration, e.g. 32")
        if not 0.0 <= float(momentum) < 1.0:
            raise VocoderError(
                f"vocoder.momentum={momentum!r}: use 0 (plain Griffin-Lim) up to below 1 (0.99)"
            )
        super().__init__(audio, {"n_iter": n_iter, "momentum": float(momentum)})
        self.n_iter, self.momentum = n_iter, float(momentum)
        a = self.audio
        filters = slaney_mel_filters(a)
        # The least-squares inverse of the filterbank: (n_fft // 2 + 1, num_mels).
        self.register_buffer("inverse", torch.from_numpy(np.linalg.pinv(filters)).float(), persistent=False)
        self.register_buffer("window", torch.hann_window(a.win_length), persistent=False)
        if a.n_fft % 2:  # a centred STFT of an odd n_fft has one frame fewer than the mel
            raise VocoderError(f"audio n_fft={a.n_fft}: Griffin-Lim needs an even n_fft, e.g. 1024")
        # The STFT pair is written out where whole hops divide n_fft (DLE's 1024 / 256 and every
        # common setting); otherwise torch.stft / torch.istft run it.
        self.written_out = a.n_fft % a.hop_length == 0
        # Packed spectra and the fused magnitude step (`griffin_lim_step`): on CUDA (None), where
        # they save kernels; the CPU's FFTs are faster with rfft/irfft. Tests force either.
        self.packed: bool | None = None
        # In the packed loop, the overlap-add + next framing as the `overlap_add_frames` op (one
        # kernel) or as its plain PyTorch reference (two Inductor kernels; benchmarks compare them).
        self.fused_overlap_add = True
        # The inverse STFT divides by the overlapped squared windows: they must not vanish (NOLA),
        # or the division gives inf where torch.istft would refuse.
        if self.written_out:
            R = a.n_fft // a.hop_length
            steady = self._full_window().square().view(R, a.hop_length).sum(0)  # any sample past the edges
            if float(steady.min()) < 1e-11:
                raise VocoderError(
                    f"audio n_fft={a.n_fft}, hop_length={a.hop_length}, win_length={a.win_length}: the Hann "
                    "windows do not overlap everywhere, so the STFT cannot be inverted; use a smaller hop"
                )

    def vocode(
        self, mel: torch.Tensor, valid: torch.Tensor, acts: dict[str, torch.Tensor] | None
    ) -> torch.Tensor:
        a = self.audio
        To = mel.shape[1]
        # Magnitude (B, To, F), frame-major like the transforms, zero in padding frames. `linear` is
        # the matmul's own output (one buffer); `griffin_lim_step` clamps it at 0 itself. Given the
        # clamped expression, Inductor computed a copy of it for each of the loop's calls, all alive
        # from the loop's start (run 111, docs/kernels_history.md).
        linear = (mel.exp() * valid[:, :, None]) @ self.inverse.T
        magnitude = linear.clamp_min(0)
        record(acts, "magnitude", magnitude)
        frames = torch.arange(To, device=mel.device)[:, None]
        bins = torch.arange(magnitude.shape[2], device=mel.device)[None, :]
        phase = 2 * math.pi * hash_uniform(bins, frames)  # (To, F): fixed, batch-invariant
        # Complex numbers as (..., 2) real pairs between the transforms: Inductor fuses real
        # element-wise math but falls back to eager for complex operators.
        spec = magnitude[..., None] * torch.stack([phase.cos(), phase.sin()], -1)  # (B, To, F, 2)
        # A centred STFT of (To - 1) hops has exactly To frames (To = 1: one hop, first frame kept).
        length = max(To - 1, 1) * a.hop_length
        keep = self.momentum / (1 + self.momentum)
        if self.written_out and (mel.is_cuda if self.packed is None else self.packed):
            # The spectra stay packed for half-length complex FFTs (kernels/griffin_lim_step.py).
            packed, z_prev = pack_irfft(spec), None
            window, hop = self._full_window(), a.hop_length
            reframe = overlap_add_frames if self.fused_overlap_add else overlap_add_frames_reference
            for _ in range(self.n_iter):
                # inverse FFT -> overlap-add -> the next STFT's frames (one kernel) -> forward FFT
                z = self._fft_pairs(reframe(self._ifft_pairs(packed), window, hop, length))[:, :To]
                first = z_prev is None
                packed = griffin_lim_step(z, z if first else z_prev, linear, 0.0 if first else keep)
                z_prev = z
            wav = self._istft_packed(packed, length)
        else:
            previous = None
            for _ in range(self.n_iter):
                rebuilt = self._stft(self._istft(spec, length))[:, :To]
                update = rebuilt if previous is None else rebuilt - keep * previous
                spec = magnitude[..., None] * update / (update.square().sum(-1, keepdim=True).sqrt() + 1e-16)
                previous = rebuilt
            wav = self._istft(spec, length)
        return torch.nn.functional.pad(wav, (0, To * a.hop_length - length))  # DLE's length: To * hop

    def _stft(self, wav: torch.Tensor) -> torch.Tensor:
        """`torch.stft(center=True, pad_mode="constant")` of wav (B, L) as real pairs (B, frames, F, 2):
        written out as the windowed frames' `rfft`, or torch.stft itself where hops do not divide n_fft."""
        a = self.audio
        if self.written_out:
            return torch.view_as_real(torch.fft.rfft(self._frames(wav), dim=-1))
        spec = torch.stft(
            wav, a.n_fft, a.hop_length, a.win_length, self.window, center=True, pad_mode="constant",
            return_complex=True,
        )  # fmt: skip
        return torch.view_as_real(spec).transpose(1, 2)

    def _istft(self, spec: torch.Tensor, length: int) -> torch.Tensor:
        """`torch.istft(center=True, length=length)` of real pairs (B, frames, F, 2) -> (B, length):
        written out as an unscaled `irfft`, the overlap-add divided by the overlapped squared windows
        (`istft_tail`) and 1 / n_fft, or torch.istft itself where hops do not divide n_fft."""
        a = self.audio
        if self.written_out:
            frames = torch.fft.irfft(
                torch.view_as_complex(spec.contiguous()), n=a.n_fft, dim=-1, norm="forward"
            )
            return istft_tail(frames, self._full_window(), a.hop_length, length) * (1 / a.n_fft)
        complex_spec = torch.view_as_complex(spec.transpose(1, 2).contiguous())
        return torch.istft(
            complex_spec, a.n_fft, a.hop_length, a.win_length, self.window, center=True, length=length
        )

    def _istft_packed(self, packed: torch.Tensor, length: int) -> torch.Tensor:
        """The inverse STFT (B, length) of a packed spectrum (B, frames, n_fft / 2, 2), `pack_irfft`'s form."""
        return istft_tail(self._ifft_pairs(packed), self._full_window(), self.audio.hop_length, length)

    @staticmethod
    def _fft_pairs(frames: torch.Tensor) -> torch.Tensor:
        """Windowed frames (B, n, n_fft) -> the complex FFT of their n_fft / 2 sample pairs (a free view)
        as real pairs (B, n, n_fft / 2, 2)."""
        pairs = torch.view_as_complex(frames.reshape(*frames.shape[:2], -1, 2))
        return torch.view_as_real(torch.fft.fft(pairs, dim=-1))

    @staticmethod
    def _ifft_pairs(packed: torch.Tensor) -> torch.Tensor:
        """A packed spectrum (B, n, n_fft / 2, 2) -> the frames (B, n, n_fft): the unnormalized inverse
        complex FFT's pair m is samples 2m, 2m + 1 (1 / n_fft is packed in)."""
        pairs = torch.fft.ifft(torch.view_as_complex(packed), dim=-1, norm="forward")
        return torch.view_as_real(pairs).flatten(-2)

    def _frames(self, wav: torch.Tensor) -> torch.Tensor:
        """wav (B, L) -> the centred STFT's windowed frames (B, L // hop + 1, n_fft): pad + a strided
        view + the window, which Inductor fuses with the step before into one kernel feeding cuFFT."""
        return stft_frames(wav, self._full_window(), self.audio.hop_length)

    def _full_window(self) -> torch.Tensor:
        """The window centred in n_fft samples (zeros around a shorter win_length), as torch.stft pads it."""
        a = self.audio
        left = (a.n_fft - a.win_length) // 2
        return torch.nn.functional.pad(self.window, (left, a.n_fft - a.win_length - left))


def librosa_griffin_lim(mel: np.ndarray, n_iter: int = 32, seed: int = 0, audio: AudioConfig | None = None):
    """Today's CPU path, for tests and the e2e benchmark only: librosa's `mel_to_stft` (NNLS) and
    `griffinlim` (random phase, momentum 0.99) on one mel (To, num_mels) -> wav (To * hop,) numpy."""
    import librosa

    a = audio or AudioConfig()
    magnitude = np.exp(np.asarray(mel, dtype=np.float32).T)
    stft = librosa.feature.inverse.mel_to_stft(
        magnitude, sr=a.sample_rate, n_fft=a.n_fft, power=1.0, fmin=a.mel_fmin, fmax=a.mel_fmax
    )
    wav = librosa.griffinlim(
        stft,
        n_iter=n_iter,
        hop_length=a.hop_length,
        win_length=a.win_length,
        n_fft=a.n_fft,
        random_state=seed,
    )
    return np.pad(wav, (0, len(mel) * a.hop_length - len(wav))).astype(np.float32)
