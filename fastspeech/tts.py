"""Text to speech from Python: the command line's path (text -> router -> engines with the vocoder
inside -> 16-bit audio), kept open between calls.

    import fastspeech
    tts = fastspeech.TTS()                                        # the demo voice, run.py's defaults
    tts = fastspeech.TTS(engine="i64_o512", precision="fp16", checkpoint="/path/checkpoint_100000.pt")
    tts = fastspeech.TTS(engine_set="default", precision="fp16")  # a set: the smallest engine per text
    speech = tts("Hello, world! Don't stop.")                     # one Speech
    speech.wav, speech.sample_rate                                # int16 (samples,), 22050
    speech.save("hello.wav")
    one, two = tts(["One line.", "Another, with a comma."], alpha=1.2)

Settings are run.py's (conf/config.yaml and its groups; `python run.py --cfg job` lists them) as
keyword arguments; dotted ones as `**{"vocoder.checkpoint": path}`; `alpha` is the calls' default.
They are checked as run.py checks them; those that only mean something to the command line (text,
input, mode, results_dir, plot, serve.*, verify.*) are refused, not ignored. The engines are built
or loaded once, here. A text gets exactly the samples
`python run.py text=...` writes for it with the same settings.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from fastspeech import pipeline
from fastspeech.errors import ConfigError, TextError
from fastspeech.settings import compose, hydra_value
from fastspeech.vocoder.base import AudioConfig

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Speech:
    """One text's audio: wav int16 (frames x 256 samples, 16-bit PCM at `sample_rate` Hz, mono) and
    mel (frames, 80) float32, natural-log magnitude."""

    text: str
    wav: np.ndarray
    mel: np.ndarray
    sample_rate: int = AudioConfig.sample_rate

    @property
    def seconds(self) -> float:
        return len(self.wav) / self.sample_rate

    def save(self, path: str) -> None:
        """A 16-bit PCM wav file, as run.py writes."""
        import soundfile

        soundfile.write(path, self.wav, self.sample_rate, format="WAV", subtype="PCM_16")


class TTS:
    """Engines loaded once, called many times: `TTS(**settings)(text or texts, alpha)`. One thread
    at a time (engines reuse their buffers); many clients at once is the server's batcher."""

    def __init__(self, **settings: Any):
        for key in settings:
            fix = NOT_SETTINGS_HERE.get(key) or NOT_SETTINGS_HERE.get(key.partition(".")[0] + ".")
            if fix:
                raise ConfigError(f"{key}= is a run.py setting that TTS does not use; {fix}")
        overrides = [f"{key}={hydra_value(value)}" for key, value in settings.items()]
        self.cfg = compose(overrides)
        self.alpha = pipeline.check_alpha(self.cfg.alpha)  # the calls' default
        self.device = pipeline.pick_device(self.cfg.device)
        model = pipeline.load_model(self.cfg)
        self.router = pipeline.open_router(self.cfg, model, self.device, pipeline.open_vocoder(self.cfg))

    def __call__(self, text: str | Sequence[str], alpha: float | None = None) -> Speech | list[Speech]:
        """One `Speech` for a text, a list in the same order for a list of texts (each text is one
        utterance, split at sentences where it is longer than the engines, never cropped).
        `alpha` > 1 speaks slower (default: the `alpha` setting, 1.0 unless `TTS(alpha=...)`). A text
        that cannot be spoken is one `TextError` naming it (texts counted from 1)."""
        texts = [text] if isinstance(text, str) else text
        if not isinstance(texts, Sequence) or not texts or not all(isinstance(t, str) for t in texts):
            raise TypeError(f"TTS takes a text or a list of texts (str), got {type(text).__name__}")
        texts = list(texts)
        blank = [i for i, t in enumerate(texts, 1) if not t.strip()]
        if blank:
            raise TextError(
                f"text {blank[0]} of {len(texts)} is empty; every text must have something to say"
            )
        alpha = self.alpha if alpha is None else pipeline.check_alpha(alpha)
        utterances = pipeline.encode_all(texts, self.cfg.on_unknown)
        self.router.progress = len(texts) > 1  # a bar for a list, none for one text
        pipeline.speak(self.router, utterances, alpha)
        speeches = [Speech(u.text, pipeline.trimmed_wav(u), u.mel) for u in utterances]
        return speeches[0] if isinstance(text, str) else speeches


# run.py's settings that mean nothing here -> what to do instead (keys ending in "." name a group)
NOT_SETTINGS_HERE = {
    "text": "pass the text to the call: tts(text)",
    "input": "pass the file's lines to the call: tts(lines)",
    "mode": "TTS synthesizes; run.py mode=build or mode=verify do the rest",
    "results_dir": "Speech.save(path) writes where you say",
    "plot": "Speech.mel holds the mel to plot",
    "serve.": "the server is python run.py mode=serve",
    "verify.": "verify is python run.py mode=verify",
}
