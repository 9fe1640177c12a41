"""Every `python run.py ...` command shown in README.md and docs/*.md works as written.

Fast: each command's overrides compose with Hydra (after `run.py` takes `text=`/`input=` off the
command line, as it does), so a wrong key, config name or sweep fails here. Slow: the commands a CPU
can run, run in a subprocess on `model=tiny checkpoint=random` with their outputs in tmp_path, and
must exit 0. Links and images in the docs must point at files that exist.
"""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
import soundfile
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from hydra.core.override_parser.overrides_parser import OverridesParser
from omegaconf import OmegaConf

import run

ROOT = Path(__file__).resolve().parent.parent
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SEPARATORS = {"&&", "||", ";", "|"}
REDIRECTS = {"<", ">", ">>", "2>", "2>&1"}

# What an `input=FILE` or `input=-` command reads: ordinary text as people type it, and one line
# longer than any engine (the docs promise it is split, never cropped or refused).
LINES = [
    "Hello, world! Don't stop.",
    'She said "it works" (really): 100% sure.',
    "It just works.",
    (
        "This line is long on purpose, so that no single engine holds it: it goes on and on, "
        "clause after clause, past the one hundred and twenty-eight tokens of the largest engine, "
        "and the router has to split it at its commas and still speak every word of it."
    ),
]


@dataclass(frozen=True)
class DocCommand:
    where: str  # "README.md:42"
    args: tuple[str, ...]  # what follows `python run.py`, as the shell passes it

    def value(self, key: str) -> str | None:
        """The last `key=value` among the arguments (as Hydra, last wins), or None."""
        found = None
        for arg in self.args:
            k, sep, v = arg.partition("=")
            if sep and k.lstrip("+~") == key:
                found = v
        return found


def doc_commands() -> list[DocCommand]:
    """Every `python run.py` command in a fenced code block (not a ```python one: Python code, where
    `run.py` is only named), pipes and `&&` chains included."""
    commands = []
    for path in DOCS:
        in_block, python, pending = False, False, ""
        for lineno, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if line.lstrip().startswith("```"):
                in_block, pending = not in_block, ""
                python = in_block and line.strip() == "```python"
                continue
            if not in_block or python:
                continue
            if line.rstrip().endswith("\\"):  # shell line continuation
                pending += line.rstrip()[:-1] + " "
                continue
            line, pending = pending + line, ""
            if "run.py" not in line:
                continue
            tokens = shlex.split(line, comments=True)
            segments = [[]]
            for token in tokens:
                if token in SEPARATORS:
                    segments.append([])
                else:
                    segments[-1].append(token)
            for seg in segments:
                if seg[:2] in (["python", "run.py"], ["python3", "run.py"]):
                    commands.append(
                        DocCommand(f"{path.relative_to(ROOT)}:{lineno}", without_redirects(seg[2:]))
                    )
    return commands


def without_redirects(tokens: list[str]) -> tuple[str, ...]:
    """`a < file b` -> (a, b): a redirection and its target are the shell's, not run.py's."""
    args, skip = [], False
    for token in tokens:
        if skip:
            skip = False
        elif token in REDIRECTS:
            skip = token != "2>&1"
        else:
            args.append(token)
    return tuple(args)


COMMANDS = doc_commands()


def first_of_each(commands: list[DocCommand]) -> list[DocCommand]:
    """The README and a docs page may show the same command: the slow test runs it once."""
    first: dict[tuple[str, ...], DocCommand] = {}
    for command in commands:
        first.setdefault(command.args, command)
    return list(first.values())


DISTINCT = first_of_each(COMMANDS)


def test_the_docs_show_the_quick_start():
    """Guards the extraction itself: the README's quick start must be among the commands found."""
    readme = [c.args for c in COMMANDS if c.where.startswith("README.md:")]
    assert ("text=It just works.",) in readme, readme
    assert {c.where.split(":")[0] for c in COMMANDS} >= {"README.md", "docs/engines.md", "docs/router.md"}


# ---------------------------------------------------------------------------------------------
# Fast: the overrides compose.


@pytest.fixture(scope="module")
def hydra_compose():
    """compose(overrides) with conf/, cached: composing costs ~0.3 s and many commands share overrides."""
    cache: dict[tuple[str, ...], None] = {}
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):

        def composed(overrides: list[str]) -> None:
            key = tuple(sorted(overrides))
            if key not in cache:
                cfg = compose(config_name="config", overrides=overrides)
                # Interpolations (batch_size: ${engine.batch}) must resolve too.
                OmegaConf.to_container(cfg, resolve=True)
                cache[key] = None

        yield composed


def split_sweeps(args: tuple[str, ...]) -> tuple[list[str], dict[str, list[str]]]:
    """-> (the overrides with each `-m` sweep at its first value, {swept key: its other values})."""
    hydra_args, _ = run.take_raw_overrides(list(args))
    multirun = any(a in ("-m", "--multirun") for a in hydra_args)
    overrides = [a for a in hydra_args if a not in ("-m", "--multirun")]
    flags = [a for a in overrides if a.startswith("-")]
    assert not flags, f"flags run.py does not take: {flags}"
    first, rest = [], {}
    for o in OverridesParser.create().parse_overrides(overrides):
        if o.is_sweep_override():
            assert multirun, f"{o.input_line} is a sweep: it needs -m"
            key, (value, *others) = o.get_key_element(), list(o.sweep_string_iterator())
            first.append(f"{key}={value}")
            rest[key] = others
        else:
            first.append(o.input_line)
    return first, rest


@pytest.mark.parametrize("command", COMMANDS, ids=[c.where for c in COMMANDS])
def test_command_composes(command, hydra_compose):
    overrides, sweeps = split_sweeps(command.args)
    hydra_compose(overrides)
    # The other points of a sweep differ in one value: a config group's options are files, which
    # Hydra lists; a plain key's value composes like the first one did.
    loader = GlobalHydra.instance().config_loader()
    for key, values in sweeps.items():
        options = loader.get_group_options(key.lstrip("+~"))
        for value in values:
            if options:
                assert value in options, f"{key}={value}: no conf/{key}/{value}.yaml (options: {options})"
            else:
                hydra_compose([o for o in overrides if o.partition("=")[0] != key] + [f"{key}={value}"])


LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


@pytest.mark.parametrize("path", DOCS, ids=[str(p.relative_to(ROOT)) for p in DOCS])
def test_links_and_images_resolve(path):
    """Relative links and images point at files that exist (from the page's own folder)."""
    missing = []
    for target in LINK.findall(path.read_text(encoding="utf-8")):
        if target.startswith(("http://", "https://", "mailto:", "#")):
            continue
        if not (path.parent / target.split("#")[0]).exists():
            missing.append(target)
    assert not missing, f"{path.relative_to(ROOT)} links to missing files: {missing}"


# ---------------------------------------------------------------------------------------------
# Slow: the CPU-runnable commands run, on a tiny model with random weights.


def why_not_here(command: DocCommand) -> str | None:
    """Why this command cannot run in a CPU test, or None when it can."""
    if command.value("backend") == "tensorrt":
        return "needs TensorRT and a CUDA GPU (not installable here)"
    if command.value("backend") == "inductor":
        return "an Inductor engine with CUDA graphs is a GPU engine (on the CPU it compiles C++ for minutes)"
    if (command.value("device") or "").startswith("cuda"):
        return "needs a CUDA GPU"
    if command.value("mode") == "serve":
        return "starts a server that runs until stopped (docs/serve.md's server has its own tests)"
    if command.value("vocoder.checkpoint") is not None:
        return "needs a vocoder checkpoint file (no public vocoder weights can be downloaded here)"
    return None


def cpu_argv(command: DocCommand, tmp_path: Path) -> list[str]:
    """The command on model=tiny with random weights, every output inside tmp_path."""
    replaced = ("model", "checkpoint", "device", "results_dir", "engine_dir")
    args = [a for a in command.args if a.partition("=")[0].lstrip("+~") not in replaced]
    args += [
        "model=tiny", "checkpoint=random", "device=cpu",
        f"results_dir={tmp_path / 'results'}", f"engine_dir={tmp_path / 'engines'}",
        f"hydra.run.dir={tmp_path / 'hydra'}", f"hydra.sweep.dir={tmp_path / 'multirun'}",
    ]  # fmt: skip
    if command.value("vocoder") is None:
        args.append("vocoder.n_iter=4")  # Griffin-Lim: fewer iterations, same code path
    return [sys.executable, str(ROOT / "run.py"), *args]


@pytest.mark.slow
@pytest.mark.parametrize("command", DISTINCT, ids=[c.where for c in DISTINCT])
def test_command_runs_on_the_cpu(command, tmp_path):
    reason = why_not_here(command)
    if reason:
        pytest.skip(reason)
    source = command.value("input")
    if source and source != "-":
        (tmp_path / source).write_text("\n".join(LINES) + "\n", encoding="utf-8")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TRITON_INTERPRET": "1"}
    proc = subprocess.run(
        cpu_argv(command, tmp_path), input="\n".join(LINES) + "\n", capture_output=True, text=True,
        cwd=tmp_path, env=env, timeout=600, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, (
        f"{command.where}: python run.py {shlex.join(command.args)}\n{proc.stderr[-3000:]}"
    )
    if (command.value("mode") or "synthesize") == "synthesize":  # one wav per utterance, none lost
        wavs = sorted((tmp_path / "results").rglob("*.wav"))
        assert len(wavs) == (1 if command.value("text") is not None else len(LINES)), wavs


def test_the_readmes_python_example_runs_as_written(tmp_path, monkeypatch):
    """README's `fastspeech.TTS` block, executed as it stands (in a scratch folder: it writes
    hello.wav), on the CPU with the demo voice."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    blocks = [b.split("```", 1)[0] for b in text.split("```python\n")[1:]]
    (example,) = [b for b in blocks if "fastspeech.TTS(" in b]
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(example, "README.md", "exec"), scope)  # noqa: S102 (the README, run as written)
    data, rate = soundfile.read(tmp_path / "hello.wav", dtype="int16")
    assert rate == 22050 and len(data) == len(scope["speech"].wav) > 22050 // 2  # over half a second
    assert scope["one"].text == "One line." and len(scope["two"].wav) > len(scope["one"].wav)
