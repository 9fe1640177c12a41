"""text_to_ids / ids_to_text / split_text: DLE ids, loud errors, and splits that never crop."""

import itertools
import logging
import re

import pytest

from fastspeech.errors import TextError
from fastspeech.text import clean_text, ids_to_text, split_text, symbols, text_to_ids


def ids_of(*syms: str) -> list[int]:
    return [symbols.index(s) for s in syms]


# ---- encoding ---------------------------------------------------------------------------------


def test_plain_text_is_cleaned_then_mapped_per_character():
    assert text_to_ids("Hi, Bo!") == [45, 46, 6, 11, 39, 52, 2]


def test_arpabet_in_braces_maps_to_at_symbols():
    assert text_to_ids("{HH AH0 L OW1}") == ids_of("@HH", "@AH0", "@L", "@OW1")


def test_arpabet_mixed_with_text_keeps_spaces_around_it():
    expected = ids_of(*"on ") + ids_of("@HH", "@AW1") + ids_of(*" now.")
    assert text_to_ids("On {HH AW1} now.") == expected


def test_no_padding_id_and_no_eos():
    ids = text_to_ids("The 2nd of May, 1984: Mr. {HH AH0 L OW1}!")
    assert 0 not in ids
    assert max(ids) < len(symbols)
    assert ids[-1] == symbols.index("!")


def test_ids_to_text_inverts_encoding():
    text = "Dr. Smith paid $3.50, {HH AH0 L OW1} {W ER1 L D}!"
    assert ids_to_text(text_to_ids(text)) == clean_text(text)


def test_ids_to_text_merges_adjacent_arpabet_and_skips_padding():
    assert ids_to_text([0, 38, *ids_of("@HH", "@AH0"), 0]) == "a{HH AH0}"


@pytest.mark.parametrize("bad_id", [148, -1])
def test_ids_to_text_rejects_ids_outside_table(bad_id):
    with pytest.raises(TextError, match=f"token id {bad_id} is outside the symbol table"):
        ids_to_text([38, bad_id])


# ---- unknown characters -----------------------------------------------------------------------


def test_unknown_characters_error_names_them_and_the_fix():
    with pytest.raises(TextError) as err:
        text_to_ids("Call 你 for 😀 now 你")
    assert str(err.value) == (
        "text contains characters with no symbol: '你', '😀'; remove them or set on_unknown=drop"
    )


@pytest.mark.parametrize("char", ["🙂", "☃", "\ue000", "✓", "\\", "你", "ж", "٣"])
def test_unknown_character_reported_as_typed(char):
    # unidecode maps these to nothing ('🙂'), to a spelling ('✓' -> 'v', '你' -> 'Ni ') or to a non-symbol
    with pytest.raises(TextError, match=re.escape(repr(char))):
        text_to_ids(f"a {char} b")


def test_unknown_characters_inside_braces_are_not_checked_as_text():
    with pytest.raises(TextError, match="unknown ARPAbet symbol 'XX'"):
        text_to_ids("ok {HH XX}")


def test_drop_mode_drops_and_warns(caplog):
    with caplog.at_level(logging.WARNING, logger="fastspeech.text"):
        ids = text_to_ids("a你b 🙂c", on_unknown="drop")
    assert ids == text_to_ids("ab c")
    assert "'你', '🙂'" in caplog.text


def test_drop_mode_is_quiet_when_nothing_dropped(caplog):
    with caplog.at_level(logging.WARNING, logger="fastspeech.text"):
        text_to_ids("plain words", on_unknown="drop")
    assert caplog.records == []


def test_drop_mode_with_nothing_left_is_an_error():
    with pytest.raises(TextError, match="nothing to say"):
        text_to_ids("🙂 你", on_unknown="drop")


def test_bad_on_unknown_names_choices():
    with pytest.raises(TextError, match=r"on_unknown must be one of error, drop, got 'ignore'"):
        text_to_ids("hi", on_unknown="ignore")


@pytest.mark.parametrize("text", ["", "   ", "\n\t"])
def test_empty_text_is_an_error(text):
    with pytest.raises(TextError, match=r"text is empty; give text=\.\.\. or a non-empty line"):
        text_to_ids(text)


# ---- ARPAbet errors ---------------------------------------------------------------------------


@pytest.mark.parametrize("group, bad", [("HH XX L", "'XX'"), ("hh AH0", "'hh'"), ("AH3", "'AH3'")])
def test_unknown_arpabet_symbol_is_named(group, bad):
    with pytest.raises(TextError, match=f"unknown ARPAbet symbol {bad} in "):
        text_to_ids(f"say {{{group}}}")


@pytest.mark.parametrize("text", ["{HH AH0", "HH AH0}", "{HH {AH0}}", "a } b {"])
def test_unbalanced_braces_are_an_error(text):
    with pytest.raises(TextError, match="unbalanced braces"):
        text_to_ids(text)


def test_empty_braces_are_an_error():
    with pytest.raises(TextError, match="empty braces"):
        text_to_ids("say { } now")


# ---- split_text -------------------------------------------------------------------------------

PARAGRAPH = (
    "Printing, in the only sense with which we are at present concerned, differs from most if not from "
    "all the arts and crafts represented in the Exhibition in being comparatively modern. Dr. Smith said "
    "so in 1984. For although the Chinese took impressions from wood blocks engraved in relief for "
    "centuries before the woodcutters of the Netherlands, by a similar process, produced the block books; "
    "these were the immediate predecessors of the true printed book! Was it worth $3.50? {HH AH0 L OW1}."
)


@pytest.mark.parametrize("max_tokens", [28, 32, 64, 128])
def test_split_pieces_fit_and_keep_every_word_in_order(max_tokens):
    # 28: the longest word, "$3.50?", reads as 27 symbols ("three dollars, fifty cents?")
    pieces = split_text(PARAGRAPH, max_tokens)
    assert all(p and 1 <= len(text_to_ids(p)) <= max_tokens for p in pieces)
    assert " ".join(pieces).split() == PARAGRAPH.split()


def test_split_returns_short_text_whole():
    assert split_text("  Hello there.  ", 128) == ["Hello there."]


def test_split_prefers_sentence_ends_and_packs_them():
    sentences = ["The cat sat on the mat.", "It was a sunny day!", "Was it, though?", "Yes, it was."] * 3
    pieces = split_text(" ".join(sentences), 50)
    assert all(p.endswith((".", "!", "?")) for p in pieces)
    assert all(len(text_to_ids(a + " " + b)) > 50 for a, b in itertools.pairwise(pieces))


def test_split_falls_back_to_clauses_within_a_long_sentence():
    text = "one two three four, five six seven eight; nine ten eleven twelve: thirteen fourteen."
    assert split_text(text, 30) == [
        "one two three four,",
        "five six seven eight;",
        "nine ten eleven twelve:",
        "thirteen fourteen.",
    ]


def test_split_does_not_cut_after_an_abbreviation():
    pieces = split_text("Mr. Smith and Dr. Jones met. They spoke.", 40)
    assert pieces == ["Mr. Smith and Dr. Jones met.", "They spoke."]


def test_split_cuts_an_overlong_word_into_letters():
    word = "supercalifragilisticexpialidocious"
    pieces = split_text(f"A {word} day", 10)
    assert all(len(text_to_ids(p)) <= 10 for p in pieces)
    assert "".join(pieces).replace(" ", "").lower() == f"a{word}day"


def test_split_cuts_an_overlong_number_between_the_words_of_its_reading():
    pieces = split_text("I owe 1234567 dollars", 16)
    assert all(len(text_to_ids(p)) <= 16 for p in pieces)
    assert " ".join(pieces) == "I owe " + clean_text("1234567") + " dollars"


def test_split_cuts_an_overlong_arpabet_group_between_phones():
    pieces = split_text("hi {HH AH0 L OW1 W ER1 L D} yo", 4)
    assert pieces == ["hi", "{HH AH0 L OW1}", "{W ER1 L D}", "yo"]


def test_split_cuts_text_glued_to_arpabet_at_the_brace():
    pieces = split_text("abc{HH AH0 L}def", 4)
    assert [text_to_ids(p) for p in pieces] == [ids_of(*"abc"), ids_of("@HH", "@AH0", "@L"), ids_of(*"def")]


def test_split_checks_unknown_characters_like_encoding():
    with pytest.raises(TextError, match="'你'"):
        split_text("a 你 b. " * 50, 16)


def test_split_rejects_nonpositive_max_tokens():
    with pytest.raises(ValueError, match="max_tokens must be at least 1"):
        split_text("hi", 0)


def test_split_sentences_cuts_where_split_text_sees_a_sentence_end():
    from fastspeech.text import split_sentences

    text = 'Hello, Dr. Smith. How are you? "Fine!" said {HH AH0 L OW1}. And more'
    assert split_sentences(text) == [
        "Hello, Dr. Smith.",
        "How are you?",
        '"Fine!"',
        "said {HH AH0 L OW1}.",
        "And more",
    ]
    assert split_sentences("no end") == ["no end"]


@pytest.mark.parametrize(
    "text, sentences",
    [
        ("Mr. Smith vs. Dr. Jones etc. are here.", ["Mr. Smith vs. Dr. Jones etc. are here."]),
        ("See e.g. the U.S.A. today.", ["See e.g. the U.S.A. today."]),
        ("Call at 3 p.m. tomorrow. Or not.", ["Call at 3 p.m. tomorrow.", "Or not."]),
        ("Fruit, e.g. Apples. Red vs. Blue.", ["Fruit, e.g. Apples.", "Red vs. Blue."]),
        ("I live in the U.S.A. It is big.", ["I live in the U.S.A.", "It is big."]),
        ('He left. "Why?" she asked.', ["He left.", '"Why?"', "she asked."]),
    ],
)
def test_a_period_before_a_lower_case_word_or_after_an_abbreviation_ends_no_sentence(text, sentences):
    """The server speaks each sentence on its own: a cut after "vs." or "p.m." mid-sentence had made
    two utterances of one."""
    from fastspeech.text import split_sentences

    assert split_sentences(text) == sentences
