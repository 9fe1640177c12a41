"""The server's own ceiling: the real app (HTTP, batcher, scheduler, text frontend, audio sink) on
engines that answer at once, so what is measured is the host's work per request and none of the GPU's.

    python -m benchmarks.bench_serve_host                       # 64 clients, 10 s, pcm streamed
    python -m benchmarks.bench_serve_host --engine-ms 4         # each engine call sleeps 4 ms (a GPU's time)
    python -m benchmarks.bench_serve_host --against ../old      # another checkout's server, same load
    python -m benchmarks.bench_serve_host --profile /tmp/prof   # + cProfile of the server's two threads

The server runs in a child process (uvicorn, one event loop, the batcher's one worker thread) with
`bench_router_host.InstantEngine` for each engine of the default set (batch 8): silence of
`--frames-per-token` frames a token from reused host buffers, as `Engine` gives. The clients run in
`--procs` other processes: keep-alive connections speaking HTTP/1.1 by hand, closed loop (each sends
its next text, `bench_router`'s read-speech mix, when the last answer has fully arrived), so that they
cost the CPU far less than the server does. Requests per second here bound the GPU server's
(`bench_serve.py`) from above. Where clients and server share few cores (our 2-core CPU) compare trees
only in one run.
"""

from __future__ import annotations

import argparse
import cProfile
import json
import logging
import multiprocessing as mp
import os
import pstats
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

log = logging.getLogger("bench_serve_host")
SET = [(32, 256), (64, 512), (96, 768), (128, 1024)]  # conf/engine_set/default.yaml


def serve(port: int, args, profile: str | None, tree: str) -> None:
    """The child process: the app of checkout `tree` on instant engines, until killed (SIGTERM)."""
    sys.path.insert(0, tree)
    import signal

    import uvicorn

    from benchmarks.bench_router_host import InstantEngine
    from fastspeech.router import Router
    from fastspeech.serve.app import create_app
    from fastspeech.serve.service import Service, Voice

    engines = [InstantEngine(i, o, args.batch, args.frames_per_token, args.engine_ms / 1000) for i, o in SET]
    service = Service(
        {"demo": Voice("demo", Router(engines, progress=False))},
        max_wait_ms=args.max_wait_ms,
        max_queue=100000,
        max_chars=100000,
    )
    service.warm_up()  # the text frontend's start-up (inflect), as the real server before it is ready
    profiles = []
    if profile:  # the event loop (this thread) and the batcher's worker, each its own profile
        import threading

        batcher = service.batcher
        work = batcher._work

        def profiled_work():
            prof = cProfile.Profile()
            profiles.append(("worker", prof))
            prof.runcall(work)

        batcher._work = profiled_work
        main = cProfile.Profile()
        profiles.append(("event loop", main))
        main.enable()
        assert threading.current_thread() is threading.main_thread()

    def stop(*_):
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, stop)
    try:
        uvicorn.run(create_app(service=service), host="127.0.0.1", port=port, log_level="warning")
    except KeyboardInterrupt:
        pass
    finally:
        if profile:
            service.close()
            for name, prof in profiles:
                prof.disable()
                prof.dump_stats(f"{profile}.{name.replace(' ', '_')}")


async def _client(host, port, bodies, first, start_at, end_at) -> list[dict]:
    """One keep-alive connection, closed loop, HTTP/1.1 by hand (a chunked or sized body read
    whole): a client light enough that two cores' worth of them do not bound the server."""
    import asyncio

    records, i = [], first
    reader, writer = await asyncio.open_connection(host, port)
    try:
        while time.time() < end_at:
            body = bodies[i % len(bodies)]
            i += 1
            t0 = time.time()
            writer.write(
                b"POST /v1/audio/speech HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                b"Content-Length: %d\r\n\r\n%s" % (len(body), body)
            )
            head = await reader.readuntil(b"\r\n\r\n")
            status = int(head.split(b" ", 2)[1])
            headers = dict(line.split(b": ", 1) for line in head.split(b"\r\n")[1:] if b": " in line)
            headers = {k.lower(): v for k, v in headers.items()}
            n, ttfb = 0, None
            if b"content-length" in headers:
                data = await reader.readexactly(int(headers[b"content-length"]))
                n, ttfb = len(data), time.time() - t0
            else:  # chunked
                while True:
                    size = int((await reader.readuntil(b"\r\n")).strip(), 16)
                    await reader.readexactly(size + 2)  # the chunk and its CRLF
                    if size == 0:
                        break
                    if ttfb is None:
                        ttfb = time.time() - t0
                    n += size
                data = b""
            rec = {"t0": t0, "status": status, "bytes": n, "latency_s": time.time() - t0}
            if ttfb is not None:
                rec["ttfb_s"] = ttfb
            if status != 200:
                rec["error"] = data.decode(errors="replace")[:300]
            if t0 >= start_at:
                records.append(rec)
    finally:
        writer.close()
    return records


def _client_process(port, bodies, firsts, start_at, end_at) -> list[dict]:
    import asyncio

    async def main():
        got = await asyncio.gather(*(_client("127.0.0.1", port, bodies, f, start_at, end_at) for f in firsts))
        return [r for one in got for r in one]

    return asyncio.run(main())


def run_clients(args, port: int, texts: list[str]) -> list[dict]:
    from concurrent.futures import ProcessPoolExecutor

    bodies = [
        json.dumps(
            {"model": "tts-1", "input": t, "response_format": args.format, "stream": not args.no_stream}
        ).encode()
        for t in texts
    ]
    step = max(1, len(texts) // args.clients)
    firsts = [k * step for k in range(args.clients)]
    start_at = time.time() + 1.0 + args.warmup
    end_at = start_at + args.duration
    with ProcessPoolExecutor(args.procs) as pool:
        futures = [
            pool.submit(_client_process, port, bodies, firsts[p :: args.procs], start_at, end_at)
            for p in range(args.procs)
        ]
        return [r for f in futures for r in f.result()]


def load(args, tree: str, label: str) -> dict:
    import httpx

    from benchmarks.bench_router import sentences
    from benchmarks.bench_serve import free_port, summarize

    port = free_port()
    ctx = mp.get_context("spawn")
    prof = f"{args.profile}.{label}" if args.profile else None
    proc = ctx.Process(target=serve, args=(port, args, prof, tree))
    proc.start()
    url, deadline = f"http://127.0.0.1:{port}", time.monotonic() + 120
    while True:
        try:
            if httpx.get(f"{url}/healthz", timeout=2).status_code == 200:
                break
        except httpx.HTTPError:
            pass
        if not proc.is_alive() or time.monotonic() > deadline:
            proc.terminate()
            raise SystemExit(
                f"the {label} server did not start (exit code {proc.exitcode}); see its output above"
            )
        time.sleep(0.1)
    texts = sentences(1000, 0)
    try:
        records = run_clients(args, port, texts)
    finally:
        proc.terminate()
        proc.join(60)
    out = summarize(records, args.format, args.duration)
    log.info(
        "%s: %.0f requests/s, %.0f audio s/s, p50 %.1f ms, p99 %.1f ms, errors %s",
        label,
        out["requests_per_s"],
        out["audio_s_per_s"],
        out["latency_ms"]["p50"],
        out["latency_ms"]["p99"],
        out["errors"] or 0,
    )
    if args.profile:
        for name in ("event_loop", "worker"):
            path = f"{prof}.{name}"
            if os.path.exists(path):
                print(f"\n==== {label}: {name} (cumulative, top {args.top}) ====")
                pstats.Stats(path).sort_stats("cumulative").print_stats(args.top)
    return out


def main(argv: list[str] | None = None) -> dict:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")
    logging.getLogger("httpx").setLevel(logging.WARNING)
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--clients", type=int, default=64)
    p.add_argument("--procs", type=int, default=1, help="client processes")
    p.add_argument("--duration", type=float, default=10.0)
    p.add_argument("--warmup", type=float, default=2.0)
    p.add_argument("--rounds", type=int, default=1, help="each tree this many times, alternating")
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--frames-per-token", type=float, default=4.9)
    p.add_argument("--max-wait-ms", type=float, default=0.0, help="serve.max_wait_ms")
    p.add_argument(
        "--engine-ms", type=float, default=0.0, help="each engine call sleeps this long (a GPU's time)"
    )
    p.add_argument("--format", default="pcm")
    p.add_argument("--no-stream", action="store_true")
    p.add_argument("--against", default=None, help="another checkout: its server under the same load")
    p.add_argument("--profile", default=None, help="path prefix for cProfile dumps (and a summary)")
    p.add_argument("--top", type=int, default=30)
    p.add_argument("--out", default=None, help="JSON results")
    args = p.parse_args(argv)
    if args.against and not (Path(args.against) / "fastspeech" / "serve").is_dir():
        p.error(f"--against {args.against}: no fastspeech/serve there; give a checkout of this repository")
    trees = [("this", str(ROOT))] + ([("against", str(Path(args.against).resolve()))] if args.against else [])
    results = {label: [] for label, _ in trees}
    for _ in range(args.rounds):
        for label, tree in trees:
            results[label].append(load(args, tree, label))
    rev = subprocess.run(
        ["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=False
    )
    out = {"args": vars(args), "commit": rev.stdout.strip(), "results": results}
    if args.out:
        Path(args.out).parent.mkdir(parents=True, exist_ok=True)
        Path(args.out).write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
