"""mel -> wav, in DLE's mel convention, with Griffin-Lim from librosa.

DLE's mels (the Tacotron2/WaveGlow convention): 22050 Hz, n_fft 1024, hop 256, window 1024, 80 Slaney
mel bands from 0 to 8000 Hz over the *magnitude* STFT, then natural log of the magnitude clamped
at 1e-5. Griffin-Lim needs no weights, so any machine can hear something; a neural vocoder plugs in
by implementing `Vocoder` (the `vocoder/` config group picks one).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np


@dataclass(frozen=True)
class AudioConfig:
    """DLE's audio settings (`base.yaml`)."""

    sample_rate: int = 22050
    n_fft: int = 1024
    hop_length: int = 256
    win_length: int = 1024
    num_mels: int = 80
    mel_fmin: float = 0.0
    mel_fmax: float = 8000.0
    clamp: float = 1e-5  # log(max(mel, clamp))


class Vocoder(Protocol):
    """Anything that turns one mel (To, num_mels), natural-log magnitude, into To * hop samples."""

    audio: AudioConfig

    def __call__(self, mel: np.ndarray) -> np.ndarray: ...


class GriffinLim:
    """Mel -> linear magnitude (non-negative least squares) -> phase by Griffin-Lim iterations."""

    def __init__(self, audio: AudioConfig | None = None, n_iter: int = 32, seed: int = 0):
        self.audio = audio or AudioConfig()
        self.n_iter = n_iter
        self.seed = seed

    def __call__(self, mel: np.ndarray) -> np.ndarray:
        import librosa  # imported here: the engines and kernels never need it

        a = self.audio
        frames = mel.shape[0]
        magnitude = np.exp(np.asarray(mel, dtype=np.float32).T)  # (num_mels, To)
        stft = librosa.feature.inverse.mel_to_stft(
            magnitude, sr=a.sample_rate, n_fft=a.n_fft, power=1.0, fmin=a.mel_fmin, fmax=a.mel_fmax
        )
        wav = librosa.griffinlim(
            stft,
            n_iter=self.n_iter,
            hop_length=a.hop_length,
            win_length=a.win_length,
            n_fft=a.n_fft,
            random_state=self.seed,
        )
        # A centred STFT of To frames spans (To - 1) hops; DLE's vocoder output is To * hop samples.
        return np.pad(wav, (0, frames * a.hop_length - len(wav))).astype(np.float32)


def wav_to_mel(wav: np.ndarray, audio: AudioConfig | None = None) -> np.ndarray:
    """DLE's mel of a waveform: (frames, num_mels), natural log of the clamped magnitude mel."""
    import librosa

    a = audio or AudioConfig()
    mel = librosa.feature.melspectrogram(
        y=np.asarray(wav, dtype=np.float32),
        sr=a.sample_rate,
        n_fft=a.n_fft,
        hop_length=a.hop_length,
        win_length=a.win_length,
        n_mels=a.num_mels,
        fmin=a.mel_fmin,
        fmax=a.mel_fmax,
        power=1.0,
    )
    return np.log(np.clip(mel, a.clamp, None)).T


def build_vocoder(name: str, n_iter: int = 32) -> Vocoder:
    """The vocoder a `conf/vocoder/*.yaml` names."""
    if name == "griffin_lim":
        return GriffinLim(n_iter=n_iter)
    raise ValueError(f"unknown vocoder {name!r}; available: griffin_lim")
