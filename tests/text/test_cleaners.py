"""english_cleaners as DLE ran it: ASCII, lowercase, numbers, abbreviations, whitespace."""

import pytest

from fastspeech.errors import TextError
from fastspeech.text import clean_text
from fastspeech.text.cleaners import ABBREVIATIONS


@pytest.mark.parametrize(
    "text, spoken",
    [
        ("$3.50", "three dollars, fifty cents"),
        ("$1", "one dollar"),
        ("$2", "two dollars"),
        ("$1.01", "one dollar, one cent"),
        ("$0.05", "five cents"),
        ("$,5", "five dollars"),  # a stray comma crashed DLE's cleaner
        ("$12,500", "twelve thousand, five hundred dollars"),  # inflect groups with commas, as in DLE
    ],
)
def test_dollars(text, spoken):
    assert clean_text(text) == spoken


@pytest.mark.parametrize(
    "text, spoken",
    [
        ("£5", "five pounds"),
        ("£1", "one pound"),
        ("£1,000", "one thousand pounds"),
        ("£2.50", "two pounds, fifty pence"),
    ],
)
def test_pounds_expanded_before_transliteration(text, spoken):
    # DLE ran unidecode first, which turned '£' into 'PS' ("psfive"); here the amount is read.
    assert clean_text(text) == spoken


@pytest.mark.parametrize(
    "text, spoken",
    [
        # inflect's reading, exactly as keithito's cleaner gives it (hyphens are symbols the model knows)
        ("1984", "nineteen eighty-four"),
        ("1905", "nineteen oh five"),
        ("1900", "nineteen hundred"),
        ("2000", "two thousand"),
        ("2005", "two thousand five"),
        ("2010", "twenty ten"),
        ("1000", "one thousand"),
        ("3000", "three thousand"),
    ],
)
def test_integers_1001_to_2999_read_as_years(text, spoken):
    assert clean_text(text) == spoken


def test_other_integers_read_without_and():
    assert clean_text("123") == "one hundred twenty-three"


def test_thousands_commas_removed():
    assert clean_text("1,000,000 people") == "one million people"


@pytest.mark.parametrize(
    "text, spoken",
    [
        # DLE removed the commas first and then read 1250 as a year: "twelve fifty"
        ("1,250", "one thousand, two hundred fifty"),
        ("1,984 people", "one thousand, nine hundred eighty-four people"),
        ("$1,250", "one thousand, two hundred fifty dollars"),
        ("\u00a31,250", "one thousand, two hundred fifty pounds"),
        ("1,250.75", "one thousand, two hundred fifty point seventy-five"),
        ("1,001st", "one thousand and first"),  # ordinals as DLE read "1001st"
        ("In 1984, 1,250 came.", "in nineteen eighty-four, one thousand, two hundred fifty came."),
    ],
)
def test_comma_grouped_number_is_never_a_year(text, spoken):
    assert clean_text(text) == spoken


def test_number_without_commas_keeps_dles_year_reading():
    assert clean_text("1250") == "twelve fifty"


def test_decimals_read_with_point():
    assert clean_text("3.14") == "three point fourteen"


@pytest.mark.parametrize("text, spoken", [("2nd", "second"), ("21st", "twenty-first"), ("3RD", "third")])
def test_ordinals(text, spoken):
    assert clean_text(text) == spoken


def test_number_too_large_is_a_text_error():
    with pytest.raises(TextError, match="too large to read out"):
        clean_text("1" * 40)


def test_abbreviation_with_period_expands():
    assert clean_text("Dr. Smith") == "doctor smith"


def test_all_eighteen_abbreviations_expand_case_insensitively():
    assert len(ABBREVIATIONS) == 18
    for short, long in ABBREVIATIONS:
        assert clean_text(f"{short.upper()}. X") == f"{long} x"


def test_abbreviation_without_period_is_left_alone():
    assert clean_text("the dr said") == "the dr said"


def test_curly_apostrophes_become_ascii():
    assert clean_text("It\u2019s \u2018fine\u2019") == "it's 'fine'"  # curly single quotes


def test_accented_letters_transliterated():
    assert clean_text("Café naïve Zoë") == "cafe naive zoe"


def test_combining_accent_is_silent():
    assert clean_text("cafe\u0301") == "cafe"


def test_whitespace_collapsed_and_trimmed():
    assert clean_text("  a \t\n  b  ") == "a b"


def test_arpabet_kept_verbatim_in_braces():
    assert clean_text("Say  {HH  AH0 L OW1} to 2 people") == "say {HH AH0 L OW1} to two people"
