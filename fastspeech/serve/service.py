"""What the HTTP layer hands off to: the voices (a router each), the one batcher, the metrics.

A voice is a checkpoint (+ its model hparams) and a vocoder, behind a router of engines (the vocoder inside) built or
loaded at start-up (`Service.from_config`). Requests go to the `Batcher` (fastspeech/batcher.py),
which the offline pipeline's router shares; audio comes back per piece, in speaking order.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fastspeech.batcher import Batcher, CallInfo, Stream
from fastspeech.router import Part, Router, padded_fraction

log = logging.getLogger(__name__)

CONF_DIR = Path(__file__).resolve().parents[2] / "conf"


@dataclass
class Voice:
    """A configured voice: its router, whose engines carry the vocoder inside."""

    name: str
    router: Router

    def wav(self, part: Part) -> np.ndarray:
        """The piece's audio, int16 16-bit PCM (frames * 256,), as the engine made it (a view of the
        host copy the router already made: nothing to encode, nothing to move off the event loop)."""
        return part.wav.numpy()


class Metrics:
    """Prometheus metrics in their own registry (several apps may live in one process, as in tests).

    Under `serve.workers` > 1 each worker process writes its values to files in
    `PROMETHEUS_MULTIPROC_DIR` (prometheus_client's multiprocess mode, set up by `serve`), and a
    scrape of any worker reads them all: counts and histograms summed over the workers, the two
    gauges summed over the live ones (each worker's as of its last request, engine call or scrape)."""

    def __init__(self) -> None:
        from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

        self.multiprocess = "PROMETHEUS_MULTIPROC_DIR" in os.environ
        r = self.registry = CollectorRegistry()
        latency_buckets = (0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1, 2, 5, 10, 30)
        self.requests = Counter(
            "fastspeech_requests", "Speech requests by HTTP status", ["status"], registry=r
        )
        self.latency = Histogram(
            "fastspeech_request_latency_seconds", "Request to last byte", buckets=latency_buckets, registry=r
        )
        self.ttfb = Histogram(
            "fastspeech_ttfb_seconds", "Request to first audio byte", buckets=latency_buckets, registry=r
        )
        self.batch_size = Histogram(
            "fastspeech_batch_size",
            "Pieces per engine call",
            buckets=(1, 2, 4, 8, 16, 32, 64, 128),
            registry=r,
        )
        self.padded = Histogram(
            "fastspeech_padded_fraction",
            "Share of an engine call's token + frame slots that held nothing",
            buckets=(0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0),
            registry=r,
        )
        self.engine_seconds = Histogram(
            "fastspeech_engine_call_seconds", "One engine call", buckets=latency_buckets, registry=r
        )
        live = {"multiprocess_mode": "livesum"}  # several workers: the sum over the live ones
        self.queue_depth = Gauge(
            "fastspeech_queue_depth", "Pieces waiting for an engine call", registry=r, **live
        )
        self.in_flight = Gauge(
            "fastspeech_requests_in_flight", "Requests admitted, not finished", registry=r, **live
        )
        self.audio = Counter("fastspeech_audio_seconds", "Audio seconds produced", registry=r)
        self.dropped = Counter(
            "fastspeech_dropped_pieces", "Queued pieces dropped because their client went away", registry=r
        )
        self._dropped_seen = 0

    def observe_call(self, info: CallInfo) -> None:
        for call in info.calls:
            self.batch_size.observe(call["items"])
            self.padded.observe(padded_fraction([call]))
            self.engine_seconds.observe(call["latency_s"])
            self.audio.inc(call["audio_s"])
        self.queue_depth.set(info.queued_pieces)
        self.in_flight.set(info.requests)

    def refresh(self, batcher: Batcher) -> None:
        """Gauges and the dropped-pieces counter from the batcher's state (before each scrape)."""
        self.queue_depth.set(batcher.queued_pieces())
        self.in_flight.set(batcher.in_flight())
        dropped = batcher.cancelled_pieces - self._dropped_seen
        if dropped > 0:
            self.dropped.inc(dropped)
            self._dropped_seen += dropped

    def text(self) -> bytes:
        from prometheus_client import CollectorRegistry, generate_latest
        from prometheus_client.multiprocess import MultiProcessCollector

        if not self.multiprocess:
            return generate_latest(self.registry)
        every_worker = CollectorRegistry()
        MultiProcessCollector(every_worker)
        return generate_latest(every_worker)


class Service:
    """Voices + batcher + metrics; `start` before the first request, `close` at shutdown."""

    def __init__(
        self,
        voices: Mapping[str, Voice],
        max_batch: int | None = None,
        max_wait_ms: float = 5.0,
        max_queue: int = 256,
        max_chars: int = 4096,
        default_voice: str | None = None,
        cors_origins: Sequence[str] = (),
        pcm_rate: int | None = None,
    ):
        if not voices:
            raise ValueError("a server needs at least one voice")
        self.voices = dict(voices)
        self.default_voice = default_voice or next(iter(self.voices))
        self.max_chars = max_chars
        self.cors_origins = list(cors_origins)  # web pages allowed to call the server (CORS)
        self.pcm_rate = pcm_rate  # response_format pcm at this rate (None: the model's 22050 Hz)
        self.metrics = Metrics()
        self.batcher = Batcher(
            {name: v.router for name, v in self.voices.items()},
            max_batch=max_batch,
            max_wait_ms=max_wait_ms,
            max_queue=max_queue,
            on_call=self.metrics.observe_call,
        )

    def start(self) -> None:
        self.batcher.start()

    def close(self) -> None:
        self.batcher.close()

    def submit(self, text: str, voice: str, alpha: float) -> Stream:
        stream = self.batcher.submit(text, voice, alpha, label="input", sentences=True)
        self.metrics.in_flight.set(self.batcher.in_flight())
        return stream

    def warm_up(self) -> None:
        """One call of every engine of every voice (first calls compile kernels, fill caches), and
        the text frontend's first numbers (inflect takes seconds to start)."""
        from fastspeech.text import text_to_ids

        t0 = time.perf_counter()
        text_to_ids("On May 1st, Dr. Smith paid $3.50 for 12 eggs.")
        log.info("text frontend warm (%.2f s)", time.perf_counter() - t0)
        for voice in self.voices.values():
            for engine in voice.router.all_engines:
                t0 = time.perf_counter()
                engine([[1] * min(8, engine.spec.max_in)], 1.0, to_host=True)
                log.info(
                    "voice %s: engine %s warm (%.2f s)",
                    voice.name,
                    engine.spec.name,
                    time.perf_counter() - t0,
                )

    @classmethod
    def from_config(cls, cfg) -> Service:
        """Build or load every voice's engines (progress in the log), warm them up."""
        serve = cfg.serve
        voices = {}
        for name, router, seconds in open_voices(cfg):
            router.progress, router.keep_mel = False, False  # the server sends audio only
            log.info(
                "voice %s: %d engine(s) ready in %.1f s: %s",
                name,
                len(router.all_engines),
                seconds,
                ", ".join(e.spec.name for e in router.all_engines),
            )
            voices[name] = Voice(name, router)
        service = cls(
            voices,
            max_batch=serve.max_batch,
            max_wait_ms=float(serve.max_wait_ms),
            max_queue=int(serve.max_queue),
            max_chars=int(serve.max_chars),
            default_voice=serve.get("default_voice") or next(iter(voices)),
            cors_origins=list(serve.get("cors_origins") or []),
            pcm_rate=serve.get("pcm_rate"),
        )
        service.warm_up()
        return service


def open_voices(cfg):
    """For each voice of `cfg.serve.voices` (or the one `demo` voice): (name, its router, the seconds
    its engines took to build or load), the model loaded first. `Service.from_config` serves them;
    `serve` with several workers opens them once beforehand so that the workers only load."""
    from fastspeech import pipeline

    device = pipeline.pick_device(cfg.device)
    names = list((cfg.serve.voices or {"demo": {}}).keys())
    for name in names:
        vcfg = voice_config(cfg, name, len(names))
        log.info("voice %s: loading the model (checkpoint=%s)", name, vcfg.checkpoint)
        model = pipeline.load_model(vcfg)
        t0 = time.perf_counter()
        router = pipeline.open_router(vcfg, model, device)
        yield name, router, time.perf_counter() - t0


def voice_config(cfg, name: str, n_voices: int):
    """The run's config with voice `name`'s overrides (checkpoint, model, vocoder, engine_dir).

    With several voices each keeps its engines in `engine_dir/<voice>` (same engine file names,
    other weights), unless it names its own `engine_dir`.
    """
    from omegaconf import OmegaConf

    entry = cfg.serve.voices[name] if cfg.serve.voices else None
    entry = dict(OmegaConf.to_container(entry, resolve=True)) if entry is not None else {}
    vcfg = OmegaConf.create(OmegaConf.to_container(cfg, resolve=True))
    OmegaConf.set_struct(vcfg, False)
    if "checkpoint" in entry:
        vcfg.checkpoint = entry.pop("checkpoint")
    if "model" in entry:
        vcfg.model = _group("model", entry.pop("model"))
    if "vocoder" in entry:
        vcfg.vocoder = _group("vocoder", entry.pop("vocoder"))
    vcfg.engine_dir = entry.pop("engine_dir", None) or (
        cfg.engine_dir if n_voices == 1 else str(Path(cfg.engine_dir) / name)
    )
    if entry:
        raise ValueError(
            f"serve.voices.{name} has unknown keys {sorted(entry)}; use checkpoint, model, vocoder, engine_dir"
        )
    if vcfg.get("engine_set") is not None:  # the server's lanes, not the command line's
        vcfg.engine_set.streams = int(cfg.serve.get("streams") or 1)
    return vcfg


def _group(group: str, value):
    """A config group entry: a name (conf/<group>/<name>.yaml, its `defaults` merged) or a mapping."""
    from omegaconf import OmegaConf

    if not isinstance(value, str):
        return OmegaConf.create(value)
    conf = OmegaConf.load(CONF_DIR / group / f"{value}.yaml")
    bases = [_group(group, b) for b in conf.pop("defaults", [])]
    return OmegaConf.merge(*bases, conf)
