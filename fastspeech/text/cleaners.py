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
_THOUSANDS_RE = re.compile(r"[0-9][0-9,]+[0-9]")
_POUNDS_RE = re.compile(r"£([0-9.,]*[0-9])")
_DOLLARS_RE = re.compile(r"\$([0-9.,]*[0-9])")
_DECIMAL_RE = re.compile(r"[0-9]+\.[0-9]+")
_ORDINAL_RE = re.compile(r"[0-9]+(?:st|nd|rd|th)")
_INTEGER_RE = re.compile(r"[0-9]+")
# A '$' or '£' that the number expansion consumes (it is then spoken as "dollars"/"pounds").
_CURRENCY_RE = re.compile(r"[$£](?=[0-9.,]*[0-9])")


def english_cleaners(text: str) -> str:
    """Clean plain text (no `{...}` ARPAbet) the way DLE did; unknown characters are left in place."""
    text = _POUNDS_RE.sub(lambda m: _money(m.group(1), "pound", "pounds", "penny", "pence"), text)
    text = unidecode(text).lower()
    text = expand_numbers(text)
    text = expand_abbreviations(text)
    return _WHITESPACE_RE.sub(" ", text)


def expand_abbreviations(text: str) -> str:
    for pattern, long in _ABBREVIATION_RES:
        text = pattern.sub(long, text)
    return text


def expand_numbers(text: str) -> str:
    """Digits -> words, as keithito's `normalize_numbers` (text is already ASCII and lowercase)."""
    text = _THOUSANDS_RE.sub(lambda m: m.group(0).replace(",", ""), text)
    text = _DOLLARS_RE.sub(lambda m: _money(m.group(1), "dollar", "dollars", "cent", "cents"), text)
    text = _DECIMAL_RE.sub(lambda m: m.group(0).replace(".", " point "), text)
    text = _ORDINAL_RE.sub(lambda m: _words(m.group(0)), text)
    return _INTEGER_RE.sub(lambda m: _cardinal(int(m.group(0))), text)


def _money(amount: str, unit: str, units: str, subunit: str, subunits: str) -> str:
    """'3.50' -> '3 dollars, 50 cents' (digits are expanded afterwards); DLE's odd cases kept."""
    amount = amount.replace(",", "")  # "£1,000"; and "$,5", which crashed DLE
    parts = amount.split(".")
    if len(parts) > 2:
        return f"{amount} {units}"
    whole = int(parts[0]) if parts[0] else 0
    fraction = int(parts[1]) if len(parts) > 1 and parts[1] else 0
    said = []
    if whole:
        said.append(f"{whole} {unit if whole == 1 else units}")
    if fraction:
        said.append(f"{fraction} {subunit if fraction == 1 else subunits}")
    return ", ".join(said) or f"zero {units}"


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
    currency = {m.start() for m in _CURRENCY_RE.finditer(text)}
    return [i for i, c in enumerate(text) if i not in currency and not _speakable(c)]


def _speakable(c: str) -> bool:
    if c in ENCODABLE_CHARS or c.isspace():
        return True
    ascii_ = unidecode(c)
    category = unicodedata.category(c)
    if not ascii_:
        # Combining accents, zero-width and format characters carry no sound; an emoji does.
        return category in ("Mn", "Mc", "Me", "Cf")
    if category.startswith("S"):
        # Symbols: unidecode spells them ('€' -> 'EUR', '©' -> '(c)', '°' -> 'deg'), which the model
        # would read letter by letter. '$' and '£' before an amount are handled above.
        return False
    # Letters, digits, punctuation: 'é' -> 'e', right single quote -> "'", em dash -> '--', fullwidth
    # digits -> '0'..'9' are spoken; a double quote ('"', U+201C/D) is not in the table.
    return all(a in ENCODABLE_CHARS or a.isdigit() or a.isspace() for a in ascii_.lower())
