"""Torch Griffin-Lim against librosa's, DLE's mel convention, padding, settings.

Spectral convergence (SC) = || mel(wav) - mel || / || mel || on magnitude mels, the mel of the output
measured by librosa. Margin: ours may be at most 10% (relative) worse than librosa's. Why 10%: with
random phase inits librosa's own SC on this mel spreads by ~10% between seeds (0.091 to 0.101 measured
for seeds 0-2); ours measured 0.0914 against librosa's 0.0909 (seed 0).
"""

import numpy as np
import pytest
import torch

from fastspeech.errors import VocoderError
from fastspeech.vocoder import AudioConfig, GriffinLim, build_vocoder, load_vocoder, wav_to_mel
from fastspeech.vocoder.griffin_lim import librosa_griffin_lim, slaney_mel_filters
from kernels.griffin_lim_step import pack_irfft, unpack_rfft

librosa = pytest.importorskip("librosa", reason="librosa is the test reference (pip install -e '.[dev]')")
SR, HOP = 22050, 256


@pytest.fixture(scope="module")
def demo_mel():
    """A real mel: the demo voice (eager, fp32) saying one sentence -> (To, 80) natural log."""
    from fastspeech.checkpoint import hparams_from_state_dict, load_checkpoint, read_state_dict
    from fastspeech.model import FastSpeech, FastSpeechConfig
    from fastspeech.pipeline import DEMO_VOICE
    from fastspeech.text import text_to_ids

    state, _ = read_state_dict(DEMO_VOICE)
    model = FastSpeech(FastSpeechConfig.from_dict(hparams_from_state_dict(state))).eval()
    load_checkpoint(model, DEMO_VOICE)
    with torch.no_grad():
        out = model(torch.tensor([text_to_ids("The quick brown fox jumps over the lazy dog.")]))
    mel = out.mel[0, : int(out.mel_lens[0])].float().numpy()
    assert 150 < len(mel) < 400
    return mel


def spectral_convergence(wav: np.ndarray, mel: np.ndarray) -> float:
    got = librosa.feature.melspectrogram(
        y=wav, sr=SR, n_fft=1024, hop_length=HOP, win_length=1024, n_mels=80, fmin=0, fmax=8000, power=1.0
    )[:, : len(mel)]
    want = np.exp(mel.T)
    return float(np.linalg.norm(got - want) / np.linalg.norm(want))


def test_filterbank_and_mel_equal_librosa():
    ours = slaney_mel_filters(AudioConfig())
    ref = librosa.filters.mel(sr=SR, n_fft=1024, n_mels=80, fmin=0, fmax=8000)
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-7)
    wav = np.random.default_rng(0).standard_normal(SR // 3).astype(np.float32) * 0.1
    ref_mel = librosa.feature.melspectrogram(
        y=wav, sr=SR, n_fft=1024, hop_length=HOP, win_length=1024, n_mels=80, fmin=0, fmax=8000, power=1.0
    )
    np.testing.assert_allclose(np.exp(wav_to_mel(wav)), np.maximum(ref_mel, 1e-5).T, rtol=1e-4, atol=1e-6)


def test_torch_griffin_lim_is_as_good_as_librosa_on_the_demo_voice(demo_mel):
    ours = load_vocoder(None, "griffin_lim")(torch.from_numpy(demo_mel)[None])[0].numpy()
    ref = librosa_griffin_lim(demo_mel, n_iter=32, seed=0)
    assert ours.shape == ref.shape == (len(demo_mel) * HOP,)
    sc_ours, sc_ref = spectral_convergence(ours, demo_mel), spectral_convergence(ref, demo_mel)
    assert sc_ours <= 1.10 * sc_ref, (sc_ours, sc_ref)
    assert np.abs(ours).max() <= 1.0 and np.abs(ours).max() > 0.05


def test_fixed_phase_makes_it_reproducible_and_batch_invariant(demo_mel):
    voc = GriffinLim(n_iter=4)
    mel = torch.from_numpy(demo_mel)[None]
    To = mel.shape[1] + 37  # an engine's padding past the true length (content left there on purpose)
    padded = torch.cat([mel, torch.randn(1, 37, 80)], 1)
    lens = torch.tensor([mel.shape[1]])
    alone = voc(padded, lens)
    assert alone.shape == (1, To * HOP) and alone.dtype == torch.float32
    assert torch.equal(alone, voc(padded, lens))  # no random state
    assert alone[0, mel.shape[1] * HOP :].abs().max() == 0  # exactly zero past mel_lens * hop
    other = torch.roll(padded, 11, 1)
    batch = voc(torch.cat([other, padded]), torch.tensor([To, mel.shape[1]]))
    torch.testing.assert_close(batch[1], alone[0], rtol=0, atol=1e-4)  # batched FFTs round differently
    # the garbage in the padding frames does not reach the audio: same as silence there
    silent = torch.cat([mel, torch.full((1, 37, 80), float(np.log(1e-5)))], 1)
    torch.testing.assert_close(voc(silent, lens), alone, rtol=0, atol=1e-6)


def test_shapes_one_frame_and_fp16_input():
    voc = GriffinLim(n_iter=2)
    one = voc(torch.zeros(2, 1, 80))
    assert one.shape == (2, HOP) and torch.isfinite(one).all()
    half = voc(torch.randn(1, 9, 80).half() - 3)  # a fp16 engine's mel: computed in float32 inside
    assert half.dtype == torch.float32 and half.shape == (1, 9 * HOP)


@pytest.mark.parametrize(
    "audio",
    [
        AudioConfig(),  # DLE's: n_fft 1024, hop 256, win 1024
        AudioConfig(n_fft=512, hop_length=128, win_length=400),  # a shorter window, centred in n_fft
        AudioConfig(n_fft=512, hop_length=160, win_length=512),  # hop does not divide n_fft: torch.istft
    ],
    ids=["dle", "short_window", "uneven_hop"],
)
@pytest.mark.parametrize("hops", [1, 2, 7, 100])
def test_written_out_transforms_equal_torch_stft_and_istft(audio, hops):
    """`_stft` / `_istft` (pad + strided frames + rfft; unscaled irfft + shifted-slice overlap-add
    that divides by n_fft), and the packed pair through `unpack_rfft` / `pack_irfft`, are torch.stft /
    torch.istft (center=True, constant padding) on random signals and
    spectra, in the frame-major layout (B, frames, F, 2)."""
    voc = GriffinLim(n_iter=1, audio=audio)
    a, generator = voc.audio, torch.Generator().manual_seed(hops)
    assert voc.written_out == (audio.n_fft % audio.hop_length == 0)
    length = hops * a.hop_length
    wav = torch.randn(3, length, generator=generator)
    want = torch.stft(
        wav, a.n_fft, a.hop_length, a.win_length, voc.window, center=True, pad_mode="constant",
        return_complex=True,
    )  # fmt: skip
    got = voc._stft(wav)
    assert got.shape == (3, hops + 1, a.n_fft // 2 + 1, 2)
    torch.testing.assert_close(got, torch.view_as_real(want).transpose(1, 2), atol=2e-5, rtol=1e-5)
    spec = torch.randn(got.shape, generator=generator)
    want_wav = torch.istft(
        torch.view_as_complex(spec.transpose(1, 2).contiguous()), a.n_fft, a.hop_length, a.win_length,
        voc.window, center=True, length=length,
    )  # fmt: skip
    got_wav = voc._istft(spec, length)
    assert got_wav.shape == (3, length)
    torch.testing.assert_close(got_wav, want_wav, atol=1e-6, rtol=1e-5)
    if voc.written_out:  # the packed pair (CUDA's path): half-length complex FFTs, packed and unpacked
        torch.testing.assert_close(unpack_rfft(voc._fft_pairs(voc._frames(wav))), got, atol=2e-5, rtol=1e-5)
        torch.testing.assert_close(
            voc._istft_packed(pack_irfft(spec), length), want_wav, atol=1e-6, rtol=1e-5
        )


@pytest.mark.parametrize("B, To, n_iter", [(1, 1, 3), (2, 37, 8)])
def test_packed_loop_equals_the_rfft_loop(B, To, n_iter):
    """CUDA's loop (packed spectra, `griffin_lim_step`), forced on the CPU, gives the wav of the CPU's
    rfft/irfft loop and of torch.stft/istft, padding frames included."""
    mel = torch.randn(B, To, 80, generator=torch.Generator().manual_seed(To)) - 4
    lens = torch.tensor([To, max(1, To // 2)][:B])
    wavs = {}
    for packed, written_out in ((True, True), (False, True), (False, False)):
        voc = GriffinLim(n_iter=n_iter)
        voc.packed, voc.written_out = packed, written_out
        wavs[packed, written_out] = voc(mel, lens)
    torch.testing.assert_close(wavs[True, True], wavs[False, True], atol=1e-5, rtol=0)
    torch.testing.assert_close(wavs[True, True], wavs[False, False], atol=1e-5, rtol=0)
    assert wavs[True, True].abs().max() > 1e-3  # not silence


def test_odd_n_fft_is_refused_in_one_line():
    with pytest.raises(VocoderError, match="n_fft=511: Griffin-Lim needs an even n_fft"):
        GriffinLim(n_iter=1, audio=AudioConfig(n_fft=511, hop_length=73, win_length=511))


def test_windows_that_do_not_overlap_are_refused_in_one_line():
    """hop = n_fft with a Hann window: the overlapped squared windows are 0 at every frame edge, so
    the inverse STFT would divide by zero; refused when the vocoder is made, not NaN later."""
    with pytest.raises(VocoderError, match="hop_length=512.*use a smaller hop"):
        GriffinLim(n_iter=1, audio=AudioConfig(n_fft=512, hop_length=512, win_length=512))


def test_tone_round_trip_stays_close():
    t = np.arange(SR) / SR
    wav = 0.5 * np.sin(2 * np.pi * 440 * t) + 0.2 * np.sin(2 * np.pi * 1234 * t)
    mel = wav_to_mel(wav)
    out = GriffinLim(n_iter=32)(torch.from_numpy(mel)[None])[0].numpy()
    assert out.shape == (len(mel) * HOP,)
    again = wav_to_mel(out)[: len(mel)]
    a, b = np.exp(mel), np.exp(again)
    assert np.linalg.norm(a - b) / np.linalg.norm(a) < 0.2  # measured ~0.1
    assert np.mean(mel.argmax(1) == again.argmax(1)) > 0.9


@pytest.mark.parametrize(
    "cfg, message",
    [
        ({"name": "griffin_lim", "n_iter": 0}, "vocoder.n_iter=0"),
        ({"name": "griffin_lim", "n_iter": 2.5}, "vocoder.n_iter=2.5"),
        ({"name": "griffin_lim", "momentum": 1.5}, "vocoder.momentum=1.5"),
        ({"name": "griffin_lim", "n_iters": 3}, "no setting n_iters"),
        ({"name": "melgan"}, "unknown vocoder=melgan"),
        ({"name": "griffin_lim", "checkpoint": "/x/g_00000001"}, "vocoder=griffin_lim takes none"),
        ({"name": "hifigan", "checkpoint": None}, "needs vocoder.checkpoint=PATH"),
        ({"name": "hifigan", "checkpoint": "/no/such/g_00000001"}, "no such file"),
        ({"name": "hifigan", "checkpoint": __file__, "variant": "v9"}, "vocoder.variant=v9"),
        ({"name": "waveglow", "checkpoint": __file__, "sigma": -1}, "vocoder.sigma=-1"),
        ({"name": "waveglow", "checkpoint": __file__, "denoiser_strength": "x"}, "vocoder.denoiser_strength"),
    ],
)
def test_bad_settings_are_one_line_before_any_work(cfg, message):
    with pytest.raises(VocoderError, match=message) as info:
        build_vocoder(cfg)
    assert "\n" not in str(info.value)


def test_config_files_build(tmp_path):
    from helpers import CONF
    from omegaconf import OmegaConf

    voc = build_vocoder(OmegaConf.load(f"{CONF}/vocoder/griffin_lim.yaml"))
    assert isinstance(voc, GriffinLim) and voc.n_iter == 32 and not voc.training
    for name in ("hifigan", "waveglow"):  # no checkpoint in the file: the error says which setting
        with pytest.raises(VocoderError, match=f"vocoder={name} needs vocoder.checkpoint"):
            build_vocoder(OmegaConf.load(f"{CONF}/vocoder/{name}.yaml"))


@pytest.mark.slow
def test_compiles_fullgraph_and_matches_eager():
    voc = GriffinLim(n_iter=1)  # CPU Inductor compiles the FFT graph slowly (minutes): one iteration
    mel, lens = torch.randn(2, 12, 80) - 4, torch.tensor([12, 7])
    compiled = torch.compile(voc, fullgraph=True, dynamic=False)
    torch.testing.assert_close(compiled(mel, lens), voc(mel, lens), rtol=1e-4, atol=1e-5)
