"""The batcher: concurrent requests share engine calls, each gets exactly its own pieces in order,
and a request that fails (or leaves) never fails the others. Tiny random model, eager CPU engines."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch
from helpers import LaneLog, one_thread, random_model

from fastspeech.batcher import Batcher, QueueFull
from fastspeech.engine import EngineSpec, load_or_build
from fastspeech.errors import EngineError
from fastspeech.router import Router
from fastspeech.text import text_to_ids

TEXTS = ["Hello there. How are you?", "Short.", "One, two, three. Four! Five six seven eight nine ten."]


@pytest.fixture(autouse=True)
def _one_thread():
    """Every test here on one CPU thread (`helpers.one_thread`)."""
    with one_thread():
        yield


class Poisoned:
    """An engine that raises for any call holding the `poison` token sequence (one bad piece)."""

    def __init__(self, engine, poison):
        self.engine, self.poison, self.calls = engine, tuple(poison), []
        self.spec, self.device = engine.spec, engine.device

    def __call__(self, ids, alpha=1.0, to_host=False):
        self.calls.append(len(ids))
        if any(tuple(i) == self.poison for i in ids):
            raise RuntimeError("poisoned input")
        return self.engine(ids, alpha, to_host)


def make_router(tmp_path, poison=(), split=True, seed=3):
    model = random_model(seed=seed)
    engines = [load_or_build(model, EngineSpec(4, i, o), tmp_path, "cpu") for i, o in [(16, 96), (64, 384)]]
    return Router([Poisoned(e, poison) for e in engines], split=split, progress=False)


async def collect(batcher, text, alpha=1.0):
    stream = batcher.submit(text, alpha=alpha)
    return [p async for p in stream.parts()]


def run(batcher, coros):
    async def main():
        batcher.start()
        try:
            return await asyncio.gather(*coros(), return_exceptions=True)
        finally:
            batcher.close()

    return asyncio.run(main())


def test_concurrent_requests_share_calls_and_each_gets_its_own_pieces_in_order(tmp_path):
    router = make_router(tmp_path)
    reference, _ = make_router(tmp_path)(TEXTS, sentences=True)
    batcher = Batcher(router, max_wait_ms=50)
    results = run(batcher, lambda: [collect(batcher, t) for t in TEXTS])
    for parts, ref in zip(results, reference):
        assert [p.text for p in parts] == ref.pieces and [p.key for p in parts] == sorted(
            p.key for p in parts
        )
        assert torch.equal(torch.cat([p.mel for p in parts]), ref.mel)
        assert torch.equal(torch.cat([p.durations for p in parts]), ref.durations)
    calls = [n for e in router.engines for n in e.calls]
    assert max(calls) > 1 and sum(calls) == sum(len(r.pieces) for r in reference)  # batched, nothing twice


def test_a_piece_that_fails_fails_only_its_request(tmp_path):
    bad = "Broken piece."
    router = make_router(tmp_path, poison=text_to_ids(bad))
    batcher = Batcher(router, max_wait_ms=50)
    texts = [TEXTS[0], f"Fine start. {bad} Never heard.", TEXTS[1]]
    good, failed, short = run(batcher, lambda: [collect(batcher, t) for t in texts])
    assert isinstance(failed, EngineError) and "RuntimeError: poisoned input" in str(failed)
    assert [p.text for p in good] == ["Hello there.", "How are you?"] and [p.text for p in short] == [
        "Short."
    ]
    assert batcher.in_flight() == 0 and batcher.queued_pieces() == 0


def test_speech_that_fits_no_engine_fails_only_that_request(tmp_path):
    batcher = Batcher(make_router(tmp_path, split=False, seed=4), max_wait_ms=50)
    slow, normal = run(
        batcher, lambda: [collect(batcher, "one two three four five", 40.0), collect(batcher, "Hi.")]
    )
    assert isinstance(slow, EngineError) and "predicted speech is" in str(slow)
    assert [p.text for p in normal] == ["Hi."]


def test_a_full_queue_refuses_and_a_cancelled_request_leaves_the_queues(tmp_path):
    batcher = Batcher(make_router(tmp_path), max_wait_ms=10_000, max_queue=1)  # nothing runs for 10 s

    async def main():
        stream = batcher.submit(TEXTS[2])
        with pytest.raises(QueueFull, match="max_queue=1"):
            batcher.submit("One more.")
        assert batcher.queued_pieces() == stream.pieces == 3
        stream.cancel()
        assert batcher.queued_pieces() == 0 and batcher.in_flight() == 0 and batcher.cancelled_pieces == 3
        batcher.submit("Now there is room.").cancel()

    asyncio.run(main())


class Submitting:
    """An engine with `submit`, logging ("submit" | "wait", call number): what the batcher does with
    a CUDA engine's two-step call, on the CPU. `fail_at_wait` fails that call when waited for."""

    def __init__(self, engine, log, fail_at_wait=None):
        self.engine, self.log, self.fail_at_wait = engine, log, fail_at_wait
        self.spec, self.device = engine.spec, engine.device

    def __call__(self, ids, alpha=1.0, to_host=False):
        return self.engine(ids, alpha, to_host)

    def submit(self, ids, alpha=1.0):
        n = sum(1 for event, _ in self.log if event == "submit")
        self.log.append(("submit", n))

        def wait():
            self.log.append(("wait", n))
            if n == self.fail_at_wait:
                raise RuntimeError("failed when waited for")
            return self.engine(ids, alpha, to_host=True)

        return wait


def queue_then_run(batcher: Batcher, texts: list[str], **submit) -> list[list]:
    """Queue every text before the worker starts, then run them all -> each text's parts."""

    async def main():
        streams = [batcher.submit(t, **submit) for t in texts]  # all queued, nothing running yet
        batcher.start()
        try:
            out = []
            for s in streams:
                out.append([p async for p in s.parts()])
            return out
        finally:
            batcher.close()

    return asyncio.run(main())


def test_the_worker_submits_the_next_call_before_it_waits_for_the_running_one(tmp_path):
    """Four one-piece calls queued before the worker starts: each call is submitted before the one
    before it is waited for (two in flight), and every request still gets exactly its own audio."""
    model = random_model(seed=3)
    engine = load_or_build(model, EngineSpec(4, 16, 96), tmp_path, "cpu")
    log: list = []
    batcher = Batcher(Router([Submitting(engine, log)], progress=False), max_batch=1, max_wait_ms=0)
    texts = ["Hello there.", "Short.", "One, two.", "Four!"]
    reference, _ = Router([engine], progress=False)(texts)

    results = queue_then_run(batcher, texts)
    for parts, ref in zip(results, reference):  # the reference ran them as one batch of 4
        assert len(parts) == 1
        torch.testing.assert_close(parts[0].mel, ref.mel, atol=1e-5, rtol=1e-5)
    assert log[:3] == [("submit", 0), ("submit", 1), ("wait", 0)]
    for n in range(1, 4):
        assert log.index(("submit", n)) < log.index(("wait", n - 1))
    assert sorted(log) == sorted([("submit", n) for n in range(4)] + [("wait", n) for n in range(4)])


def test_the_worker_keeps_a_call_in_flight_per_lane(tmp_path, monkeypatch):
    """Engines on four lanes (stand-ins for CUDA streams, `Scheduler.lane`): the worker keeps up to
    four calls in flight, a second call on a busy lane only while fewer than two run, and every
    request still gets exactly its own audio."""
    from fastspeech.router import Scheduler

    model = random_model(seed=4)
    sizes = [(8, 48), (16, 96), (24, 144), (32, 192)]
    engines = [load_or_build(model, EngineSpec(1, i, o), tmp_path, "cpu") for i, o in sizes]
    lanes_log = LaneLog()

    class OnLane(Submitting):
        def submit(self, ids, alpha=1.0):
            return lanes_log.start(self.lane, lambda: self.engine(ids, alpha, to_host=True))

    wrapped = [OnLane(e, []) for e in engines]
    for j, w in enumerate(wrapped):
        w.lane = j
    rng = np.random.default_rng(4)
    texts = [
        "".join(rng.choice(list("abcdefg "), size=int(n))).strip() + "a" for n in rng.integers(2, 30, 24)
    ]
    reference, _ = Router(engines, progress=False)(texts)
    router = Router(wrapped, progress=False)
    monkeypatch.setattr(Scheduler, "lane", lambda self, k, pieces: self.router.engines[k].lane)
    router.depth = 4
    batcher = Batcher(router, max_wait_ms=0)

    results = queue_then_run(batcher, texts, sentences=False)
    for parts, ref in zip(results, reference):
        assert len(parts) == 1
        torch.testing.assert_close(parts[0].mel, ref.mel, atol=1e-5, rtol=1e-5)
    assert lanes_log.most == 4 and not lanes_log.running


def test_a_call_that_fails_when_waited_for_fails_only_its_request(tmp_path):
    model = random_model(seed=3)
    engine = load_or_build(model, EngineSpec(4, 16, 96), tmp_path, "cpu")
    log: list = []
    router = Router([Submitting(engine, log, fail_at_wait=1)], progress=False)
    batcher = Batcher(router, max_batch=1, max_wait_ms=0)
    texts = ["Hello there.", "Short.", "Four!"]

    async def main():
        streams = [batcher.submit(t) for t in texts]
        batcher.start()
        try:
            out = []
            for s in streams:
                try:
                    out.append([p.text async for p in s.parts()])
                except Exception as err:  # noqa: BLE001 - the test looks at it
                    out.append(err)
            return out
        finally:
            batcher.close()

    first, failed, last = asyncio.run(main())
    assert first == ["Hello there."] and last == ["Four!"]
    assert isinstance(failed, EngineError) and "failed when waited for" in str(failed)
    assert batcher.in_flight() == 0 and batcher.queued_pieces() == 0
