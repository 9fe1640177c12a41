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
import json
import logging
import multiprocessing
import os
import shutil
import tempfile
from pathlib import Path

from fastspeech.errors import ConfigError

log = logging.getLogger(__name__)

REQUIRED = ("fastapi", "uvicorn", "prometheus_client", "pydantic")
INSTALL = 'pip install -e ".[serve]"'
CONFIG_ENV = "FASTSPEECH_SERVE_CONFIG"  # the run's config, to uvicorn's worker processes (`app.worker_app`)


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
    engine, workers = str(cfg.serve.engine), int(cfg.serve.get("workers") or 1)
    if engine == "ray" and workers > 1:
        raise ConfigError(
            "serve.workers is for serve.engine=uvicorn; with Ray set serve.replicas (one process per GPU)"
        )
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

    where = f"http://{cfg.serve.host}:{cfg.serve.port} (OpenAI base_url http://{cfg.serve.host}:{cfg.serve.port}/v1)"
    if workers == 1:
        log.info("serving on %s", where)
        uvicorn.run(create_app(cfg), host=str(cfg.serve.host), port=int(cfg.serve.port), log_level="info")
        return
    # Several processes, each the whole server (engines, batcher, HTTP) on the same GPU, sharing the
    # port: one process's Python serves ~500-700 requests/s whatever the GPU (docs/performance.md).
    # The engines are built (or checked) once first, in a child process, so that the workers only load.
    plain = portable_config(cfg)
    context = multiprocessing.get_context("spawn")  # no CUDA in this process: its children only
    answer = context.SimpleQueue()
    prepare = context.Process(target=_prepare, args=(plain, answer))
    prepare.start()
    prepare.join()
    problem = answer.get() if not answer.empty() else f"exit code {prepare.exitcode}"
    if problem is not None:
        raise ConfigError(f"serve.workers={workers}: the engines could not be prepared: {problem}")
    os.environ[CONFIG_ENV] = json.dumps(plain)
    log.info("serving on %s, %d worker processes", where, workers)
    # /metrics for the whole server from any worker: prometheus_client's multiprocess mode (`Metrics`)
    metrics_dir = None
    if "PROMETHEUS_MULTIPROC_DIR" not in os.environ:
        metrics_dir = os.environ["PROMETHEUS_MULTIPROC_DIR"] = tempfile.mkdtemp(prefix="fastspeech-metrics-")
    try:
        uvicorn.run(
            "fastspeech.serve.app:worker_app",
            factory=True,
            workers=workers,
            host=str(cfg.serve.host),
            port=int(cfg.serve.port),
            log_level="info",
        )
    finally:
        if metrics_dir is not None:
            shutil.rmtree(metrics_dir, ignore_errors=True)


def portable_config(cfg) -> dict:
    """The run's config as plain data for processes that start elsewhere (uvicorn's workers, Ray's
    replicas, maybe on another node of a shared file system): resolved, with absolute paths."""
    from omegaconf import OmegaConf

    plain = OmegaConf.to_container(cfg, resolve=True)
    plain["engine_dir"] = str(Path(plain["engine_dir"]).resolve())
    if plain.get("checkpoint") not in (None, "demo", "random"):
        plain["checkpoint"] = str(Path(plain["checkpoint"]).resolve())
    return plain


def _prepare(plain: dict, answer) -> None:
    """Every voice's engines built or loaded once (a child process of `serve`, before the workers);
    `answer` gets None, or the one line that says what stopped it (a traceback only in the log, for
    what is not a `FastSpeechError`)."""
    from omegaconf import OmegaConf

    from fastspeech.errors import FastSpeechError
    from fastspeech.serve.service import open_voices

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    try:
        for _ in open_voices(OmegaConf.create(plain)):
            pass
    except (FastSpeechError, ValueError) as exc:
        answer.put(str(exc))
        return
    except Exception as exc:
        log.exception("preparing the engines failed")
        answer.put(f"{type(exc).__name__}: {exc}")
        return
    answer.put(None)
