"""Dynamic batching across concurrent requests: the server's side of `router.Scheduler`.

Requests arrive on the asyncio event loop (`submit`); their sentences (and pieces of long ones) wait
in the scheduler's per-engine queues; ONE worker thread takes the next ready call (a full batch of
an engine, `max_batch` capping it, or the oldest piece's `max_wait_ms` run out), runs it and hands
each request its finished pieces in speaking order, on the loop, through its `Stream`. One thread
because engines are not thread-safe; the engine call runs outside the lock, so requests keep
arriving while the GPU works.

Calls in flight as the offline router keeps them (`Router.depth`: one per lane of the set, at least
two): when another call is ready while one runs, the worker submits it (`Scheduler.start`: inputs
staged, replay and copies queued) before it waits for the oldest call's results and hands them out,
so the host's work between calls overlaps the device, and calls on different lanes of the set
(`serve.streams`) run at once there: the next call comes from a lane with no call running where one
is ready. With nothing else ready it takes the oldest call back at once.

Several voices (router each) share the one worker; the next call is the ready bucket, over all
voices, holding the first piece by the scheduler's priority. A request that fails (its text overflows every engine
with splitting off, or its piece fails alone) fails alone; a cancelled request (client gone) leaves
the queues at once and the results of its running pieces are dropped. A slow reader never holds the
worker: finished pieces wait in the request's own queue.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import threading
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass

from fastspeech.errors import FastSpeechError
from fastspeech.router import Batch, Part, Router, Scheduler, SynthesisFailed

log = logging.getLogger(__name__)


class QueueFull(FastSpeechError):
    """More requests in flight than `max_queue`: the caller should try again after `retry_after` s."""

    def __init__(self, message: str, retry_after: float = 1.0):
        super().__init__(message)
        self.retry_after = retry_after


@dataclass
class CallInfo:
    """One engine call, for metrics: its `RouteStats.calls` dicts (more than one when a failed call
    ran again piece by piece), the voice, and the queue then (pieces waiting, requests in flight)."""

    voice: str
    calls: list[dict]
    queued_pieces: int
    requests: int


class Stream:
    """One request's audio, piece by piece in speaking order: `async for part in stream.parts()`."""

    def __init__(self, batcher: Batcher, voice: str, item: int, pieces: int, loop: asyncio.AbstractEventLoop):
        self.batcher, self.voice, self.item, self.pieces = batcher, voice, item, pieces
        self.loop = loop
        self.queue: asyncio.Queue[list[Part] | Exception | None] = asyncio.Queue()
        self.finished = False

    def _put(self, event: list[Part] | Exception | None) -> None:
        self.queue.put_nowait(event)

    async def parts(self) -> AsyncIterator[Part]:
        """Each piece as soon as it and every piece before it are synthesized; raises the error that
        failed this request (`FastSpeechError`)."""
        try:
            while True:
                event = await self.queue.get()
                if event is None:
                    self.finished = True
                    return
                if isinstance(event, Exception):
                    self.finished = True
                    raise event
                for part in event:
                    yield part
        finally:
            if not self.finished:  # the reader left early (client gone): drop the remaining work
                self.cancel()

    def cancel(self) -> None:
        self.finished = True
        self.batcher.cancel(self)


class Batcher:
    """Concurrent requests -> engine calls on one worker thread (see the module docstring).

    `routers`: a `Router`, or voice name -> `Router`. `on_call(CallInfo)` runs on the worker after
    every call (metrics); keep it quick.
    """

    def __init__(
        self,
        routers: Router | Mapping[str, Router],
        max_batch: int | None = None,
        max_wait_ms: float = 5.0,
        max_queue: int = 256,
        on_call: Callable[[CallInfo], None] | None = None,
    ):
        routers = {"default": routers} if isinstance(routers, Router) else dict(routers)
        self.schedulers = {name: Scheduler(r, max_batch) for name, r in routers.items()}
        self.depth = max(r.depth for r in routers.values())  # calls in flight (`Router.depth`)
        self.max_wait = max_wait_ms / 1000
        self.max_queue = max_queue
        self.on_call = on_call
        self.streams: dict[tuple[str, int], Stream] = {}
        self.cancelled_pieces = 0  # queued pieces dropped because their request went away
        self._ids = itertools.count()
        self._cond = threading.Condition()
        self._closed = False
        self._thread: threading.Thread | None = None

    # ---- the event loop's side

    def start(self) -> None:
        if self._thread is None:
            self._closed = False
            self._thread = threading.Thread(target=self._work, name="fastspeech-batcher", daemon=True)
            self._thread.start()

    def close(self) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread is not None:
            self._thread.join(timeout=30)
            self._thread = None

    def submit(
        self,
        text: str,
        voice: str = "default",
        alpha: float = 1.0,
        label: str = "input",
        sentences: bool = True,
    ) -> Stream:
        """Queue one request (call on the event loop) -> its `Stream`.

        Raises `QueueFull` when `max_queue` requests are in flight, `KeyError` for an unknown voice,
        `TextError`/`EngineError` for text that cannot be encoded or placed (nothing queued then).
        """
        scheduler = self.schedulers[voice]
        loop = asyncio.get_running_loop()
        with self._cond:
            if len(self.streams) >= self.max_queue:
                raise QueueFull(
                    f"the server is busy ({len(self.streams)} requests in flight, serve.max_queue="
                    f"{self.max_queue}); try again shortly"
                )
            item = next(self._ids)
            pieces = scheduler.add(item, text, None, alpha, label, time.monotonic(), sentences)
            stream = Stream(self, voice, item, pieces, loop)
            self.streams[(voice, item)] = stream
            self._cond.notify()
        return stream

    def cancel(self, stream: Stream) -> None:
        with self._cond:
            if self.streams.pop((stream.voice, stream.item), None) is not None:
                dropped = self.schedulers[stream.voice].cancel(stream.item)
                self.cancelled_pieces += dropped
                if dropped:
                    log.debug("request %d cancelled: %d queued pieces dropped", stream.item, dropped)

    def queued_pieces(self) -> int:
        with self._cond:
            return sum(s.pending() for s in self.schedulers.values())

    def in_flight(self) -> int:
        return len(self.streams)

    # ---- the worker

    def _next(self, running: Sequence[tuple] = ()) -> tuple[str, Batch] | None:
        """The ready call, over all voices, holding the first piece by priority, on a lane with no
        `running` call where one is ready; on a busy lane only while fewer than two calls run
        (`Scheduler.ready`; lock held)."""
        now = time.monotonic()
        busy = [self.schedulers[voice].lane(batch.engine, len(batch.pieces)) for voice, batch, _ in running]
        best = None
        for name, s in self.schedulers.items():
            ready = s.ready(now, self.max_wait, busy, elsewhere_only=len(running) >= 2)
            if ready is not None and (best is None or ready[0] < best[0]):
                best = (ready[0], name, ready[1])
        if best is None:
            return None
        return best[1], self.schedulers[best[1]].take(best[2])

    def _wait(self) -> None:
        """Sleep until a piece's wait runs out or something arrives (lock held)."""
        wakes = [w for s in self.schedulers.values() if (w := s.wake_at(self.max_wait)) is not None]
        timeout = max(0.0, min(wakes) - time.monotonic()) if wakes else None
        self._cond.wait(timeout)

    def _work(self) -> None:
        running: deque[tuple] = deque()  # (voice, batch, wait) of submitted calls, oldest first
        while True:
            with self._cond:
                while not self._closed and not running and (picked := self._next()) is None:
                    self._wait()
                if self._closed:
                    return
                if running:
                    picked = self._next(running) if len(running) < self.depth else None
            if picked is not None:  # submitted before the oldest running call is waited for
                voice, batch = picked
                running.append((voice, batch, self.schedulers[voice].start(batch)))  # unlocked
                if len(running) < self.depth:
                    continue
            self._finish(*running.popleft())

    def _finish(self, voice: str, batch: Batch, wait: Callable[[], tuple[list, list[dict]]]) -> None:
        """Wait for a started call (unlocked), then hand its results to their requests."""
        scheduler = self.schedulers[voice]
        executed = wait()
        try:
            with self._cond:
                events = scheduler.finish(batch, executed)
                for item, event in events:
                    stream = self.streams.get((voice, item))
                    if stream is None:
                        continue
                    if event is None or isinstance(event, Exception):
                        del self.streams[(voice, item)]
                    _deliver(stream, event)
                info = CallInfo(  # the queue as this call leaves it: its finished requests gone
                    voice,
                    executed[1],
                    sum(s.pending() for s in self.schedulers.values()),
                    len(self.streams),
                )
        except Exception:  # never let the worker die: fail the requests of this call
            log.exception("the batcher failed to finish a call")
            with self._cond:
                for item in {p.key[0] for p in batch.pieces}:
                    stream = self.streams.pop((voice, item), None)
                    scheduler.cancel(item)
                    if stream is not None:
                        err = SynthesisFailed("synthesis failed on the server; see its log")
                        _deliver(stream, err)
            return
        if self.on_call is not None:
            try:
                self.on_call(info)
            except Exception:  # metrics never stop synthesis
                log.exception("on_call failed")


def _deliver(stream: Stream, event: list[Part] | Exception | None) -> None:
    try:
        stream.loop.call_soon_threadsafe(stream._put, event)
    except RuntimeError:  # its event loop is closed: nobody is listening any more
        pass
