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

import importlib.util
import logging
import os
import re
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig, open_dict

log = logging.getLogger("fastspeech")

CONF = Path(__file__).resolve().parent / "conf"


def _load_settings():
    """fastspeech/settings.py by its path, without the `fastspeech` package's `__init__` (torch and
    the kernels: ~5 s on 2 cores): a bad setting's one-line error comes in about a second."""
    spec = importlib.util.spec_from_file_location(
        "_fastspeech_settings", CONF.parent / "fastspeech" / "settings.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


settings = _load_settings()
setting_problem, config_error = settings.setting_problem, settings.config_error
RAW_KEYS = ("text", "input")  # values Hydra's override grammar would reject: read verbatim
_raw: dict[str, str] = {}


# Hydra's own command-line flags; any other `--name` is a setting typed with dashes.
HYDRA_FLAGS = {
    "--help", "-h", "--hydra-help", "--version", "--cfg", "-c", "--resolve", "--package", "-p",
    "--run", "-r", "--multirun", "-m", "--shell-completion", "-sc", "--config-path", "-cp",
    "--config-name", "-cn", "--config-dir", "-cd", "--experimental-rerun", "--info", "-i",
}  # fmt: skip


def dashed_setting(argv: list[str]) -> str | None:
    """`--text=Hello` (a setting typed as a flag) -> the one-line fix; None when there is none.
    Hydra's argparse would print its nine-line usage and exit 2."""
    for arg in argv:
        name = arg.partition("=")[0]
        if arg.startswith("-") and name not in HYDRA_FLAGS and not arg.lstrip("-")[:1].isdigit():
            setting = arg.lstrip("-")
            return f"{arg}: settings are key=value without dashes; use {setting or 'text=...'}"
    return None


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


def apply_raw(cfg: DictConfig, raw: dict[str, str]) -> None:
    """Put the verbatim `text=`/`input=` values into `cfg` so that they read back exactly as typed.

    OmegaConf would resolve `${...}` in them (`text='${x}'` failed, `text='${oc.env:HOME}'` spoke
    the home folder), so each run of backslashes before `${` is doubled and one more added, its
    escape for a literal `${`; and "???" (its missing-value marker when it is the whole value) gets
    a leading space, which the text frontend drops.
    """
    with open_dict(cfg):
        for key, value in raw.items():
            value = re.sub(r"(\\*)\$\{", lambda m: m.group(1) * 2 + "\\${", value)
            cfg[key] = " ???" if value == "???" else value


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


def fail(problem: object) -> None:
    """A mistake the user can fix: one line in the log and on stderr, exit code 1."""
    log.error("%s", problem)
    print(f"error: {problem}", file=sys.stderr)
    sys.exit(1)


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    # A setting of the wrong kind fails here, before `fastspeech` (torch and the kernels, ~5 s on 2
    # cores) is imported, so its one-line error comes in about a second.
    problem = setting_problem(cfg)
    if problem is not None:
        fail(problem)
    from fastspeech.errors import FastSpeechError

    apply_raw(cfg, _raw)
    try:
        dispatch(cfg)
    except FastSpeechError as exc:
        fail(exc)


if __name__ == "__main__":
    sys.argv[1:], _raw = take_raw_overrides(sys.argv[1:])
    if dashed := dashed_setting(sys.argv[1:]):
        print(f"error: {dashed}", file=sys.stderr)
        sys.exit(1)
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
