"""benchmarks/e2e.py runs end to end on the CPU (`--smoke`: tiny model and vocoders), so the GPU run
is not the first to find a broken script. Timings are not checked (benchmarks/ owns speed)."""

import json
import sys

import pytest


def run_smoke(tmp_path, monkeypatch, *extra):
    from benchmarks import e2e

    out = tmp_path / "e2e.json"
    argv = [
        "e2e",
        "--smoke",
        "--out",
        str(out),
        "--engine-dir",
        str(tmp_path / "engines"),
        "--seconds",
        "0",
        *extra,
    ]
    monkeypatch.setattr(sys, "argv", argv)
    e2e.main()
    return json.loads(out.read_text())


@pytest.mark.slow  # librosa's first call compiles with numba (~10 s)
def test_smoke_griffin_lim_and_librosa_rows(tmp_path, monkeypatch, capsys):
    doc = run_smoke(tmp_path, monkeypatch, "--vocoders", "griffin_lim", "--baselines", "librosa_cpu")
    paths = [(r["path"], r["batch"]) for r in doc["rows"]]
    assert paths == [("engine+griffin_lim", 1), ("engine,librosa_cpu", 1)]
    for r in doc["rows"]:
        assert r["audio_s"] > 0.5 and r["total_ms"] > 0 and r["calls"] >= 3
    assert set(doc["rows"][0]["stages_ms"]) == {"frontend", "engine", "to_host", "encode"}
    assert "| engine+griffin_lim | 1 |" in capsys.readouterr().out


def test_smoke_every_vocoder(tmp_path, monkeypatch):
    doc = run_smoke(tmp_path, monkeypatch, "--baselines")
    assert [r["path"] for r in doc["rows"]] == [
        "engine+griffin_lim",
        "engine+hifigan_v1",
        "engine+waveglow_256",
    ]
