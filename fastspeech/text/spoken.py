"""Symbols the model has no id for, said as words: the one table, and the few rules that need context.

DLE's symbol table has letters, space and `- ! ' ( ) , . : ; ?` only; DLE dropped every other
character silently after unidecode ("50%" -> "fifty", '€' -> "eur"). Here a common symbol is read
the way a person reads it aloud, before transliteration, so that unidecode never spells it out
('°' -> "deg", '½' -> " 1/2", '€' -> "EUR"). Whatever is not in this module stays unknown and is
reported (or dropped with `on_unknown=drop`); see `cleaners.unknown_positions`.

`SPOKEN_SYMBOLS` maps a character to its reading; a reading that starts with a letter is a word and
gets spaces around it where it touches other text ("50%" -> "50 percent", "a&b" -> "a and b"), "" is
silent, "," is a pause. `CONTEXT_RULES` run first and override the table where the neighbours
change the reading ("#1" -> "number 1", "2*3" -> "2 times 3", "1–5" -> "1 to 5"). Digits are left
as digits: `cleaners.expand_numbers` reads them afterwards, as in DLE.
"""

import re
import unicodedata
from collections.abc import Callable

# Put before a number that was written with thousands commas (the commas are removed first, as in
# DLE): `cleaners.expand_numbers` reads it as a cardinal, never as a year. Control characters are
# unknown input, so the mark cannot come from the user.
GROUPED = "\x00"
# A number as the rules below see it: digits, maybe marked, with a decimal part.
_NUM = rf"{GROUPED}?[0-9]+(?:\.[0-9]+)?"

# Character -> reading. Keep it sorted by kind; docs/text.md shows this table to users.
SPOKEN_SYMBOLS: dict[str, str] = {
    # Quotes: punctuation without sound. The apostrophe "'" is a DLE symbol and stays; curly single
    # quotes and the acute accent typed as an apostrophe ("don´t") become it, as unidecode did in DLE.
    '"': "",
    "\u201c": "",  # “
    "\u201d": "",  # ”
    "\u201e": "",  # „
    "\u201f": "",  # ‟
    "\u00ab": "",  # «
    "\u00bb": "",  # »
    "\u2039": "",  # ‹
    "\u203a": "",  # ›
    "`": "",
    "\u2018": "'",  # ‘
    "\u2019": "'",  # ’
    "\u201a": "'",  # ‚
    "\u00b4": "'",  # ´
    "\u02bc": "'",  # ʼ (modifier letter apostrophe)
    # Pauses and brackets
    "\u2013": ",",  # – en dash (between numbers: "to", see CONTEXT_RULES)
    "\u2014": ",",  # — em dash
    "\u2015": ",",  # ― horizontal bar
    "|": ",",
    "\u2022": ",",  # • bullet
    "\u00b7": ",",  # · middle dot
    "\u2026": "...",  # …
    "[": "(",
    "]": ")",
    "_": " ",  # snake_case -> "snake case" (DLE dropped '_': "snakecase")
    # Signs and operators
    "%": "percent",
    "\u2030": "per mille",  # ‰
    "&": "and",
    "+": "plus",
    "\u2212": "minus",  # − (U+2212; the ASCII hyphen '-' is a DLE symbol and stays one)
    "\u00b1": "plus or minus",  # ±
    "=": "equals",
    "\u2260": "not equal to",  # ≠
    "\u2248": "approximately",  # ≈
    "<": "less than",
    ">": "greater than",
    "\u2264": "less than or equal to",  # ≤
    "\u2265": "greater than or equal to",  # ≥
    "\u00d7": "times",  # ×
    "\u00f7": "divided by",  # ÷
    "/": "slash",  # a simple fraction "3/4" is read as one, see CONTEXT_RULES
    "\u2192": "to",  # →
    "@": "at",
    "#": "hash",  # before a number: "number" ("#1" -> "number one")
    "*": "",  # emphasis or footnote mark; between numbers: "times"
    "^": "",  # between numbers: "to the power of"
    "~": "",  # before a number: "about"
    "\u00b0": "degrees",  # °; "1°" -> "one degree", "°C" -> "degrees celsius"
    "\u2103": "degrees celsius",  # ℃
    "\u2109": "degrees fahrenheit",  # ℉
    "\u00a7": "section",  # §
    "\u00a9": "copyright",  # ©
    "\u00ae": "",  # ®
    "\u2122": "",  # ™
    # Currency without an amount ("5€", "in $"); with one, see CONTEXT_RULES ("€5" -> "5 euros")
    "$": "dollars",
    "\u00a3": "pounds",  # £
    "\u20ac": "euros",  # €
    "\u00a2": "cents",  # ¢
}

# Currency before an amount: (unit, units, subunit, subunits), read as DLE read "$3.50".
CURRENCIES: dict[str, tuple[str, str, str, str]] = {
    "$": ("dollar", "dollars", "cent", "cents"),
    "\u00a3": ("pound", "pounds", "penny", "pence"),
    "\u20ac": ("euro", "euros", "cent", "cents"),
}

# Fractions typed with a slash, read when the denominator is 2..10 and the fraction is proper.
_DENOMINATORS = {
    2: ("half", "halves"),
    3: ("third", "thirds"),
    4: ("quarter", "quarters"),
    5: ("fifth", "fifths"),
    6: ("sixth", "sixths"),
    7: ("seventh", "sevenths"),
    8: ("eighth", "eighths"),
    9: ("ninth", "ninths"),
    10: ("tenth", "tenths"),
}


def vulgar_fraction(c: str) -> str | None:
    """'½' -> "one half", '⅞' -> "seven eighths": the character's Unicode name says it."""
    try:
        name = unicodedata.name(c)
    except ValueError:
        return None
    return name.removeprefix("VULGAR FRACTION ").lower() if name.startswith("VULGAR FRACTION ") else None


def is_spoken(c: str) -> bool:
    """Whether `speak_symbols` has a reading for the character `c`."""
    return c in SPOKEN_SYMBOLS or vulgar_fraction(c) is not None


def _money(m: re.Match) -> str:
    """'$3.50' -> '3 dollars, 50 cents' (digits are read later), as DLE read dollars; DLE's odd
    cases kept. Thousands commas are already gone (a `GROUPED` mark in their place, kept here)."""
    unit, units, subunit, subunits = CURRENCIES[m.group(1)]
    amount = m.group(2)
    parts = amount.split(".")
    if len(parts) > 2:  # "$1.2.3": DLE's "unexpected format"
        return f"{amount} {units}"
    whole_text = parts[0].replace(",", "")  # "$,5", which crashed DLE, is "5 dollars"
    fraction_text = parts[1].replace(",", "") if len(parts) > 1 else ""
    whole = int(whole_text.replace(GROUPED, "") or 0)
    fraction = int(fraction_text.replace(GROUPED, "") or 0)
    said = []
    if whole:
        said.append(f"{whole_text} {unit if whole == 1 else units}")
    if fraction:
        mark = GROUPED if GROUPED in fraction_text else ""
        said.append(f"{mark}{fraction} {subunit if fraction == 1 else subunits}")
    return ", ".join(said) or f"zero {units}"


def _fraction(m: re.Match) -> str:
    whole, num, den = m.group(1), int(m.group(2)), int(m.group(3))
    if not (den in _DENOMINATORS and 0 < num < den):
        return m.group(0).replace("/", " slash ")
    said = f"{num} {_DENOMINATORS[den][num > 1]}"
    return f"{whole} and {said}" if whole else said


# (pattern, replacement): applied in order, before the table; replacements are digits and words.
CONTEXT_RULES: tuple[tuple[re.Pattern, str | Callable[[re.Match], str]], ...] = (
    # "$5", "£2.50", "€1,250" -> "5 dollars", "2 pounds, 50 pence", "1,250 euros"
    (re.compile(rf"([$\u00a3\u20ac])([0-9.,{GROUPED}]*[0-9])"), _money),
    # "3/4" -> "3 quarters", "1 1/2" -> "1 and 1 half"; dates (1/2/2020) and "24/7" stay "slash"
    (re.compile(r"(?<![0-9/])(?:([0-9]+) )?([0-9]+)/([0-9]+)(?![0-9/])"), _fraction),
    # "1½" -> "1 and one half"
    (re.compile(r"(?<=[0-9])(?=[\u00bc-\u00be\u2150-\u215e\u2189])"), " and "),
    (re.compile(r"(?<![0-9.,])1\s?\u00b0(?![CF])"), "1 degree"),
    (re.compile(r"\s?\u00b0\s?C\b"), " degrees celsius"),
    (re.compile(r"\s?\u00b0\s?F\b"), " degrees fahrenheit"),
    (re.compile(rf"#(?=\s?{_NUM})"), " number "),
    (re.compile(rf"~(?=\s?{_NUM})"), " about "),
    (re.compile(rf"(?<=[0-9])\s*\*\s*(?={_NUM})"), " times "),
    (re.compile(rf"(?<=[0-9])\s*\^\s*(?={_NUM})"), " to the power of "),
    (re.compile(rf"(?<=[0-9])\s*\u2013\s*(?={_NUM})"), " to "),  # en dash: "1990–1995"
    (re.compile(r"<="), " less than or equal to "),
    (re.compile(r">="), " greater than or equal to "),
    (re.compile(r"->"), " to "),
)

_PAUSES = "".join(c for c, reading in SPOKEN_SYMBOLS.items() if reading == ",")
_PAUSE_RE = re.compile(rf"\s*(?:[{re.escape(_PAUSES)}]\s*)+")
_TABLE_RE = re.compile(
    "|".join(re.escape(c) for c, reading in sorted(SPOKEN_SYMBOLS.items()) if reading != ",")
    + r"|[\u00bc-\u00be\u2150-\u215e\u2189]"
)
_WORD_CHAR_RE = re.compile(r"\w")
_NO_SPACE_AFTER = set(",.!?;:)'\"")


def speak_symbols(text: str) -> str:
    """Replace every symbol of the table (and its context rules) by its reading; nothing else changes.

    Runs before unidecode on raw text (ARPAbet groups excluded); may leave double spaces, which the
    cleaners collapse.
    """
    for pattern, replacement in CONTEXT_RULES:
        text = pattern.sub(replacement, text)
    text = _PAUSE_RE.sub(_pause, text)
    return _TABLE_RE.sub(_read, text)


def _pause(m: re.Match) -> str:
    """Dashes, bars and bullets (with the spaces around them): one comma, glued to the word before;
    none at the start or end of the text, nor after a punctuation mark."""
    # The match took the whole run of spaces on both sides, so its neighbours are not spaces.
    if m.start() == 0 or m.end() == len(m.string):
        return ""
    return " " if m.string[m.start() - 1] in ",.!?;:(" else ", "


def _read(m: re.Match) -> str:
    text, start, end = m.string, m.start(), m.end()
    before = text[start - 1] if start else ""
    after = text[end] if end < len(text) else ""
    reading = SPOKEN_SYMBOLS.get(m.group(0)) or vulgar_fraction(m.group(0)) or ""
    if not reading:
        # Silent: a quote glued between two words still separates them ('said"hi"' -> "said hi").
        return " " if _WORD_CHAR_RE.match(before or " ") and _WORD_CHAR_RE.match(after or " ") else ""
    if not reading[0].isalpha():
        return reading
    left = " " if before and not before.isspace() and before not in "([" else ""
    right = " " if after and not after.isspace() and after not in _NO_SPACE_AFTER else ""
    return left + reading + right
