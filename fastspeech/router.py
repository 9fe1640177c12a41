"""A multi-engine set: each text runs on the smallest engine that holds it; nothing is ever cropped.

The seed's experimental multi-engine mode picked, per batch, the first engine whose max input fit
the batch's longest text, and silently cropped input and mel that did not fit. Here, per text:

1. Input: the smallest engine (by max input, then max output) whose `max_in` holds its tokens. A
   text longer than the largest engine is cut at sentence, then clause, then word boundaries
   (`fastspeech.text.split_text`) into pieces that each fit, or, with `split=False`, refused with
   an `EngineError`.
2. Output: an engine reports the untruncated predicted length (`EngineOutput.frames`). When it is
   more than the engine's `max_out`, the text runs again on the smallest engine whose `max_in` and
   `max_out` both hold it; when no engine's output does, the text is split (into pieces of about
   `max_out / frames` of its tokens, and again if a piece still overflows) or refused.
3. The pieces of one text are joined in speaking order: mels end to end, durations concatenated, so
   `len(mel) == durations.sum()` for every result.

Batching: the texts (pieces) for one engine are sorted longest first and run in calls of up to the
engine's batch; the engine pads each call to its fixed shape. Results come back in input order.

The engines of a set share one copy of the weights (the pipeline casts the model once; see
`pipeline.open_engine_set`) and, with Inductor CUDA graphs, one graph memory pool: engines never run
concurrently and `Engine.__call__` copies its outputs out before the next call.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from typing import NamedTuple

import torch

from fastspeech.engine import Engine
from fastspeech.errors import EngineError
from fastspeech.text import split_text, text_to_ids

log = logging.getLogger(__name__)

HOP_S = 256 / 22050  # seconds of audio per mel frame (DLE's hop and sample rate)


@dataclass
class Routed:
    """One input text, synthesized: the mels of its pieces joined in order.

    mel (To, num_mels) float32 on the CPU; durations (sum of the pieces' Ti,) int64 frames per token;
    len(mel) == durations.sum(). `pieces` are the texts that ran (one unless the text was split),
    `engines` the engine that produced each.
    """

    mel: torch.Tensor
    durations: torch.Tensor
    pieces: list[str]
    engines: list[str]

    @property
    def frames(self) -> int:
        return len(self.mel)


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
        slots = self._sum("token_slots") + self._sum("frame_slots")
        return 1 - (self._sum("tokens") + self._sum("frames")) / slots if slots else 0.0

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


@dataclass(frozen=True)
class _Piece:
    """A text (or a piece of one) on its way through the set."""

    key: tuple[int, ...]  # (item, piece, sub-piece, ...): sorted keys are speaking order
    text: str
    ids: tuple[int, ...]
    engine: int  # index into Router.engines


class _Part(NamedTuple):
    """A piece's result: mel (frames, num_mels) and durations (Ti,) on the CPU."""

    key: tuple[int, ...]
    text: str
    engine: str
    mel: torch.Tensor
    durations: torch.Tensor


class Router:
    """Runs texts on a set of engines (see the module docstring). Engines: same precision, backend."""

    def __init__(
        self, engines: Sequence[Engine], split: bool = True, on_unknown: str = "error", progress: bool = True
    ):
        if not engines:
            raise EngineError("an engine set needs at least one engine")
        kinds = {(e.spec.precision, e.spec.backend, str(e.device)) for e in engines}
        if len(kinds) > 1:
            raise EngineError(
                f"the engines of a set must share precision, backend and device (they share weights), "
                f"got {sorted(kinds)}"
            )
        self.engines = sorted(engines, key=lambda e: (e.spec.max_in, e.spec.max_out))
        self.split, self.on_unknown, self.progress = split, on_unknown, progress
        self.max_in = self.engines[-1].spec.max_in
        self.largest_out = max(self.engines, key=lambda e: (e.spec.max_out, e.spec.max_in))

    def __call__(
        self,
        texts: Sequence[str],
        ids: Sequence[Sequence[int]] | None = None,
        alpha: float = 1.0,
        labels: Sequence[str] | None = None,
    ) -> tuple[list[Routed], RouteStats]:
        """Synthesize `texts` (token `ids` given, or encoded here) -> (one `Routed` per text, stats).

        `labels` name the texts in errors ("line 3"). Raises `EngineError` for a text that fits no
        engine when splitting is off (or a single token longer than every engine's output).
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
        stats = RouteStats()
        pending = []
        for i, (text, one) in enumerate(zip(texts, ids)):
            pending += self._place(_Piece((i,), text, tuple(one), -1), labels[i], stats)
        done: dict[int, list[_Part]] = defaultdict(list)  # item -> its pieces' results
        with tqdm(
            total=0, desc="synthesizing", unit="batch", disable=not self.progress or len(pending) < 2
        ) as bar:
            while pending:  # a round: every pending piece once; overflowed pieces go to the next round
                batches = self._batches(pending)
                bar.total += len(batches)
                pending = []
                for engine, batch in batches:
                    for piece, result in zip(batch, self._run(engine, batch, alpha, stats)):
                        if isinstance(result, int):  # overflowed: predicted `result` frames
                            pending += self._overflow(piece, result, labels[piece.key[0]], stats)
                        else:
                            done[piece.key[0]].append(_Part(piece.key, piece.text, engine.spec.name, *result))
                    bar.update()
        return [self._join(sorted(done[i], key=lambda p: p.key)) for i in range(len(texts))], stats

    # ---- placing pieces on engines

    def _place(self, piece: _Piece, label: str, stats: RouteStats) -> list[_Piece]:
        """The smallest engine whose input holds the piece; a piece too long for all is split
        (`__call__` has refused such pieces already when splitting is off)."""
        n = len(piece.ids)
        if n == 0:
            raise EngineError(f"{label} has no tokens; give text with something to say")
        for k, e in enumerate(self.engines):
            if e.spec.max_in >= n:
                return [replace(piece, engine=k)]
        pieces = self._split(piece, self.max_in, stats)
        log.info(
            "%s: %d tokens, more than the largest engine takes (%d): split into %d pieces",
            label,
            n,
            self.max_in,
            len(pieces),
        )
        return [q for p in pieces for q in self._place(p, label, stats)]

    def _overflow(self, piece: _Piece, frames: int, label: str, stats: RouteStats) -> list[_Piece]:
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
                f"engine of the set takes ({largest.max_out} frames, {largest.name}); lower alpha"
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
        return [q for p in pieces for q in self._place(p, label, stats)]

    def _split(self, piece: _Piece, max_tokens: int, stats: RouteStats) -> list[_Piece]:
        """`split_text` pieces of at most `max_tokens` tokens (checked: each round must shrink them)."""
        stats.splits += 1
        texts = split_text(piece.text, max_tokens, self.on_unknown)
        pieces = [
            _Piece(piece.key + (j,), t, tuple(text_to_ids(t, self.on_unknown)), -1)
            for j, t in enumerate(texts)
        ]
        if any(len(p.ids) > max_tokens for p in pieces):
            raise EngineError(
                f"could not split {piece.text[:60]!r} into pieces of at most {max_tokens} tokens"
            )
        return pieces

    def _batches(self, pending: list[_Piece]) -> list[tuple[Engine, list[_Piece]]]:
        """Bucket per engine (smallest first), longest first within a bucket, chunks of the engine batch."""
        buckets: dict[int, list[_Piece]] = defaultdict(list)
        for p in pending:
            buckets[p.engine].append(p)
        out = []
        for k in sorted(buckets):
            engine = self.engines[k]
            ordered = sorted(buckets[k], key=lambda p: len(p.ids), reverse=True)
            out += [
                (engine, ordered[i : i + engine.spec.batch])
                for i in range(0, len(ordered), engine.spec.batch)
            ]
        return out

    # ---- running and joining

    def _run(
        self, engine: Engine, batch: list[_Piece], alpha: float, stats: RouteStats
    ) -> list[int | tuple[torch.Tensor, torch.Tensor]]:
        """One engine call -> per piece (mel, durations) on the CPU, or its frame count if it overflowed."""
        s = engine.spec
        t0 = time.perf_counter()
        out = engine([p.ids for p in batch], alpha, to_host=True)  # waits for the GPU
        mel, frames, durations = out.mel, out.frames.tolist(), out.durations
        latency = time.perf_counter() - t0
        results: list[int | tuple[torch.Tensor, torch.Tensor]] = []
        for i, (p, f) in enumerate(zip(batch, frames)):
            results.append(f if f > s.max_out else (mel[i, :f].clone(), durations[i, : len(p.ids)].clone()))
        fitted = [(p, f) for p, f in zip(batch, frames) if f <= s.max_out]
        audio_s = sum(f for _, f in fitted) * HOP_S
        stats.calls.append(
            {
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
        )
        return results

    @staticmethod
    def _join(parts: list[_Part]) -> Routed:
        """One text's pieces, in key order, end to end."""
        if len(parts) == 1:
            return Routed(parts[0].mel, parts[0].durations, [parts[0].text], [parts[0].engine])
        return Routed(
            mel=torch.cat([p.mel for p in parts]),
            durations=torch.cat([p.durations for p in parts]),
            pieces=[p.text for p in parts],
            engines=[p.engine for p in parts],
        )


def check_lengths(ids: Sequence[Sequence[int]], max_in: int, labels: Sequence[str], largest: str) -> None:
    """Raise `EngineError` for the first text longer than `max_in` tokens (the set's largest engine)."""
    for one, label in zip(ids, labels):
        if len(one) > max_in:
            raise EngineError(
                f"{label} is {len(one)} tokens, longer than the largest engine of the set takes "
                f"({max_in}, {largest}); set engine_set.split=true to split it at sentence boundaries, "
                "or add a larger engine"
            )
