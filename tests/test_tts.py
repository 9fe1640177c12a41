"""fastspeech.TTS, text to speech from Python: the command line's path and samples, run.py's
settings and one-line errors (tiny random model, eager CPU engines, Griffin-Lim with 4 iterations)."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile

import fastspeech
from fastspeech import pipeline
from fastspeech.errors import ConfigError, TextError
from fastspeech.settings import compose, hydra_value

SETTINGS = {"model": "tiny", "checkpoint": "random", "engine": "i32_o256", "vocoder.n_iter": 4, "seed": 3}


@pytest.fixture(scope="module")
def tts():
    return fastspeech.TTS(**SETTINGS)


def test_a_text_gets_the_samples_run_py_writes_for_it(tts, tmp_path):
    text = "Well, it's \"fine\" - isn't it? Yes: 3 commas."
    speech = tts(text)
    cfg = compose([f"{k}={v}" for k, v in SETTINGS.items()] + [f"results_dir={tmp_path}", "plot=false"])
    cfg.text = text
    (written,) = pipeline.synthesize(cfg)
    on_disk, rate = soundfile.read(written.files[0], dtype="int16")
    assert rate == speech.sample_rate == 22050 and speech.wav.dtype == np.int16
    assert len(speech.wav) == len(speech.mel) * 256 > 0
    np.testing.assert_array_equal(speech.wav, on_disk)
    np.testing.assert_array_equal(speech.mel, np.load(written.files[1]))
    assert speech.text == text and speech.seconds == pytest.approx(len(on_disk) / 22050)


def test_a_list_comes_back_in_order_each_as_if_alone(tts):
    texts = ["One line.", "Another, with a comma, and a longer tail to it.", "Three."]
    together = tts(texts, alpha=1.2)
    assert [s.text for s in together] == texts
    for speech, text in zip(together, texts):
        alone = tts(text, alpha=1.2)
        np.testing.assert_array_equal(speech.wav, alone.wav)
    slower, faster = tts("One line.", alpha=1.5), tts("One line.", alpha=0.6)
    assert len(slower.wav) > len(together[0].wav) > len(faster.wav)


def test_the_alpha_setting_is_the_calls_default(tts):
    slow = fastspeech.TTS(**SETTINGS, alpha=1.5)
    np.testing.assert_array_equal(slow("One line.").wav, tts("One line.", alpha=1.5).wav)
    np.testing.assert_array_equal(slow("One line.", alpha=1.0).wav, tts("One line.").wav)


def test_a_text_longer_than_the_engine_is_split_not_cropped(tts):
    short = tts("word " * 5)
    long = tts("word " * 60)  # far more than the engine's 32 tokens
    assert len(long.wav) > 8 * len(short.wav)
    assert len(long.wav) == len(long.mel) * 256


def test_save_writes_the_samples_as_16_bit_wav(tts, tmp_path):
    speech = tts("Saved.")
    speech.save(str(tmp_path / "out.wav"))
    data, rate = soundfile.read(tmp_path / "out.wav", dtype="int16")
    assert rate == 22050 and soundfile.info(tmp_path / "out.wav").subtype == "PCM_16"
    np.testing.assert_array_equal(data, speech.wav)


@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda t: t(""), TextError, "text 1 of 1 is empty"),
        (lambda t: t(["fine", "   "]), TextError, "text 2 of 2 is empty"),
        (lambda t: t("你好"), TextError, "'你', '好'"),
        (lambda t: t("hi", alpha=0), ConfigError, "alpha=0 is not a finite number > 0"),
        (lambda t: t(5), TypeError, "a text or a list of texts"),
        (lambda t: t([]), TypeError, "a text or a list of texts"),
    ],
)
def test_a_bad_text_or_alpha_is_one_line(tts, call, error, message):
    with pytest.raises(error) as info:
        call(tts)
    assert message in str(info.value) and "\n" not in str(info.value)


@pytest.mark.parametrize(
    "settings, message",
    [
        ({"batch_size": "abc"}, "batch_size=abc is not a whole number >= 1; use e.g. batch_size=8"),
        ({"enigne": "i32_o256"}, "unknown setting enigne=...; did you mean engine"),
        ({"precision": "fp17"}, "precision=fp17: no such option in conf/precision/"),
        ({"force_build": "maybe"}, "force_build=maybe: use force_build=true or force_build=false"),
        ({"alpha": "abc"}, "alpha=abc"),
        (
            {"text": "Hello."},
            "text= is a run.py setting that TTS does not use; pass the text to the call: tts(text)",
        ),
        ({"mode": "verify"}, "mode= is a run.py setting that TTS does not use"),
        ({"serve.port": 80}, "serve.port= is a run.py setting that TTS does not use; the server is"),
        ({"device": "gpu9"}, "device=gpu9: use device=auto, cpu, cuda or cuda:N"),
    ],
)
def test_a_bad_setting_is_run_pys_one_line_before_any_model_loads(settings, message):
    with pytest.raises(ConfigError) as info:
        fastspeech.TTS(**{**SETTINGS, **settings})
    assert message in str(info.value) and "\n" not in str(info.value)


def test_setting_values_with_spaces_commas_and_quotes_reach_the_config_as_given(tmp_path):
    odd = str(tmp_path / "a b, c's [x]")
    cfg = compose([f"results_dir={hydra_value(odd)}", f"seed={hydra_value(7)}"])
    assert cfg.results_dir == odd and cfg.seed == 7
    assert hydra_value(None) == "null" and hydra_value(True) == "true"


def test_compose_inside_a_hydra_app_leaves_the_apps_hydra_in_place(tmp_path):
    """`TTS` composes run.py's config with Hydra's one global instance; a caller that is itself a
    Hydra app (or a test that initialized Hydra) keeps its own."""
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    (tmp_path / "app.yaml").write_text("answer: 42\n")
    with initialize_config_dir(config_dir=str(tmp_path), version_base="1.3"):
        mine = GlobalHydra.instance().hydra
        assert compose(["seed=5"]).seed == 5
        assert GlobalHydra.instance().hydra is mine
