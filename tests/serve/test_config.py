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


def test_workers_with_ray_is_one_line_naming_replicas():
    from fastspeech import serve

    with pytest.raises(
        ConfigError, match=r"^serve.workers is for serve.engine=uvicorn; with Ray set serve.replicas"
    ):
        serve.serve(config("mode=serve", "serve.engine=ray", "serve.workers=2"))


def test_the_config_for_other_processes_is_plain_data_with_absolute_paths(tmp_path, monkeypatch):
    """What uvicorn's workers and Ray's replicas get: resolved, JSON-able, paths made absolute
    (they may start in another folder)."""
    import json

    from fastspeech.serve import portable_config

    monkeypatch.chdir(tmp_path)
    plain = portable_config(config("engine_dir=eng", "checkpoint=ckpt/x.pt", "mode=serve"))
    assert plain["engine_dir"] == str(tmp_path / "eng") and plain["checkpoint"] == str(tmp_path / "ckpt/x.pt")
    assert json.loads(json.dumps(plain)) == plain and plain["batch_size"] == plain["engine"]["batch"]
    assert portable_config(config("checkpoint=demo"))["checkpoint"] == "demo"


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


@pytest.mark.parametrize("streams", [None, 2])
def test_the_server_opens_a_set_on_its_own_lanes_not_the_command_lines(streams):
    """`engine_set.streams` (3 in the shipped sets) is the command line's; the server, bound by its
    host at batch 1, takes `serve.streams` (1 unless set)."""
    from fastspeech.serve.service import voice_config

    extra = [f"serve.streams={streams}"] if streams else []
    cfg = config("engine_set=default", *extra)
    assert cfg.engine_set.streams == 3
    assert voice_config(cfg, "demo", 1).engine_set.streams == (streams or 1)
    assert (
        "engine_set" not in voice_config(config(), "demo", 1)
        or voice_config(config(), "demo", 1).engine_set is None
    )


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


@pytest.mark.slow  # two server processes start (torch, the text frontend each): ~30 s
def test_two_workers_share_the_port_each_a_whole_server(tmp_path):
    """`serve.workers=2`: the engines are prepared once, then two processes each load them and serve
    on the one port; every request is answered whole, by one of the two; /metrics counts both;
    Ctrl-C stops them all."""
    pytest.importorskip("fastapi", reason='needs the serve extra: pip install -e ".[serve]"')
    import os
    import signal
    import socket
    import subprocess
    import sys
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, str(ROOT / "run.py"), "mode=serve", "model=tiny", "checkpoint=random",
           "device=cpu", "engine=i64_o512", "vocoder.n_iter=2", f"engine_dir={tmp_path / 'engines'}",
           f"hydra.run.dir={tmp_path / 'hydra'}", f"serve.port={port}", "serve.workers=2"]  # fmt: skip
    log = open(tmp_path / "server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen(
        cmd, stdout=log, stderr=subprocess.STDOUT, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )  # fmt: skip
    try:
        url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 240
        while (tmp_path / "server.log").read_text().count("ready: voices demo") < 2:
            assert proc.poll() is None and time.monotonic() < deadline, (tmp_path / "server.log").read_text()[
                -3000:
            ]
            time.sleep(0.5)

        def speak(i: int) -> httpx.Response:
            return httpx.post(
                f"{url}/v1/audio/speech", json={"input": f"Request {i}, said.", "stream": False}, timeout=60
            )

        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(speak, range(16)))
        assert all(r.status_code == 200 and r.content[:4] == b"RIFF" and len(r.content) > 44 for r in answers)
        pids = {int(r.headers["x-server-pid"]) for r in answers}
        assert pids and pids <= set(_children(proc.pid))  # answered by the workers, not the parent
        for _ in range(3):  # whichever worker a scrape reaches, it counts the whole server's requests
            metrics = httpx.get(f"{url}/metrics", timeout=10).text
            assert 'fastspeech_requests_total{status="200"} 16.0' in metrics, metrics[:3000]
            assert "fastspeech_requests_in_flight 0.0" in metrics
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=60)
        log.close()
    text = (tmp_path / "server.log").read_text()
    assert text.count("engine(s) ready") == 2 and "Traceback" not in text
    assert text.count("built in") + text.count("loaded in") >= 3  # prepared once, then loaded by each


def _children(pid: int) -> list[int]:
    """The process ids whose parent is `pid` (Linux /proc)."""
    out = []
    for entry in Path("/proc").iterdir():
        try:
            if entry.name.isdigit() and int((entry / "stat").read_text().split(") ")[1].split()[1]) == pid:
                out.append(int(entry.name))
        except (OSError, IndexError, ValueError):
            pass
    return out


@pytest.mark.slow  # the preparing process starts (torch): ~10 s
def test_workers_whose_engines_cannot_be_prepared_stop_with_one_line(tmp_path):
    """`serve.workers=2` with a checkpoint that is not there: one line naming it, before any worker
    starts (one worker would answer /healthz "failed" instead)."""
    from fastspeech import serve

    cfg = config("mode=serve", "model=tiny", "device=cpu", "engine=i64_o512", "serve.workers=2",
                 f"checkpoint={tmp_path / 'missing.pt'}", f"engine_dir={tmp_path / 'engines'}")  # fmt: skip
    with pytest.raises(
        ConfigError, match=r"^serve.workers=2: the engines could not be prepared: checkpoint not found"
    ):
        serve.serve(cfg)
