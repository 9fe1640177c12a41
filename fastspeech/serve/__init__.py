"""The speech server: `python run.py mode=serve` (docs/serve.md).

    app.py       FastAPI: OpenAI's POST /v1/audio/speech, GET /healthz, GET /metrics
    protocol.py  request/response bodies, OpenAI-style errors
    service.py   voices (a router each), the batcher, metrics
    audio.py     wav/pcm streaming, flac/mp3 via soundfile
    ray.py       the same app as a Ray Serve deployment (serve.engine=ray, serve.replicas=N)

Needs the `serve` extra (`pip install -e ".[serve]"`); importing this package without it works,
`serve(cfg)` then raises one `ConfigError` line naming the install command.
"""

from __future__ import annotations

import importlib.util
import logging

from fastspeech.errors import ConfigError

log = logging.getLogger(__name__)

REQUIRED = ("fastapi", "uvicorn", "prometheus_client", "pydantic")
INSTALL = 'pip install -e ".[serve]"'


def missing(*extra: str) -> list[str]:
    """The serve extra's modules (and `extra`) that are not installed."""
    return [m for m in REQUIRED + extra if importlib.util.find_spec(m) is None]


def require(*extra: str) -> None:
    gone = missing(*extra)
    if gone:
        raise ConfigError(f"mode=serve needs {', '.join(gone)}: install the server extra with `{INSTALL}`")


def serve(cfg) -> None:
    """`mode=serve`: engines built or loaded at start-up, then HTTP on serve.host:serve.port until
    interrupted; `serve.engine=ray` deploys the same app on Ray Serve (serve.replicas replicas)."""
    engine = str(cfg.serve.engine)
    if engine == "ray":
        require("ray")
        from fastspeech.serve.ray import run

        run(cfg)
        return
    if engine != "uvicorn":
        raise ConfigError(f"serve.engine={engine}; use uvicorn or ray")
    require()
    import uvicorn

    from fastspeech.serve.app import create_app

    log.info(
        "serving on http://%s:%d (OpenAI base_url http://%s:%d/v1)",
        cfg.serve.host,
        cfg.serve.port,
        cfg.serve.host,
        cfg.serve.port,
    )
    uvicorn.run(create_app(cfg), host=str(cfg.serve.host), port=int(cfg.serve.port), log_level="info")
