"""Text as typed: common symbols are spoken, other scripts refused by name, every bad line reported."""

import logging
from pathlib import Path

import pytest

from fastspeech.errors import TextError
from fastspeech.text import check_texts, clean_text, text_to_ids
from fastspeech.text.spoken import SPOKEN_SYMBOLS
from fastspeech.text.symbols import ENCODABLE_CHARS


@pytest.mark.parametrize(
    "text, spoken",
    [
        # The command lines of issue 15, as a user types them
        ("Hello, world!", "hello, world!"),
        ("Don't stop.", "don't stop."),
        ("Is it (really) fine?", "is it (really) fine?"),
        ("Cost: $5 = five dollars", "cost: five dollars equals five dollars"),
    ],
)
def test_everyday_sentences(text, spoken):
    assert clean_text(text) == spoken
    assert len(text_to_ids(text)) == len(spoken)


@pytest.mark.parametrize(
    "text, spoken",
    [
        # quotes: silent, even glued between words; the apostrophe stays (a DLE symbol)
        ('"Hi," she said.', "hi, she said."),
        ("\u201cHi,\u201d she said \u00abok\u00bb \u201eja\u201c", "hi, she said ok ja"),
        ('He said"hi"', "he said hi"),
        ("don\u2019t, don't, don\u00b4t", "don't, don't, don't"),
        ("It\u2019s \u2018fine\u2019", "it's 'fine'"),  # DLE: unidecode made curly single quotes "'"
        # signs
        ("50% off", "fifty percent off"),
        ("A&B", "a and b"),
        ("2+2", "two plus two"),
        ("me@home", "me at home"),
        ("x = 3", "x equals three"),
        ("\u22125", "minus five"),  # U+2212; the ASCII '-' is a DLE symbol
        ("3\u00d74", "three times four"),
        ("2*3", "two times three"),
        ("*really*", "really"),
        ("2^10", "two to the power of ten"),
        ("~5 km", "about five km"),
        ("x < 5 > y", "x less than five greater than y"),
        ("a <= b >= c", "a less than or equal to b greater than or equal to c"),
        ("a -> b", "a to b"),
        ("snake_case", "snake case"),
        # degrees and fractions
        ("30\u00b0", "thirty degrees"),
        ("1\u00b0", "one degree"),
        ("20\u00b0C", "twenty degrees celsius"),
        ("\u00bd cup", "one half cup"),
        ("\u00bc and \u00be", "one quarter and three quarters"),
        ("1\u00bd", "one and one half"),
        ("3/4 cup", "three quarters cup"),
        ("1 1/2", "one and one half"),
        ("24/7", "twenty-four slash seven"),
        ("and/or", "and slash or"),
        # numbers after '#'
        ("#1", "number one"),
        ("room #12", "room number twelve"),
        ("#tag", "hash tag"),
        # currency, with an amount and without
        ("\u20ac5", "five euros"),
        ("\u20ac2.50", "two euros, fifty cents"),
        ("5\u20ac", "five euros"),
        ("5 $", "five dollars"),
        ("\u00a31", "one pound"),
        # pauses, brackets, ellipsis
        ("wait \u2014 what", "wait, what"),
        ("wait\u2013what", "wait, what"),
        ("1990\u20131995", "nineteen ninety to nineteen ninety-five"),
        ("\u2014 hi \u2014", "hi"),
        ("a | b \u2022 c", "a, b, c"),
        ("[note] here", "(note) here"),
        ("and\u2026 so", "and... so"),
        ("Note: yes; no", "note: yes; no"),
        ("\u00a7 2 \u00a9 Acme\u2122", "section two copyright acme"),
    ],
)
def test_symbol_is_spoken(text, spoken):
    assert clean_text(text) == spoken
    assert len(text_to_ids(text)) == len(spoken)  # no error, nothing dropped


@pytest.mark.parametrize("char", sorted(SPOKEN_SYMBOLS))
def test_every_table_symbol_encodes_alone_and_between_words(char):
    for text in (f"a {char} b", f"a{char}b", f"1{char}2", char + " ok"):
        cleaned = clean_text(text)
        assert set(cleaned) <= ENCODABLE_CHARS, (text, cleaned)
        text_to_ids(text)


def test_arpabet_braces_are_not_symbols():
    assert clean_text("{HH AH0 L OW1} is 50%") == "{HH AH0 L OW1} is fifty percent"
    with pytest.raises(TextError, match="unbalanced braces"):
        text_to_ids("a { b")


# ---- scripts --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "text, named",
    [
        ("\u4f60\u597d\u4e16\u754c", "'你', '好', '世', '界'"),  # CJK, which unidecode read "ni hao shi jie"
        ("\u043f\u0440\u0438", "'п', 'р', 'и'"),  # Cyrillic
        ("\u03b1\u03b2", "'α', 'β'"),  # Greek
        ("\u0633\u0644\u0627\u0645", "'س', 'ل', 'ا', 'م'"),  # Arabic
        ("\u05e9\u05dc", "'ש', 'ל'"),  # Hebrew
        ("\u0928\u092e", "'न', 'म'"),  # Devanagari
        ("\u0e2a\u0e27", "'ส', 'ว'"),  # Thai
        ("\uc548\ub155", "'안', '녕'"),  # Hangul
        ("\u30ab\u30fc", "'カ', 'ー'"),  # kana, and the long-vowel mark (a Common character of kana only)
        ("\u0663", "'٣'"),  # Arabic-Indic digit
        ("hi \U0001f600", "'😀'"),  # emoji
    ],
)
def test_non_latin_scripts_are_unknown_and_named(text, named):
    with pytest.raises(TextError, match=f"no symbol: {named};"):
        text_to_ids(f"ok {text} ok")


def test_non_latin_text_is_dropped_never_transliterated():
    assert text_to_ids("\u4f60\u597d world", on_unknown="drop") == text_to_ids("world")


@pytest.mark.parametrize(
    "text, spoken",
    [
        ("caf\u00e9", "cafe"),
        ("Dvo\u0159\u00e1k", "dvorak"),
        ("Stra\u00dfe", "strasse"),
        ("\u00c6r\u00f8sk\u00f8bing", "aeroskobing"),
        ("na\u00efve \u0141\u00f3d\u017a", "naive lodz"),
        ("\uff48\uff49 \uff12", "hi two"),  # fullwidth Latin letters and digits
    ],
)
def test_latin_diacritics_still_transliterated(text, spoken):
    assert clean_text(text) == spoken
    assert len(text_to_ids(text)) == len(spoken)


# ---- check_texts ----------------------------------------------------------------------------


def test_check_texts_returns_the_ids_of_every_line():
    texts = ["Hello, world!", "50% of {HH AH0}", "1,250"]
    assert check_texts(texts) == [text_to_ids(t) for t in texts]


def test_check_texts_names_every_bad_line_and_its_characters_in_one_line():
    texts = ["fine", "\u4f60\u597d", "also fine", "ok", "\U0001f600 x \U0001f600"]
    with pytest.raises(TextError) as err:
        check_texts(texts)
    assert str(err.value) == (
        "unknown characters: line 2: '你', '好'; line 5: '😀' — remove them or pass on_unknown=drop"
    )


def test_check_texts_uses_given_line_numbers_and_reports_other_errors_too():
    with pytest.raises(TextError) as err:
        check_texts(["\u4f60", "a { b", "   "], line_numbers=[3, 7, 9])
    message = str(err.value)
    assert "\n" not in message
    assert message.startswith("unknown characters: line 3: '你' — remove them or pass on_unknown=drop; ")
    assert "; line 7: unbalanced braces in text 'a { b'" in message
    assert message.endswith("; line 9: text is empty; give text=... or a non-empty line")


def test_check_texts_single_text_has_no_line_prefix():
    with pytest.raises(TextError, match=r"^unknown characters: '你' — remove them or pass on_unknown=drop$"):
        check_texts(["\u4f60 x"])


def test_check_texts_names_at_most_100_lines_then_counts():
    with pytest.raises(TextError) as err:
        check_texts(["\u4f60"] * 150)
    assert "line 100: '你'; and 50 more lines (150 in all) — remove them" in str(err.value)
    assert "line 101:" not in str(err.value)


def test_check_texts_drop_mode_warns_once_for_all_lines(caplog):
    with caplog.at_level(logging.WARNING, logger="fastspeech.text"):
        ids = check_texts(["a \u4f60", "b", "c \U0001f600"], on_unknown="drop")
    assert ids == [text_to_ids("a"), text_to_ids("b"), text_to_ids("c")]
    assert [r.getMessage() for r in caplog.records] == [
        "dropped characters with no symbol (on_unknown=drop): line 1: '你'; line 3: '😀'"
    ]


def test_check_texts_rejects_bad_on_unknown():
    with pytest.raises(TextError, match="on_unknown must be one of error, drop, got 'skip'"):
        check_texts(["hi"], on_unknown="skip")


def test_docs_show_every_table_symbol():
    doc = (Path(__file__).resolve().parents[2] / "docs" / "text.md").read_text(encoding="utf-8")
    assert [c for c in SPOKEN_SYMBOLS if c not in doc] == []
