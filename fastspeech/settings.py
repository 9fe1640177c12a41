"""run.py's settings, checked: the one-line errors for a setting Hydra cannot apply or one of the
wrong kind, and `compose`, the config of `python run.py KEY=VALUE...` for the Python API (`TTS`).

Imports no torch: `run.py` loads this file by its path, without the `fastspeech` package's
`__init__` (torch and the kernels, ~5 s on 2 cores), so that these errors come in about a second.
"""

from __future__ import annotations

import difflib
import re
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

CONF = Path(__file__).resolve().parent.parent / "conf"


MODES = ("synthesize", "build", "verify", "serve")
# Settings that must be whole numbers: (smallest allowed, the example an error suggests).
WHOLE_NUMBERS = {
    "engine.max_in": (1, 128),
    "engine.max_out": (1, 1024),
    "engine.batch": (1, 1),
    "batch_size": (1, 8),
    "seed": (0, 0),
}
FLAGS = ("plot", "force_build", "engine_set.split", "engine_set.build_missing")  # the last two with a set
# mode=serve only: (smallest, largest or None, example).
SERVE_WHOLE_NUMBERS = {
    "serve.port": (0, 65535, 8000),
    "serve.max_queue": (1, None, 256),
    "serve.max_chars": (1, None, 4096),
    "serve.replicas": (1, None, 1),
    "serve.workers": (1, None, 2),
    "serve.streams": (1, 8, 1),
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
        if cfg.serve.get("pcm_rate") is not None:
            numbers["serve.pcm_rate"] = (8000, 192000, 24000)
    if cfg.get("engine_set") is not None and "streams" in cfg.engine_set:  # a set without it: one lane
        numbers["engine_set.streams"] = (1, 8, 3)
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
        value = OmegaConf.select(cfg, key, default=False)
        if not isinstance(value, bool):
            return f"{key}={value}: use {key}=true or {key}=false"
    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", str(cfg.device)):
        return f"device={cfg.device}: use device=auto, cpu, cuda or cuda:N (N: the GPU's index)"
    if cfg.mode == "serve":
        wait = cfg.serve.max_wait_ms
        if isinstance(wait, bool) or not isinstance(wait, (int, float)) or not 0 <= wait < float("inf"):
            return (
                f"serve.max_wait_ms={wait} is not a number of milliseconds >= 0; use e.g. serve.max_wait_ms=2"
            )
        origins = cfg.serve.get("cors_origins")
        if origins is not None and not (
            OmegaConf.is_list(origins) and all(isinstance(o, str) for o in origins)
        ):
            return (
                f"serve.cors_origins={origins} is not a list of web origins; use e.g. "
                "serve.cors_origins=[https://example.com] (or ['*'] for any page)"
            )
        voices = list(cfg.serve.voices or ["demo"])
        if cfg.serve.default_voice is not None and cfg.serve.default_voice not in voices:
            return f"serve.default_voice={cfg.serve.default_voice} is not one of serve.voices ({', '.join(voices)}); name one of them or leave it out"
    return None


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
    if isinstance(exc, ValueError) and message.startswith("Only one of --run, --multirun, --cfg"):
        return f"{message.splitlines()[0]}: give one of these flags at a time"
    if isinstance(exc, CompactHydraException):  # any other setting Hydra refuses: its own words, one line
        return "; ".join(line.strip() for line in message.splitlines() if line.strip())
    return None


def setting_names() -> list[str]:
    """Every dotted setting of the default config (for `config_error`'s suggestions)."""
    from hydra import compose, initialize_config_dir

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


def compose(overrides: list[str]) -> DictConfig:
    """The config `python run.py *overrides` runs with (`text=`/`input=` aside), checked as run.py
    checks it: a bad setting is one `ConfigError` line naming it and the fix."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    from fastspeech.errors import ConfigError

    outer = GlobalHydra.instance().hydra if GlobalHydra.instance().is_initialized() else None
    GlobalHydra.instance().clear()  # Hydra's one global: a caller's own (a Hydra app) is put back below
    try:
        with initialize_config_dir(config_dir=str(CONF), version_base="1.3"):
            cfg = hydra_compose(config_name="config", overrides=overrides)
    except Exception as exc:
        line = config_error(exc)
        if line is None:
            raise
        raise ConfigError(line) from None
    finally:
        if outer is not None:
            GlobalHydra.instance().initialize(outer)
    problem = setting_problem(cfg)
    if problem is not None:
        raise ConfigError(problem)
    return cfg


def hydra_value(value: Any) -> str:
    """A Python value as a command-line override value (None -> null, True -> true)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    text = str(value)
    if re.fullmatch(r"[\w./:+-]*", text):
        return text
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"  # Hydra's quoted string
