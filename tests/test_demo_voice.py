"""The demo voice: its corpus's duration method, its training forward, and the trained checkpoint.

The checkpoint test compares the durations the demo voice predicts for held-out sentences (never
trained on) with eSpeak NG's own timing, stored in tests/data/demo_heldout.json by
scripts/make_corpus.py.
"""

import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "scripts"))

import make_corpus
import train_demo
from make_corpus import Phoneme, Word, token_durations

from fastspeech.model import FastSpeech, FastSpeechConfig

CHECKPOINT = ROOT / "fastspeech" / "assets" / "demo_voice.pt"
HELDOUT = ROOT / "tests" / "data" / "demo_heldout.json"
DEMO_YAML = ROOT / "conf" / "model" / "demo.yaml"
# Tolerances of the trained voice against eSpeak NG's timing, per held-out sentence.
DUR_MAE_FRAMES = 1.5  # mean |predicted - reference| frames per token
TOTAL_REL = 0.10  # |predicted length - reference length| / reference length


def _espeak_available() -> bool:
    try:
        make_corpus._find_espeak()
        return True
    except RuntimeError:
        return False


# ---- the duration method (scripts/make_corpus.py) ------------------------------------------
def test_token_durations_from_events():
    """Hand-made events: word frames shared over letters, the pause to the comma, space gets 0."""
    text = "ab, cd"
    hop = 10
    words = [Word(0, 2, 0), Word(4, 2, 100)]
    # 'ab' sounds until 60, then a pause; 'cd' from 100 to the end.
    phonemes = [Phoneme(0, "a", 5), Phoneme(0, "b", 30), Phoneme(2, "_:", 60), Phoneme(4, "k", 100)]
    d = token_durations(text, words, phonemes, n_samples=199, hop=hop)
    # frames: 1 + 199 // 10 = 20; boundaries (ceil(s / 10)): ab [0, 6), ", " [6, 10), cd [10, 20)
    assert d.tolist() == [3, 3, 4, 0, 5, 5]
    assert d.sum() == 1 + 199 // hop


def test_token_durations_leading_punctuation_and_merged_word():
    """Audio before the first word goes to a leading '('; one event over "x-y" shares it with '-'."""
    text = "(x-y)"
    words = [Word(1, 3, 40)]
    d = token_durations(text, words, [Phoneme(1, "_", 45), Phoneme(1, "k", 50)], n_samples=99, hop=10)
    assert d.tolist() == [4, 2, 2, 2, 0]  # '(' [0, 4); 'x-y' [4, 10) evenly; ')' no pause after 'y'
    assert d.sum() == 10


def test_token_durations_rejects_backwards_times():
    with pytest.raises(make_corpus.AlignmentError, match="backwards"):
        token_durations("ab cd", [Word(0, 2, 100), Word(3, 2, 50)], [], n_samples=200)


@pytest.mark.skipif(not _espeak_available(), reason="needs eSpeak NG (apt-get install espeak-ng)")
def test_espeak_utterance_durations_fill_the_mel():
    make_corpus._init_worker("en-us", None)
    u = make_corpus.make_utterance("(Hello), world. It just works!")
    assert u["durations"].sum() == len(u["mel"])  # exactly To
    letters = [d for c, d in zip(u["cleaned"], u["durations"]) if c.isalpha()]
    assert min(letters) >= 1
    # The pause frames eSpeak marks are (near) silent: log mel close to log(1e-5) = -11.5.
    ends = np.cumsum(u["durations"])
    for j, c in enumerate(u["cleaned"]):
        if c in "()," and u["durations"][j]:
            assert u["mel"][ends[j] - u["durations"][j] : ends[j]].mean() < -9.0


# ---- the training forward (scripts/train_demo.py) -------------------------------------------
def _tiny_model() -> FastSpeech:
    torch.manual_seed(0)
    cfg = FastSpeechConfig(
        d_model=64,
        phoneme_side_n_layer=2,
        phoneme_side_head=1,
        phoneme_side_conv1d_filter_size=96,
        mel_side_n_layer=2,
        mel_side_head=1,
        mel_side_conv1d_filter_size=96,
        duration_predictor_filter_size=32,
    )
    model = FastSpeech(cfg).eval()
    with torch.no_grad():
        model.length_regulator.duration_predictor.linear_layer.bias.fill_(1.5)  # ~2-5 frames per token
    return model


def test_teacher_forward_with_predicted_durations_is_the_model_forward():
    model = _tiny_model()
    tokens = torch.randint(1, 64, (3, 11))
    tokens[1, 7:] = 0
    tokens[2, 1:] = 0  # Ti = 1
    with torch.no_grad():
        out = model(tokens)
        mel, log_dur = train_demo.teacher_forward(model, tokens, out.durations)
    assert mel.shape == out.mel.shape
    torch.testing.assert_close(mel, out.mel, rtol=1e-5, atol=1e-5)
    assert (log_dur[tokens == 0] == 0).all()


@pytest.mark.parametrize("max_out", [1, 9, 40])  # cropped, cropped mid-token, longer than the total
def test_op_gradients_match_the_pytorch_references(max_out):
    import kernels

    train_demo.register_op_gradients()
    torch.manual_seed(1)
    x = torch.randn(2, 5, 7, dtype=torch.float64, requires_grad=True)
    durations = torch.tensor([[2, 0, 3, 1, 4], [0, 0, 5, 0, 1]])
    lengths = torch.tensor([5, 3])
    g = torch.randn(2, max_out, 7, dtype=torch.float64)

    def grads(pos_enc, regulate):
        x.grad = None
        (regulate(pos_enc(x, lengths), durations, max_out) * g).sum().backward()
        return x.grad.clone()

    expected = grads(kernels.add_pos_enc_reference, kernels.regulate_length_reference)
    torch.testing.assert_close(grads(kernels.add_pos_enc, kernels.regulate_length), expected)


# ---- the trained voice ------------------------------------------------------------------------
@pytest.mark.skipif(not CHECKPOINT.is_file(), reason="demo checkpoint not trained yet")
def test_demo_voice_durations_follow_espeak_on_heldout_sentences():
    from fastspeech.checkpoint import load_checkpoint

    model = FastSpeech(train_demo.load_config(DEMO_YAML))
    load_checkpoint(model, CHECKPOINT)
    model.eval()
    for u in json.loads(HELDOUT.read_text())["utterances"]:
        reference = torch.tensor(u["durations"])
        with torch.no_grad():
            predicted = model(torch.tensor([u["ids"]])).durations[0]
        mae = (predicted - reference).abs().float().mean().item()
        total_rel = abs(predicted.sum().item() - reference.sum().item()) / reference.sum().item()
        assert mae <= DUR_MAE_FRAMES, f"{u['text']!r}: {mae:.2f} frames per token off eSpeak's timing"
        assert total_rel <= TOTAL_REL, (
            f"{u['text']!r}: length {predicted.sum()} vs eSpeak's {reference.sum()}"
        )
