"""`run.py` end to end on model=tiny (subprocesses, as a user runs it) and its one-line errors."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import soundfile
import torch
from helpers import random_model

from fastspeech.checkpoint import save_checkpoint

ROOT = Path(__file__).resolve().parent.parent


def run(tmp_path, *overrides, check=True, engine="i32_o256"):
    cmd = [sys.executable, str(ROOT / "run.py"), "model=tiny", "vocoder.n_iter=4", f"engine={engine}",
           f"results_dir={tmp_path / 'results'}", f"engine_dir={tmp_path / 'engines'}",
           f"hydra.run.dir={tmp_path / 'hydra'}", *overrides]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300, check=False)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny DLE-format checkpoint whose durations are 2-5 frames per token."""
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint_000001.pt"
    save_checkpoint(random_model(seed=0, duration_bias=1.2), path, fmt="dle", step=1)
    return path


def test_text_file_to_wavs_in_input_order(tmp_path, checkpoint):
    lines = ["It just works.", "", "Dr. Smith paid $3.50 on the 2nd of May, 1984.", "Short."]
    (tmp_path / "phrases.txt").write_text("\n".join(lines), encoding="utf-8")
    run(tmp_path, f"input={tmp_path / 'phrases.txt'}", f"checkpoint={checkpoint}", "batch_size=2",
        engine="i128_o1024")
    results = tmp_path / "results"
    wavs = sorted(results.glob("*.wav"))
    assert [w.name for w in wavs] == ["0000_it_just_works.wav", "0001_dr_smith_paid_3_50_on_the_2nd_of_may_198.wav",
                                      "0002_short.wav"]
    timings = json.loads((results / "timings.json").read_text())
    assert len(timings["batches"]) == 2 and timings["rtf_engine"] > 0
    assert (results / "mels.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lengths = []
    for wav in wavs:
        audio, sr = soundfile.read(wav)
        mel = torch.from_numpy(__import__("numpy").load(wav.with_suffix(".npy")))
        assert sr == 22050 and mel.shape[1] == 80 and len(mel) > 0
        assert len(audio) == len(mel) * 256
        lengths.append(len(mel))
    assert lengths[1] > lengths[0] > lengths[2]  # longer text, longer speech: order was restored


def test_random_weights_are_announced(tmp_path):
    proc = run(tmp_path, "text=Hello there.", "checkpoint=random")
    assert "RANDOM WEIGHTS" in proc.stderr + proc.stdout


def test_demo_voice_is_the_default_and_says_so(tmp_path):
    proc = run(tmp_path, "text=It just works.", engine="i128_o1024")
    assert "DEMO VOICE" in proc.stderr + proc.stdout
    audio, sr = soundfile.read(tmp_path / "results" / "0000_it_just_works.wav")
    assert sr == 22050 and len(audio) > 22050 // 2  # about a second of speech, not an empty wav


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["text=' '"], "text is empty"),
        (["text='#@%'"], "no symbol"),
        (["text='price: 5€'"], "on_unknown=drop"),
        (["text=hi", "checkpoint=/nonexistent/ckpt.pt"], "checkpoint not found"),
        (["text=hi", "checkpoint=MISMATCH"], "does not match the model"),
        ([f"text='{'word ' * 500}'"], "longer than the model's 2048 positions"),
        (["text=" + "a" * 40], "longer than engine"),
        (["input=/nonexistent.txt"], "input file not found"),
    ],
)
def test_bad_input_is_one_line_without_traceback(tmp_path, overrides, message):
    if "checkpoint=MISMATCH" in overrides:
        bad = tmp_path / "dle_sized.pt"
        save_checkpoint(random_model(d_model=32), bad)
        overrides = [o.replace("MISMATCH", str(bad)) for o in overrides]
    proc = run(tmp_path, *overrides, check=False)
    assert proc.returncode == 1
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and message in errors[0], proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr


def test_outputs_already_written_stay_intact_when_a_later_run_fails(tmp_path, checkpoint):
    run(tmp_path, "text=First one.", f"checkpoint={checkpoint}")
    wav = tmp_path / "results" / "0000_first_one.wav"
    before = wav.read_bytes()
    run(tmp_path, "text=' '", check=False)
    assert wav.read_bytes() == before
