"""DLE's `english_cleaners`: raw English text -> the lowercase text the model was trained to read.

DLE checkpoints were trained on LJSpeech run through keithito's cleaners, so inference must clean
the same way or the model hears words it never saw. In order: transliterate to ASCII (unidecode),
lowercase, expand numbers (inflect), expand 18 abbreviations, collapse whitespace.

One deliberate difference: DLE transliterated before expanding currency, so unidecode had already
turned '£' into 'PS' and "£5" was read "psfive"; here pounds are expanded first ("five pounds").

`unknown_positions` decides, per *original* character, whether cleaning can turn it into symbols,
so that errors and warnings name what the user typed ('€', an emoji), not unidecode's spelling of it.
"""

import functools
import re
import unicodedata

from unidecode import unidecode

from fastspeech.errors import TextError
from fastspeech.text.spoken import GROUPED, is_spoken, speak_symbols
from fastspeech.text.symbols import ENCODABLE_CHARS

# (abbreviation, expansion): matched case-insensitively at a word start, with its trailing period.
ABBREVIATIONS: tuple[tuple[str, str], ...] = (
    ("mrs", "misess"),
    ("mr", "mister"),
    ("dr", "doctor"),
    ("st", "saint"),
    ("co", "company"),
    ("jr", "junior"),
    ("maj", "major"),
    ("gen", "general"),
    ("drs", "doctors"),
    ("rev", "reverend"),
    ("lt", "lieutenant"),
    ("hon", "honorable"),
    ("sgt", "sergeant"),
    ("capt", "captain"),
    ("esq", "esquire"),
    ("ltd", "limited"),
    ("col", "colonel"),
    ("ft", "fort"),
)
_ABBREVIATION_RES = [(re.compile(rf"\b{short}\.", re.IGNORECASE), long) for short, long in ABBREVIATIONS]

_WHITESPACE_RE = re.compile(r"\s+")
_COMMA_NUMBER_RE = re.compile(r"[0-9][0-9,]+[0-9]")  # DLE's _comma_number_re
_DECIMAL_RE = re.compile(rf"[0-9]+\.{GROUPED}?[0-9]+")
_ORDINAL_RE = re.compile(r"[0-9]+(?:st|nd|rd|th)")
_INTEGER_RE = re.compile(rf"({GROUPED}?)([0-9]+)")


def english_cleaners(text: str) -> str:
    """Clean plain text (no `{...}` ARPAbet) the way DLE did; unknown characters are left in place.

    Symbols are read first (`spoken.speak_symbols`: "50%" -> "50 percent", "€5" -> "5 euros"), on
    the text as typed, so that unidecode never spells them out.
    """
    text = mark_grouped_numbers(text)
    text = speak_symbols(text)
    text = unidecode(text).lower()
    text = expand_numbers(text)
    text = expand_abbreviations(text)
    return _WHITESPACE_RE.sub(" ", text)


def expand_abbreviations(text: str) -> str:
    for pattern, long in _ABBREVIATION_RES:
        text = pattern.sub(long, text)
    return text


def mark_grouped_numbers(text: str) -> str:
    """Remove thousands commas as DLE did ("1,250" -> "1250"), marking the number with `GROUPED`.

    DLE then read 1001..2999 as a year, so "1,250" was "twelve fifty"; the mark tells
    `expand_numbers` to read it as a cardinal ("one thousand, two hundred fifty"). Idempotent.
    """
    return _COMMA_NUMBER_RE.sub(
        lambda m: GROUPED + m.group(0).replace(",", "") if "," in m.group(0) else m.group(0), text
    )


def expand_numbers(text: str) -> str:
    """Digits -> words, as keithito's `normalize_numbers` (text is already ASCII and lowercase).

    Currency amounts were read by `speak_symbols` already ("$3.50" -> "3 dollars, 50 cents"); a
    number written with thousands commas is never read as a year.
    """
    text = mark_grouped_numbers(text)
    text = _DECIMAL_RE.sub(lambda m: m.group(0).replace(".", " point "), text)
    text = _ORDINAL_RE.sub(lambda m: _words(m.group(0)), text)
    text = _INTEGER_RE.sub(_integer, text)
    return text.replace(GROUPED, "")


def _integer(m: re.Match) -> str:
    n = int(m.group(2))
    return _words(n, andword="") if m.group(1) else _cardinal(n)


def _cardinal(n: int) -> str:
    """Integers; 1001..2999 are read as years, as LJSpeech's readers did."""
    if 1000 < n < 3000:
        if n == 2000:
            return "two thousand"
        if 2000 < n < 2010:
            return "two thousand " + _words(n % 100)
        if n % 100 == 0:
            return _words(n // 100) + " hundred"
        # group=2 reads pairs of digits: 1984 -> "nineteen, eighty-four", 1905 -> "nineteen, oh five"
        return _words(n, andword="", zero="oh", group=2).replace(", ", " ")
    return _words(n, andword="")


@functools.cache
def _inflect_engine():
    # Imported on the first number: inflect takes 1-2 s to import, as typeguard re-parses it for
    # every @typechecked method (jaraco/inflect#212), and most text has no digits.
    import inflect

    return inflect.engine()


@functools.lru_cache(maxsize=4096)  # inflect takes ~0.5 ms a number; texts repeat numbers
def _words(number: int | str, **kwargs) -> str:
    engine = _inflect_engine()
    import inflect  # already loaded by _inflect_engine

    try:
        return engine.number_to_words(number, **kwargs)
    except inflect.NumOutOfRangeError:
        raise TextError(
            f"number {number} is too large to read out (inflect stops below 10**36); write it in words"
        ) from None


def unknown_positions(text: str) -> list[int]:
    """Indices of the characters of plain `text` that cleaning cannot turn into symbols."""
    return [i for i, c in enumerate(text) if not _speakable(c)]


# Scripts whose letters unidecode may transliterate: Latin, and the characters every script shares
# (Common: punctuation, digits, spaces; Inherited: combining accents, joiners).
_TRANSLITERATED_SCRIPTS = frozenset({"Latn", "Zyyy", "Zinh"})


@functools.lru_cache(maxsize=4096)
def _speakable(c: str) -> bool:
    if c in ENCODABLE_CHARS or c.isspace() or is_spoken(c):
        return True
    if c.isascii():
        return c.isdigit()  # digits are read as numbers; '\\' and control characters are unknown
    # Decide by Unicode script before unidecode: a non-Latin script is unknown, never read as its
    # romanization ("你好" is not "ni hao", "привет" is not "privet"); a Common character that belongs
    # to non-Latin scripts only (the kana long-vowel mark 'ー', '。') is unknown too.
    scripts = _scripts(c)
    if not scripts & _TRANSLITERATED_SCRIPTS:
        return False
    ascii_ = unidecode(c)
    category = unicodedata.category(c)
    if not ascii_:
        # Combining accents, zero-width and format characters carry no sound; an emoji does.
        return category in ("Mn", "Mc", "Me", "Cf")
    if category.startswith("S"):
        # Symbols not in the spoken table: unidecode would spell them ('☃' -> '', '✓' -> 'v'), which
        # the model would read letter by letter.
        return False
    # Latin letters, digits, punctuation: 'é' -> 'e', 'ß' -> 'ss', fullwidth digits -> '0'..'9'.
    return all(a in ENCODABLE_CHARS or a.isdigit() or a.isspace() for a in ascii_.lower())


def _scripts(c: str) -> set[str]:
    """The character's Unicode script, or its script extensions when it is Common or Inherited."""
    # fontTools (a matplotlib dependency) carries the Unicode Scripts data the stdlib lacks; imported
    # on the first non-ASCII character (~40 ms).
    from fontTools import unicodedata as ucd

    script = ucd.script(c)
    return set(ucd.script_extension(c)) if script in ("Zyyy", "Zinh") else {script}
