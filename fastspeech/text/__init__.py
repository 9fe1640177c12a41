"""Text -> token ids, compatible with DLE FastSpeech checkpoints.

The model is character based: text outside `{...}` is cleaned (`cleaners.english_cleaners`) and
mapped character by character; `{HH AH0 L OW1}` is space-separated ARPAbet, mapped to `@XX` ids.
No BOS/EOS is added (DLE added none).

Common symbols are spoken (`spoken.SPOKEN_SYMBOLS`: "50%" -> "fifty percent", quotes silent).
Unlike DLE, nothing else is dropped silently: with `on_unknown="error"` (the default) a character
that has no symbol and no reading (an emoji, a letter of a non-Latin script) raises `TextError`
naming it; with `on_unknown="drop"` it is dropped and a warning names it. `check_texts` encodes many
lines and reports every bad line in one error. `split_text` cuts long text into pieces that each
fit an engine's input length, so the router never crops. docs/text.md has the whole policy.
"""

import functools
import logging
import re
from collections.abc import Callable, Iterable, Sequence

from fastspeech.errors import TextError
from fastspeech.text.cleaners import ABBREVIATIONS, english_cleaners, unknown_positions
from fastspeech.text.symbols import ENCODABLE_CHARS, N_SYMBOLS, SYMBOL_TO_ID, symbols

__all__ = [
    "N_SYMBOLS",
    "check_texts",
    "clean_text",
    "ids_to_text",
    "split_sentences",
    "split_text",
    "symbols",
    "text_to_ids",
]

logger = logging.getLogger(__name__)

ON_UNKNOWN = ("error", "drop")

_BRACES_RE = re.compile(r"\{([^{}]*)\}")
_ARPABET_EXAMPLE = "{HH AH0 L OW1}"


def clean_text(text: str) -> str:
    """The text the model reads: `english_cleaners` outside `{...}`, ARPAbet kept in braces.

    For display and debugging: equals `ids_to_text(text_to_ids(text))`, but does not check for
    unknown characters (`text_to_ids` does).
    """
    cleaned = [(" ".join(s.split()), True) if a else (english_cleaners(s), False) for s, a in _segments(text)]
    return "".join("{" + s + "}" if arpabet else s for s, arpabet in _trim(cleaned)).replace("}{", " ")


def text_to_ids(text: str, on_unknown: str = "error") -> list[int]:
    """Token ids of `text`, in DLE's symbol table (values 1..147).

    Raises `TextError` for empty text, unbalanced braces, an unknown ARPAbet symbol, characters with
    no symbol (when `on_unknown="error"`), or text with nothing left to say after cleaning.
    """
    ids, dropped = _encode_checked(text, on_unknown)
    if dropped:
        logger.warning("dropped characters with no symbol: %s (on_unknown=drop)", _names(dropped))
    return ids


def check_texts(
    texts: Sequence[str], on_unknown: str = "error", line_numbers: Sequence[int] | None = None
) -> list[list[int]]:
    """Token ids of every text; all texts are checked before anything is raised.

    One `TextError` (one line) names every offending line: first every line with unknown
    characters and its characters as typed (when `on_unknown="error"`), e.g. "unknown characters:
    line 2: '你', '好'; line 5: '😀' — remove them or pass on_unknown=drop", then any other problem
    (empty line, braces, ARPAbet) as "line 7: <the text_to_ids message>". Lines are numbered 1.. in
    order, or by `line_numbers` (a file's real line numbers when blank lines were skipped); a single
    text without `line_numbers` gets no "line 1:" prefix. At most 100 lines are named, then a count.
    With `on_unknown="drop"` one warning names every line that lost characters.
    """
    if on_unknown not in ON_UNKNOWN:
        raise TextError(f"on_unknown must be one of {', '.join(ON_UNKNOWN)}, got {on_unknown!r}")
    numbers = list(line_numbers) if line_numbers is not None else list(range(1, len(texts) + 1))
    if len(numbers) != len(texts):
        raise ValueError(f"{len(texts)} texts but {len(numbers)} line numbers")
    single = line_numbers is None and len(texts) == 1
    out: list[list[int]] = []
    unknown_lines: list[str] = []  # "line 2: '你', '好'"
    other_errors: list[str] = []  # "line 7: unbalanced braces ..."
    dropped_lines: list[str] = []
    for n, text in zip(numbers, texts):
        where = "" if single else f"line {n}: "
        try:
            unknown = _unknown_chars(text)
            if unknown and on_unknown == "error":
                unknown_lines.append(where + _names(unknown))
                continue
            ids, dropped = _encode_checked(text, on_unknown)
        except TextError as exc:
            other_errors.append(f"{where}{exc}")
            continue
        if dropped:
            dropped_lines.append(where + _names(dropped))
        out.append(ids)
    if dropped_lines:
        logger.warning("dropped characters with no symbol (on_unknown=drop): %s", _listed(dropped_lines))
    if unknown_lines or other_errors:
        parts = []
        if unknown_lines:
            parts.append(
                f"unknown characters: {_listed(unknown_lines)} — remove them or pass on_unknown=drop"
            )
        if other_errors:
            parts.append(_listed(other_errors))
        raise TextError("; ".join(parts))
    return out


def ids_to_text(ids: Iterable[int]) -> str:
    """Inverse of `text_to_ids` on cleaned text; ARPAbet comes back in braces, padding (0) is skipped."""
    out = []
    for i in map(int, ids):
        if i == 0:
            continue
        if not 0 < i < len(symbols):
            raise TextError(f"token id {i} is outside the symbol table (1..{len(symbols) - 1})")
        s = symbols[i]
        out.append("{" + s[1:] + "}" if s.startswith("@") else s)
    return "".join(out).replace("}{", " ")


def split_text(text: str, max_tokens: int, on_unknown: str = "error") -> list[str]:
    """Cut `text` into pieces that each encode to at most `max_tokens` ids.

    Cuts at sentence ends (. ! ?) first, then at clause marks (, ; :), then between words; pieces are
    packed greedily, so each is as long as fits. A single word still too long is cleaned and cut
    between the words of its reading ("1234567" -> "one million, ..."), then between letters (those
    pieces are cleaned text); an ARPAbet group is cut between phones. Every piece is non-empty, and
    the pieces joined with spaces say every word in order. Raises `TextError` as `text_to_ids` does
    (checked once, on the whole text); nothing is ever cropped.
    """
    if max_tokens < 1:
        raise ValueError(f"max_tokens must be at least 1, got {max_tokens}")
    ids, _ = _encode_checked(text, on_unknown)
    if len(ids) <= max_tokens:
        return [text.strip()]
    splitter = _Splitter(max_tokens, on_unknown)
    pieces = splitter.split(text, _SENTENCE)
    return [p for p in pieces if _encode(p, on_unknown)[0]]


# ---- encoding -------------------------------------------------------------------------------


def _segments(text: str) -> list[tuple[str, bool]]:
    """`text` as (part, is_arpabet) pairs, in order; braces must pair up and hold something."""
    parts, pos = [], 0
    for m in _BRACES_RE.finditer(text):
        parts += [(text[pos : m.start()], False), (m.group(1), True)]
        pos = m.end()
    parts.append((text[pos:], False))
    for part, arpabet in parts:
        if arpabet and not part.strip():
            raise TextError(
                f"empty braces {{}} in text {_preview(text)}; put ARPAbet inside, e.g. {_ARPABET_EXAMPLE}"
            )
        if not arpabet and ("{" in part or "}" in part):
            raise TextError(
                f"unbalanced braces in text {_preview(text)}; ARPAbet goes inside one pair of braces, "
                f"e.g. {_ARPABET_EXAMPLE}, and braces are not allowed elsewhere"
            )
    return parts


def _encode_checked(text: str, on_unknown: str) -> tuple[list[int], list[str]]:
    """`_encode`, refusing text that is empty before or after cleaning."""
    if not text or not text.strip():
        raise TextError("text is empty; give text=... or a non-empty line")
    ids, dropped = _encode(text, on_unknown)
    if not ids:
        raise TextError(f"text {_preview(text)} has nothing to say after cleaning; give words to speak")
    return ids, dropped


def _encode(text: str, on_unknown: str) -> tuple[list[int], list[str]]:
    """(ids, dropped characters); raises on unknown characters when on_unknown="error".

    Cached: splitting a long text encodes the same clauses many times over, and cleaning (number
    words through inflect) costs ~0.2 ms a sentence, as much as a whole engine call on the GPU.
    """
    ids, dropped = _encode_cached(text, on_unknown)
    return list(ids), list(dropped)


@functools.lru_cache(maxsize=8192)
def _encode_cached(text: str, on_unknown: str) -> tuple[tuple[int, ...], tuple[str, ...]]:
    ids, dropped = _encode_uncached(text, on_unknown)
    return tuple(ids), tuple(dropped)


def _encode_uncached(text: str, on_unknown: str) -> tuple[list[int], list[str]]:
    if on_unknown not in ON_UNKNOWN:
        raise TextError(f"on_unknown must be one of {', '.join(ON_UNKNOWN)}, got {on_unknown!r}")
    segments = _segments(text.strip())
    unknown = dict.fromkeys(_unknown_chars(text))  # ordered set, first appearance first
    if unknown and on_unknown == "error":
        raise _unknown_error(unknown)

    cleaned = []
    for part, arpabet in segments:
        if arpabet:
            cleaned.append((part, True))
            continue
        drop = set(unknown_positions(part))
        part = "".join(c for i, c in enumerate(part) if i not in drop)
        part = english_cleaners(part)
        # Safety net: anything cleaning produced that still has no symbol (should not happen).
        leftovers = [c for c in part if c not in ENCODABLE_CHARS]
        if leftovers:
            if on_unknown == "error":
                raise _unknown_error(dict.fromkeys(leftovers))
            unknown.update(dict.fromkeys(leftovers))
            part = "".join(c for c in part if c in ENCODABLE_CHARS)
        cleaned.append((part, False))

    ids: list[int] = []
    for part, arpabet in _trim(cleaned):
        ids += _arpabet_ids(part) if arpabet else [SYMBOL_TO_ID[c] for c in part]
    return ids, list(unknown)


def _unknown_chars(text: str) -> list[str]:
    """The characters of `text` (outside braces) that have no symbol and no reading, in order, once."""
    unknown: dict[str, None] = {}
    for part, arpabet in _segments(text.strip()):
        if not arpabet:
            unknown.update((part[i], None) for i in unknown_positions(part))
    return list(unknown)


def _arpabet_ids(group: str) -> list[int]:
    phones = group.split()
    bad = [p for p in phones if "@" + p not in SYMBOL_TO_ID]
    if bad:
        raise TextError(
            f"unknown ARPAbet symbol{'s' if len(bad) > 1 else ''} {_names(bad)} in {{{group}}}; use CMUdict "
            f"phones, upper case, vowels with stress 0/1/2, e.g. {_ARPABET_EXAMPLE}"
        )
    return [SYMBOL_TO_ID["@" + p] for p in phones]


def _trim(cleaned: list[tuple[str, bool]]) -> list[tuple[str, bool]]:
    """Drop whitespace at the very start and end of the cleaned text (it would only add silence)."""
    if cleaned and not cleaned[0][1]:
        cleaned[0] = (cleaned[0][0].lstrip(), False)
    if cleaned and not cleaned[-1][1]:
        cleaned[-1] = (cleaned[-1][0].rstrip(), False)
    return cleaned


def _unknown_error(unknown: dict[str, None]) -> TextError:
    problem = f"text contains characters with no symbol: {_names(unknown)}; remove them"
    return TextError(f"{problem} or set on_unknown=drop", for_client=problem)


def _names(chars: Iterable[str]) -> str:
    return ", ".join(repr(c) for c in chars)


def _listed(items: list[str], limit: int = 100) -> str:
    """'a; b; c', or the first `limit` and a count: one line, however many lines are bad."""
    if len(items) <= limit:
        return "; ".join(items)
    return "; ".join(items[:limit]) + f"; and {len(items) - limit} more lines ({len(items)} in all)"


def _preview(text: str, n: int = 60) -> str:
    return repr(text if len(text) <= n else text[: n - 3] + "...")


# ---- splitting ------------------------------------------------------------------------------

_WORD, _CLAUSE, _SENTENCE = 1, 2, 3
# A word: non-space characters, a {...} group counting as one (it may hold spaces).
_ATOM_RE = re.compile(r"(?:\{[^{}]*\}|[^\s{}])+")
_CLOSERS = "\"')]}\u00bb\u2019\u201d"  # quotes and brackets that may close a sentence
# Words whose period ends no sentence: the abbreviations the cleaners spell out ("Dr.", "Mr."...) and
# a few that precede another word in any case ("vs. Dr. Jones").
_NON_FINAL = [s for s, _ in ABBREVIATIONS] + ["vs", "cf", "approx", "e\\.g", "i\\.e"]
_ABBREVIATION_END_RE = re.compile(rf"\b(?:{'|'.join(_NON_FINAL)})\.$", re.IGNORECASE)


def _boundary(atom: str) -> int:
    """How strong a cut after this word is: after "end." a sentence, after "end," a clause."""
    core = atom.rstrip(_CLOSERS)
    if _ABBREVIATION_END_RE.search(core):  # "Dr. Smith" is one sentence
        return _WORD
    if core.endswith((".", "!", "?")):
        return _SENTENCE
    if core.endswith((",", ";", ":")):
        return _CLAUSE
    return _WORD


def _units(text: str, level: int) -> list[str]:
    """`text` cut after every word whose boundary is >= level (ARPAbet groups stay whole). A period
    followed by a word in lower case ends no sentence: "e.g. the U.S.A. today", "at 3 p.m. tomorrow",
    "etc. are here" are one sentence each."""
    units, words = [], []
    atoms = _ATOM_RE.findall(text)
    for i, atom in enumerate(atoms):
        words.append(atom)
        boundary = _boundary(atom)
        period = boundary == _SENTENCE and atom.rstrip(_CLOSERS).endswith(".")
        if period and i + 1 < len(atoms) and atoms[i + 1][0].islower():
            boundary = _WORD
        if boundary >= level:
            units.append(" ".join(words))
            words = []
    if words:
        units.append(" ".join(words))
    return units


def split_sentences(text: str) -> list[str]:
    """`text` cut after every sentence end, as `split_text` cuts first (. ! ? with closing quotes or
    brackets; not "Dr.", "vs.", "e.g.", nor a period before a word in lower case), whatever the length;
    the server speaks these one by one."""
    return _units(text, _SENTENCE) or [text]


class _Splitter:
    """Greedy packing, one level of boundary at a time; what does not fit goes a level down."""

    def __init__(self, max_tokens: int, on_unknown: str):
        self.max_tokens = max_tokens
        self.on_unknown = on_unknown

    def fits(self, piece: str) -> bool:
        return len(_encode(piece, self.on_unknown)[0]) <= self.max_tokens

    def pack(self, units: list[str], too_long: Callable[[str], list[str]], sep: str = " ") -> list[str]:
        pieces, current = [], ""
        for unit in units:
            candidate = current + sep + unit if current else unit
            if self.fits(candidate):
                current = candidate
                continue
            if current:
                pieces.append(current)
                current = ""
            if self.fits(unit):
                current = unit
            else:
                pieces += too_long(unit)
        if current:
            pieces.append(current)
        return pieces

    def split(self, text: str, level: int) -> list[str]:
        """Cut `text` at boundaries >= level and pack the units."""
        units = _units(text, level)
        return self.pack(units, lambda u: self.split(u, level - 1) if level > _WORD else self.split_word(u))

    def split_word(self, word: str) -> list[str]:
        if "{" in word:
            # Text and ARPAbet glued together ("a{HH AH0}b") are encoded part by part anyway.
            parts = ["{" + s + "}" if arpabet else s for s, arpabet in _segments(word) if s]
            if len(parts) > 1:
                return self.pack(parts, self.split_word, sep="")
            phones, n = word[1:-1].split(), self.max_tokens  # one brace group: one id per phone
            return ["{" + " ".join(phones[i : i + n]) + "}" for i in range(0, len(phones), n)]
        # Cleaning is idempotent, so the cleaned reading can be cut like any text.
        drop = set(unknown_positions(word))
        spoken = english_cleaners("".join(c for i, c in enumerate(word) if i not in drop)).strip()
        spoken = "".join(c for c in spoken if c in ENCODABLE_CHARS)
        if " " in spoken:
            return self.split(spoken, _CLAUSE)
        # One long run of symbols, one id each. Take the longest chunk that still encodes to its own
        # characters: a chunk may not start a new abbreviation ("xdr." must not become "x" + "doctor").
        pieces = []
        while spoken:
            n = min(self.max_tokens, len(spoken))
            while n > 1 and _encode(spoken[:n], self.on_unknown)[0] != [SYMBOL_TO_ID[c] for c in spoken[:n]]:
                n -= 1
            pieces.append(spoken[:n])
            spoken = spoken[n:]
        return pieces
