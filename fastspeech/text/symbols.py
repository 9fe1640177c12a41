"""The symbol table of DLE FastSpeech (keithito's Tacotron table), with DLE's ids.

A checkpoint's embedding row i is trained for symbol i, so the order below is the checkpoint's
vocabulary: change nothing, append nothing. ids: `_`=0 (padding), `-`=1, `!'(),.:;? `=2..11,
`A`..`Z`=12..37, `a`..`z`=38..63, then the 84 CMUdict ARPAbet phones, each prefixed with '@' so
that `@B` cannot be mistaken for the letter `B`: `@AA`=64 ... `@ZH`=147.
"""

import string

PAD = "_"  # id 0: padding only; text_to_ids never produces it

_SPECIAL = "-"
_PUNCTUATION = "!'(),.:;? "
_LETTERS = string.ascii_uppercase + string.ascii_lowercase

# CMUdict's phone set: 15 vowels, each bare and with stress 0/1/2, and 24 consonants, sorted
# (the same 84 strings, in the same order, as keithito's `cmudict.valid_symbols`).
_VOWELS = ["AA", "AE", "AH", "AO", "AW", "AY", "EH", "ER", "EY", "IH", "IY", "OW", "OY", "UH", "UW"]
# fmt: off
_CONSONANTS = [
    "B", "CH", "D", "DH", "F", "G", "HH", "JH", "K", "L", "M", "N",
    "NG", "P", "R", "S", "SH", "T", "TH", "V", "W", "Y", "Z", "ZH",
]
# fmt: on
ARPABET: tuple[str, ...] = tuple(sorted(_CONSONANTS + [v + s for v in _VOWELS for s in ("", "0", "1", "2")]))

symbols: list[str] = [PAD, *_SPECIAL, *_PUNCTUATION, *_LETTERS, *("@" + p for p in ARPABET)]

# Embedding rows of a DLE checkpoint: one more than the table (row 148 is never produced).
N_SYMBOLS = len(symbols) + 1

SYMBOL_TO_ID: dict[str, int] = {s: i for i, s in enumerate(symbols)}

# Characters that may appear in cleaned text. DLE silently skipped `_` (and `~`, not in the table).
ENCODABLE_CHARS = frozenset(s for s in symbols if len(s) == 1) - {PAD}
