"""`run.py` as a user runs it, on model=tiny: texts as typed, one synthesis path, one-line errors.

Most cases run in-process through Hydra's compose API and `run.dispatch` (seconds each); a few run
`run.py` in a subprocess, for what only a real process shows: exit codes, stderr without a
traceback, Ctrl-C, standard input.
"""

import json
import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile
from helpers import out_of_memory, random_model

import run as run_py  # run.py at the repository root (pytest's pythonpath has ".")
from fastspeech.checkpoint import save_checkpoint
from fastspeech.errors import DeviceMemoryError, FastSpeechError

ROOT = Path(__file__).resolve().parent.parent

BASE = ["model=tiny", "vocoder.n_iter=4", "plot=false"]


def compose(tmp_path, *args, engine="i32_o256"):
    """The config `python run.py BASE... args...` would run with (raw `text=`/`input=` applied)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir

    rest, raw = run_py.take_raw_overrides(
        [
            *BASE,
            f"engine={engine}",
            f"results_dir={tmp_path / 'results'}",
            f"engine_dir={tmp_path / 'engines'}",
            *args,
        ]
    )
    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = hydra_compose(config_name="config", overrides=rest)
    run_py.apply_raw(cfg, raw)
    return cfg


def synthesize(tmp_path, *args, engine="i32_o256"):
    return run_py.dispatch(compose(tmp_path, *args, engine=engine))


def subprocess_run(tmp_path, *args, engine="i32_o256", stdin=None):
    cmd = [
        sys.executable,
        str(ROOT / "run.py"),
        *BASE,
        f"engine={engine}",
        f"results_dir={tmp_path / 'results'}",
        f"engine_dir={tmp_path / 'engines'}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        *args,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300, check=False, input=stdin
    )


def one_error_line(proc) -> str:
    assert proc.returncode == 1, proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1, proc.stderr[-2000:]
    return errors[0]


def wavs(tmp_path) -> list[Path]:
    return sorted((tmp_path / "results").glob("*.wav"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    """A tiny DLE-format checkpoint whose durations are 2-5 frames per token."""
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint_000001.pt"
    save_checkpoint(random_model(seed=0, duration_bias=1.2), path, fmt="dle", step=1)
    return path


# ---- texts as typed


SPECIAL = (
    'Hello, world! Don\'t stop: "quoted" (really) [yes] {HH AH0 L OW1} costs $5 = 50% & more; a+b @ 3°C.'
)


def test_text_with_every_special_character_runs_from_a_real_shell(tmp_path, checkpoint):
    proc = subprocess_run(tmp_path, f"text={SPECIAL}", f"checkpoint={checkpoint}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    (wav,) = wavs(tmp_path)
    audio, sr = soundfile.read(wav)
    mel = np.load(wav.with_suffix(".npy"))
    assert sr == 22050 and len(mel) > 0 and len(audio) == len(mel) * 256


@pytest.mark.parametrize(
    "text",
    [
        "Hello, world!",
        "Don't stop.",
        "Is it (really) fine?",
        "Cost: $5 = five dollars",
        "100% sure",
        "a=b, c=d",
        "'quoted'",
        "[bracketed] text",
        "???",  # OmegaConf's missing value when it is the whole value
    ],
)
def test_ordinary_text_passes_the_command_line(tmp_path, checkpoint, text):
    cfg = compose(tmp_path, f"text={text}", f"checkpoint={checkpoint}")
    typed = text[1:-1] if text[0] == text[-1] == "'" else text  # one outer pair of quotes goes
    assert cfg.text.strip() == typed
    run_py.dispatch(cfg)
    (wav,) = wavs(tmp_path)
    assert len(soundfile.read(wav)[0]) == len(np.load(wav.with_suffix(".npy"))) * 256 > 0


def test_text_that_looks_like_an_omegaconf_interpolation_is_taken_as_typed(tmp_path, checkpoint):
    """`${...}` is OmegaConf's interpolation: it must reach the text frontend unresolved (it had
    raised InterpolationKeyError, or spoken the value of ${oc.env:HOME}); braces there are ARPAbet."""
    for text in ("Home ${oc.env:HOME}, ${x} and \\${y}.", "${", "a \\\\${b"):
        assert compose(tmp_path, f"text={text}").text == text
    proc = subprocess_run(tmp_path, "text=Home ${oc.env:HOME} and ${x}.", f"checkpoint={checkpoint}")
    assert one_error_line(proc) == (
        "error: unknown ARPAbet symbol 'oc.env:HOME' in {oc.env:HOME}; use CMUdict phones, upper case, "
        "vowels with stress 0/1/2, e.g. {HH AH0 L OW1}"
    )


@pytest.mark.parametrize("newline", ["\n", "\r\n", "\r"])
def test_an_input_line_ends_at_a_newline_only(tmp_path, newline):
    """Form feeds, U+2028/U+2029, NEL and other separators inside a line keep it one line (str.splitlines
    broke it in two: one line gave two wavs); blank lines are skipped but still counted."""
    from fastspeech import pipeline

    lines = ["Has\u2028a separator.", "", "Form\x0cfeed and\x85next.", "Para\u2029graph."]
    path = tmp_path / "in.txt"
    path.write_bytes(newline.join(lines).encode() + newline.encode())
    cfg = compose(tmp_path, f"input={path}")
    assert pipeline.read_texts(cfg) == [line.strip() for line in lines]


def test_standard_input_one_utterance_a_line(tmp_path, checkpoint):
    proc = subprocess_run(
        tmp_path, "input=-", f"checkpoint={checkpoint}", stdin="First, one.\n\nSecond: two!\n"
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [w.name for w in wavs(tmp_path)] == ["0000_first_one.wav", "0001_second_two.wav"]


def test_text_file_to_wavs_in_input_order(tmp_path, checkpoint):
    lines = ["It just works.", "", "Dr. Smith paid $3.50 on the 2nd of May, 1984.", "Short."]
    (tmp_path / "phrases.txt").write_text("\n".join(lines), encoding="utf-8")
    synthesize(
        tmp_path,
        f"input={tmp_path / 'phrases.txt'}",
        f"checkpoint={checkpoint}",
        "batch_size=2",
        "plot=true",
        engine="i128_o1024",
    )
    names = [w.name for w in wavs(tmp_path)]
    assert names == [
        "0000_it_just_works.wav",
        "0001_dr_smith_paid_3_50_on_the_2nd_of_may_198.wav",
        "0002_short.wav",
    ]
    (run_dir,) = (tmp_path / "results" / "runs").iterdir()
    timings = json.loads((run_dir / "timings.json").read_text())
    assert len(timings["batches"]) == 2 and timings["rtf_engine"] > 0
    assert [Path(f).name for f in timings["files"] if f.endswith(".wav")] == names
    assert (run_dir / "mels.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    lengths = [len(np.load(w.with_suffix(".npy"))) for w in wavs(tmp_path)]
    for w, n in zip(wavs(tmp_path), lengths):
        assert len(soundfile.read(w)[0]) == n * 256  # cut to the true length: no padded tail
    assert lengths[1] > lengths[0] > lengths[2]  # longer text, longer speech: order was restored


def test_a_line_longer_than_the_engine_is_split_not_refused(tmp_path, checkpoint):
    """The single-engine path is a router of one: a 200-token line on a 32-token engine is split at
    clauses and joined; its speech is every piece's speech, nothing cropped."""
    from fastspeech import pipeline
    from fastspeech.text import split_text, text_to_ids

    long = "This line is much longer than the engine, it goes on, clause after clause; " * 3 + "the end."
    synthesize(tmp_path, f"text={long}", f"checkpoint={checkpoint}")
    (wav,) = wavs(tmp_path)
    mel = np.load(wav.with_suffix(".npy"))
    pieces = split_text(long, 32)
    assert len(pieces) > 3 and len(text_to_ids(long)) > 128
    cfg = compose(tmp_path, f"checkpoint={checkpoint}")
    model = pipeline.load_model(cfg)
    router = pipeline.open_router(cfg, model, pipeline.pick_device("cpu"))
    alone, _ = router(pieces)
    assert len(mel) == sum(r.frames for r in alone)
    np.testing.assert_allclose(mel, np.concatenate([r.mel.numpy() for r in alone]), rtol=1e-5, atol=1e-5)
    assert len(soundfile.read(wav)[0]) == len(mel) * 256


def test_two_runs_into_one_folder_keep_both_runs_timings(tmp_path, checkpoint):
    synthesize(tmp_path, "text=First one.", f"checkpoint={checkpoint}", "plot=true")
    synthesize(tmp_path, "text=Second one.", f"checkpoint={checkpoint}", "plot=true")
    runs = sorted((tmp_path / "results" / "runs").iterdir())
    assert len(runs) == 2
    files = [json.loads((r / "timings.json").read_text())["files"] for r in runs]
    assert Path(files[0][0]).name == "0000_first_one.wav" and Path(files[1][0]).name == "0000_second_one.wav"
    assert all((r / "mels.png").is_file() for r in runs)
    assert len(wavs(tmp_path)) == 2


# ---- errors: one line, before any work, no earlier file changed


def test_demo_voice_is_the_default_and_says_so(tmp_path, caplog):
    caplog.set_level(logging.INFO)
    synthesize(tmp_path, "text=It just works.", "checkpoint=demo", engine="i128_o1024")
    assert "DEMO VOICE" in caplog.text
    audio, sr = soundfile.read(tmp_path / "results" / "0000_it_just_works.wav")
    assert sr == 22050 and len(audio) > 22050 // 2  # about a second of speech, not an empty wav


def test_random_weights_are_announced(tmp_path, caplog):
    synthesize(tmp_path, "text=Hello there.", "checkpoint=random")
    assert "RANDOM WEIGHTS" in caplog.text


def _write_bad_engine(tmp_path, checkpoint, kind):
    """Replace the engine file a run just wrote by a folder, or give it a JSON list as header."""
    from fastspeech.engine import _MAGIC

    synthesize(tmp_path / "first", "text=hi", f"checkpoint={checkpoint}")
    (path,) = (tmp_path / "first" / "engines").glob("*.engine")
    path.unlink()
    if kind == "folder":
        path.mkdir()
    else:
        header = b"[1, 2, 3]"
        path.write_bytes(_MAGIC + len(header).to_bytes(8, "little") + header)
    return path


@pytest.mark.parametrize(
    "args, message",
    [
        (["text=' '"], "text is empty"),
        (["text=\u201c \u201d"], "nothing to say"),
        (["text=\u2603\u2603"], "'\u2603'"),
        (["text=price: 5¤"], "on_unknown=drop"),
        (["text=你好世界 and Привет"], "'你'"),
        (["text=hi", "checkpoint=/nonexistent/ckpt.pt"], "checkpoint not found"),
        (["text=hi", "checkpoint=DEMO_SHAPED"], "model=demo"),
        (["text=hi", "checkpoint=MISMATCH"], "does not match the model"),
        (["input=/nonexistent.txt"], "input file not found"),
        (["input=BINARY"], "binary"),
        (["input=LATIN1"], "not UTF-8"),
        (["input=MANY_BAD"], "line 3"),
        (["text=hi", "alpha=0"], "alpha=0 is not a finite number > 0"),
        (["text=hi", "alpha=-1"], "alpha=-1 is not a finite number > 0"),
        (["text=hi", "alpha=nan"], "not a finite number"),
        (["text=hi", "results_dir=RESULTS_IS_A_FILE"], "cannot write results"),
        (["text=hi", "engine_dir=RESULTS_IS_A_FILE"], "cannot write engines to"),
        (["engine_set=default", "engine_set.split=false", "text=" + "word " * 40], "engine_set.split=true"),
    ],
)
def test_bad_input_is_one_line_and_nothing_is_written(tmp_path, args, message):
    if "checkpoint=MISMATCH" in args:
        bad = tmp_path / "dle_sized.pt"
        save_checkpoint(random_model(d_model=32), bad)
        args = [a.replace("MISMATCH", str(bad)) for a in args]
    if "checkpoint=DEMO_SHAPED" in args:
        args = [a.replace("DEMO_SHAPED", str(ROOT / "fastspeech" / "assets" / "demo_voice.pt")) for a in args]
    if "input=BINARY" in args:
        (tmp_path / "in.bin").write_bytes(bytes(range(256)) * 4)
        args = [f"input={tmp_path / 'in.bin'}"]
    if "input=LATIN1" in args:
        (tmp_path / "in.txt").write_bytes("Caf\u00e9 au lait.".encode("latin-1"))
        args = [f"input={tmp_path / 'in.txt'}"]
    if "input=MANY_BAD" in args:
        (tmp_path / "in.txt").write_text("fine\n\nbad 你\nfine\nbad ☃\n", encoding="utf-8")
        args = [f"input={tmp_path / 'in.txt'}"]
    if "results_dir=RESULTS_IS_A_FILE" in args:
        (tmp_path / "afile").write_text("x")
        args = [a.replace("RESULTS_IS_A_FILE", str(tmp_path / "afile" / "results")) for a in args]
    if "engine_dir=RESULTS_IS_A_FILE" in args:
        (tmp_path / "afile").write_text("x")
        args = [a.replace("RESULTS_IS_A_FILE", str(tmp_path / "afile" / "engines")) for a in args]
    with pytest.raises(FastSpeechError) as info:
        synthesize(tmp_path, *args)
    assert message in str(info.value) and "\n" not in str(info.value)
    if "MANY_BAD" in str(args) or "in.txt" in str(args) and "line 3" in message:
        assert "line 5" in str(info.value)  # every bad line is named, not only the first
    assert not wavs(tmp_path)


@pytest.mark.parametrize("kind", ["json-list", "folder"])
def test_malformed_engine_file_or_folder_is_one_line(tmp_path, checkpoint, kind):
    path = _write_bad_engine(tmp_path, checkpoint, kind)
    try:
        synthesize(tmp_path / "first", "text=hi", f"checkpoint={checkpoint}")
    except FastSpeechError as exc:  # a folder cannot be replaced: a one-line error naming it
        assert kind == "folder" and str(path) in str(exc) and "\n" not in str(exc)
    else:  # a bad header is reported and the engine rebuilt
        assert kind == "json-list" and len(wavs(tmp_path / "first")) == 1


def test_error_is_one_line_with_exit_code_1_and_earlier_files_intact(tmp_path, checkpoint):
    first = subprocess_run(tmp_path, "text=First one.", f"checkpoint={checkpoint}")
    assert first.returncode == 0, first.stderr[-2000:]
    wav = tmp_path / "results" / "0000_first_one.wav"
    before = wav.read_bytes()
    assert "alpha=0" in one_error_line(subprocess_run(tmp_path, "text=First one.", "alpha=0"))
    assert wav.read_bytes() == before


def test_ctrl_c_says_interrupted_exit_130_and_leaves_no_partial_file(tmp_path, checkpoint):
    lines = "\n".join(f"Line number {i}, spoken slowly." for i in range(400))
    (tmp_path / "many.txt").write_text(lines)
    cmd = [
        sys.executable,
        str(ROOT / "run.py"),
        *BASE,
        "engine=i32_o256",
        f"input={tmp_path / 'many.txt'}",
        f"checkpoint={checkpoint}",
        f"results_dir={tmp_path / 'results'}",
        f"engine_dir={tmp_path / 'engines'}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
    ]
    # A background job of a non-interactive shell starts with SIGINT ignored, and so would run.py:
    # give it the default disposition, as a terminal's Ctrl-C finds it.
    proc = subprocess.Popen(
        cmd,
        stderr=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # noqa: PLW1509
    )
    deadline = time.time() + 120
    while time.time() < deadline and not (tmp_path / "results" / "runs").exists():
        time.sleep(0.2)
    time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err[-2000:]
    assert err.strip().splitlines()[-1] == "interrupted" and "Traceback" not in err
    assert not list((tmp_path / "results").rglob("*.tmp"))


def test_verify_on_the_cpu_never_compares_eager_with_itself(tmp_path, checkpoint):
    """The CPU's eager engine is the reference's own code: `auto` verifies Inductor's CPU engine
    instead, and an explicit backend=eager is refused with the reason (no meaningless PASS)."""
    import torch

    from fastspeech.verify import verify_backend

    assert verify_backend("auto", torch.device("cpu"))[0] == "inductor"
    with pytest.raises(FastSpeechError, match="nothing to compare; use backend=inductor"):
        synthesize(tmp_path, "mode=verify", "backend=eager", "text=Hi, there.", f"checkpoint={checkpoint}")


@pytest.mark.parametrize(
    "arg, message",
    [
        ("input_file=phrases.txt", "unknown setting input_file=...; did you mean input?"),
        ("backend.inductor.modee=default", "did you mean backend.inductor.mode"),
        (
            "precision=fp17",
            "precision=fp17: no such option in conf/precision/; choose one of bf16, fp16, fp32",
        ),
        ("engine=i64_o51", "choose one of i128_o1024,"),
        ("alpha=[1,", "cannot parse the command line"),
        ("+precision=fp16", "Multiple values for precision"),  # any other refusal: Hydra's words, one line
    ],
)
def test_a_bad_setting_is_one_line_naming_it_and_the_fix(tmp_path, arg, message):
    """Hydra's own report of a misspelled key or option is several lines (and suggests `+key=`,
    which would only hide the typo): run.py turns it into one line."""
    assert message in one_error_line(subprocess_run(tmp_path, "text=hi", arg))


@pytest.mark.parametrize(
    "arg, message",
    [
        ("batch_size=abc", "batch_size=abc is not a whole number >= 1; use e.g. batch_size=8"),
        ("batch_size=2.5", "batch_size=2.5 is not a whole number >= 1"),
        ("batch_size=0", "batch_size=0 is not a whole number >= 1"),
        ("engine.max_in=abc", "engine.max_in=abc is not a whole number >= 1; use e.g. engine.max_in=128"),
        ("engine.max_out=-5", "engine.max_out=-5 is not a whole number >= 1"),
        ("engine.batch=true", "engine.batch=true is not a whole number >= 1"),
        ("seed=1.5", "seed=1.5 is not a whole number >= 0; use e.g. seed=0"),
        ("plot=maybe", "plot=maybe: use plot=true or plot=false"),
        ("force_build=1", "force_build=1: use force_build=true or force_build=false"),
        ("engine_set=default engine_set.split=no", "engine_set.split=no: use engine_set.split=true or"),
        ("engine_set=default engine_set.build_missing=no", "engine_set.build_missing=no: use engine_set"),
        ("engine_set=default engine_set.streams=0", "engine_set.streams=0 is not a whole number from 1 to 8"),
        ("engine_set=default engine_set.streams=two", "engine_set.streams=two is not a whole number from 1"),
        ("device=gpu9", "device=gpu9: use device=auto, cpu, cuda or cuda:N"),
        ("mode=play", "mode=play: use one of synthesize, build, verify, serve"),
        ("mode=serve serve.port=abc", "serve.port=abc is not a whole number from 0 to 65535"),
        ("mode=serve serve.port=99999", "serve.port=99999 is not a whole number from 0 to 65535"),
        ("mode=serve serve.max_queue=0", "serve.max_queue=0 is not a whole number >= 1"),
        ("mode=serve serve.max_chars=0", "serve.max_chars=0 is not a whole number >= 1"),
        ("mode=serve serve.replicas=0", "serve.replicas=0 is not a whole number >= 1"),
        ("mode=serve serve.streams=9", "serve.streams=9 is not a whole number from 1 to 8"),
        ("mode=serve serve.max_batch=0", "serve.max_batch=0 is not a whole number >= 1"),
        ("mode=serve serve.max_wait_ms=-1", "serve.max_wait_ms=-1 is not a number of milliseconds >= 0"),
        ("mode=serve serve.max_wait_ms=nan", "serve.max_wait_ms=nan is not a number of milliseconds"),
        ("mode=serve serve.default_voice=nope", "serve.default_voice=nope is not one of serve.voices (demo)"),
        (
            "mode=serve serve.cors_origins=https://x.org",
            "serve.cors_origins=https://x.org is not a list of web",
        ),
        ("mode=serve serve.pcm_rate=100", "serve.pcm_rate=100 is not a whole number from 8000 to 192000"),
        (
            "mode=serve serve.workers=0",
            "serve.workers=0 is not a whole number >= 1; use e.g. serve.workers=2",
        ),
    ],
)
def test_a_setting_of_the_wrong_kind_is_one_line_naming_it_and_the_fix(tmp_path, arg, message):
    """Hydra takes any value for these; before the check some raised a traceback deep in the run
    (`batch_size=abc`, `device=gpu9`, `serve.port=abc`), some were used as something else
    (`seed=1.5` as 1) and some started a server that could not work (`serve.max_queue=0`)."""
    assert message in run_py.setting_problem(compose(tmp_path, "text=hi", *arg.split()))


@pytest.mark.parametrize(
    "args",
    [[], ["engine_set=default"], ["mode=serve"], ["engine=i128_o1024", "precision=fp16", "batch_size=8"],
     ["device=cuda:1", "seed=7", "plot=true", "force_build=true"],
     ["engine_set=default", "engine_set.split=false", "engine_set.build_missing=false"],
     ["mode=serve", "serve.port=0", "serve.max_wait_ms=0.5", "serve.max_batch=4", "serve.default_voice=demo"],
     ["mode=serve", "serve.cors_origins=[https://example.com,'*']", "serve.pcm_rate=24000", "serve.workers=4"]],
)  # fmt: skip
def test_shipped_and_ordinary_settings_pass_the_setting_checks(tmp_path, args):
    assert run_py.setting_problem(compose(tmp_path, *args)) is None


def test_a_cuda_index_past_the_machines_gpus_is_one_line(monkeypatch):
    import torch

    from fastspeech import pipeline

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    with pytest.raises(
        FastSpeechError, match=r"device=cuda:1: this machine has 1 CUDA GPU\(s\); use device=cuda:0"
    ):
        pipeline.pick_device("cuda:1")


@pytest.mark.parametrize(
    "arg, message",
    [
        ("precision=fp17", "precision=fp17: no such option in conf/precision/"),
        ("batch_size=abc", "batch_size=abc is not a whole number"),
        # a setting typed as a flag: argparse's nine-line usage and exit code 2 before
        ("--text=Hello", "--text=Hello: settings are key=value without dashes; use text=Hello"),
        ("--engine", "--engine: settings are key=value without dashes; use engine"),
        # two of Hydra's run flags at once: a ValueError traceback before
        ("--multirun --cfg=job", "Only one of --run, --multirun, --cfg, --info and --shell_completion"),
    ],
)
def test_a_bad_setting_fails_before_torch_is_imported(tmp_path, arg, message):
    """A setting Hydra cannot apply, or one of the wrong kind, is reported before `fastspeech` (torch,
    the kernels: ~5 s on 2 cores) is imported: here importing torch fails outright, and the one-line
    error still comes."""
    code = (
        "import runpy, sys; sys.modules['torch'] = None; "
        f"sys.argv = ['run.py', *{arg.split()!r}, 'hydra.run.dir={tmp_path / 'hydra'}']; "
        f"runpy.run_path({str(ROOT / 'run.py')!r}, run_name='__main__')"
    )
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
        check=False,
    )
    assert message in one_error_line(proc)


def test_an_engine_that_does_not_fit_the_device_says_so_not_that_it_is_missing(tmp_path, monkeypatch):
    """Out of memory loading a set's engine is its own one-line error, also with building off: it
    used to read as "not built or stale", and the rebuild that line names would not help."""
    from fastspeech.backends.eager import EagerBackend

    args = ("engine_set=default", "checkpoint=random", "text=Hello.")
    synthesize(tmp_path, *args)  # builds the set's four engines

    monkeypatch.setattr(EagerBackend, "load", out_of_memory)
    for build_missing in ("true", "false"):
        with pytest.raises(
            DeviceMemoryError, match=r"^out of memory loading engine fastspeech\.fp32\.b1\.i128"
        ):
            synthesize(tmp_path, *args, f"engine_set.build_missing={build_missing}")
