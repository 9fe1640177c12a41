"""Checkpoints: DLE's format loads and reproduces outputs; broken ones fail with a listed error."""

import pytest
import torch
from helpers import random_model

from fastspeech.checkpoint import hparams_from_state_dict, load_checkpoint, read_state_dict, save_checkpoint
from fastspeech.errors import CheckpointError
from fastspeech.model import FastSpeech


def _tokens():
    return torch.tensor([[20, 45, 11, 50, 39, 7, 0, 0], [30, 31, 32, 33, 34, 35, 36, 37]])


@pytest.mark.parametrize("fmt", ["dle", "ours"])
def test_saved_checkpoint_loads_and_reproduces_outputs(tmp_path, fmt):
    trained = random_model(seed=1)
    path = tmp_path / "checkpoint_000100.pt"
    save_checkpoint(trained, path, fmt=fmt, step=100)
    fresh = random_model(seed=2)  # different weights until loaded
    meta = load_checkpoint(fresh, path)
    assert meta["step"] == 100
    with torch.no_grad():
        want, got = trained(_tokens(), 1.0, max_out=40), fresh(_tokens(), 1.0, max_out=40)
    assert torch.equal(got.durations, want.durations)
    assert torch.equal(got.mel, want.mel)


def test_dle_format_is_step_model_optim_with_module_prefix(tmp_path):
    path = tmp_path / "ckpt.pt"
    save_checkpoint(random_model(), path, fmt="dle", step=7)
    raw = torch.load(path, weights_only=True)
    assert set(raw) == {"step", "model", "optim"}
    assert all(k.startswith("module.") for k in raw["model"])
    state, _ = read_state_dict(path)
    assert "word_emb.weight" in state


def test_bare_state_dict_loads(tmp_path):
    model = random_model(seed=3)
    torch.save(model.state_dict(), tmp_path / "bare.pt")
    other = random_model(seed=4)
    load_checkpoint(other, tmp_path / "bare.pt")
    assert torch.equal(other.word_emb.weight, model.word_emb.weight)


def test_mismatch_lists_missing_unexpected_and_misshaped(tmp_path):
    state = {f"module.{k}": v for k, v in random_model().state_dict().items()}
    del state["module.mel_linear.bias"]
    state["module.postnet.weight"] = torch.zeros(3)
    state["module.word_emb.weight"] = torch.zeros(149, 32)
    torch.save({"step": 1, "model": state, "optim": {}}, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(random_model(), tmp_path / "bad.pt")
    msg = str(err.value)
    assert "1 missing (mel_linear.bias)" in msg
    assert "1 unexpected (postnet.weight)" in msg
    assert "word_emb.weight (149, 32) vs (149, 64)" in msg
    assert "\n" not in msg


def test_mismatch_names_the_hparams_the_checkpoint_was_trained_with(tmp_path):
    save_checkpoint(random_model(), tmp_path / "tiny.pt")
    with pytest.raises(CheckpointError, match=r"model\.d_model=64") as err:
        load_checkpoint(FastSpeech(), tmp_path / "tiny.pt")  # default (DLE) hparams
    assert "misshaped" in str(err.value)


def test_hparams_are_inferred_from_a_dle_state_dict():
    inferred = hparams_from_state_dict(FastSpeech().state_dict())
    assert inferred["d_model"] == 384 and inferred["phoneme_side_head"] == 2
    assert inferred["mel_side_n_layer"] == 6 and inferred["max_seq_len"] == 2048


def test_missing_file_and_garbage_file_are_clear_errors(tmp_path):
    with pytest.raises(CheckpointError, match="checkpoint not found"):
        load_checkpoint(random_model(), tmp_path / "nope.pt")
    (tmp_path / "garbage.pt").write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="cannot read checkpoint"):
        load_checkpoint(random_model(), tmp_path / "garbage.pt")
