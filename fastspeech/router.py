"""A multi-engine set: each text runs on the smallest engine that holds it; nothing is ever cropped.

The seed's experimental multi-engine mode picked, per batch, the first engine whose max input fit
the batch's longest text, and silently cropped input and mel that did not fit. Here, per text:

1. Input: the smallest engine (by max input, then max output) whose `max_in` holds its tokens. A
   text longer than the largest engine is cut at sentence, then clause, then word boundaries
   (`fastspeech.text.split_text`) into pieces that each fit, or, with `split=False`, refused with
   an `EngineError`. With `sentences=True` (the server's streaming) a text is first cut at every
   sentence end, so its first sentence is heard before the rest is synthesized.
2. Output: an engine reports the untruncated predicted length (`EngineOutput.frames`). When it is
   more than the engine's `max_out`, the text runs again on the smallest engine whose `max_in` and
   `max_out` both hold it; when no engine's output does, the text is split (into pieces of about
   `max_out / frames` of its tokens, and again if a piece still overflows) or refused.
3. The pieces of one text are joined in speaking order: mels (and wavs, when the engine has a
   vocoder inside) end to end, durations concatenated, so `len(mel) == durations.sum()` and
   `len(wav) == 256 * len(mel)` for every result.

Batching lives in one place, `Scheduler`, for the command line and the server alike: pending pieces
wait in one queue per engine; a bucket is ready when it holds a full batch (the engine's, capped by
`max_batch`) or one of its pieces has waited `max_wait`; the next call takes up to a batch from the
ready bucket holding the first piece by priority: arrival, each later piece of a text counted one
engine call later per piece (`Scheduler.rank_delay`, the calls' running mean latency), so texts
queued together all start first and a text that arrives while a long one runs goes next, while no
piece starves behind a stream of new texts. The engine pads each call to its fixed shape, so the
smallest engine that holds a piece is the least padding. `Router.__call__` queues every text at once
and runs the scheduler to the end with no waiting; `fastspeech.batcher.Batcher` feeds it from
concurrent requests and runs it on one worker thread. Pieces of different texts may share a call
(each has its own alpha); a piece's result never depends on the others in its call.

The engines of a set share one copy of the weights (the pipeline casts the model once; see
`pipeline.open_engine_set`). On CUDA they run on lanes, a graph memory pool and a stream each
(`pipeline.set_lanes`, `engine_set.streams`; engine sizes take turns): the calls of one lane run one
after another, a call's copies to the host queued on its stream before the next call's replay, and
calls on different lanes run at once. The router keeps a call in flight per lane, at least two
(`Router.depth`), and takes each next call from a lane with none running where one is ready
(`Scheduler.ready`).
"""

from __future__ import annotations

import heapq
import itertools
import logging
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from dataclasses import dataclass, field, replace
from typing import Any, NamedTuple

import torch

from fastspeech.engine import Engine, EngineOutput, EngineSpec
from fastspeech.errors import EngineError, FastSpeechError, TextError
from fastspeech.text import split_sentences, split_text, text_to_ids
from fastspeech.vocoder.base import AudioConfig

log = logging.getLogger(__name__)

HOP = AudioConfig.hop_length  # samples per mel frame (DLE's hop)
HOP_S = HOP / AudioConfig.sample_rate  # seconds of audio per mel frame


@dataclass
class Routed:
    """One input text, synthesized: the mels of its pieces joined in order.

    mel (To, num_mels) float32 on the CPU (None from a router with `keep_mel` off); durations (sum of
    the pieces' Ti,) int64 frames per token; len(mel) == durations.sum(). wav (To * 256,) int16 16-bit
    PCM on the CPU when the engines have a vocoder inside, else None. `pieces` are the texts that ran
    (one unless the text was split), `engines` the engine that produced each.
    """

    mel: torch.Tensor | None
    durations: torch.Tensor
    pieces: list[str]
    engines: list[str]
    wav: torch.Tensor | None = None

    @property
    def frames(self) -> int:
        return len(self.mel) if self.mel is not None else len(self.wav) // HOP


@dataclass
class RouteStats:
    """What one router call did. `calls` has one dict per engine call (the pipeline's timings).

    Padding counts the work each call computed for nothing: the empty rows of a batch, the padding
    tokens and frames of each row, and every slot of a row whose output overflowed and ran again.
    `padded_fraction` weighs input tokens and output frames alike (both sides are 6 FFT blocks).
    """

    calls: list[dict] = field(default_factory=list)
    reroutes: int = 0  # pieces run again on a larger engine after a frame overflow
    splits: int = 0  # texts or pieces cut into smaller pieces

    def _sum(self, key: str) -> int:
        return sum(c[key] for c in self.calls)

    @property
    def padded_fraction(self) -> float:
        return padded_fraction(self.calls)

    @property
    def padded_fraction_in(self) -> float:
        slots = self._sum("token_slots")
        return 1 - self._sum("tokens") / slots if slots else 0.0

    @property
    def padded_fraction_out(self) -> float:
        slots = self._sum("frame_slots")
        return 1 - self._sum("frames") / slots if slots else 0.0

    def engine_calls(self) -> dict[str, int]:
        counts: dict[str, int] = defaultdict(int)
        for c in self.calls:
            counts[c["engine"]] += 1
        return dict(counts)


def padded_fraction(calls: Sequence[dict]) -> float:
    """The share of the token + frame slots of `calls` (`RouteStats.calls` dicts) that held nothing."""
    slots = sum(c["token_slots"] + c["frame_slots"] for c in calls)
    return 1 - sum(c["tokens"] + c["frames"] for c in calls) / slots if slots else 0.0


class SynthesisFailed(EngineError):
    """An engine call failed on a piece even when run alone: a fault of the machine or the engine,
    not of the text (the server answers 500 for it, 400 for other `FastSpeechError`s)."""


# Seconds: how much later an item's next piece counts than its previous one until a call has been
# timed; then the scheduler's running mean of one call's latency (`Scheduler.rank_delay`).
RANK_DELAY = 0.02


@dataclass(frozen=True)
class _Piece:
    """A text (or a piece of one) on its way through the set."""

    key: tuple[int, ...]  # (item, piece, sub-piece, ...): sorted keys are speaking order
    text: str
    ids: tuple[int, ...]
    engine: int  # index into Router.engines
    alpha: float = 1.0
    since: float = 0.0  # when its item was queued (the scheduler's clock)
    rank: int = 0  # its place among its item's pieces: counted `step` later per place (`priority`)

    def priority(self, step: float) -> tuple[float, tuple[int, ...]]:
        """Arrival, each later piece of an item counted one engine call (`step`, the scheduler's) later
        per rank, then speaking order: texts queued together start together, a text that arrives while
        a long one runs goes next, yet no later piece waits forever behind a stream of new texts
        (strict first-pieces-first left a few requests 4 s behind at 64 clients on the H200)."""
        return (self.since + self.rank * step, self.key)


class Part(NamedTuple):
    """A piece's result, on the CPU: mel (frames, num_mels) or None (a router with `keep_mel` off),
    durations (Ti,), wav (frames * 256,) or None (an engine without a vocoder)."""

    key: tuple[int, ...]
    text: str
    engine: str
    mel: torch.Tensor | None
    durations: torch.Tensor
    wav: torch.Tensor | None

    @property
    def frames(self) -> int:
        return len(self.mel) if self.mel is not None else len(self.wav) // HOP


class Router:
    """Runs texts on a set of engines (see the module docstring). Engines: same precision, backend."""

    def __init__(
        self,
        engines: Sequence[Engine],
        split: bool = True,
        on_unknown: str = "error",
        progress: bool = True,
        keep_mel: bool = True,
    ):
        if not engines:
            raise EngineError("an engine set needs at least one engine")
        kinds = {(e.spec.precision, e.spec.backend, str(e.device)) for e in engines}
        if len(kinds) > 1:
            raise EngineError(
                f"the engines of a set must share precision, backend and device (they share weights), "
                f"got {sorted(kinds)}"
            )
        # A shape may come at several batch sizes (`engine_set.batches`): one queue per shape, and
        # each call runs on the smallest of its engines that holds the call's pieces, so a lone
        # request at light load does not pay for a full batch. `engines`: the largest per shape.
        by_shape: dict[tuple[int, int], list[Engine]] = defaultdict(list)
        for e in engines:
            by_shape[(e.spec.max_in, e.spec.max_out)].append(e)
        shapes = sorted(by_shape)
        self.sizes = [sorted(by_shape[s], key=lambda e: e.spec.batch) for s in shapes]
        self.engines = [sizes[-1] for sizes in self.sizes]
        self.split, self.on_unknown, self.progress = split, on_unknown, progress
        # False: results carry no mel (the server sends only audio; each piece's mel is 320 bytes a
        # frame to copy out of the engine's output buffers); the engines need a vocoder inside then.
        self.keep_mel = keep_mel
        self.max_in = self.engines[-1].spec.max_in
        self.largest_out = max(self.engines, key=lambda e: (e.spec.max_out, e.spec.max_in))
        self._ready_at = 0.0  # when the last call's results reached the host (`start_batch`)
        # Calls `__call__` keeps in flight: one per lane (`pipeline.set_lanes`), at least two
        self.depth = max(2, len({getattr(e, "stream", None) for e in self.all_engines}))

    @property
    def all_engines(self) -> list[Engine]:
        """Every engine of the set, each shape's batch sizes together."""
        return [e for sizes in self.sizes for e in sizes]

    def __call__(
        self,
        texts: Sequence[str],
        ids: Sequence[Sequence[int]] | None = None,
        alpha: float = 1.0,
        labels: Sequence[str] | None = None,
        sentences: bool = False,
    ) -> tuple[list[Routed], RouteStats]:
        """Synthesize `texts` (token `ids` given, or encoded here) -> (one `Routed` per text, stats).

        `labels` name the texts in errors ("line 3"). Raises `EngineError` for a text that fits no
        engine when splitting is off (or a single token longer than every engine's output).
        `sentences`: cut every text at its sentence ends first, as the server does.
        """
        from tqdm import tqdm

        if ids is None:
            ids = [text_to_ids(t, self.on_unknown) for t in texts]
        if labels is None:
            labels = [f"line {i + 1}" for i in range(len(texts))] if len(texts) > 1 else ["text"]
        if not len(texts) == len(ids) == len(labels):
            raise ValueError(f"{len(texts)} texts, {len(ids)} id lists and {len(labels)} labels")
        if not self.split:
            check_lengths(ids, self.max_in, labels, self.engines[-1].spec.name)
        scheduler = Scheduler(self)
        for i, (text, one, label) in enumerate(zip(texts, ids, labels)):
            scheduler.add(i, text, one, alpha, label, sentences=sentences)
        parts: dict[int, list[Part]] = defaultdict(list)
        # Calls in flight (`depth`): the next call is submitted before the oldest one's results are
        # taken back, so the host copies those out (and picks the call after) while the device runs,
        # and calls on different lanes run at once. A lane takes a second call only while fewer than
        # two are in flight (the host's double buffer), so the others go to free lanes.
        running: deque[tuple[Batch, Callable[[], Any]]] = deque()  # (batch, its results when ready)
        with tqdm(total=0, desc="synthesizing", unit="batch", disable=not self.progress) as bar:
            while True:
                while len(running) < self.depth:
                    busy = [scheduler.lane(b.engine, len(b.pieces)) for b, _ in running]
                    batch = scheduler.next_batch(busy=busy, elsewhere_only=len(running) >= 2)
                    if batch is None:
                        break
                    running.append((batch, scheduler.start(batch)))
                if not running:
                    break
                batch, results = running.popleft()
                for item, event in scheduler.finish(batch, results()):
                    if isinstance(event, Exception):
                        raise event
                    if event is not None:
                        parts[item] += event
                bar.total = bar.n + 1 + scheduler.batches_left() + len(running)
                bar.update()
        return [join(parts[i]) for i in range(len(texts))], scheduler.stats

    # ---- placing pieces on engines

    def place(self, piece: _Piece, label: str, stats: RouteStats) -> list[_Piece]:
        """The smallest engine whose input holds the piece; a piece too long for all is split
        (`__call__` has refused such pieces already when splitting is off)."""
        n = len(piece.ids)
        if n == 0:
            raise EngineError(f"{label} has no tokens; give text with something to say")
        for k, e in enumerate(self.engines):
            if e.spec.max_in >= n:
                return [replace(piece, engine=k)]
        if not self.split:
            check_lengths([piece.ids], self.max_in, [label], self.engines[-1].spec.name)
        pieces = self._split(piece, self.max_in, stats)
        log.info(
            "%s: %d tokens, more than the largest engine takes (%d): split into %d pieces",
            label,
            n,
            self.max_in,
            len(pieces),
        )
        return [q for p in pieces for q in self.place(p, label, stats)]

    def overflow(self, piece: _Piece, frames: int, label: str, stats: RouteStats) -> list[_Piece]:
        """A piece predicted `frames` > its engine's max_out: a larger engine, or split, or refuse."""
        n = len(piece.ids)
        for k, e in enumerate(self.engines):
            if e.spec.max_in >= n and e.spec.max_out >= frames:
                stats.reroutes += 1
                log.debug(
                    "%s: %d frames overflowed engine %s; running it again on %s",
                    label,
                    frames,
                    self.engines[piece.engine].spec.name,
                    e.spec.name,
                )
                return [replace(piece, engine=k)]
        largest = self.largest_out.spec
        if not self.split:
            raise EngineError(
                f"{label}: predicted speech is {frames} frames, longer than the largest engine of the set "
                f"takes ({largest.max_out} frames, {largest.name}); set engine_set.split=true to split it, "
                "or lower alpha"
            )
        if n == 1:
            raise EngineError(
                f"{label}: a single token is predicted to last {frames} frames, longer than the largest "
                f"engine of the set takes ({largest.max_out} frames, {largest.name}); lower alpha, or "
                "use an engine with a larger max_out (a token this long usually means the checkpoint does "
                "not match the text frontend)"
            )
        # Pieces of about the share of tokens that fits, with a margin (durations vary along a text).
        max_tokens = max(1, min(n - 1, int(0.9 * n * largest.max_out / frames)))
        pieces = self._split(piece, max_tokens, stats)
        log.info(
            "%s: predicted %d frames, more than the largest engine's %d: split into %d pieces",
            label,
            frames,
            largest.max_out,
            len(pieces),
        )
        return [q for p in pieces for q in self.place(p, label, stats)]

    def _split(self, piece: _Piece, max_tokens: int, stats: RouteStats) -> list[_Piece]:
        """`split_text` pieces of at most `max_tokens` tokens (checked: each round must shrink them)."""
        stats.splits += 1
        texts = split_text(piece.text, max_tokens, self.on_unknown)
        pieces = [
            replace(
                piece, key=piece.key + (j,), text=t, ids=tuple(text_to_ids(t, self.on_unknown)), engine=-1
            )
            for j, t in enumerate(texts)
        ]
        if any(len(p.ids) > max_tokens for p in pieces):
            raise EngineError(
                f"could not split {piece.text[:60]!r} into pieces of at most {max_tokens} tokens"
            )
        return pieces

    # ---- running

    def start_batch(self, k: int, batch: Sequence[_Piece]) -> Callable[[], tuple[list, dict]]:
        """One call of engine `k`, started: the call is submitted (`Engine.submit`; an engine without
        `submit`, a wrapper, runs now) -> a function that waits for it and gives (per piece (mel,
        durations, wav) on the CPU, or its frame count if it overflowed; the call's stats dict).
        The call's latency runs to its results on the host from its submission, or from the results
        of the call before it where those came later (queued behind that call, it starts on the
        device when that call ends): the latencies of a run add up to its time in engine calls."""
        engine = next(e for e in self.sizes[k] if e.spec.batch >= len(batch))
        t0 = time.perf_counter()
        ids, alphas = [p.ids for p in batch], [p.alpha for p in batch]
        submit = getattr(engine, "submit", None)
        if submit is not None:
            wait = submit(ids, alphas)
        else:
            out = engine(ids, alphas, to_host=True)
            wait = lambda: out

        def results() -> tuple[list, dict]:
            return self._results(engine.spec, batch, wait(), t0)

        return results

    def _results(
        self, s: EngineSpec, batch: Sequence[_Piece], out: EngineOutput, t0: float
    ) -> tuple[list, dict]:
        """A call's output (`EngineOutput` on the host) -> `start_batch`'s results and stats."""
        now = time.perf_counter()
        latency, self._ready_at = now - max(t0, self._ready_at), now
        mel, frames, durations = out.mel, out.frames.tolist(), out.durations
        wav = out.wav  # None for a mel-only engine (`Engine.__call__` drops the graph's placeholder)
        keep_mel = self.keep_mel or wav is None
        # Copies, each of its piece's own samples: the engine reuses its host buffers once nothing of
        # them is held, and a slow client holding one piece holds no other piece's audio.
        results: list[int | tuple[torch.Tensor | None, torch.Tensor, torch.Tensor | None]] = []
        for i, (p, f) in enumerate(zip(batch, frames)):
            if f > s.max_out:
                results.append(f)
            else:
                m = mel[i, :f].clone() if keep_mel else None
                w = None if wav is None else wav[i, : f * HOP].clone()
                results.append((m, durations[i, : len(p.ids)].clone(), w))
        fitted = [(p, f) for p, f in zip(batch, frames) if f <= s.max_out]
        audio_s = sum(f for _, f in fitted) * HOP_S
        call = {
            "engine": s.name,
            "items": len(batch),
            "latency_s": latency,
            "audio_s": audio_s,
            "rtf": audio_s / latency if latency else None,
            "tokens": sum(len(p.ids) for p, _ in fitted),
            "token_slots": s.batch * s.max_in,
            "frames": sum(f for _, f in fitted),
            "frame_slots": s.batch * s.max_out,
            "overflowed": len(batch) - len(fitted),
        }
        return results, call


def join(parts: Sequence[Part]) -> Routed:
    """One text's pieces, in key order, end to end."""
    parts = sorted(parts, key=lambda p: p.key)
    if len(parts) == 1:
        p = parts[0]
        return Routed(p.mel, p.durations, [p.text], [p.engine], p.wav)
    wavs, mels = [p.wav for p in parts], [p.mel for p in parts]
    return Routed(
        mel=None if any(m is None for m in mels) else torch.cat(mels),
        durations=torch.cat([p.durations for p in parts]),
        pieces=[p.text for p in parts],
        engines=[p.engine for p in parts],
        wav=None if any(w is None for w in wavs) else torch.cat(wavs),
    )


# ---------------------------------------------------------------------------------------------
# Batching: one scheduler for the command line (run to the end at once) and the server (fed live)


@dataclass
class _Item:
    """A text in the scheduler: what is still pending or running, what is done but not handed out."""

    label: str
    outstanding: set[tuple[int, ...]] = field(default_factory=set)  # keys queued or running
    done: list[Part] = field(default_factory=list)  # finished, waiting for earlier pieces


class _Queue:
    """One engine's pending pieces, first by priority (`_Piece.priority` at the queue's `step`): a
    heap, so that a call takes its pieces in O(batch · log n). (A sort of the whole queue per call, as
    before, made a run of n texts O(n²): 1,000 texts on one engine spent 1.1 ms of host time per call
    in the scheduler alone, on our 2-core CPU; benchmarks/bench_router_host.py.) The earliest arrival,
    which `max_wait` reads, is a second heap whose taken entries are dropped when they reach its top.

    A new step (`rekey`) re-keys the heap in O(n), and only when it can change the order: pieces
    that all arrived at once are ordered by rank, then key, whatever the step, so such a queue (the
    command line's: every text at once) keeps its keys until a piece of another arrival joins it.
    (Re-keying every piece at every new step, as before, cost 2 ms of host time per call on the
    command line's 1,000 texts, where noisy call times moved the step every third call.)"""

    _order = itertools.count()  # ties in priority (none expected) never compare two pieces

    def __init__(self, step: float, pieces: Iterable[_Piece] = ()):
        self.step = self._keyed = step  # the scheduler's step; the one the heap's keys were made with
        self._heap: list[tuple[tuple, int, _Piece]] = []
        self._arrivals: list[tuple[float, int]] = []
        self._queued: set[int] = set()
        self._sinces: Counter[float] = Counter()  # queued pieces per arrival time
        for p in pieces:
            self.push(p)

    def __len__(self) -> int:
        return len(self._heap)

    def __iter__(self) -> Iterator[_Piece]:
        return (p for _, _, p in self._heap)

    def push(self, piece: _Piece) -> None:
        if self._keyed != self.step and piece.since not in self._sinces:
            self._rekey()
        n = next(self._order)
        heapq.heappush(self._heap, (piece.priority(self._keyed), n, piece))
        heapq.heappush(self._arrivals, (piece.since, n))
        self._queued.add(n)
        self._sinces[piece.since] += 1

    def rekey(self, step: float) -> None:
        """The scheduler's new step: the heap re-keyed now where the order depends on it."""
        self.step = step
        if len(self._sinces) > 1:
            self._rekey()

    def _rekey(self) -> None:
        self._keyed = self.step
        self._heap = [(p.priority(self.step), n, p) for _, n, p in self._heap]
        heapq.heapify(self._heap)

    def first(self) -> tuple:
        """The priority of the piece the next call takes first (queue not empty), at the current step."""
        return self._heap[0][2].priority(self.step)

    def earliest(self) -> float:
        """The earliest `since` of the queued pieces (queue not empty)."""
        while self._arrivals[0][1] not in self._queued:
            heapq.heappop(self._arrivals)
        return self._arrivals[0][0]

    def take(self, n: int) -> list[_Piece]:
        """Up to n pieces, first by priority, out of the queue."""
        out = [heapq.heappop(self._heap) for _ in range(min(n, len(self._heap)))]
        self._queued.difference_update(k for _, k, _ in out)
        for _, _, p in out:
            self._sinces[p.since] -= 1
            if not self._sinces[p.since]:
                del self._sinces[p.since]
        return [p for _, _, p in out]


class Batch(NamedTuple):
    engine: int  # index into Router.engines
    pieces: list[_Piece]


class Scheduler:
    """Pending pieces per engine; which call runs next; results back to their texts in order.

    Not thread-safe: `fastspeech.batcher.Batcher` holds a lock around `add`, `cancel`, `next_batch`
    and `finish`, and calls `start` and its wait (the engine call) outside it, on its one worker
    thread, with calls in flight as `Router.depth` says.
    Events from `finish`, per item: a list of `Part`s ready in speaking order (the earlier pieces
    all handed out already), `None` when the item is complete, or the `FastSpeechError` that failed
    it (that item only: its other pieces are dropped; the other items of the call carry on).
    """

    def __init__(self, router: Router, max_batch: int | None = None):
        self.router = router
        self.caps = [min(e.spec.batch, max_batch or e.spec.batch) for e in router.engines]
        self.queues = [_Queue(RANK_DELAY) for _ in router.engines]
        self.items: dict[int, _Item] = {}
        self.stats = RouteStats()
        # One call's latency, a running mean (`finish`; the first call's own latency at first): a
        # queued text's later pieces count this much later per piece, so a text arriving t seconds
        # after a long one goes before the long one's pieces from about t / rank_delay on, i.e. right
        # after the calls that were already due. `_step` is the value the queues order by
        # (`_Queue.step`); it follows the mean when that moves more than 1.5x away from it.
        self.rank_delay = self._step = RANK_DELAY
        self._timed = 0
        # Each shape's engines by batch size (`Router.sizes`), for the lane a call runs on (`lane`)
        self._sizes = getattr(router, "sizes", None) or [[e] for e in router.engines]

    def add(
        self,
        item: int,
        text: str,
        ids: Sequence[int] | None = None,
        alpha: float = 1.0,
        label: str = "text",
        since: float = 0.0,
        sentences: bool = False,
    ) -> int:
        """Queue a text as item `item` (unique among queued items) -> its number of pieces so far.

        Raises `TextError`/`EngineError` (nothing queued) for text that cannot be encoded or placed.
        """
        if item in self.items:
            raise ValueError(f"item {item} is queued already")
        on_unknown = self.router.on_unknown
        chunks = split_sentences(text) if sentences else [text]
        roots = None
        if len(chunks) > 1:  # each sentence encoded once; the whole text only when one fails
            try:
                roots = [
                    _Piece((item, j), c, tuple(text_to_ids(c, on_unknown)), -1, float(alpha), since)
                    for j, c in enumerate(chunks)
                ]
            except TextError:  # a "sentence" with nothing to say (quotes alone), or bad text: the whole text
                pass
        if roots is None:
            ids = tuple(ids) if ids is not None else tuple(text_to_ids(text, on_unknown))  # checks the text
            roots = [_Piece((item,), text, ids, -1, float(alpha), since)]
        placed = [q for p in roots for q in self.router.place(p, label, self.stats)]
        placed = [replace(p, rank=r) for r, p in enumerate(placed)]
        self.items[item] = _Item(label, {p.key for p in placed})
        for p in placed:
            self.queues[p.engine].push(p)
        return len(placed)

    def _time_call(self, latency: float) -> None:
        """A call's latency into `rank_delay`; the queues re-keyed when it moved far from their step."""
        self._timed += 1
        self.rank_delay = latency if self._timed == 1 else self.rank_delay + 0.2 * (latency - self.rank_delay)
        if self.rank_delay > 0 and not 2 / 3 <= self.rank_delay / self._step <= 1.5:
            self._step = self.rank_delay
            for q in self.queues:
                q.rekey(self._step)

    def cancel(self, item: int) -> int:
        """Drop `item`: its queued pieces leave the queues; results of running ones are discarded.
        -> the number of queued pieces dropped."""
        if self.items.pop(item, None) is None:
            return 0
        dropped = 0
        for k, q in enumerate(self.queues):
            keep = [p for p in q if p.key[0] != item]
            if len(keep) < len(q):
                dropped += len(q) - len(keep)
                self.queues[k] = _Queue(self._step, keep)
        return dropped

    def pending(self) -> int:
        """Pieces waiting in the queues (not the running call)."""
        return sum(len(q) for q in self.queues)

    def batches_left(self) -> int:
        """Calls the queued pieces need at the least."""
        return sum(-(-len(q) // cap) for q, cap in zip(self.queues, self.caps))

    def ready(
        self, now: float = 0.0, max_wait: float = 0.0, busy: Collection = (), elsewhere_only: bool = False
    ) -> tuple[tuple, int] | None:
        """(priority, engine) of the bucket the next call should take, or None when none is ready.

        Ready: a bucket with a full batch, or one of whose pieces has waited `max_wait`. Of those,
        the one holding the first piece by priority (`_Piece.priority`). `busy`: the lanes (streams)
        of calls still running; the first ready bucket on another lane goes before them, where there
        is one, so that the calls run at once on the device instead of one after the other. With
        `elsewhere_only`, a bucket on a busy lane is not ready.
        """
        ready = []
        for k, q in enumerate(self.queues):
            if q and (len(q) >= self.caps[k] or now - q.earliest() >= max_wait):
                ready.append((q.first(), k))
        if busy:
            elsewhere = [r for r in ready if self.lane(r[1], len(self.queues[r[1]])) not in busy]
            ready = elsewhere if elsewhere or elsewhere_only else ready
        return min(ready) if ready else None

    def lane(self, k: int, pieces: int) -> object:
        """The lane (`pipeline.set_lanes`: the engine's stream; None: the caller's) a call of up to a
        batch of `pieces` of bucket `k` runs on: that of the smallest engine of the shape holding it,
        as `Router.start_batch` picks."""
        n = min(pieces, self.caps[k])
        return getattr(next(e for e in self._sizes[k] if e.spec.batch >= n), "stream", None)

    def take(self, k: int) -> Batch:
        """Up to a batch of engine `k`'s queued pieces, first by priority, out of the queue."""
        return Batch(k, self.queues[k].take(self.caps[k]))

    def next_batch(
        self, now: float = 0.0, max_wait: float = 0.0, busy: Collection = (), elsewhere_only: bool = False
    ) -> Batch | None:
        """The next call (`ready`, then `take`), or None when no bucket is ready yet (see `wake_at`)."""
        ready = self.ready(now, max_wait, busy, elsewhere_only)
        return None if ready is None else self.take(ready[1])

    def wake_at(self, max_wait: float) -> float | None:
        """When the longest-waiting queued piece's wait runs out (None: nothing queued)."""
        heads = [q.earliest() for q in self.queues if q]
        return min(heads) + max_wait if heads else None

    def execute(self, batch: Batch) -> tuple[list[object], list[dict]]:
        """Run one call -> (per piece its result (`Router.start_batch`) or the error that piece alone
        raised; the calls' stats). A call that fails is run again one piece at a time, so one bad
        piece fails only its own item. Touches no scheduler state (the worker runs it unlocked)."""
        return self.start(batch)()

    def start(self, batch: Batch) -> Callable[[], tuple[list[object], list[dict]]]:
        """`execute`, started: the call is submitted now; the returned function waits for it and
        gives what `execute` gives (a failure, when submitted or when waited for, as there)."""
        try:
            results = self.router.start_batch(batch.engine, batch.pieces)
        except Exception as exc:  # noqa: BLE001 - isolated in `_failed`, one piece at a time
            return lambda exc=exc: self._failed(batch, exc)

        def wait() -> tuple[list[object], list[dict]]:
            try:
                done, call = results()
            except Exception as exc:  # noqa: BLE001 - as above
                return self._failed(batch, exc)
            return list(done), [call]

        return wait

    def _failed(self, batch: Batch, exc: Exception) -> tuple[list[object], list[dict]]:
        """A call that raised `exc` -> the error for its one piece, or its pieces run again one at a
        time (`execute`)."""
        if len(batch.pieces) == 1:
            return [exc], []
        log.warning(
            "an engine call of %d pieces failed (%s); running them one at a time", len(batch.pieces), exc
        )
        results, calls = [], []
        for p in batch.pieces:
            one, call = self.execute(Batch(batch.engine, [p]))
            results += one
            calls += call
        return results, calls

    def finish(
        self, batch: Batch, executed: tuple[list[object], list[dict]]
    ) -> list[tuple[int, list[Part] | None | Exception]]:
        """Take one call's results (`execute`) back: deliverable parts, overflowed pieces queued
        again, failures -> events (see the class docstring)."""
        results, calls = executed
        self.stats.calls += calls
        for call in calls:
            self._time_call(call["latency_s"])
        events: list[tuple[int, list[Part] | None | Exception]] = []
        touched: dict[int, None] = {}
        # The engine that ran the call (the smallest of the shape that held it), else the shape's largest.
        name = calls[0]["engine"] if len(calls) == 1 else self.router.engines[batch.engine].spec.name
        for piece, result in zip(batch.pieces, results):
            item = self.items.get(piece.key[0])
            if item is None:  # cancelled, or failed by an earlier piece
                continue
            item.outstanding.discard(piece.key)
            try:
                if isinstance(result, Exception):
                    raise result
                if isinstance(result, int):  # overflowed: predicted `result` frames
                    again = self.router.overflow(piece, result, item.label, self.stats)
                    item.outstanding.update(p.key for p in again)
                    for p in again:
                        self.queues[p.engine].push(p)
                else:
                    item.done.append(Part(piece.key, piece.text, name, *result))
                touched[piece.key[0]] = None
            except Exception as exc:
                self.cancel(piece.key[0])
                touched.pop(piece.key[0], None)
                if not isinstance(exc, FastSpeechError):
                    log.exception("%s failed", item.label)
                    exc = SynthesisFailed(f"{item.label}: synthesis failed ({type(exc).__name__}: {exc})")
                events.append((piece.key[0], exc))
        for i in touched:
            item = self.items[i]
            ready = _deliverable(item)
            if ready:
                events.append((i, ready))
            if not item.outstanding and not item.done:
                del self.items[i]
                events.append((i, None))
        return events


def _deliverable(item: _Item) -> list[Part]:
    """The done parts that no queued or running piece precedes, in speaking order (taken out)."""
    item.done.sort(key=lambda p: p.key)
    first = min(item.outstanding, default=None)
    n = 0
    while n < len(item.done) and (first is None or item.done[n].key < first):
        n += 1
    ready, item.done = item.done[:n], item.done[n:]
    return ready


def check_lengths(ids: Sequence[Sequence[int]], max_in: int, labels: Sequence[str], largest: str) -> None:
    """Raise `EngineError` for the first text longer than `max_in` tokens (the set's largest engine)."""
    for one, label in zip(ids, labels):
        if len(one) > max_in:
            raise EngineError(
                f"{label} is {len(one)} tokens, longer than the largest engine of the set takes "
                f"({max_in}, {largest}); set engine_set.split=true to split it at sentence boundaries, "
                "or add a larger engine"
            )
