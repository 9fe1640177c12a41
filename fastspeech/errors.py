"""One exception type per problem family.

Every message names the input at fault and the fix; `run.py` prints the message (one line, exit code
1) instead of a traceback, so these are the errors a user sees.
"""


class FastSpeechError(Exception):
    """Base class: anything `run.py` reports as a one-line error."""


class TextError(FastSpeechError):
    """Text that cannot be turned into token ids (empty, unknown characters, too long)."""


class CheckpointError(FastSpeechError):
    """A checkpoint that is missing, unreadable or does not match the model's hparams."""


class EngineError(FastSpeechError):
    """An engine that cannot be built, loaded or run with the given input."""


class ConfigError(FastSpeechError):
    """A configuration that asks for something this machine or install cannot do."""


class VocoderError(FastSpeechError):
    """A vocoder checkpoint or setting that cannot be used (wrong format, missing keys, bad values)."""
