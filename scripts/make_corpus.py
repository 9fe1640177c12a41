"""Make the demo voice's training corpus: generated English sentences spoken by eSpeak NG.

    python scripts/make_corpus.py                          # data/demo_corpus.npz, tests/data/demo_heldout.json
    python scripts/make_corpus.py --count 40 --heldout 8 --out /tmp/c.npz --test-json ''   # a quick try

Nothing is downloaded. The text comes from a small seeded grammar written below (word lists and
sentence templates: statements, questions, exclamations, lists, numbers, money, years, ordinals,
abbreviations, parentheses, colons and semicolons), 10-180 characters of raw text per utterance.
Each utterance is cleaned and encoded exactly as at inference (`clean_text`, `text_to_ids`), and
eSpeak NG (the Debian `espeak-ng` package: `apt-get install espeak-ng`; or the `espeakng-loader`
wheel, which bundles the library) speaks the *cleaned* text, so its character offsets are token
indices (sentence starts are capitalized first, which keeps every offset: eSpeak takes "world. this"
for an abbreviation and runs the sentences together, but "world. This" gets its sentence pause).
Its native rate is 22050 Hz, DLE's, so nothing is resampled; nothing is trimmed either (eSpeak adds
no pause after the last word). Mels are `fastspeech.vocoder.wav_to_mel` (DLE's convention),
To = 1 + samples // 256. Held-out wavs go to data/heldout_wavs/ (`--all-wavs` for every one).

Durations (frames per token, summing exactly to To) come from eSpeak's own timing events, read
through libespeak-ng's synthesis callback (ctypes, no binding package):
  1. Word events give, for each spoken word, its first character and its first sample. A word
     event starts a *unit*: its characters run to the next word event. The unit's *spoken* part is
     up to its last letter (internal apostrophes and hyphens included: "eighty-four" is one unit
     when eSpeak reports one word for it); the rest (spaces, punctuation) is its *gap*.
  2. Phoneme events mark pauses (names starting with '_'). The pause phonemes at the end of a unit's
     time span (after its last sounding phoneme) are the silence before the next word: the spoken
     part gets [word start, pause start), the gap gets [pause start, next word start). Audio before
     the first word goes to characters before it (a leading '(') or else to the first word.
  3. Sample times become frame boundaries: frame t is centred on sample 256 t, so a boundary at
     sample s falls before frame ceil(s / 256); the last boundary is To.
  4. A spoken part's frames are shared evenly among its characters (largest remainder, so they sum
     exactly); a gap's frames go to its punctuation (evenly), or to its spaces if it has none. A
     space between words with no pause gets 0 frames, as in DLE's teacher alignments.
Utterances whose events do not line up (letters before the first word event, word times going
backwards) are skipped and counted.

Storage (one compressed npz; `scripts/train_demo.py` reads it with numpy alone):
  texts (N,) str            the raw sentences;        cleaned (N,) str: what the model reads
  tokens (sum Ti,) uint8    token ids, concatenated;  token_offsets (N+1,) int64
  durations (sum Ti,) int16 frames per token;         (durations of item i sum to its To)
  mels_xz (bytes,) uint8    the log mels (sum To, mel_bins) quantized to uint8 (mel = mel_lo +
                            q * mel_step, error <= step / 2 ~ 0.025), then LZMA-compressed (about
                            48 bytes a frame; fp16 would take 160): `load_mels` below undoes it
  mel_offsets (N+1,) int64; mel_bins int64; mel_lo, mel_step float32 scalars
  heldout (N,) bool         the evaluation split (never trained on); seed, version
"""

from __future__ import annotations

import argparse
import ctypes
import ctypes.util
import itertools
import json
import logging
import lzma
import multiprocessing
import os
import random
import re
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fastspeech.text import clean_text, text_to_ids
from fastspeech.vocoder import AudioConfig, wav_to_mel

log = logging.getLogger("make_corpus")

VERSION = 1
MIN_CHARS, MAX_CHARS = 10, 180

# ---------------------------------------------------------------------------------------------
# Text: a seeded grammar
# ---------------------------------------------------------------------------------------------
def _words(text: str) -> list[str]:
    return text.split()


# fmt: off
NAMES = _words("""Anna Ben Clara David Emma Frank Grace Henry Iris Jack Kate Leo Maria Nick Olivia Peter Rosa
Sam Tina Victor Wendy Zoe Oscar Lucy Mark Nora Paul Ruth Tom Alice George Helen James Laura Martin
Sarah Simon Julia Daniel Edward Fiona Hugo Ivan Joyce Kevin Linda Mike Nancy Owen Rachel Steve Ursula
Walter Yvonne Arthur Betty Carlos Diana Elena Felix Gloria Harry Isabel""")
TITLES = ["Dr.", "Mr.", "Mrs.", "Capt.", "Gen.", "Lt.", "Sgt.", "Rev.", "Col.", "Maj."]
SURNAMES = _words("""Smith Brown Green White Black Taylor Wilson Moore Clark Hall Young King Wright Baker Hill
Adams Carter Turner Parker Cooper Ward Brooks Gray Hughes Price Bennett Wood Barnes Ross Foster
Hayes Porter Reed""")
PLACES = _words("""London Paris Boston Chicago Denver Texas Canada Japan Egypt Berlin Rome Madrid Tokyo Sydney
Dublin Oslo Vienna Seattle Ohio Florida Africa Europe Asia India China Mexico Brazil Peru Kenya
Norway Iceland Scotland Wales Houston Atlanta Portland Geneva Lisbon Prague Warsaw Cairo""")
# (singular, plural)
NOUNS = [(w, None) for w in _words("""house car dog cat bird tree river mountain city village garden window door
table chair book letter phone computer teacher doctor friend neighbor farmer student driver engineer
artist baker market school station train bus ship bridge road street park lake forest field island
beach storm cloud morning evening night week month year hour minute song story picture map key box
bag cup glass bottle plate bread cheese apple orange cake egg horse cow rabbit fox bear lion kitchen
office hospital library museum church factory hotel restaurant shop bank garage machine engine wheel
clock lamp candle paper pencil ticket coat hat shoe shirt dress ring coin gift game ball boat plane
camera radio piano guitar violin drum question answer idea plan problem reason message report
meeting party journey holiday language number color family team company country world court officer
soldier king queen captain president judge lawyer nurse pilot sailor writer singer painter scientist
worker stranger visitor blanket bucket basket button carpet castle cottage desk envelope feather
finger flower hammer jacket kettle ladder mirror needle pillow pocket rope saddle spoon sweater tower
tunnel wagon wallet whistle window puzzle rocket planet diamond dragon giant wizard robot monkey
tiger turtle spider penguin dolphin elephant giraffe kitten puppy lemon potato tomato carrot onion
banana cherry sandwich pizza""")] + [
    ("child", "children"), ("mouse", "mice"), ("sheep", "sheep"), ("fish", "fish"), ("wolf", "wolves"),
    ("man", "men"), ("woman", "women"), ("knife", "knives"), ("leaf", "leaves"), ("person", "people"),
    ("tooth", "teeth"), ("foot", "feet"), ("goose", "geese"), ("shelf", "shelves"),
]
ADJECTIVES = _words("""old young small large big little quiet loud bright dark warm cold happy sad quick slow heavy
light clean dirty strange simple careful brave clever gentle kind tired hungry busy empty full famous
ancient modern narrow wide deep tall short green blue red yellow white black golden silver wooden
broken hidden open closed early late beautiful ugly rich poor strong weak soft hard smooth rough sharp
fresh wet dry sweet bitter proud honest lucky polite serious curious nervous calm wild lonely friendly
important different useful expensive cheap purple orange noisy sleepy shiny dusty muddy frozen
crowded peaceful dangerous enormous tiny delicious terrible wonderful awful perfect pleasant""")
# (base, third person singular, past)
TRANSITIVE = [
    ("see", "sees", "saw"), ("find", "finds", "found"), ("take", "takes", "took"),
    ("bring", "brings", "brought"), ("buy", "buys", "bought"), ("sell", "sells", "sold"),
    ("paint", "paints", "painted"), ("build", "builds", "built"), ("carry", "carries", "carried"),
    ("open", "opens", "opened"), ("close", "closes", "closed"), ("watch", "watches", "watched"),
    ("visit", "visits", "visited"), ("clean", "cleans", "cleaned"), ("fix", "fixes", "fixed"),
    ("move", "moves", "moved"), ("push", "pushes", "pushed"), ("pull", "pulls", "pulled"),
    ("follow", "follows", "followed"), ("remember", "remembers", "remembered"),
    ("forget", "forgets", "forgot"), ("hold", "holds", "held"), ("read", "reads", "read"),
    ("write", "writes", "wrote"), ("draw", "draws", "drew"), ("cook", "cooks", "cooked"),
    ("eat", "eats", "ate"), ("drink", "drinks", "drank"), ("catch", "catches", "caught"),
    ("throw", "throws", "threw"), ("lose", "loses", "lost"), ("keep", "keeps", "kept"),
    ("send", "sends", "sent"), ("answer", "answers", "answered"), ("explain", "explains", "explained"),
    ("describe", "describes", "described"), ("check", "checks", "checked"),
    ("count", "counts", "counted"), ("wash", "washes", "washed"), ("hide", "hides", "hid"),
    ("borrow", "borrows", "borrowed"), ("deliver", "delivers", "delivered"),
    ("repair", "repairs", "repaired"), ("study", "studies", "studied"), ("love", "loves", "loved"),
    ("like", "likes", "liked"), ("need", "needs", "needed"), ("want", "wants", "wanted"),
    ("choose", "chooses", "chose"), ("break", "breaks", "broke"), ("feed", "feeds", "fed"),
    ("teach", "teaches", "taught"), ("show", "shows", "showed"), ("help", "helps", "helped"),
    ("call", "calls", "called"), ("ask", "asks", "asked"), ("touch", "touches", "touched"),
    ("measure", "measures", "measured"), ("order", "orders", "ordered"), ("pack", "packs", "packed"),
]
INTRANSITIVE = [
    ("arrive", "arrives", "arrived"), ("leave", "leaves", "left"), ("sleep", "sleeps", "slept"),
    ("run", "runs", "ran"), ("walk", "walks", "walked"), ("laugh", "laughs", "laughed"),
    ("smile", "smiles", "smiled"), ("sing", "sings", "sang"), ("dance", "dances", "danced"),
    ("wait", "waits", "waited"), ("work", "works", "worked"), ("travel", "travels", "traveled"),
    ("listen", "listens", "listened"), ("speak", "speaks", "spoke"), ("fall", "falls", "fell"),
    ("rest", "rests", "rested"), ("shout", "shouts", "shouted"), ("whisper", "whispers", "whispered"),
    ("swim", "swims", "swam"), ("fly", "flies", "flew"), ("jump", "jumps", "jumped"),
    ("climb", "climbs", "climbed"), ("return", "returns", "returned"), ("agree", "agrees", "agreed"),
    ("stay", "stays", "stayed"), ("wake", "wakes", "woke"), ("begin", "begins", "began"),
    ("win", "wins", "won"), ("cry", "cries", "cried"), ("think", "thinks", "thought"),
]
ADVERBS = _words("""quickly slowly quietly carefully suddenly finally always never often sometimes rarely again
together alone early late today yesterday tomorrow soon almost really still already perhaps honestly
happily gently loudly easily badly just""")
PREPOSITIONS = _words("in at near behind across under over beside inside outside past through along")
DAYS = _words("Monday Tuesday Wednesday Thursday Friday Saturday Sunday")
MONTHS = _words("January February March April May June July August September October November December")
PRONOUNS = [("I", False), ("you", False), ("he", True), ("she", True), ("it", True), ("we", False),
            ("they", False)]
OBJECT_PRONOUNS = _words("me you him her it us them")
INTERJECTIONS = ["Hello", "Oh", "Well", "Yes", "No", "Wow", "Look", "Listen", "Please", "Sorry",
                 "Thank you", "Good morning", "Good night", "Excuse me", "Hey", "Okay", "Of course"]
SHORT = ["Hello world.", "It just works.", "Good morning!", "Thank you very much.", "See you soon.",
         "Watch out!", "Not again!", "Come here, please.", "Is it ready?", "What time is it?",
         "Where are you?", "I know.", "That is fine.", "Let us go.", "Try again.", "Well done!"]
# fmt: on


def _plural(noun: tuple[str, str | None]) -> str:
    word, plural = noun
    if plural:
        return plural
    if word.endswith(("s", "x", "ch", "sh")):
        return word + "es"
    if word.endswith("y") and word[-2] not in "aeiou":
        return word[:-1] + "ies"
    return word + "s"


class SentenceGenerator:
    """Seeded random English sentences; `sentence(target)` is about `target` characters long."""

    def __init__(self, seed: int):
        self.r = random.Random(seed)

    def pick(self, items):
        return self.r.choice(items)

    def chance(self, p: float) -> bool:
        return self.r.random() < p

    # ---- phrases
    def article(self, word: str) -> str:
        return "an" if word[0] in "aeiou" else "a"

    def noun_phrase(self, plural: bool | None = None) -> str:
        noun = self.pick(NOUNS)
        if plural is None:
            plural = self.chance(0.3)
        adj = self.pick(ADJECTIVES) if self.chance(0.45) else ""
        head = _plural(noun) if plural else noun[0]
        words = f"{adj} {head}".strip()
        if plural:
            det = self.pick(["the", "some", "my", "our", "those", "these", "their", "two", "many", ""])
            if self.chance(0.2):
                det = str(self.number(2, 500))
        else:
            det = self.pick(["the", "the", "a", "my", "your", "his", "her", "this", "that", "our"])
            if det == "a":
                det = self.article(words)
        return f"{det} {words}".strip()

    def person(self) -> str:
        k = self.r.random()
        if k < 0.4:
            return self.pick(NAMES)
        if k < 0.6:
            return f"{self.pick(TITLES)} {self.pick(SURNAMES)}"
        if k < 0.7:
            return f"{self.pick(NAMES)} {self.pick(SURNAMES)}"
        return self.noun_phrase(plural=False)

    def subject(self) -> tuple[str, bool]:
        """(text, third person singular)"""
        k = self.r.random()
        if k < 0.25:
            return self.pick(PRONOUNS)
        if k < 0.35:
            return self.noun_phrase(plural=True), False
        return self.person(), True

    def place(self) -> str:
        if self.chance(0.3):
            return f"{self.pick(['in', 'to', 'from', 'near'])} {self.pick(PLACES)}"
        return f"{self.pick(PREPOSITIONS)} {self.noun_phrase(plural=False)}"

    def time_phrase(self) -> str:
        k = self.r.random()
        if k < 0.2:
            return f"on {self.pick(DAYS)}"
        if k < 0.35:
            return f"in {self.pick(MONTHS)}"
        if k < 0.5:
            return f"in {self.r.randint(1800, 2030)}"
        if k < 0.65:
            return f"at {self.r.randint(1, 12)} o'clock"
        if k < 0.8:
            return f"on {self.pick(MONTHS)} {self.ordinal(1, 31)}"
        return self.pick(["last night", "this morning", "every day", "next week", "an hour ago",
                          "after lunch", "before dinner", "at noon", "at midnight", "all day long"])

    def number(self, lo: int = 0, hi: int = 100) -> str:
        n = self.r.randint(lo, hi)
        return f"{n:,}" if n >= 1000 and self.chance(0.5) else str(n)

    def ordinal(self, lo: int, hi: int) -> str:
        n = self.r.randint(lo, hi)
        suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
        return f"{n}{suffix}"

    def money(self) -> str:
        if self.chance(0.15):
            return f"£{self.r.randint(1, 90)}"
        dollars = self.r.randint(0, 300)
        if self.chance(0.5):
            return f"${dollars}"
        return f"${dollars}.{self.r.randint(1, 99):02d}"

    def verb(self, verbs, third: bool) -> str:
        base, s, past = self.pick(verbs)
        k = self.r.random()
        if k < 0.45:
            return past
        if k < 0.7:
            return s if third else base
        if k < 0.8:
            return f"will {base}"
        if k < 0.9:
            return f"{self.pick(['can', 'must', 'should', 'might', 'could'])} {base}"
        if self.chance(0.2):
            return f"never {past}"
        return f"{self.pick(['did not', 'does not' if third else 'do not', 'cannot'])} {base}"

    # ---- clauses
    def clause(self) -> str:
        subj, third = self.subject()
        k = self.r.random()
        if k < 0.45:
            obj = self.noun_phrase() if self.chance(0.85) else self.pick(OBJECT_PRONOUNS)
            parts = [subj, self.verb(TRANSITIVE, third), obj]
        elif k < 0.75:
            parts = [subj, self.verb(INTRANSITIVE, third)]
            if self.chance(0.4):
                parts.append(self.pick(ADVERBS))
        elif k < 0.85:
            be = ("was" if subj == "I" or third else "were") if self.chance(0.5) else (
                "am" if subj == "I" else "is" if third else "are")
            parts = [subj, be, self.pick(["very", "quite", "so", "not", "really", ""]), self.pick(ADJECTIVES)]
        else:
            parts = [subj, self.verb([("pay", "pays", "paid"), ("spend", "spends", "spent")], third),
                     self.money(), "for", self.noun_phrase()]
        if self.chance(0.35):
            parts.append(self.place())
        if self.chance(0.3):
            parts.append(self.time_phrase())
        return " ".join(p for p in parts if p)

    def sentence_once(self) -> str:
        k = self.r.random()
        if k < 0.04:
            return self.pick(SHORT)
        if k < 0.35:
            body, end = self.clause(), self.pick(".....!")
        elif k < 0.5:
            body, end = self.question(), "?"
        elif k < 0.62:
            body = f"{self.clause()}{self.pick([',', ',', ';'])} {self.pick(['and', 'but', 'so', 'yet', 'because'])} {self.clause()}"
            end = "."
        elif k < 0.7:
            items = [self.noun_phrase() for _ in range(self.r.randint(2, 4))]
            subj, third = self.subject()
            body = f"{subj} {self.verb(TRANSITIVE, third)} {', '.join(items[:-1])}, and {items[-1]}"
            end = "."
        elif k < 0.77:
            n = self.r.randint(2, 3)
            body = f"{self.person()} needed {['', '', 'two', 'three'][n]} things: " + ", ".join(
                self.noun_phrase(plural=False) for _ in range(n))
            end = "."
        elif k < 0.84:
            subj, third = self.subject()
            body = f"{subj} ({self.pick(['of course', 'as usual', 'sadly', 'luckily', 'they said', 'or so it seemed', 'believe it or not'])}) {self.verb(INTRANSITIVE, third)} {self.place()}"
            end = "."
        elif k < 0.92:
            body = self.number_sentence()
            end = self.pick("..!")
        else:
            body = f"{self.pick(INTERJECTIONS)}, {self.clause()}"
            end = self.pick(".!?")
        return body[0].upper() + body[1:] + end

    def question(self) -> str:
        subj, third = self.subject()
        base, _, _ = self.pick(TRANSITIVE)
        k = self.r.random()
        if k < 0.3:
            return f"{'Does' if third else 'Do'} {subj} {base} {self.noun_phrase()}"
        if k < 0.55:
            return f"{self.pick(['Why', 'When', 'Where', 'How'])} did {subj} {base} {self.noun_phrase()}"
        if k < 0.75:
            noun = self.pick(NOUNS)
            return f"How many {_plural(noun)} {self.pick(['are there', 'did you see', 'can we buy', 'do they need'])} {self.place()}"
        if k < 0.9:
            return f"{self.pick(['Can', 'Could', 'Will', 'Would'])} you {base} {self.noun_phrase()}"
        return f"Is {self.noun_phrase(plural=False)} {self.pick(ADJECTIVES)}"

    def number_sentence(self) -> str:
        k = self.r.random()
        if k < 0.25:
            return f"There {self.pick(['were', 'are'])} {self.number(2, 2500)} {_plural(self.pick(NOUNS))} {self.place()}"
        if k < 0.45:
            return f"In {self.r.randint(1700, 2029)}, {self.clause()}"
        if k < 0.6:
            return f"The {self.pick(['train', 'bus', 'plane', 'ship', 'show'])} leaves at {self.r.randint(1, 12)} o'clock from platform {self.number(1, 20)}"
        if k < 0.75:
            return f"{self.person()} lives on the {self.ordinal(1, 60)} floor"
        if k < 0.9:
            return f"It is {self.r.randint(1, 99)}.{self.r.randint(1, 9)} miles {self.pick(['to', 'from'])} {self.pick(PLACES)}"
        return f"The {self.noun_phrase(plural=False).split()[-1]} costs {self.money()}"

    def sentence(self, target: int) -> str:
        """Join sentences until about `target` raw characters, never more than MAX_CHARS."""
        text = self.sentence_once()
        while len(text) < target - 15:
            more = self.sentence_once()
            if len(text) + 1 + len(more) > MAX_CHARS:
                break
            text = f"{text} {more}"
        return text

    def corpus(self, count: int) -> list[str]:
        """`count` distinct sentences, raw length MIN_CHARS..MAX_CHARS, more short ones than long."""
        seen, out = set(), []
        while len(out) < count:
            # Short utterances are cheap to store and long ones expensive: skew targets short.
            target = MIN_CHARS + int((MAX_CHARS - MIN_CHARS) * self.r.random() ** 2.5)
            text = self.sentence(target)
            if MIN_CHARS <= len(text) <= MAX_CHARS and text not in seen:
                seen.add(text)
                out.append(text)
        return out


# ---------------------------------------------------------------------------------------------
# eSpeak NG through its C library
# ---------------------------------------------------------------------------------------------
class _EventId(ctypes.Union):
    _fields_ = [("number", ctypes.c_int), ("name", ctypes.c_char_p), ("string", ctypes.c_char * 8)]


class _Event(ctypes.Structure):
    """`espeak_EVENT` (speak_lib.h)."""

    _fields_ = [
        ("type", ctypes.c_int),
        ("unique_identifier", ctypes.c_uint),
        ("text_position", ctypes.c_int),  # 1-based character offset in the text given to espeak_Synth
        ("length", ctypes.c_int),  # word length in characters (word events)
        ("audio_position", ctypes.c_int),  # milliseconds
        ("sample", ctypes.c_int),  # samples from the start of the synthesis
        ("user_data", ctypes.c_void_p),
        ("id", _EventId),
    ]


_CALLBACK = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.POINTER(_Event))
_EVENT_LIST_TERMINATED, _EVENT_WORD, _EVENT_PHONEME = 0, 1, 7
_AUDIO_OUTPUT_SYNCHRONOUS, _INITIALIZE_PHONEME_EVENTS, _CHARS_UTF8 = 2, 0x0001, 1


@dataclass(frozen=True)
class Word:
    char: int  # 0-based index of the word's first character
    length: int
    sample: int


@dataclass(frozen=True)
class Phoneme:
    char: int
    name: str
    sample: int


class Espeak:
    """libespeak-ng in synchronous mode: text -> (int16 samples at 22050 Hz, word and phoneme events)."""

    def __init__(self, voice: str = "en-us", rate: int | None = None):
        lib_path, data_path = _find_espeak()
        self.lib = ctypes.CDLL(lib_path)
        self.sample_rate = self.lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path, _INITIALIZE_PHONEME_EVENTS
        )
        if self.sample_rate <= 0:
            raise RuntimeError(f"espeak_Initialize failed ({lib_path}); is espeak-ng-data installed?")
        if self.lib.espeak_SetVoiceByName(voice.encode()) != 0:
            raise RuntimeError(f"eSpeak NG has no voice {voice!r}; `espeak-ng --voices=en` lists them")
        if rate is not None:
            self.lib.espeak_SetParameter(1, rate, 0)  # espeakRATE, words per minute
        self._callback = _CALLBACK(self._on_audio)  # keep a reference: the library holds a pointer
        self.lib.espeak_SetSynthCallback(self._callback)
        self.lib.espeak_Synth.argtypes = [ctypes.c_char_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int,
                                          ctypes.c_uint, ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]

    def _on_audio(self, wav, n, events) -> int:
        if n > 0:
            self._chunks.append(np.ctypeslib.as_array(wav, (n,)).copy())
        i = 0
        while events[i].type != _EVENT_LIST_TERMINATED:
            e = events[i]
            if e.type == _EVENT_WORD and e.length > 0:  # eSpeak also sends empty words at clause ends
                self._words.append(Word(e.text_position - 1, e.length, e.sample))
            elif e.type == _EVENT_PHONEME:
                name = bytes(e.id.string).split(b"\0")[0].decode("utf-8", "replace")
                self._phonemes.append(Phoneme(e.text_position - 1, name, e.sample))
            i += 1
        return 0

    def synthesize(self, text: str) -> tuple[np.ndarray, list[Word], list[Phoneme]]:
        """int16 samples (no pause added after the last word), word events, phoneme events."""
        self._chunks, self._words, self._phonemes = [], [], []
        data = text.encode("utf-8")
        err = self.lib.espeak_Synth(data, len(data) + 1, 0, 1, 0, _CHARS_UTF8, None, None)
        if err != 0 or self.lib.espeak_Synchronize() != 0:
            raise RuntimeError(f"espeak_Synth failed ({err}) on {text!r}")
        wav = np.concatenate(self._chunks) if self._chunks else np.zeros(0, np.int16)
        return wav, self._words, self._phonemes


def _find_espeak() -> tuple[str, bytes | None]:
    """(library path, data path or None): $ESPEAK_NG_LIBRARY, the espeakng-loader wheel, or the system's."""
    if os.environ.get("ESPEAK_NG_LIBRARY"):
        data = os.environ.get("ESPEAK_NG_DATA")
        return os.environ["ESPEAK_NG_LIBRARY"], data.encode() if data else None
    try:
        import espeakng_loader  # PyPI wheel that bundles libespeak-ng and its data

        return espeakng_loader.get_library_path(), str(espeakng_loader.get_data_path()).encode()
    except ImportError:
        pass
    found = ctypes.util.find_library("espeak-ng")
    if not found:
        raise RuntimeError(
            "libespeak-ng not found: `apt-get install espeak-ng` (Debian/Ubuntu), "
            "`pip install espeakng-loader`, or set ESPEAK_NG_LIBRARY=/path/to/libespeak-ng.so"
        )
    return found, None


# ---------------------------------------------------------------------------------------------
# Durations from the events
# ---------------------------------------------------------------------------------------------
class AlignmentError(ValueError):
    """eSpeak's events for an utterance do not cover its letters in order."""


def token_durations(
    text: str, words: list[Word], phonemes: list[Phoneme], n_samples: int, hop: int = 256
) -> np.ndarray:
    """Frames per character of `text` (the text eSpeak spoke), summing to 1 + n_samples // hop.

    The method is the module docstring's, steps 1-4.
    """
    n_frames = 1 + n_samples // hop
    is_letter = np.array([c.isalpha() for c in text])
    # 1. units: one per word event, starting at its first letter, in text order
    starts: dict[int, int] = {}
    for w in words:
        c = w.char
        while c < len(text) and not is_letter[c]:
            c += 1
        if c < len(text):
            starts[c] = min(starts.get(c, w.sample), w.sample)
    if not starts:
        raise AlignmentError(f"no word events for {text!r}")
    chars = sorted(starts)
    samples = [starts[c] for c in chars]
    if any(b < a for a, b in itertools.pairwise(samples)):
        raise AlignmentError(f"word times go backwards in {text!r}")
    first_letter = int(np.argmax(is_letter))
    if chars[0] != first_letter:
        raise AlignmentError(f"letters before the first word event in {text!r}")

    # Sample boundaries: gap before the first word, then (spoken, gap) per unit.
    lead_gap = range(chars[0])  # characters before the first word ('(')
    bounds = [0]  # sample where each segment starts; segments: lead gap, spoken0, gap0, spoken1, ...
    segments: list[range] = [lead_gap]
    first_start = samples[0] if len(lead_gap) else 0
    for k, c in enumerate(chars):
        end_char = chars[k + 1] if k + 1 < len(chars) else len(text)
        last_letter = c + int(np.nonzero(is_letter[c:end_char])[0][-1])
        spoken, gap = range(c, last_letter + 1), range(last_letter + 1, end_char)
        start = first_start if k == 0 else samples[k]
        end = samples[k + 1] if k + 1 < len(chars) else n_samples
        pause = _trailing_pause(phonemes, start, end) if len(gap) else end
        bounds += [start, pause]
        segments += [spoken, gap]
    bounds.append(n_samples)

    # 3. sample -> frame boundaries (monotone, first 0, last n_frames)
    frame_bounds = np.minimum(np.ceil(np.array(bounds, dtype=np.float64) / hop).astype(np.int64), n_frames)
    frame_bounds[0], frame_bounds[-1] = 0, n_frames
    frame_bounds = np.maximum.accumulate(frame_bounds)

    # 4. share each segment's frames among its characters
    durations = np.zeros(len(text), dtype=np.int64)
    for i, seg in enumerate(segments):
        frames = int(frame_bounds[i + 1] - frame_bounds[i])
        if frames == 0:
            continue
        if i % 2 == 1:  # spoken: every character
            owners = list(seg)
        else:  # gap: punctuation first, else spaces
            owners = [j for j in seg if text[j] not in " "] or list(seg)
            if not owners:  # no characters between two word events: the previous word keeps the time
                owners = list(segments[i - 1]) if i > 0 else list(segments[1])
        durations[owners] += _share(frames, len(owners))
    assert durations.sum() == n_frames, (durations.sum(), n_frames, text)
    return durations


def _trailing_pause(phonemes: list[Phoneme], start: int, end: int) -> int:
    """Start of the run of pause phonemes that ends the span [start, end), or `end` if none."""
    inside = [p for p in phonemes if start < p.sample < end]
    pause = end
    for p in reversed(inside):
        if not p.name.startswith("_"):
            break
        pause = p.sample
    return pause


def _share(frames: int, n: int) -> np.ndarray:
    """`frames` split over n owners as evenly as possible (largest remainder, earlier ones first)."""
    edges = np.floor(np.arange(n + 1) * frames / n + 0.5).astype(np.int64)
    return np.diff(edges)


# ---------------------------------------------------------------------------------------------
# One utterance, and the corpus
# ---------------------------------------------------------------------------------------------
_ESPEAK: Espeak | None = None
AUDIO = AudioConfig()


def _init_worker(voice: str, rate: int | None) -> None:
    global _ESPEAK
    _ESPEAK = Espeak(voice, rate)
    if _ESPEAK.sample_rate != AUDIO.sample_rate:
        raise RuntimeError(f"eSpeak NG speaks at {_ESPEAK.sample_rate} Hz; expected {AUDIO.sample_rate}")


def sentence_case(cleaned: str) -> str:
    """Capitalize sentence starts, keeping every character's offset.

    eSpeak NG takes a period followed by a lower-case letter for an abbreviation, not a sentence end:
    it then neither pauses there nor reports the next word's position correctly.
    """
    return _SENTENCE_START_RE.sub(lambda m: m.group(0).upper(), cleaned)


_SENTENCE_START_RE = re.compile(r"(?:^|(?<=[.!?] ))\(?[a-z]")


def make_utterance(text: str) -> dict | str:
    """Raw text -> {ids, durations, mel, wav}; or the reason it was skipped."""
    ids = text_to_ids(text)
    cleaned = clean_text(text)
    if len(cleaned) != len(ids):
        return f"cleaned text and ids differ in length: {text!r}"
    wav16, words, phonemes = _ESPEAK.synthesize(sentence_case(cleaned))
    wav = wav16.astype(np.float32) / 32768.0
    mel = wav_to_mel(wav, AUDIO).astype(np.float32)  # (To, 80)
    try:
        durations = token_durations(cleaned, words, phonemes, len(wav), AUDIO.hop_length)
    except AlignmentError as exc:
        return str(exc)
    assert durations.sum() == mel.shape[0]
    return {"text": text, "cleaned": cleaned, "ids": np.asarray(ids, np.uint8), "durations": durations,
            "mel": mel, "wav": wav16}


def build(texts: list[str], workers: int, voice: str, rate: int | None) -> tuple[list[dict], list[str]]:
    done, skipped = [], []
    t0 = time.time()
    with multiprocessing.get_context("fork").Pool(workers, _init_worker, (voice, rate)) as pool:
        for i, result in enumerate(pool.imap(make_utterance, texts, chunksize=8)):
            (skipped if isinstance(result, str) else done).append(result)
            if (i + 1) % 250 == 0:
                log.info("%d/%d utterances (%.0f s)", i + 1, len(texts), time.time() - t0)
    return done, skipped


def save(path: Path, items: list[dict], heldout: np.ndarray, seed: int) -> dict:
    """Write the npz (module docstring) and return the stats that describe it."""
    mels = np.concatenate([u["mel"] for u in items])
    lo = float(np.log(AUDIO.clamp))
    hi = float(mels.max())
    step = (hi - lo) / 255.0
    q = np.clip(np.rint((mels - lo) / step), 0, 255).astype(np.uint8)
    mel_lens = np.array([len(u["mel"]) for u in items])
    tok_lens = np.array([len(u["ids"]) for u in items])
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        path,
        version=np.int64(VERSION),
        seed=np.int64(seed),
        texts=np.array([u["text"] for u in items]),
        cleaned=np.array([u["cleaned"] for u in items]),
        tokens=np.concatenate([u["ids"] for u in items]).astype(np.uint8),
        token_offsets=np.concatenate([[0], np.cumsum(tok_lens)]).astype(np.int64),
        durations=np.concatenate([u["durations"] for u in items]).astype(np.int16),
        mels_xz=np.frombuffer(lzma.compress(q.tobytes(), preset=6), dtype=np.uint8),
        mel_bins=np.int64(q.shape[1]),
        mel_offsets=np.concatenate([[0], np.cumsum(mel_lens)]).astype(np.int64),
        mel_lo=np.float32(lo),
        mel_step=np.float32(step),
        heldout=heldout,
    )
    raw = np.array([len(u["text"]) for u in items])
    return {
        "utterances": len(items),
        "heldout": int(heldout.sum()),
        "raw_chars": [int(raw.min()), int(raw.max()), float(raw.mean())],
        "tokens": [int(tok_lens.min()), int(tok_lens.max()), int(tok_lens.sum())],
        "frames": [int(mel_lens.min()), int(mel_lens.max()), int(mel_lens.sum())],
        "hours": float(mel_lens.sum() * AUDIO.hop_length / AUDIO.sample_rate / 3600),
        "mel_quantization_step": step,
        "bytes": path.stat().st_size,
    }


def load_mels(corpus) -> np.ndarray:
    """The (sum To, mel_bins) float32 log mels of an opened corpus npz."""
    q = np.frombuffer(lzma.decompress(corpus["mels_xz"].tobytes()), dtype=np.uint8)
    return corpus["mel_lo"] + q.reshape(-1, int(corpus["mel_bins"])).astype(np.float32) * corpus["mel_step"]


def write_test_json(path: Path, items: list[dict], count: int) -> None:
    """A few held-out utterances with their reference durations, for tests/test_demo_voice.py."""
    rows = [{"text": u["text"], "cleaned": u["cleaned"], "ids": [int(i) for i in u["ids"]],
             "durations": [int(d) for d in u["durations"]]} for u in items[:count]]
    header = {"source": "scripts/make_corpus.py: eSpeak NG en-us, held-out split (never trained on)",
              "hop_length": AUDIO.hop_length, "sample_rate": AUDIO.sample_rate}
    fields = [f" {json.dumps(k)}: {json.dumps(v)}," for k, v in header.items()]
    body = ",\n".join("  " + json.dumps(r) for r in rows)  # one utterance a line
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("{\n" + "\n".join(fields) + '\n "utterances": [\n' + body + "\n ]\n}\n")


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--count", type=int, default=2100, help="utterances to generate (before skips)")
    p.add_argument("--heldout", type=int, default=50, help="utterances kept out of training")
    p.add_argument("--seed", type=int, default=10)
    p.add_argument("--voice", default="en-us")
    p.add_argument("--rate", type=int, default=None, help="eSpeak words per minute (default 175)")
    p.add_argument("--out", type=Path, default=Path("data/demo_corpus.npz"))
    p.add_argument("--wav-dir", type=Path, default=Path("data/heldout_wavs"),
                   help="held-out wavs are written here ('' for none)")
    p.add_argument("--all-wavs", action="store_true", help="write every utterance's wav to --wav-dir")
    p.add_argument("--test-json", default="tests/data/demo_heldout.json", help="'' for none")
    p.add_argument("--test-count", type=int, default=5)
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s")

    texts = SentenceGenerator(args.seed).corpus(args.count)
    items, skipped = build(texts, args.workers, args.voice, args.rate)
    for reason in skipped[:5]:
        log.warning("skipped: %s", reason)
    # Held-out: every k-th utterance, so it spans all lengths (the generator's order is random).
    heldout = np.zeros(len(items), dtype=bool)
    if args.heldout:
        heldout[np.linspace(0, len(items) - 1, args.heldout).round().astype(int)] = True
    stats = save(args.out, items, heldout, args.seed)
    stats["skipped"] = len(skipped)
    held = [u for u, h in zip(items, heldout) if h]
    if str(args.wav_dir):
        import soundfile

        args.wav_dir.mkdir(parents=True, exist_ok=True)
        for i, (u, h) in enumerate(zip(items, heldout)):
            if h or args.all_wavs:
                soundfile.write(args.wav_dir / f"{i:05d}.wav", u["wav"], AUDIO.sample_rate)
    if args.test_json:
        write_test_json(Path(args.test_json), held, args.test_count)
    log.info("wrote %s: %s", args.out, json.dumps(stats))


if __name__ == "__main__":
    main()
