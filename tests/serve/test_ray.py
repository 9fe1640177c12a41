"""Ray Serve: the same app, 2 replicas (tiny random model, eager CPU engines), answering the official
`openai` client through Ray's ingress (HAProxy by default). Slow (Ray starts a local cluster: ~30 s on 2 cores)."""

from __future__ import annotations

import socket
import struct
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

pytest.importorskip("fastapi", reason='needs the serve extra: pip install -e ".[serve]"')
pytest.importorskip("ray.serve", reason='needs Ray Serve: pip install -e ".[serve]"')
pytest.importorskip("openai", reason='needs the openai client: pip install -e ".[dev]"')

ROOT = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_ray_serve_two_replicas_answer_the_openai_client(tmp_path):
    from hydra import compose, initialize_config_dir
    from openai import OpenAI

    from fastspeech.serve import ray as ray_serve

    port = free_port()
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(
            config_name="config",
            overrides=[
                "model=tiny",
                "checkpoint=random",
                "engine=i32_o256",
                "device=cpu",
                "backend=eager",
                "vocoder.n_iter=2",
                f"engine_dir={tmp_path / 'engines'}",
                f"serve.port={port}",
                "serve.engine=ray",
                "serve.replicas=2",
            ],
        )
    ray_serve.start(cfg)
    try:
        from ray import serve

        replicas = serve.status().applications["fastspeech"].deployments["fastspeech"].replica_states
        assert replicas.get("RUNNING") == 2, replicas
        client = OpenAI(base_url=f"http://127.0.0.1:{port}/v1", api_key="unused", max_retries=0)

        def speak(_) -> tuple[str, bytes]:
            raw = client.audio.speech.with_raw_response.create(
                model="tts-1", voice="demo", input="Two replicas. One client.", response_format="wav"
            )
            return raw.headers["x-server-pid"], raw.content

        # Concurrent requests, as a loaded server gets them: HAProxy's `leastconn` sends each to the
        # replica with fewer in flight. (One request at a time may all go to one replica, which
        # costs nothing: the other would be idle either way.)
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(speak, range(24)))
        for _, data in answers:
            assert data[:4] == b"RIFF" and struct.unpack("<I", data[40:44])[0] == 0xFFFFFFFF
        lengths = {len(data) for _, data in answers}
        assert len(lengths) == 1 and lengths.pop() > 44  # same weights (seed), same audio on each replica
        pids = {pid for pid, _ in answers}
        assert len(pids) == 2, f"one replica answered everything: {pids}"
        # A response sent whole watches for its client leaving through the replica's ASGI receive:
        # under Ray's proxy too it must wait for the audio, not take the request for abandoned.
        whole = client.audio.speech.create(
            model="tts-1", voice="demo", input="Two replicas. One client.", response_format="wav",
            extra_body={"stream": False},
        )  # fmt: skip
        assert (
            whole.content[:4] == b"RIFF"
            and struct.unpack("<I", whole.content[40:44])[0] == len(whole.content) - 44
        )
        assert len(whole.content) == len(answers[0][1])
    finally:
        ray_serve.stop()
