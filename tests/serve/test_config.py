"""The server from the Hydra config: voices, start-up (warming up, then ready), the import guard.

The import-guard test needs nothing installed; the others skip without the serve extra."""

from __future__ import annotations

import importlib.util
import time
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir

from fastspeech.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def config(*overrides: str):
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return compose(config_name="config", overrides=list(overrides))


def test_without_the_extra_serve_is_one_line_naming_the_install(monkeypatch):
    from fastspeech import serve

    real = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "fastapi" else real(name, *a)
    )
    with pytest.raises(
        ConfigError,
        match=r'^mode=serve needs fastapi: install the server extra with `pip install -e "\.\[serve\]"`$',
    ):
        serve.serve(config("mode=serve"))


def test_a_voice_overrides_checkpoint_model_and_engine_dir():
    from fastspeech.serve.service import voice_config

    cfg = config("engine_dir=/e", "+serve.voices.small={checkpoint: random, model: tiny}")
    assert list(cfg.serve.voices) == ["demo", "small"]
    demo, small = voice_config(cfg, "demo", 2), voice_config(cfg, "small", 2)
    assert (demo.checkpoint, demo.model.d_model, demo.engine_dir) == ("demo", 384, "/e/demo")
    assert (small.checkpoint, small.model.name, small.model.d_model, small.engine_dir) == (
        "random",
        "tiny",
        64,
        "/e/small",
    )
    assert voice_config(config("engine_dir=/e"), "demo", 1).engine_dir == "/e"  # one voice: engine_dir itself
    with pytest.raises(ValueError, match="unknown keys \\['speed'\\]"):
        voice_config(config("+serve.voices.odd={speed: 2}"), "odd", 2)


def test_the_app_from_config_warms_up_then_serves(tmp_path):
    pytest.importorskip("fastapi", reason='needs the serve extra: pip install -e ".[serve]"')
    pytest.importorskip("httpx", reason='needs httpx: pip install -e ".[dev]"')
    from fastapi.testclient import TestClient

    from fastspeech.serve.app import create_app

    cfg = config(
        "mode=serve", "model=tiny", "checkpoint=random", "engine=i32_o256", "device=cpu", "backend=eager",
        "vocoder.n_iter=2", f"engine_dir={tmp_path}",
    )  # fmt: skip
    with TestClient(create_app(cfg)) as client:
        first = client.get("/healthz")
        assert first.status_code in (200, 503)
        deadline = time.monotonic() + 120
        while (health := client.get("/healthz")).status_code != 200 and time.monotonic() < deadline:
            assert health.json()["status"] == "warming up"
            r = client.post("/v1/audio/speech", json={"input": "Too soon?"})
            if r.status_code == 200:  # the engines became ready between the two requests
                break
            assert r.status_code == 503 and r.headers["retry-after"]
            time.sleep(0.2)
        health = client.get("/healthz")
        assert health.json()["status"] == "ready" and health.json()["voices"] == ["demo"]
        r = client.post("/v1/audio/speech", json={"input": "Hello. Ready now.", "response_format": "pcm"})
        assert (
            r.status_code == 200 and len(r.content) > 0 and len(r.content) % 512 == 0
        )  # frames x 256 x 2 bytes
