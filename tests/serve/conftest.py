"""A speech server in a background thread of the test process: tiny random model, eager CPU engines.

Tests that need the serve extra skip (with the install command) when it is missing; each test file
calls `pytest.importorskip` itself so collection never fails.
"""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Iterator

import pytest
import torch
from helpers import one_thread, random_model

from fastspeech.vocoder.base import Vocoder

ENGINES = [(16, 128), (32, 256), (64, 512)]  # (max_in, max_out); batch 4 each


@pytest.fixture(autouse=True)
def _one_thread():
    """Every test here on one CPU thread (`helpers.one_thread`)."""
    with one_thread():
        yield


class FrameVocoder(Vocoder):
    """A cheap, deterministic stand-in for a vocoder, inside the engines as a real one is: each
    frame's mean log-magnitude, 256 times (Griffin-Lim costs ~0.1 s a sentence on the CPU; the
    server's logic is what these tests check)."""

    kind = "frame_test"

    def vocode(self, mel, valid, acts):
        level = torch.tanh(mel.mean(-1) / 10)  # (B, To)
        return level.repeat_interleave(self.audio.hop_length, dim=1)  # (B, To * 256)


def make_router(model, engine_dir, batch: int = 4):
    """A Router over eager CPU engines of the `ENGINES` sizes."""
    from fastspeech.engine import EngineSpec, load_or_build
    from fastspeech.router import Router

    vocoder = FrameVocoder()
    engines = [
        load_or_build(model, EngineSpec(batch, i, o), engine_dir, "cpu", vocoder=vocoder) for i, o in ENGINES
    ]
    return Router(engines, progress=False)


class SlowEngine:
    """Wraps an engine: every call sleeps first (a GPU under load), counts calls, and fails any call
    holding the `poison` token ids (a piece the engine cannot run)."""

    def __init__(self, engine, delay_s: float, poison=None):
        self.engine, self.delay_s, self.calls = engine, delay_s, 0
        self.poison = tuple(poison) if poison else None
        self.spec, self.device = engine.spec, engine.device

    def __call__(self, ids, *args, **kwargs):
        self.calls += 1
        time.sleep(self.delay_s)
        if self.poison is not None and any(tuple(i) == self.poison for i in ids):
            raise RuntimeError("CUDA error: an illegal memory access (simulated)")
        return self.engine(ids, *args, **kwargs)


def make_service(model, engine_dir, delay_s: float = 0.0, poison=None, **settings):
    from fastspeech.router import Router
    from fastspeech.serve.service import Service, Voice

    router = make_router(model, engine_dir)
    if delay_s or poison:
        router = Router([SlowEngine(e, delay_s, poison) for e in router.engines], progress=False)
    return Service({"demo": Voice("demo", router)}, **settings)


class Server:
    """uvicorn serving `create_app(service=...)` on a free port, in a daemon thread."""

    def __init__(self, service):
        import uvicorn

        from fastspeech.serve.app import create_app

        self.service = service
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        config = uvicorn.Config(
            create_app(service=service), host="127.0.0.1", port=self.port, log_level="warning"
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        self.thread.start()
        deadline = time.monotonic() + 30
        while not self.server.started:
            if time.monotonic() > deadline or not self.thread.is_alive():
                raise RuntimeError("the test server did not start")
            time.sleep(0.02)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=30)


@pytest.fixture(scope="module")
def model():
    return random_model(seed=7)


@pytest.fixture
def pcm24_server(model, tmp_path) -> Iterator[Server]:
    """A server that sends pcm at OpenAI's 24 kHz (serve.pcm_rate=24000)."""
    pytest.importorskip("soxr", reason='needs soxr: pip install -e ".[serve]"')
    s = Server(make_service(model, tmp_path, max_wait_ms=20, pcm_rate=24000))
    yield s
    s.stop()


@pytest.fixture
def cors_service(model, tmp_path):
    """A service whose server lets web pages on https://example.com call it (serve.cors_origins)."""
    return make_service(model, tmp_path, cors_origins=["https://example.com"])


@pytest.fixture(scope="module")
def server(model, tmp_path_factory) -> Iterator[Server]:
    """The shared server: max_wait 20 ms so concurrent requests meet in batches."""
    pytest.importorskip("fastapi", reason='needs the serve extra: pip install -e ".[serve]"')
    s = Server(make_service(model, tmp_path_factory.mktemp("engines"), max_wait_ms=20, max_chars=500))
    yield s
    s.stop()


@pytest.fixture(scope="module")
def offline(model, tmp_path_factory):
    """Another router on the same weights, for reference results (the server's engines belong to
    its worker thread)."""
    return make_router(model, tmp_path_factory.mktemp("engines_ref"))


@pytest.fixture
def slow_server(model, tmp_path) -> Iterator[Server]:
    """Every engine call takes 0.1 s more, one piece a call, at most 2 requests in flight."""
    pytest.importorskip("fastapi", reason='needs the serve extra: pip install -e ".[serve]"')
    s = Server(make_service(model, tmp_path, delay_s=0.1, max_batch=1, max_wait_ms=0, max_queue=2))
    yield s
    s.stop()


@pytest.fixture
def poisoned_server(model, tmp_path) -> Iterator[Server]:
    """Engines that fail on the text "Broken piece." (a server fault, not the input's)."""
    pytest.importorskip("fastapi", reason='needs the serve extra: pip install -e ".[serve]"')
    from fastspeech.text import text_to_ids

    s = Server(make_service(model, tmp_path, poison=text_to_ids("Broken piece."), max_wait_ms=50))
    yield s
    s.stop()
