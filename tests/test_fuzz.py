"""Fuzz: random texts through the frontend and the router (model=tiny, eager engines on the CPU).

Every text ends one of two ways: a `FastSpeechError` subclass with a one-line message (no crash, no
other exception), or a result whose mel is exactly as long as the sum of its durations, with one
duration per token of the pieces that ran (nothing lost, nothing cropped). The test runs a few
hundred texts.

The engines are tiny (8/32, 16/64, 32/128 at batch 4: 4 frames per token, while the model predicts
2-5), so rerouting on frame overflow and splitting happen often. A quarter of the batches run with
splitting off, half with on_unknown=drop. `python tests/test_fuzz.py 10000 1` is the full run (about
10 minutes on 2 busy CPU cores) and prints the outcomes by kind of text.
"""

from __future__ import annotations

import os
import random
import sys
import time
from collections import Counter
from pathlib import Path

import torch

if __name__ == "__main__":  # run as a script: the repository root is not on the path
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from helpers import random_model

from fastspeech.engine import EngineSpec, load_or_build
from fastspeech.errors import FastSpeechError
from fastspeech.router import Router
from fastspeech.text import text_to_ids

SIZES = ((8, 32), (16, 64), (32, 128))
WORDS = """the a of and to in is was he she it that for on with as his her at by from they we you this had
not are but be or one all were when there can an which their said if will would what so up out about who
them then some into time could two more first see like him now over my than Dr. Mr. Mrs. St. Capt. no.
etc. e.g. mustn't o'clock rock-and-roll U.S.A. NASA""".split()  # noqa: SIM905 - a word list reads better as text
WORD_PUNCT = list(".,;:!?-'()") + ["...", " - ", "--"]  # all speakable
PUNCT = WORD_PUNCT + list('"[]')
WHITESPACE = [" ", "\t", "\n", "\r", "\u00a0", "\u2003", "\u3000", "\u200b", "\x0b", "\x0c"]
BRACES = [
    "{HH AH0 L OW1}",
    "{",
    "}",
    "{}",
    "{ }",
    "{XX YY}",
    "{hh ah0}",
    "{{HH}}",
    "{HH AH0",
    "AH0}",
    "{W ER1 L D}",
    "a{HH}b",
    "{" + " ".join(["AH0"] * 70) + "}",
]
LETTERS = (
    "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
    "éèàçñüößøåæœÉÀ"
    "абвгдежзийклмнопрстуфхцчшщыэюя"
    "αβγδεζηθλμπσω"
    "中文字日本語한국어"
    "😀🎉👍🏽"
    "\u0301\u200d\ufeff"
)


def _words(r: random.Random, n_chars: int) -> str:
    out: list[str] = []
    while sum(len(w) + 1 for w in out) < n_chars:
        w = r.choice(WORDS)
        if r.random() < 0.15:
            w += r.choice(WORD_PUNCT)
        if r.random() < 0.05:
            w = str(r.randint(0, 10 ** r.randint(1, 12)))
        out.append(w)
    return " ".join(out)


def random_text(r: random.Random) -> tuple[str, str]:
    """(kind, text): one of the shapes of input a user (or a broken upstream) can send."""
    kind = r.choice(
        [
            "empty",
            "whitespace",
            "unicode",
            "mixed",
            "digits",
            "braces",
            "words",
            "words",
            "words",
            "long",
            "long",
            "punct",
            "one_word",
        ]
    )
    if kind == "empty":
        return kind, ""
    if kind == "whitespace":
        return kind, "".join(r.choice(WHITESPACE) for _ in range(r.randint(1, 20)))
    if kind == "unicode":  # any code point, lone surrogates and controls included
        return kind, "".join(chr(r.randint(0, 0x10FFFF)) for _ in range(r.randint(1, 40)))
    if kind == "mixed":
        pool = LETTERS + "".join(PUNCT) + "0123456789 $%£€&@#*+=/<>|~^_`"
        return kind, "".join(r.choice(pool) for _ in range(r.randint(1, 120)))
    if kind == "digits":
        parts = [
            r.choice(["", "$", "£", "-", "#"])
            + "".join(r.choice("0123456789,.") for _ in range(r.randint(1, 40)))
            + r.choice(["", "%", "st", "nd", "rd", "th", "s", "am", "pm"])
            for _ in range(r.randint(1, 6))
        ]
        return kind, " ".join(parts)
    if kind == "braces":
        return kind, " ".join(r.choice(BRACES + WORDS) for _ in range(r.randint(1, 12)))
    if kind == "words":
        return kind, _words(r, r.randint(1, 200))
    if kind == "long":
        text = _words(r, r.randint(300, 3000))
        return kind, text.replace(".", "") if r.random() < 0.3 else text  # sometimes no sentence ends
    if kind == "punct":
        return kind, "".join(r.choice(PUNCT) for _ in range(r.randint(1, 30)))
    return kind, r.choice(["a", "7", "A."]) * r.randint(1, 400)  # one long word, letters or a number


def make_routers(tmp_path) -> dict[tuple[bool, str], Router]:
    model = random_model(seed=0)
    engines = [
        load_or_build(model, EngineSpec(batch=4, max_in=i, max_out=o), tmp_path, "cpu") for i, o in SIZES
    ]
    return {
        (split, unk): Router(engines, split=split, on_unknown=unk, progress=False)
        for split in (True, False)
        for unk in ("error", "drop")
    }


def check_error(exc: BaseException, text: str, failures: list[str]) -> str:
    """A clear error: our exception family, one non-empty line. -> its type name."""
    if not isinstance(exc, FastSpeechError):
        failures.append(f"crash {type(exc).__name__}: {exc!r} on {text[:80]!r}")
    elif not str(exc).strip() or "\n" in str(exc):
        failures.append(f"unclear message {str(exc)!r} on {text[:80]!r}")
    return type(exc).__name__


def check_result(routed, text: str, ids: list[int], on_unknown: str, failures: list[str]) -> None:
    """Nothing lost: len(mel) == sum(durations), one duration per token of the pieces that ran."""
    tokens = (
        len(ids) if routed.pieces == [text] else sum(len(text_to_ids(p, on_unknown)) for p in routed.pieces)
    )
    problems = []
    if routed.frames != int(routed.durations.sum()):
        problems.append(f"mel has {routed.frames} frames, durations sum to {int(routed.durations.sum())}")
    if len(routed.durations) != tokens:
        problems.append(f"{len(routed.durations)} durations for {tokens} tokens")
    if routed.mel.ndim != 2 or routed.mel.shape[1] != 80 or not torch.isfinite(routed.mel).all():
        problems.append(f"bad mel {tuple(routed.mel.shape)}")
    if problems:
        failures.append(f"{'; '.join(problems)} on {text[:80]!r}")


def fuzz(routers: dict, n: int, seed: int, chunk: int = 12) -> tuple[Counter, list[str]]:
    """-> (counts of (kind of text, outcome), failures); outcome: "ok", "ok, split" or where and
    which error. Texts go through in chunks, as the lines of a file would."""
    r = random.Random(seed)
    outcomes: Counter = Counter()
    failures: list[str] = []
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny matmuls: threads only add waiting on a busy machine
    try:
        _fuzz_chunks(routers, n, r, chunk, outcomes, failures)
    finally:
        torch.set_num_threads(threads)
    return outcomes, failures


def _fuzz_chunks(routers, n, r, chunk, outcomes, failures) -> None:
    for start in range(0, n, chunk):
        split, on_unknown = r.random() >= 0.25, r.choice(["error", "drop"])
        router = routers[(split, on_unknown)]
        encoded = []
        for _ in range(min(chunk, n - start)):
            kind, text = random_text(r)
            try:
                encoded.append((kind, text, text_to_ids(text, on_unknown)))
            except Exception as exc:  # noqa: BLE001 - the fuzz checks what kind it is
                outcomes[kind, f"frontend {check_error(exc, text, failures)}"] += 1
        if not encoded:
            continue
        try:
            results = list(zip(encoded, router([e[1] for e in encoded], [e[2] for e in encoded])[0]))
        except Exception:  # noqa: BLE001 - one text failed: run them one by one to see which
            results = []
            for kind, text, ids in encoded:
                try:
                    results.append(((kind, text, ids), router([text], [ids])[0][0]))
                except Exception as exc:  # noqa: BLE001
                    error = check_error(exc, text, failures)
                    outcomes[kind, f"router {error}, split {'on' if split else 'off'}"] += 1
        for (kind, text, ids), routed in results:
            check_result(routed, text, ids, on_unknown, failures)
            outcomes[kind, "ok, split" if len(routed.pieces) > 1 else "ok"] += 1


def by_outcome(outcomes: Counter) -> Counter:
    totals: Counter = Counter()
    for (_, outcome), count in outcomes.items():
        totals[outcome] += count
    return totals


def test_fuzz_frontend_and_router(tmp_path):
    """120 texts (~10 s); FUZZ_N=10000 FUZZ_SEED=1 for the full run (or the script, which prints a summary)."""
    n, seed = int(os.environ.get("FUZZ_N", "120")), int(os.environ.get("FUZZ_SEED", "0"))
    outcomes, failures = fuzz(make_routers(tmp_path), n=n, seed=seed)
    assert not failures, "\n".join(failures[:20])
    totals = by_outcome(outcomes)
    assert sum(totals.values()) == n
    # Every path was taken: successes, split texts, frontend errors, and too-long refusals (split off);
    # with splitting on, every text the frontend accepts is spoken.
    assert totals["ok"] and totals["ok, split"] and totals["frontend TextError"]
    assert totals["router EngineError, split off"] and not totals["router EngineError, split on"]


if __name__ == "__main__":  # python tests/test_fuzz.py [N] [SEED]: the full run, with a summary
    import logging
    import tempfile

    logging.basicConfig(level=logging.ERROR)
    n, seed = (
        (int(sys.argv[1]) if len(sys.argv) > 1 else 10_000),
        (int(sys.argv[2]) if len(sys.argv) > 2 else 1),
    )
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        outcomes, failures = fuzz(make_routers(tmp), n=n, seed=seed)
    print(f"{n} texts (seed {seed}) in {time.perf_counter() - t0:.0f} s")
    for outcome, count in by_outcome(outcomes).most_common():
        print(f"  {outcome:32s} {count}")
    print("by kind of text:")
    for (kind, outcome), count in sorted(outcomes.items()):
        print(f"  {kind:10s} {outcome:32s} {count}")
    print(f"failures: {len(failures)}")
    for f in failures[:50]:
        print("  " + f)
    sys.exit(1 if failures else 0)
