"""One exception type per problem family.

Every message names the input at fault and the fix; `run.py` prints the message (one line, exit code
1) instead of a traceback, so these are the errors a user sees.
"""

from __future__ import annotations

import os
from pathlib import Path


class FastSpeechError(Exception):
    """Base class: anything `run.py` reports as a one-line error."""


class TextError(FastSpeechError):
    """Text that cannot be turned into token ids (empty, unknown characters, too long).

    `for_client`: the message for someone who sends text but cannot change this program's settings
    (the server's clients): the same problem without a fix such as "set on_unknown=drop"."""

    def __init__(self, message: str, for_client: str | None = None):
        super().__init__(message)
        self.for_client = for_client or message


class CheckpointError(FastSpeechError):
    """A checkpoint that is missing, unreadable or does not match the model's hparams."""


class EngineError(FastSpeechError):
    """An engine that cannot be built, loaded or run with the given input."""


class EngineNotBuilt(EngineError):
    """An engine file that is missing or stale where building is off: a build fixes it."""


class DeviceMemoryError(EngineError):
    """The device ran out of memory building or loading an engine: the fix is a smaller batch or
    engine (or a freer GPU), not a rebuild."""


class ConfigError(FastSpeechError):
    """A configuration that asks for something this machine or install cannot do."""


class VocoderError(FastSpeechError):
    """A vocoder checkpoint or setting that cannot be used (wrong format, missing keys, bad values)."""


def check_writable(folder: Path, setting: str, what: str) -> None:
    """Make `folder` and write a file in it, before the work that fills it; else one ConfigError
    line naming the folder and `setting` as the fix (`what`: "results", "engines")."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        probe = folder / f".write-test.{os.getpid()}"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        raise unwritable(folder, setting, what, exc) from None


def unwritable(folder: Path, setting: str, what: str, exc: OSError) -> ConfigError:
    return ConfigError(
        f"cannot write {what} to {folder} ({exc.strerror or exc}); pass {setting}=PATH to a writable folder"
    )
