"""16-bit PCM encoding (`fastspeech.vocoder.pcm16`, through fastspeech/serve/audio.py and the CLI's files) on
awkward inputs, against the plain numpy formula."""

from __future__ import annotations

import io

import numpy as np
import pytest

from fastspeech.serve import audio


def reference_pcm16(wav: np.ndarray) -> np.ndarray:
    """Clip to [-1, 1], scale by 32767, round half to even: the formula, one numpy step at a time."""
    return (np.clip(np.asarray(wav, np.float32), -1.0, 1.0) * np.float32(32767.0)).round().astype("<i2")


@pytest.mark.parametrize("n", [0, 1, 7, 4097, 231_000])
def test_pcm16_equals_the_formula_on_random_audio(n):
    rng = np.random.default_rng(n)
    wav = rng.uniform(-1.2, 1.2, n).astype(np.float32)  # some samples past full scale
    got = np.frombuffer(audio.pcm16(wav), "<i2")
    assert got.shape == (n,)
    assert np.array_equal(got, reference_pcm16(wav))


def test_pcm16_rounds_halves_to_even_and_clips_full_scale():
    steps = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 929.6, -929.6, 32766.6, 40000.0, -40000.0, 0.0]) / 32767.0
    got = np.frombuffer(audio.pcm16(steps.astype(np.float32)), "<i2")
    assert got.tolist() == [0, 2, 2, 0, -2, 930, -930, 32767, 32767, -32767, 0]


def test_pcm16_takes_float64_and_strided_views_without_touching_them():
    base = np.random.default_rng(1).uniform(-1, 1, 2001)
    kept = base.copy()
    view = base[::2]  # float64, not contiguous
    assert np.array_equal(np.frombuffer(audio.pcm16(view), "<i2"), reference_pcm16(view))
    assert np.array_equal(base, kept)


def test_whole_wav_reads_back_with_exact_sizes():
    import soundfile

    wav = np.random.default_rng(2).uniform(-1, 1, 1001).astype(np.float32)
    data = audio.encode_whole(wav, "wav")
    back, rate = soundfile.read(io.BytesIO(data), dtype="int16")
    assert rate == 22050 and np.array_equal(back, reference_pcm16(wav))


def test_the_cli_files_hold_the_servers_samples(tmp_path):
    """Both sinks encode with `fastspeech.vocoder.pcm16`: a wav file of the CLI and the server's wav
    bytes carry the same samples (libsndfile's own float conversion rounds differently)."""
    import soundfile
    from omegaconf import OmegaConf

    from fastspeech.pipeline import Utterance, write_results

    frames = 37
    wav = np.random.default_rng(3).uniform(-1.3, 1.3, frames * 256 + 100).astype(np.float32)
    wav[:6] = np.array([0.5, 1.5, 2.5, -0.5, -1.5, 929.6]) / 32767  # halves: to even
    u = Utterance(0, "Odd samples.", [1, 2], mel=np.zeros((frames, 80), np.float32), wav=wav)
    write_results(OmegaConf.create({"plot": False}), tmp_path, tmp_path, [u], [], "cpu")
    stored, rate = soundfile.read(u.files[0], dtype="int16")
    served = np.frombuffer(audio.encode_whole(wav[: frames * 256], "wav")[44:], "<i2")
    assert rate == 22050 and len(stored) == frames * 256  # cut to the mel's frames
    assert np.array_equal(stored, served)
    assert np.array_equal(stored, reference_pcm16(wav[: frames * 256]))


def test_engine_int16_passes_through_every_sink_unchanged(tmp_path):
    """Engines return 16-bit PCM (`to_pcm16` in the graph): the sinks write those samples as they are,
    full scale and odd lengths included, and the in-graph formula equals the host one."""
    import soundfile
    import torch
    from omegaconf import OmegaConf

    from fastspeech.pipeline import Utterance, write_results
    from fastspeech.vocoder import to_pcm16

    frames = 5
    floats = np.random.default_rng(4).uniform(-1.3, 1.3, frames * 256 + 3).astype(np.float32)
    pcm = to_pcm16(torch.from_numpy(floats)).numpy()  # what an engine hands over
    assert pcm.dtype == np.int16 and np.array_equal(pcm, reference_pcm16(floats))
    pcm[:3] = [32767, -32767, -32768]  # any int16 at all is kept, not re-scaled or clipped
    assert np.array_equal(np.frombuffer(audio.pcm16(pcm), "<i2"), pcm)
    assert np.array_equal(np.frombuffer(audio.encode_whole(pcm, "wav")[44:], "<i2"), pcm)
    u = Utterance(0, "Int samples.", [1], mel=np.zeros((frames, 80), np.float32), wav=pcm)
    write_results(OmegaConf.create({"plot": False}), tmp_path, tmp_path, [u], [], "cpu")
    stored, _ = soundfile.read(u.files[0], dtype="int16")
    assert np.array_equal(stored, pcm[: frames * 256])
    if "flac" in audio.supported_formats():
        back, _ = soundfile.read(io.BytesIO(audio.encode_whole(pcm, "flac")), dtype="int16")
        assert np.array_equal(back, pcm)
    for fmt in {"mp3", "opus"} & set(audio.supported_formats()):
        assert len(audio.encode_whole(pcm, fmt)) > 100  # lossy: encodes the int16 samples


def test_pcm16_puts_the_header_first_and_takes_strided_int16_views():
    pcm = np.random.default_rng(5).integers(-32768, 32767, 1001, dtype=np.int16)
    view = pcm[::3]  # not contiguous: copied once, in order
    assert audio.pcm16(view, b"head") == b"head" + view.astype("<i2").tobytes()
    data = audio.encode_whole(view, "wav")
    assert data[:44] == audio.wav_header(len(view)) and np.array_equal(np.frombuffer(data[44:], "<i2"), view)
