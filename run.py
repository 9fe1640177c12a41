"""fastspeech-trt entry point (Hydra): text in, wav out; build engines; verify them; serve them.

    python run.py text="Hello, world! Don't stop."           # synthesize (backend=auto)
    python run.py input=phrases.txt batch_size=8             # one utterance a line (input=- reads stdin)
    python run.py engine=i64_o512 precision=fp16 mode=build  # only build the engine
    python run.py -m engine=i32_o256,i64_o512 mode=build     # one Hydra job per engine
    python run.py mode=verify engine=i64_o512 precision=fp16 text="It just works."  # engine vs eager
    python run.py mode=serve                                 # the OpenAI-compatible HTTP server

`text=` and `input=` are taken off the command line before Hydra parses it, so a text may hold any
character a shell passes (commas, quotes, `=`, `%`, brackets); one pair of quotes around the whole
value (Hydra's quoting, `text='a, b'`) is removed. Errors the user can fix are printed as one line
(exit code 1), Ctrl-C as `interrupted` (exit code 130), never as a traceback; so are settings Hydra
cannot apply (a misspelled key or option, an unparsable value), unless HYDRA_FULL_ERROR=1 is set.
"""

from __future__ import annotations

import difflib
import logging
import os
import re
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, OmegaConf, open_dict

log = logging.getLogger("fastspeech")

CONF = Path(__file__).resolve().parent / "conf"
RAW_KEYS = ("text", "input")  # values Hydra's override grammar would reject: read verbatim
_raw: dict[str, str] = {}


def take_raw_overrides(argv: list[str]) -> tuple[list[str], dict[str, str]]:
    """Split `argv` into what Hydra parses and the verbatim `text=`/`input=` values (last one wins)."""
    rest, raw = [], {}
    for arg in argv:
        key, sep, value = arg.partition("=")
        if sep and key.lstrip("+") in RAW_KEYS:
            if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
                value = value[1:-1]
            raw[key.lstrip("+")] = value
        else:
            rest.append(arg)
    return rest, raw


MODES = ("synthesize", "build", "verify", "serve")
# Settings that must be whole numbers: (smallest allowed, the example an error suggests).
WHOLE_NUMBERS = {
    "engine.max_in": (1, 128),
    "engine.max_out": (1, 1024),
    "engine.batch": (1, 1),
    "batch_size": (1, 8),
    "seed": (0, 0),
}
FLAGS = ("plot", "force_build")
# mode=serve only: (smallest, largest or None, example).
SERVE_WHOLE_NUMBERS = {
    "serve.port": (0, 65535, 8000),
    "serve.max_queue": (1, None, 256),
    "serve.max_chars": (1, None, 4096),
    "serve.replicas": (1, None, 1),
}


def setting_problem(cfg: DictConfig) -> str | None:
    """A setting Hydra accepts but we cannot use (`batch_size=abc`, `seed=1.5`, `plot=maybe`,
    `device=gpu9`) -> one line naming it and the fix; None when every one is fine. Checked before
    `fastspeech` (torch) is imported, so the error comes in about a second."""
    if cfg.mode not in MODES:
        return f"mode={cfg.mode}: use one of {', '.join(MODES)}"
    numbers = {key: (least, None, example) for key, (least, example) in WHOLE_NUMBERS.items()}
    if cfg.mode == "serve":
        numbers |= SERVE_WHOLE_NUMBERS
        if cfg.serve.max_batch is not None:
            numbers["serve.max_batch"] = (1, None, 8)
    for key, (least, most, example) in numbers.items():
        value = OmegaConf.select(cfg, key)  # batch_size: ${engine.batch} resolves here
        if (
            isinstance(value, bool)
            or not isinstance(value, int)
            or value < least
            or (most is not None and value > most)
        ):
            shown = str(value).lower() if isinstance(value, bool) else value  # as typed: true, not True
            bounds = f"from {least} to {most}" if most is not None else f">= {least}"
            return f"{key}={shown} is not a whole number {bounds}; use e.g. {key}={example}"
    for key in FLAGS:
        if not isinstance(cfg[key], bool):
            return f"{key}={cfg[key]}: use {key}=true or {key}=false"
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(cfg.device)):
        return f"device={cfg.device}: use device=auto, cpu, cuda or cuda:N (N: the GPU's index)"
    if cfg.mode == "serve":
        wait = cfg.serve.max_wait_ms
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait < float("inf"):
            return (
                f"serve.max_wait_ms={wait} is not a number of milliseconds >= 0; use e.g. serve.max_wait_ms=2"
            )
        voices = list(cfg.serve.voices or ["demo"])
        if cfg.serve.default_voice is not None and cfg.serve.default_voice not in voices:
            return f"serve.default_voice={cfg.serve.default_voice} is not one of serve.voices ({', '.join(voices)}); name one of them or leave it out"
    return None


def dispatch(cfg: DictConfig) -> None:
    from fastspeech import pipeline
    from fastspeech.errors import FastSpeechError

    if cfg.mode == "synthesize":
        pipeline.synthesize(cfg)
    elif cfg.mode == "build":
        pipeline.build(cfg)
    elif cfg.mode == "verify":
        from fastspeech import verify

        verify.run(cfg)
    elif cfg.mode == "serve":
        from fastspeech.serve import serve

        serve(cfg)
    else:
        raise FastSpeechError(f"unknown mode={cfg.mode}; use synthesize, build, verify or serve")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    # Imported here, not at the top: `fastspeech` brings torch and the kernels (~5 s on 2 cores), and a
    # setting Hydra cannot apply fails before this runs, so its one-line error comes in about a second.
    problem = setting_problem(cfg)
    if problem is not None:
        log.error("%s", problem)
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(1)
    from fastspeech.errors import FastSpeechError

    with open_dict(cfg):
        for key, value in _raw.items():
            cfg[key] = value
    try:
        dispatch(cfg)
    except FastSpeechError as exc:
        log.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


def config_error(exc: Exception) -> str | None:
    """Hydra's multi-line message for a setting it cannot apply -> one line naming it and the fix
    (None: not a command-line setting error)."""
    from hydra.errors import (
        CompactHydraException,
        ConfigCompositionException,
        MissingConfigException,
        OverrideParseException,
    )

    message = str(exc)
    if isinstance(exc, MissingConfigException) and (
        found := re.search(r"Could not find '([^'/]+)/([^']+)'", message)
    ):
        group, option = found.groups()
        options = sorted(p.stem for p in (CONF / group).glob("*.yaml"))
        return f"{group}={option}: no such option in conf/{group}/; choose one of {', '.join(options)}"
    if isinstance(exc, ConfigCompositionException) and (
        found := re.search(r"Could not override '([^']+)'", message)
    ):
        key = found.group(1)
        close = difflib.get_close_matches(key, setting_names(), n=3)
        hint = f"did you mean {' or '.join(close)}? " if close else ""
        return f"unknown setting {key}=...; {hint}`python run.py --cfg job` lists every setting"
    if isinstance(exc, OverrideParseException):
        return (
            f"cannot parse the command line: {message.splitlines()[0]}; quote values with spaces or brackets"
        )
    if isinstance(exc, CompactHydraException):  # any other setting Hydra refuses: its own words, one line
        return "; ".join(line.strip() for line in message.splitlines() if line.strip())
    return None


def setting_names() -> list[str]:
    """Every dotted setting of the default config (for `config_error`'s suggestions)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
        cfg = OmegaConf.to_container(compose(config_name="config"), resolve=False)
    names: list[str] = []

    def walk(node, prefix):
        for key, value in node.items():
            names.append(prefix + str(key))
            if isinstance(value, dict):
                walk(value, f"{prefix}{key}.")

    walk(cfg, "")
    return names


if __name__ == "__main__":
    sys.argv[1:], _raw = take_raw_overrides(sys.argv[1:])
    full_errors = os.environ.get("HYDRA_FULL_ERROR") == "1"  # the user asked for Hydra's own reports
    os.environ["HYDRA_FULL_ERROR"] = "1"  # so that a bad setting reaches us as an exception
    try:
        main()
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    except Exception as exc:
        line = None if full_errors else config_error(exc)
        if line is None:
            raise
        print(f"error: {line}", file=sys.stderr)
        sys.exit(1)
