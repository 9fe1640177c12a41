"""The speech server under load: N concurrent HTTP clients against `run.py mode=serve`, and the offline
pipeline (`Router.__call__`, what `run.py` runs) on the same texts, in the same run.

    python -m benchmarks.bench_serve                                      # GPU: demo voice, fp16, Inductor
    python -m benchmarks.bench_serve --model dle --checkpoint random      # DLE-size random weights
    python -m benchmarks.bench_serve --smoke                              # CPU: tiny model, a few seconds
    python -m benchmarks.bench_serve --ray --replicas 1,2 --clients 128   # Ray Serve scale-out, 1 vs 2 GPUs

The server runs in its own process (`python run.py mode=serve ...`, or `serve.engine=ray`), started
here and stopped at the end; engines are built (or loaded from `--engine-dir`) before the clients
start (`/healthz` ready). Clients run in `--procs` processes (asyncio + httpx each), closed loop: a
client sends its next text when the last one's audio has fully arrived, for `--duration` seconds
after a warm-up of `--warmup` seconds. Texts: `bench_router.sentences` (the read-speech length mix).

Reported per client count: requests/s, audio seconds per second (of received audio: bytes / 2 /
22050), latency (request to last byte) p50/p90/p99, time to first audio byte (streaming pcm),
every error (status and message), and from the server's /metrics: the engine-call batch-size
histogram, mean padded fraction, engine seconds. Then one client sending a ~10 s utterance
(`--long-tokens` tokens, several sentences): end-to-end and first-byte latency. The offline
pipeline's audio seconds per second on the same texts (median of `--repeat` runs, engines warm) is
the yardstick: `serve_vs_offline` = server / offline at the largest client count. Goals (issue #16)
are checked and printed; JSON goes to `--out`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import platform
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

log = logging.getLogger("bench_serve")
SAMPLE_RATE = 22050


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="demo", help="conf/model name (demo: the shipped demo voice)")
    p.add_argument(
        "--checkpoint",
        default=None,
        help="weights: a path, demo, or random (calibrated to --frames-per-token); default: demo for "
        "--model demo, else random",
    )
    p.add_argument("--frames-per-token", type=float, default=4.9)
    p.add_argument("--precision", default="fp16")
    p.add_argument("--backend", default=None, help="inductor (GPU default) | eager (CPU default) | tensorrt")
    p.add_argument("--engine-set", default="default", help="conf/engine_set name ('none': --engine alone)")
    p.add_argument("--engine", default="i128_o1024", help="the engine when --engine-set none")
    p.add_argument("--batch", type=int, default=8, help="engine batch size (every engine of the set)")
    p.add_argument(
        "--batches",
        default=None,
        help="engine_set.batches, e.g. 1,8: each engine also at batch 1 (light load)",
    )
    p.add_argument("--vocoder", default=None, help="conf/vocoder name (default: the config's)")
    p.add_argument("--vocoder-iters", type=int, default=None, help="Griffin-Lim iterations (vocoder.n_iter)")
    p.add_argument("--device", default=None, help="cuda | cpu (default: cuda when visible)")
    p.add_argument("--clients", default="1,16,64", help="comma-separated concurrent client counts")
    p.add_argument("--procs", type=int, default=0, help="client processes (0: min(clients, 8))")
    p.add_argument("--duration", type=float, default=20.0, help="measured seconds per client count")
    p.add_argument("--warmup", type=float, default=3.0, help="unmeasured seconds before each")
    p.add_argument("--format", default="pcm", help="pcm (streamed: TTFB measured) | wav | flac ...")
    p.add_argument("--no-stream", action="store_true", help="ask for whole responses (stream=false)")
    p.add_argument("--max-wait-ms", type=float, default=0.0, help="serve.max_wait_ms (the server's default)")
    p.add_argument("--max-batch", type=int, default=None)
    p.add_argument("--long-tokens", type=int, default=175, help="the single-client long utterance (~10 s)")
    p.add_argument("--long-requests", type=int, default=50)
    p.add_argument("--n", type=int, default=1000, help="texts in the pool")
    p.add_argument("--repeat", type=int, default=3, help="offline runs; the median counts")
    p.add_argument("--ray", action="store_true", help="serve with Ray Serve (serve.engine=ray)")
    p.add_argument(
        "--replicas",
        default="1",
        help="Ray replicas (one GPU each); a list (1,2) runs one server per count, in this run, and "
        "reports the scale-out ratio at the largest client count",
    )
    p.add_argument("--ray-ingress", default="haproxy", help="serve.ray_ingress: haproxy | proxy")
    p.add_argument("--no-long", action="store_true", help="skip the single-client long utterance")
    p.add_argument("--no-offline", action="store_true", help="skip the offline pipeline's yardstick")
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a run.py setting for the server alone, e.g. --set serve.max_queue=64 (repeatable)",
    )
    p.add_argument("--port", type=int, default=0, help="0: a free port")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--engine-dir", default="engines/bench_serve")
    p.add_argument("--startup-timeout", type=float, default=1800.0, help="seconds to build engines")
    p.add_argument("--smoke", action="store_true", help="CPU smoke run: tiny model, eager, short")
    p.add_argument("--out", default="benchmarks/results/bench_serve.json")
    args = p.parse_args(argv)
    if args.smoke:
        args.model, args.checkpoint, args.device, args.backend = "tiny", "random", "cpu", "eager"
        args.precision, args.batch, args.n, args.repeat = "fp32", 4, 40, 1
        args.clients, args.duration, args.warmup, args.vocoder_iters = "1,4", 4.0, 1.0, 2
        args.engine_set, args.engine = "none", "i64_o512"
        args.long_tokens, args.long_requests, args.max_wait_ms = 60, 5, 5.0
        args.engine_dir = str(Path(tempfile.gettempdir()) / "bench_serve_smoke_engines")
        if args.out == p.get_default("out"):
            args.out = "benchmarks/results/bench_serve_smoke.json"
    if args.checkpoint is None:
        args.checkpoint = "demo" if args.model == "demo" else "random"
    args.replica_counts = [int(r) for r in str(args.replicas).split(",")]
    if len(args.replica_counts) > 1 and not args.ray:
        p.error("several --replicas counts need --ray")
    return args


# ---------------------------------------------------------------------------------------------
# Set-up: texts, weights, config, the server process


def overrides(args, checkpoint: str) -> list[str]:
    """The run.py overrides both the server and the offline pipeline run with."""
    out = [
        f"model={args.model}",
        f"checkpoint={checkpoint}",
        f"precision={args.precision}",
        f"backend={args.backend}",
        f"batch_size={args.batch}",
        f"engine_dir={args.engine_dir}",
        f"device={args.device}",
        f"seed={args.seed}",
    ]
    if args.backend == "inductor":
        out.append("backend.inductor.mode=default")
    if args.vocoder:
        out.append(f"vocoder={args.vocoder}")
    if args.vocoder_iters:
        out.append(f"vocoder.n_iter={args.vocoder_iters}")
    out.append(f"engine={args.engine}" if args.engine_set == "none" else f"engine_set={args.engine_set}")
    if args.batches and args.engine_set != "none":
        out.append(f"engine_set.batches=[{args.batches}]")
    return out


def compose(items: list[str]):
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        return hydra_compose(config_name="config", overrides=items)


def texts_and_weights(args, workdir: Path) -> tuple[list[str], str, str]:
    """-> (the text pool, the ~10 s utterance, run.py's checkpoint=): random weights are calibrated
    to `--frames-per-token` on the texts and saved, so the server and the offline run share them."""
    from benchmarks.bench_router import calibrate, sentences
    from fastspeech import pipeline
    from fastspeech.checkpoint import save_checkpoint
    from fastspeech.text import text_to_ids

    texts = sentences(args.n, args.seed)
    long_text, k = "", 0
    while not long_text or len(text_to_ids(long_text)) < args.long_tokens:  # whole sentences, ~10 s
        long_text = f"{long_text} {texts[k % len(texts)]}".strip()
        k += 1
    if args.checkpoint != "random":
        return texts, long_text, args.checkpoint
    model = pipeline.load_model(compose(overrides(args, "random")))
    calibrate(model, [text_to_ids(t) for t in texts], args.frames_per_token)
    path = workdir / f"calibrated_{args.model}_seed{args.seed}.pt"
    save_checkpoint(model, path, fmt="dle")
    return texts, long_text, str(path)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ServerProcess:
    """`python run.py mode=serve ...` in its own process group; log in `workdir/server.log`."""

    def __init__(self, args, checkpoint: str, workdir: Path, replicas: int = 1):
        self.port = args.port or free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        serve = [
            "mode=serve",
            "serve.host=127.0.0.1",
            f"serve.port={self.port}",
            f"serve.max_wait_ms={args.max_wait_ms}",
            f"serve.max_batch={args.max_batch if args.max_batch else 'null'}",
            "serve.max_queue=100000",
            "serve.max_chars=100000",
            f"serve.engine={'ray' if args.ray else 'uvicorn'}",
            f"serve.replicas={replicas}",
            f"serve.ray_ingress={args.ray_ingress}",
            f"hydra.run.dir={workdir / 'hydra'}",
            *args.set,
        ]
        self.cmd = [sys.executable, str(ROOT / "run.py"), *overrides(args, checkpoint), *serve]
        self.log_path = workdir / f"server_{replicas}.log"
        log.info("starting the server: %s", " ".join(self.cmd))
        self.log_file = open(self.log_path, "w")  # noqa: SIM115 - closed in stop()
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen(
            self.cmd,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
            env=env,
            start_new_session=True,
        )

    def wait_ready(self, timeout: float) -> float:
        import httpx

        t0 = time.perf_counter()
        while time.perf_counter() - t0 < timeout:
            if self.proc.poll() is not None:
                raise RuntimeError(
                    f"the server exited ({self.proc.returncode}); see {self.log_path}:\n{self.tail()}"
                )
            try:
                if httpx.get(f"{self.url}/healthz", timeout=2).status_code == 200:
                    return time.perf_counter() - t0
            except httpx.HTTPError:
                pass
            time.sleep(0.5)
        raise RuntimeError(f"the server was not ready after {timeout:.0f} s; see {self.log_path}")

    def tail(self, n: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-n:])

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGINT)  # its own session: the server and its children
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        self.log_file.close()


# ---------------------------------------------------------------------------------------------
# Clients


def audio_seconds(n_bytes: int, fmt: str) -> float:
    return max(0, n_bytes - (44 if fmt == "wav" else 0)) / 2 / SAMPLE_RATE if fmt in ("pcm", "wav") else 0.0


async def one_client(
    http, texts, first, start_at, end_at, fmt, stream, max_requests: int | None = None
) -> list[dict[str, Any]]:
    """A closed loop: send, read the whole answer, send the next, until `end_at` (or `max_requests`
    sent); records the requests sent from `start_at` on."""
    records, i = [], first
    while time.time() < end_at and (max_requests is None or i - first < max_requests):
        text = texts[i % len(texts)]
        i += 1
        body = {"model": "tts-1", "input": text, "voice": None, "response_format": fmt, "stream": stream}
        t0 = time.time()
        rec: dict[str, Any] = {"t0": t0, "chars": len(text)}
        try:
            async with http.stream("POST", "/v1/audio/speech", json=body) as r:
                rec["status"] = r.status_code
                if r.status_code != 200:
                    rec["error"] = (await r.aread()).decode(errors="replace")[:300]
                else:
                    n = 0
                    async for chunk in r.aiter_raw():
                        if n == 0 and chunk:
                            rec["ttfb_s"] = time.time() - t0
                        n += len(chunk)
                    rec["bytes"] = n
        except Exception as exc:  # noqa: BLE001 - every error is reported, none stops the run
            rec["status"], rec["error"] = "exception", f"{type(exc).__name__}: {exc}"
        rec["latency_s"] = time.time() - t0
        if t0 >= start_at:
            records.append(rec)
    return records


def client_process(
    url: str, texts: list[str], firsts: list[int], start_at: float, end_at: float, fmt, stream
):
    """One process's clients (asyncio + httpx) -> their records."""
    import httpx

    async def main():
        limits = httpx.Limits(max_connections=len(firsts) + 4, max_keepalive_connections=len(firsts) + 4)
        async with httpx.AsyncClient(base_url=url, timeout=300, limits=limits) as http:
            got = await asyncio.gather(
                *(one_client(http, texts, f, start_at, end_at, fmt, stream) for f in firsts)
            )
        return [r for one in got for r in one]

    return asyncio.run(main())


def run_clients(
    args, url: str, texts: list[str], n_clients: int, duration: float, warmup: float
) -> list[dict]:
    procs = min(n_clients, args.procs or 8)
    start_at = time.time() + 2.0 + warmup  # the processes start within ~2 s
    end_at = start_at + duration
    step = max(1, len(texts) // n_clients)
    firsts = [k * step for k in range(n_clients)]
    with ProcessPoolExecutor(procs) as pool:
        futures = [
            pool.submit(
                client_process,
                url,
                texts,
                firsts[p::procs],
                start_at,
                end_at,
                args.format,
                not args.no_stream,
            )
            for p in range(procs)
        ]
        records = [r for f in futures for r in f.result()]
    for r in records:
        r["window_s"] = duration
    return records


def summarize(records: list[dict], fmt: str, duration: float) -> dict[str, Any]:
    ok = [r for r in records if r.get("status") == 200]
    errors: dict[str, int] = {}
    for r in records:
        if r.get("status") != 200:
            key = f"{r.get('status')}: {r.get('error', '')[:200]}"
            errors[key] = errors.get(key, 0) + 1
    lat = np.array([r["latency_s"] for r in ok]) if ok else np.zeros(1)
    ttfb = np.array([r["ttfb_s"] for r in ok if "ttfb_s" in r])
    audio = sum(audio_seconds(r.get("bytes", 0), fmt) for r in ok)
    pct = lambda a, q: float(np.percentile(a, q)) * 1e3 if len(a) else None
    return {
        "requests": len(records),
        "ok": len(ok),
        "errors": errors,
        "requests_per_s": len(ok) / duration,
        "audio_s": audio,
        "audio_s_per_s": audio / duration,
        "latency_ms": {"p50": pct(lat, 50), "p90": pct(lat, 90), "p99": pct(lat, 99), "max": pct(lat, 100)},
        "ttfb_ms": {"p50": pct(ttfb, 50), "p90": pct(ttfb, 90), "p99": pct(ttfb, 99)} if len(ttfb) else None,
        "p99_over_p50": (pct(lat, 99) / pct(lat, 50)) if ok else None,
    }


_METRIC = re.compile(r"^(fastspeech_[a-z_]+)(\{[^}]*\})? ([0-9.eE+-]+|NaN|\+Inf)$")


def scrape(url: str) -> dict[str, float]:
    """The server's fastspeech_* metrics (one replica's under Ray)."""
    import httpx

    out = {}
    for line in httpx.get(f"{url}/metrics", timeout=10).text.splitlines():
        m = _METRIC.match(line)
        if m:
            out[m.group(1) + (m.group(2) or "")] = float(m.group(3))
    return out


def server_side(before: dict[str, float], after: dict[str, float]) -> dict[str, Any]:
    """What the server did between two scrapes: batch sizes (per-bucket call counts), padding, engine time."""
    d = {k: after.get(k, 0.0) - before.get(k, 0.0) for k in after}
    buckets = sorted(
        (
            (float(k.split('le="')[1].rstrip('"}')), v)
            for k, v in d.items()
            if k.startswith("fastspeech_batch_size_bucket")
        ),
        key=lambda kv: kv[0],
    )
    histogram, previous = {}, 0.0
    for le, cumulative in buckets:
        label = "inf" if le == float("inf") else str(int(le))
        histogram[f"<={label}"] = int(cumulative - previous)
        previous = cumulative
    calls = d.get("fastspeech_batch_size_count", 0.0)
    return {
        "engine_calls": int(calls),
        "batch_size_histogram": histogram,
        "mean_batch_size": d.get("fastspeech_batch_size_sum", 0.0) / calls if calls else None,
        "mean_padded_fraction": d.get("fastspeech_padded_fraction_sum", 0.0) / calls if calls else None,
        "engine_s": d.get("fastspeech_engine_call_seconds_sum", 0.0),
        "audio_s": d.get("fastspeech_audio_seconds_total", 0.0),
    }


def long_utterance(args, url: str, text: str) -> dict[str, Any]:
    """One client, the ~10 s utterance, `--long-requests` times in a row (after 3 unmeasured)."""
    from fastspeech.text import text_to_ids

    records = []

    async def main():
        import httpx

        async with httpx.AsyncClient(base_url=url, timeout=300) as http:
            warm = not args.no_stream
            await one_client(http, [text], 0, 0.0, float("inf"), args.format, warm, max_requests=3)
            records.extend(
                await one_client(
                    http, [text], 0, 0.0, float("inf"), args.format, warm, max_requests=args.long_requests
                )
            )

    asyncio.run(main())
    s = summarize(records, args.format, sum(r["latency_s"] for r in records) or 1.0)
    s["audio_s_per_request"] = s["audio_s"] / max(1, s["ok"])
    s["tokens"] = len(text_to_ids(text))
    return s


# ---------------------------------------------------------------------------------------------
# The offline pipeline on the same texts


def offline(args, checkpoint: str, texts: list[str]) -> dict[str, Any]:
    """`Router.__call__` on all texts (what run.py runs), engines warm; the median of --repeat runs.
    Also with the server's sentence cut (`sentences=True`)."""
    import torch

    from fastspeech import pipeline
    from fastspeech.router import HOP_S
    from fastspeech.text import text_to_ids

    cfg = compose(overrides(args, checkpoint))
    device = pipeline.pick_device(cfg.device)
    model = pipeline.load_model(cfg)
    router = pipeline.open_router(cfg, model, device)
    router.progress = False
    for engine in router.all_engines:
        engine([[1] * engine.spec.max_in] * engine.spec.batch, 1.0, to_host=True)
    text_to_ids(
        "On May 1st, Dr. Smith paid $3.50 for 12 eggs."
    )  # the text frontend's start-up, as the server's
    out = {"engines": [e.spec.name for e in router.all_engines]}
    for name, sentences in (("offline", False), ("offline_sentences", True)):
        runs = []
        for _ in range(args.repeat):
            if device.type == "cuda":
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            routed, stats = router(texts, alpha=1.0, sentences=sentences)
            wall = time.perf_counter() - t0
            runs.append((wall, sum(r.frames for r in routed) * HOP_S, stats, routed))
        runs.sort(key=lambda r: r[0])
        wall, audio, stats, routed = runs[len(runs) // 2]
        out[name] = {
            "wall_s": wall,
            "audio_s": audio,
            "audio_s_per_s": audio / wall,
            "calls": len(stats.calls),
            "padded_fraction": stats.padded_fraction,
            "wav_from_engine": all(r.wav is not None for r in routed),
        }
    return out


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    # Stopped by SIGTERM (`timeout`, a job runner): exit through the `finally` that stops the server,
    # which runs in its own session and was left running otherwise (seen in run 105).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    args = parse_args(argv)
    import torch

    args.device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    args.backend = args.backend or ("inductor" if args.device.startswith("cuda") else "eager")
    workdir = Path(tempfile.mkdtemp(prefix="bench_serve_"))
    texts, long_text, checkpoint = texts_and_weights(args, workdir)
    clients = [int(c) for c in args.clients.split(",")]
    result: dict[str, Any] = {
        "args": vars(args),
        "host": {"python": platform.python_version(), "torch": torch.__version__, "cpus": os.cpu_count()},
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
        "gpus": torch.cuda.device_count(),
        "texts": len(texts),
    }
    runs = {r: load_run(args, checkpoint, workdir, texts, long_text, clients, r) for r in args.replica_counts}
    result.update(runs[args.replica_counts[0]])  # by_clients, long_utterance, ... of the first count
    if len(runs) > 1:
        result["by_replicas"] = {str(r): run for r, run in runs.items()}
        low, high = min(runs), max(runs)
        at = str(max(clients))
        rate = lambda r: runs[r]["by_clients"][at]["audio_s_per_s"]
        result["scaleout"] = {
            "clients": max(clients),
            "replicas": [low, high],
            "ratio": rate(high) / rate(low),
        }
        log.info(
            "scale-out at %s clients: %d replicas / %d = %.2fx", at, high, low, result["scaleout"]["ratio"]
        )
    if not args.no_offline:
        result.update(offline(args, checkpoint, texts))
        top = result["by_clients"][str(max(clients))]
        result["serve_vs_offline"] = top["audio_s_per_s"] / result["offline"]["audio_s_per_s"]
    result["goals"] = goals(result, clients)
    print(table(result, clients))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    log.info("wrote %s", out)
    return result


def load_run(args, checkpoint, workdir, texts, long_text, clients, replicas: int) -> dict[str, Any]:
    """One server (`replicas` Ray replicas, or uvicorn) under each client count, then stopped."""
    run: dict[str, Any] = {"replicas": replicas, "by_clients": {}}
    server = ServerProcess(args, checkpoint, workdir, replicas)
    try:
        run["startup_s"] = server.wait_ready(args.startup_timeout)
        log.info("server (%d replica(s)) ready in %.1f s", replicas, run["startup_s"])
        if not args.no_long:
            run["long_utterance"] = long_utterance(args, server.url, long_text)
            log.info(
                "1 client, %.1f s utterance: %s",
                run["long_utterance"]["audio_s_per_request"],
                run["long_utterance"]["latency_ms"],
            )
        for n in clients:
            before = scrape(server.url)
            records = run_clients(args, server.url, texts, n, args.duration, args.warmup)
            summary = summarize(records, args.format, args.duration)
            summary["server"] = server_side(before, scrape(server.url))
            run["by_clients"][str(n)] = summary
            log.info(
                "%d replica(s), %d clients: %.1f req/s, %.1f audio s/s, p50 %.1f ms, p99 %.1f ms, %d errors",
                replicas, n, summary["requests_per_s"], summary["audio_s_per_s"],
                summary["latency_ms"]["p50"] or -1, summary["latency_ms"]["p99"] or -1,
                summary["requests"] - summary["ok"],
            )  # fmt: skip
    finally:
        server.stop()
        run["server_log_tail"] = server.tail()
    return run


def goals(result: dict[str, Any], clients: list[int]) -> dict[str, Any]:
    """Issue #16's goals, where this run measured them (the figures are for our H100)."""
    top = result["by_clients"][str(max(clients))]
    long = result.get("long_utterance")
    runs = result.get("by_replicas", {"-": result}).values()
    errors = sum(r["requests"] - r["ok"] for run in runs for r in run["by_clients"].values())
    errors += sum(
        run["long_utterance"]["requests"] - run["long_utterance"]["ok"]
        for run in runs
        if "long_utterance" in run
    )
    out = {}
    if "serve_vs_offline" in result:
        out[f"{max(clients)} clients >= 70% of offline audio s/s"] = result["serve_vs_offline"] >= 0.7
    if long:
        out["1 client 10 s utterance p50 <= 10 ms"] = (long["latency_ms"]["p50"] or 1e9) <= 10
        out["1 client 10 s utterance TTFB p50 <= 5 ms"] = ((long["ttfb_ms"] or {}).get("p50") or 1e9) <= 5
    out[f"{max(clients)} clients p99 <= 3 x p50"] = (top["p99_over_p50"] or 1e9) <= 3
    if "scaleout" in result:
        sc = result["scaleout"]
        low, high = sc["replicas"]
        want = 0.9 * high / low  # issue #16: 2 replicas >= 1.8x of 1
        out[f"{high} replicas >= {want:.1f}x of {low} at {sc['clients']} clients"] = sc["ratio"] >= want
    out["zero errors"] = errors == 0
    return out


def table(result: dict[str, Any], clients: list[int]) -> str:
    rows = [
        "| replicas | clients | req/s | audio s/s | p50 ms | p90 ms | p99 ms | TTFB p50 ms | mean batch | padded | errors |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    f = lambda x, d=1: "-" if x is None else f"{x:.{d}f}"
    for run in result.get("by_replicas", {"-": result}).values():
        for n in clients:
            r = run["by_clients"][str(n)]
            s = r["server"]
            rows.append(
                f"| {run.get('replicas', 1)} | {n} | {f(r['requests_per_s'])} | {f(r['audio_s_per_s'])} | "
                f"{f(r['latency_ms']['p50'])} | {f(r['latency_ms']['p90'])} | {f(r['latency_ms']['p99'])} | "
                f"{f((r['ttfb_ms'] or {}).get('p50'))} | {f(s['mean_batch_size'], 2)} | "
                f"{f(s['mean_padded_fraction'], 2)} | {r['requests'] - r['ok']} |"
            )
    if "offline" in result:
        o = result["offline"]
        rows.append(
            f"\noffline pipeline: {o['audio_s_per_s']:.1f} audio s/s ({o['calls']} calls); "
            f"server at {max(clients)} clients / offline = {result['serve_vs_offline']:.2f}"
        )
    if "scaleout" in result:
        sc = result["scaleout"]
        rows.append(
            f"scale-out at {sc['clients']} clients: {sc['replicas'][1]} replicas / {sc['replicas'][0]} = {sc['ratio']:.2f}x"
        )
    long = result.get("long_utterance")
    if long:
        rows.append(
            f"1 client, {long['audio_s_per_request']:.1f} s utterance ({long['tokens']} tokens): p50 "
            f"{f(long['latency_ms']['p50'])} ms, TTFB p50 {f((long['ttfb_ms'] or {}).get('p50'))} ms"
        )
    rows += [f"goal {'met   ' if ok else 'MISSED'}: {name}" for name, ok in result["goals"].items()]
    return "\n".join(rows)


if __name__ == "__main__":
    main()
