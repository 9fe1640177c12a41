"""The symbol table must give DLE's ids, or a DLE checkpoint's embeddings read the wrong rows."""

import pytest

from fastspeech.text import N_SYMBOLS, symbols

# keithito's cmudict.valid_symbols, in its order: DLE appends these, prefixed '@', from id 64.
# fmt: off
CMUDICT_VALID_SYMBOLS = [
    "AA", "AA0", "AA1", "AA2", "AE", "AE0", "AE1", "AE2", "AH", "AH0", "AH1", "AH2", "AO", "AO0",
    "AO1", "AO2", "AW", "AW0", "AW1", "AW2", "AY", "AY0", "AY1", "AY2", "B", "CH", "D", "DH",
    "EH", "EH0", "EH1", "EH2", "ER", "ER0", "ER1", "ER2", "EY", "EY0", "EY1", "EY2", "F", "G",
    "HH", "IH", "IH0", "IH1", "IH2", "IY", "IY0", "IY1", "IY2", "JH", "K", "L", "M", "N",
    "NG", "OW", "OW0", "OW1", "OW2", "OY", "OY0", "OY1", "OY2", "P", "R", "S", "SH", "T",
    "TH", "UH", "UH0", "UH1", "UH2", "UW", "UW0", "UW1", "UW2", "V", "W", "Y", "Z", "ZH",
]
# fmt: on


def test_table_has_148_symbols_and_149_embedding_rows():
    assert len(symbols) == 148
    assert N_SYMBOLS == 149


@pytest.mark.parametrize(
    "symbol, expected_id",
    [
        ("_", 0),
        ("-", 1),
        ("!", 2),
        ("'", 3),
        ("(", 4),
        (")", 5),
        (",", 6),
        (".", 7),
        (":", 8),
        (";", 9),
        ("?", 10),
        (" ", 11),
        ("A", 12),
        ("Z", 37),
        ("a", 38),
        ("z", 63),
        ("@AA", 64),
        ("@HH", 106),
        ("@ZH", 147),
    ],
)
def test_symbol_has_dle_id(symbol, expected_id):
    assert symbols.index(symbol) == expected_id


def test_arpabet_block_is_cmudict_valid_symbols_in_order():
    assert len(CMUDICT_VALID_SYMBOLS) == 84
    assert symbols[64:] == ["@" + s for s in CMUDICT_VALID_SYMBOLS]


def test_symbols_are_unique():
    assert len(set(symbols)) == len(symbols)
