"""Audio out: 16-bit PCM at 22050 Hz mono; wav (streaming or exact header), flac and mp3 via soundfile.

A streaming wav header carries 0xFFFFFFFF as the RIFF and data sizes (what OpenAI and others send
when the length is not known yet); players and `soundfile` read such a file to its end.
"""

from __future__ import annotations

import functools
import io
import logging
import struct

import numpy as np

from fastspeech.vocoder import pcm16 as pcm16_samples
from fastspeech.vocoder.base import AudioConfig

log = logging.getLogger(__name__)

SAMPLE_RATE = AudioConfig.sample_rate
STREAMED = ("wav", "pcm")  # sent sentence by sentence
WHOLE = {"flac": ("FLAC", "PCM_16"), "mp3": ("MP3", "MPEG_LAYER_III"), "opus": ("OGG", "OPUS")}
MEDIA_TYPES = {
    "wav": "audio/wav",
    "pcm": "audio/pcm",
    "flac": "audio/flac",
    "mp3": "audio/mpeg",
    "opus": "audio/ogg",
}
ALL = ("mp3", "opus", "aac", "flac", "wav", "pcm")  # what OpenAI's API names


@functools.cache
def supported_formats() -> tuple[str, ...]:
    """wav, pcm, and each of flac/mp3/opus that this soundfile can write at 22050 Hz (probed once).
    wav and pcm alone where soundfile cannot be imported (not installed, its cffi or libsndfile
    missing): a request for the others then gets a 400 naming what is served, never a 500."""
    ok = list(STREAMED)
    try:
        import soundfile
    except (ImportError, OSError) as exc:
        log.warning("soundfile cannot be imported (%s): serving wav and pcm only", exc)
        return tuple(ok)
    for name, (fmt, subtype) in WHOLE.items():
        try:
            soundfile.write(io.BytesIO(), np.zeros(256, np.float32), SAMPLE_RATE, format=fmt, subtype=subtype)
            ok.append(name)
        except Exception as exc:  # noqa: BLE001 - libsndfile without it, or the rate unsupported (opus)
            log.debug("response_format=%s not available: %s", name, exc)
    return tuple(ok)


def pcm16(wav: np.ndarray, head: bytes = b"") -> bytes:
    """`head` + samples as little-endian int16 bytes (`fastspeech.vocoder.pcm16`, as the CLI's files):
    the engines' int16 as they are, float [-1, 1] encoded. One copy of the samples (a join over
    their buffer), not two (`tobytes`, then the concatenation with a header)."""
    return b"".join((head, pcm16_samples(wav).data))


class Pcm:
    """One response's samples as 16-bit pcm bytes, piece by piece: at the model's 22050 Hz as they are
    (`pcm16`), or resampled to `rate` (`serve.pcm_rate`, e.g. OpenAI's 24 kHz) by soxr's streaming
    resampler, which keeps its state from piece to piece: the pieces join into one resampled signal,
    and `end` gives the tail the filter still holds."""

    def __init__(self, rate: int | None = None):
        self.resampler = None
        if rate is not None and rate != SAMPLE_RATE:
            import soxr  # the `serve` extra

            self.resampler = soxr.ResampleStream(SAMPLE_RATE, rate, 1, dtype="int16")

    def piece(self, wav: np.ndarray, head: bytes = b"") -> bytes:
        if self.resampler is None:
            return pcm16(wav, head)
        return b"".join((head, self.resampler.resample_chunk(pcm16_samples(wav)).data))

    def end(self) -> bytes:
        if self.resampler is None:
            return b""
        return self.resampler.resample_chunk(np.zeros(0, np.int16), last=True).tobytes()


def wav_header(n_samples: int | None = None) -> bytes:
    """A 44-byte PCM wav header; `n_samples` None: the streaming header (sizes 0xFFFFFFFF)."""
    data = 0xFFFFFFFF if n_samples is None else 2 * n_samples
    riff = 0xFFFFFFFF if n_samples is None else 36 + data
    return (
        b"RIFF"
        + struct.pack("<I", riff)
        + b"WAVEfmt "
        + struct.pack("<IHHIIHH", 16, 1, 1, SAMPLE_RATE, 2 * SAMPLE_RATE, 2, 16)
        + b"data"
        + struct.pack("<I", data)
    )


def encode_whole(wav: np.ndarray, response_format: str, pcm_rate: int | None = None) -> bytes:
    """The whole utterance in one file of `response_format` (wav with exact sizes, pcm at `pcm_rate`
    (None: 22050 Hz), flac, mp3)."""
    if response_format == "pcm":
        out = Pcm(pcm_rate)
        return out.piece(wav) + out.end()
    if response_format == "wav":
        return pcm16(wav, wav_header(len(wav)))
    import soundfile

    fmt, subtype = WHOLE[response_format]
    buf = io.BytesIO()
    data = pcm16_samples(wav)  # flac: the same samples as wav; mp3/opus encode them
    soundfile.write(buf, data, SAMPLE_RATE, format=fmt, subtype=subtype)
    return buf.getvalue()
