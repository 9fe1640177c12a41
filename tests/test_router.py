"""The multi-engine router: smallest engine that fits, rerun on frame overflow, split what fits no
engine, input order kept; and the engine set through `run.py` (model=tiny, eager engines on the CPU).

Every routed mel is checked against the model run on that text (or piece) alone, unpadded: routing,
batching and joining must not change a single frame.
"""

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path
from typing import NamedTuple

import numpy as np
import pytest
import soundfile
import torch
from helpers import LaneLog, random_model, requires_cuda

from fastspeech.checkpoint import save_checkpoint
from fastspeech.engine import Engine, EngineSpec, load_or_build
from fastspeech.errors import EngineError
from fastspeech.router import Router
from fastspeech.settings import hydra_value
from fastspeech.text import text_to_ids

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def one_thread():
    """Tiny matmuls: more CPU threads only add waiting (seconds per call on a busy 2-core runner)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def make_router(model, tmp_path, sizes, batch=1, **kwargs) -> Router:
    engines = [
        load_or_build(model, EngineSpec(batch=batch, max_in=i, max_out=o), tmp_path, "cpu") for i, o in sizes
    ]
    return Router(engines, progress=False, **kwargs)


def text_of(n_tokens: int, seed: int = 0) -> str:
    """Lower-case words (one token per character) with exactly `n_tokens` tokens."""
    r = np.random.default_rng(seed)
    text = ""
    while len(text) < n_tokens:
        text += "".join(r.choice(list("abcdefghijklmnopqrstuvwxyz"), size=int(r.integers(2, 8)))) + " "
    text = text[:n_tokens]
    text = text[:-1] + "x" if text.endswith(" ") else text
    assert len(text_to_ids(text)) == n_tokens
    return text


def reference(model, text: str, alpha: float = 1.0):
    """(mel (To, 80), durations (Ti,)) of `text` through the model alone, unpadded, on the CPU."""
    device = next(model.parameters()).device
    with torch.no_grad():
        out = model(torch.tensor([text_to_ids(text)], device=device), alpha, max_out=None)
    n = int(out.durations.sum())
    return out.mel[0, :n].float().cpu(), out.durations[0].cpu()


def check_routed(model, routed, alpha: float = 1.0, atol: float = 1e-4) -> None:
    """The routed mel is its pieces' reference mels end to end; nothing lost."""
    refs = [reference(model, piece, alpha) for piece in routed.pieces]
    assert routed.frames == int(routed.durations.sum())
    torch.testing.assert_close(routed.durations, torch.cat([d for _, d in refs]))
    torch.testing.assert_close(routed.mel, torch.cat([m for m, _ in refs]), rtol=1e-4, atol=atol)


# ---- input length: the smallest engine whose max input fits


@pytest.mark.parametrize(
    "n_tokens, engine", [(1, "i8"), (8, "i8"), (9, "i16"), (16, "i16"), (17, "i24"), (24, "i24")]
)
def test_text_goes_to_smallest_engine_whose_input_fits(tmp_path, n_tokens, engine):
    model = random_model(seed=1)
    router = make_router(model, tmp_path, [(24, 512), (8, 512), (16, 512)])  # any order
    text = text_of(n_tokens)
    (routed,), stats = router([text])
    assert [name.split(".")[3] for name in routed.engines] == [engine]
    assert routed.pieces == [text] and stats.reroutes == stats.splits == 0
    check_routed(model, routed)


def test_one_token_more_than_the_largest_engine_is_split_and_joined(tmp_path):
    model = random_model(seed=2)
    router = make_router(model, tmp_path, [(8, 512), (24, 512)])
    (whole,), _ = router([text_of(24)])
    assert len(whole.pieces) == 1
    text = text_of(25)
    (routed,), stats = router([text])
    assert len(routed.pieces) > 1 and stats.splits == 1
    assert all(len(text_to_ids(p)) <= 24 for p in routed.pieces)
    assert " ".join(routed.pieces).split() == text.split()  # every word, in order
    check_routed(model, routed)


def test_too_long_text_with_splitting_off_is_a_one_line_error(tmp_path):
    router = make_router(random_model(), tmp_path, [(8, 512), (24, 512)], split=False)
    with pytest.raises(EngineError) as err:
        router(["Short.", text_of(25)])
    message = str(err.value)
    assert "line 2 is 25 tokens" in message and "(24, fastspeech.fp32.b1.i24.o512.eager)" in message
    assert "engine_set.split=true" in message and "\n" not in message


# ---- output length: rerun on the smallest engine whose output fits


OUT_SIZES = {"F/2": lambda f: f // 2, "F-1": lambda f: f - 1, "F": lambda f: f, "F+40": lambda f: f + 40}


@pytest.mark.parametrize("outs", [("F-1", "F", "F+40"), ("F/2", "F-1", "F", "F+40")])
def test_frame_overflow_reruns_on_smallest_engine_whose_output_fits(tmp_path, outs):
    """F frames: an engine with max_out F-1 overflows by one; max_out exactly F holds it."""
    model = random_model(seed=3)
    text = text_of(12)
    frames = len(reference(model, text)[0])
    router = make_router(model, tmp_path, [(16, OUT_SIZES[o](frames)) for o in outs])
    (routed,), stats = router([text])
    assert routed.engines == [f"fastspeech.fp32.b1.i16.o{frames}.eager"]
    assert stats.reroutes == 1 and stats.splits == 0
    assert [c["overflowed"] for c in stats.calls] == [1, 0]  # the first call's work was wasted, and counted
    check_routed(model, routed)


def test_rerun_takes_a_larger_input_engine_when_the_output_needs_it(tmp_path):
    model = random_model(seed=3)
    text = text_of(6)
    frames = len(reference(model, text)[0])
    router = make_router(model, tmp_path, [(8, frames - 1), (16, frames - 1), (32, frames + 5)])
    (routed,), stats = router([text])
    assert routed.engines == [f"fastspeech.fp32.b1.i32.o{frames + 5}.eager"] and stats.reroutes == 1
    check_routed(model, routed)


def test_speech_longer_than_every_engine_is_split_until_each_piece_fits(tmp_path):
    model = random_model(seed=4, duration_bias=3.0)  # ~20 frames per token
    router = make_router(model, tmp_path, [(16, 64), (32, 128)])
    text = "one two three, four five six. seven eight nine ten; eleven twelve."
    (routed,), stats = router([text])
    assert routed.frames > 128 and len(routed.pieces) > 1 and stats.splits >= 1
    assert all(len(reference(model, p)[0]) <= 128 for p in routed.pieces)
    assert "".join(routed.pieces).replace(" ", "") == text.replace(" ", "")  # cut at words, then letters
    check_routed(model, routed)


def test_speech_longer_than_every_engine_with_splitting_off_is_an_error(tmp_path):
    router = make_router(
        random_model(seed=4, duration_bias=3.0), tmp_path, [(16, 64), (32, 128)], split=False
    )
    with pytest.raises(
        EngineError,
        match=r"^text: predicted speech is \d+ frames, longer than the largest engine "
        r"of the set takes \(128 frames, .*\); set engine_set\.split=true",
    ):
        router(["one two three, four five six."])


def test_a_single_token_longer_than_every_engine_is_an_error(tmp_path):
    router = make_router(random_model(seed=4, duration_bias=3.0), tmp_path, [(16, 64), (32, 128)])
    with pytest.raises(EngineError, match="a single token .* lower alpha"):
        router(["a"], alpha=20.0)


# ---- batching and order


def test_order_is_restored_across_buckets_and_batches(tmp_path):
    model = random_model(seed=5)
    router = make_router(model, tmp_path, [(8, 40), (16, 80), (32, 160)], batch=3)
    rng = np.random.default_rng(5)
    texts = [text_of(int(n), seed=i) for i, n in enumerate(rng.integers(1, 48, size=25))]
    routed, stats = router(texts, alpha=1.1)
    assert len(routed) == len(texts)
    for text, r in zip(texts, routed):
        if len(r.pieces) == 1:
            assert r.pieces == [text]
        check_routed(model, r, alpha=1.1)
    assert len({c["engine"] for c in stats.calls}) == 3
    assert max(c["items"] for c in stats.calls) == 3  # calls were batched
    padded = 1 - sum(c["tokens"] + c["frames"] for c in stats.calls) / sum(
        c["token_slots"] + c["frame_slots"] for c in stats.calls
    )
    assert stats.padded_fraction == pytest.approx(padded) and 0 < padded < 1


def test_staged_engines_with_calls_in_flight_give_each_text_its_own_result(tmp_path):
    """The router keeps calls in flight (`Engine.submit`); with the staged call path (what CUDA
    engines run) every text, overflowed, rerun and split ones too, equals its unpadded reference."""
    model = random_model(seed=12)
    router = make_router(model, tmp_path, [(8, 24), (16, 48)], batch=2)
    for e in router.all_engines:
        e.staged = True
    texts = [text_of(n, seed=40 + n) for n in (3, 14, 7, 30, 2, 9, 16, 5, 11)]
    t0 = time.perf_counter()
    routed, stats = router(texts)
    wall = time.perf_counter() - t0
    assert stats.splits and len(stats.calls) > 4
    # Calls in flight overlap, yet their latencies never count the same time twice.
    assert 0 < sum(c["latency_s"] for c in stats.calls) <= wall
    for r in routed:
        check_routed(model, r)
    assert all(len(e.io.sets) <= e.io.max_sets for e in router.all_engines)


@pytest.mark.parametrize("lanes", [1, 2, 4])
def test_the_router_keeps_a_call_in_flight_per_lane(tmp_path, monkeypatch, lanes):
    """With the engines on `lanes` lanes the router keeps up to one call per lane in flight (two at
    least), a second call on a busy lane only while fewer than two run; every text still equals its
    unpadded reference. Lanes are stand-ins here (`Scheduler.lane`): on CUDA they are streams."""
    from fastspeech.router import Scheduler

    model = random_model(seed=14)
    router = make_router(model, tmp_path, [(8, 24), (12, 36), (16, 48), (24, 72)])
    lane_of = {id(e): j % lanes for j, e in enumerate(router.engines)}
    monkeypatch.setattr(Scheduler, "lane", lambda self, k, pieces: lane_of[id(self.router.engines[k])])
    router.depth = max(2, lanes)
    for e in router.all_engines:
        e.staged = True
    lanes_log = LaneLog()
    for e in router.engines:
        e.submit = lambda ids, alpha, e=e: lanes_log.start(lane_of[id(e)], Engine.submit(e, ids, alpha))
    rng = np.random.default_rng(14)
    texts = [text_of(int(n), seed=80 + i) for i, n in enumerate(rng.integers(1, 24, size=40))]
    routed, stats = router(texts)
    assert lanes_log.most == max(2, lanes) and not lanes_log.running
    assert sum(c["items"] for c in stats.calls) >= len(texts)
    for r in routed:
        check_routed(model, r)


def test_results_stay_whole_while_later_calls_reuse_the_host_buffers_with_or_without_mel(
    tmp_path, monkeypatch
):
    """Each piece's results are copied out of the engine's reused host buffers: with two calls in
    flight (staged engines, Griffin-Lim inside), every text's wav and mel still equal what the same
    text gives alone, after every later call has run. A router with `keep_mel` off (the server's)
    gives the same wav and durations, and no mel."""
    from fastspeech import engine as engine_module
    from fastspeech.vocoder.griffin_lim import GriffinLim

    model = random_model(seed=21)
    vocoder = GriffinLim(n_iter=1)
    engines = [
        load_or_build(model, EngineSpec(3, i, o), tmp_path, "cpu", vocoder=vocoder)
        for i, o in [(8, 24), (16, 48)]
    ]
    for e in engines:
        e.staged = True
    created = []

    class CountedSet(engine_module._OutputSet):
        def __init__(self, *args, **kwargs):
            super().__init__(*args, **kwargs)
            created.append(self)

    monkeypatch.setattr(engine_module, "_OutputSet", CountedSet)
    texts = [text_of(n, seed=60 + n) for n in (5, 14, 2, 9, 16, 7, 3, 12, 30)]
    routed, stats = Router(engines, progress=False)(texts)
    without, _ = Router(engines, progress=False, keep_mel=False)(texts)
    assert len(stats.calls) > 4
    alone = [Router(engines, progress=False)([t])[0][0] for t in texts]  # one text per call
    for r, w, a in zip(routed, without, alone):
        assert r.pieces == a.pieces == w.pieces
        torch.testing.assert_close(r.mel, a.mel, rtol=1e-5, atol=1e-5)
        assert torch.equal(r.durations, a.durations) and torch.equal(w.durations, a.durations)
        # One frame of Griffin-Lim reaches two frames either side: only a piece's own padding differs.
        assert r.wav.shape == w.wav.shape == a.wav.shape == (256 * r.frames,)
        assert torch.equal(r.wav, w.wav)
        assert (r.wav.int() - a.wav.int()).abs().max() <= 1
        assert w.mel is None and w.frames == r.frames == int(r.durations.sum())
    # Copies, not views of the engines' host buffers: with nothing of theirs held, the engines reuse
    # their output sets (a view held would make every call allocate another: pinned memory on CUDA).
    assert 0 < len(created) <= sum(e.io.max_sets for e in engines)


def test_a_call_that_fails_when_submitted_fails_only_its_text(tmp_path):
    """A started call that raises runs again piece by piece: the bad text's error names it."""
    model = random_model(seed=13)
    router = make_router(model, tmp_path, [(16, 48)])
    engine = router.engines[0]
    bad = text_to_ids(text_of(6, seed=2))

    def submit(ids, alpha):
        if any(list(i) == bad for i in ids):
            raise RuntimeError("device fault (simulated)")
        return Engine.submit(engine, ids, alpha)

    engine.submit = submit
    with pytest.raises(EngineError, match=r"line 2: synthesis failed \(RuntimeError: device fault"):
        router([text_of(4, seed=1), text_of(6, seed=2), text_of(5, seed=3)])


def test_a_shape_at_two_batch_sizes_runs_each_call_on_the_smallest_that_holds_it(tmp_path):
    """engine_set.batches=[1,3]: one queue per shape; a lone piece runs on the batch-1 engine, a
    call of 2 or 3 pieces on the batch-3 one, and every text equals its unpadded reference."""
    from fastspeech.router import Scheduler

    model = random_model(seed=6)
    engines = [
        load_or_build(model, EngineSpec(batch=b, max_in=i, max_out=o), tmp_path, "cpu")
        for i, o in [(8, 40), (16, 80)]
        for b in (3, 1)
    ]
    router = Router(engines, progress=False)
    assert [e.spec.batch for e in router.engines] == [3, 3] and len(router.all_engines) == 4
    routed, stats = router([text_of(5, seed=1)])  # alone: the batch-1 engine, no empty rows
    check_routed(model, routed[0])
    assert routed[0].engines == [stats.calls[0]["engine"]] and ".b1." in routed[0].engines[0]
    assert [(c["items"], c["token_slots"]) for c in stats.calls] == [(1, 8)]
    texts = [text_of(n, seed=10 + n) for n in (3, 6, 7, 12, 14, 2, 16)]
    routed, stats = router(texts, alpha=0.9)
    for r in routed:
        check_routed(model, r, alpha=0.9)
    for c in stats.calls:  # items -> the batch that ran them: 1 -> 1, 2 or 3 -> 3
        max_in = 8 if "i8." in c["engine"] else 16
        assert c["token_slots"] == max_in * (1 if c["items"] == 1 else 3), c
    assert sorted(c["items"] for c in stats.calls) == [1, 3, 3]
    # The scheduler caps a call at the largest batch of the shape.
    assert Scheduler(router).caps == [3, 3]


@pytest.mark.parametrize(
    "engines, expected",
    [
        (["i128_o1024", "i32_o256", "i96_o768", "i64_o512"], "A A B A A A B A"),
        (["i32_o192", "i64_o384", "i96_o576", "i128_o768", "i128_o1024"], "A A B A A A B A B A"),
    ],
)
def test_batch_1_engines_take_turns_on_the_lanes_by_input_size(monkeypatch, engines, expected):
    """Two lanes, each engine at batch 1 and 8: neighbouring input sizes alternate at batch 1, the
    shapes of one input size share a lane (their pool then holds one of them), batch 8 stays on the
    first lane."""
    from omegaconf import OmegaConf

    from fastspeech import pipeline

    monkeypatch.setattr(pipeline, "set_lanes", lambda cfg, device: ["A", "B"])
    cfg = OmegaConf.create(
        {"batch_size": 1, "engine_set": {"name": "t", "engines": engines, "batches": [1, 8]}}
    )
    placed = pipeline.engine_lanes(cfg, torch.device("cpu"))[::-1]  # opened largest first
    assert [(int(c.max_in), int(c.max_out)) for c, _, _ in placed[::2]] == sorted(
        (int(c.max_in), int(c.max_out)) for c in pipeline.engine_set_configs(cfg)
    )
    assert [b for _, b, _ in placed] == [1, 8] * len(engines)
    assert " ".join(lane for _, _, lane in placed) == expected


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("streams", [1, 2, 3])
def test_inductor_engines_on_their_lanes_equal_eager(tmp_path, monkeypatch, streams):
    """Graphs captured into one pool reuse each other's scratch memory: safe only because the calls
    of a lane run one after another and each call copies its outputs out. With more lanes (a pool and
    a stream each, `pipeline.set_lanes`) the router runs calls of different lanes at once, up to one
    per lane. Interleave them and compare."""
    import torch._dynamo
    from omegaconf import OmegaConf

    from fastspeech.pipeline import lane_of, set_lanes

    # Each engine is one more compiled variant of EngineGraph.forward; Dynamo stops at 8 per process.
    monkeypatch.setattr(torch._dynamo.config, "recompile_limit", 64)
    model = random_model(seed=6).to("cuda")
    lanes = set_lanes(OmegaConf.create({"engine_set": {"streams": streams}}), torch.device("cuda"))
    assert len(lanes) == streams and (lanes[0][1] is None) == (streams == 1)
    assert all(lane_of(shape, 8, lanes) is lanes[0] for shape in range(3))  # larger batches: one lane
    sizes = [(32, 160), (8, 40), (16, 80)]  # captured largest first, as the benchmark does
    engines = []
    for i, o in sizes:
        pool, stream = lane_of(sizes.index((i, o)), 1, lanes)  # placed as batch-1 engines are
        options = {"mode": None, "cuda_graphs": True, "pool": pool}
        engines.append(
            load_or_build(model, EngineSpec(2, i, o, backend="inductor"), tmp_path, "cuda", options)
        )
        engines[-1].stream = stream
    router = Router(engines, progress=False)
    assert router.depth == max(2, streams)
    rng = np.random.default_rng(6)
    texts = [text_of(int(n), seed=i) for i, n in enumerate(rng.integers(1, 40, size=30))]
    for _ in range(2):
        routed, stats = router(texts)
        assert len({c["engine"] for c in stats.calls}) == 3
        for r in routed:
            check_routed(model, r, atol=1e-3)


def test_engines_of_other_precisions_or_backends_are_refused():
    engines = [
        Engine(EngineSpec(1, 8, 32, "fp32"), None, "cpu"),
        Engine(EngineSpec(1, 16, 64, "fp16"), None, "cpu"),
    ]
    with pytest.raises(EngineError, match="share precision, backend and device"):
        Router(engines)


# ---- the engine set through run.py


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint_000001.pt"
    save_checkpoint(random_model(seed=0, duration_bias=1.2), path, fmt="dle", step=1)
    return path


def run(tmp_path, *args, check=True) -> tuple[int, str]:
    """run.py as a user runs it -> (exit code, stdout + stderr)."""
    defaults = {
        "engine_dir": tmp_path / "engines",
        "results_dir": tmp_path / "results",
        "hydra.run.dir": tmp_path / "hydra",
        "hydra.sweep.dir": tmp_path / "multirun",
        "vocoder.n_iter": 4,
        "plot": "false",
    }
    given = {a.split("=")[0] for a in args}
    cmd = [
        sys.executable,
        str(ROOT / "run.py"),
        *args,
        *(f"{k}={v}" for k, v in defaults.items() if k not in given),
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run(
        cmd, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300, check=False
    )
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.returncode, proc.stdout + proc.stderr


def one_error_line(output: str) -> str:
    errors = [line for line in output.splitlines() if line.startswith("error: ")]
    assert len(errors) == 1 and "Traceback" not in output, output[-3000:]
    return errors[0]


def missing_engines_sweep(tmp_path, common: list[str]) -> str:
    """The one error line of a set whose engines are all missing -> the build sweep it names."""
    code, output = run(
        tmp_path, *common, "engine_set=default", "engine_set.build_missing=false", "text=Hello.", check=False
    )
    error = one_error_line(output)
    assert code == 1 and "4 engine(s) not built or stale (i32_o256, i64_o512, i96_o768, i128_o1024)" in error
    command = re.search(r"`(python run\.py -m [^`]*)`", error).group(1)
    assert "engine=i32_o256,i64_o512,i96_o768,i128_o1024" in command and command.endswith("mode=build")
    return command


def test_missing_engines_are_named_with_the_build_sweep(tmp_path, checkpoint):
    missing_engines_sweep(tmp_path, ["model=tiny", f"checkpoint={checkpoint}"])


@pytest.mark.slow  # builds four engines in a Hydra sweep (~40 s on 2 cores)
def test_the_named_sweep_builds_the_set_which_then_loads(tmp_path, checkpoint):
    spaced = tmp_path / "my voice" / "it's here.pt"  # the command is quoted for the shell
    spaced.parent.mkdir()
    shutil.copy(checkpoint, spaced)
    common = [
        "model=tiny",
        f"checkpoint={hydra_value(spaced)}",
        "vocoder.n_iter=3",
    ]  # vocoder: in the fingerprint
    command = missing_engines_sweep(tmp_path, common)
    assert "vocoder.n_iter=3" in command
    run(tmp_path, *shlex.split(command)[2:])  # the sweep the message names: one Hydra job per engine
    assert len(list((tmp_path / "engines").glob("*.engine"))) == 4
    lines = [
        "Hi there.",
        "The quick brown fox jumps over the lazy dog. " * 5,
        "A mid-sized sentence, not long.",
    ]
    (tmp_path / "in.txt").write_text("\n".join(lines))
    _, output = run(
        tmp_path,
        *common,
        "engine_set=default",
        "engine_set.build_missing=false",
        f"input={tmp_path / 'in.txt'}",
    )
    assert "building" not in output
    assert re.search(
        r"line 2: 224 tokens, more than the largest engine takes \(128\): split into \d pieces", output
    )
    wavs = sorted((tmp_path / "results").glob("*.wav"))
    assert [w.name[:4] for w in wavs] == ["0000", "0001", "0002"]  # one wav per line, in input order
    for wav in wavs:
        audio, _ = soundfile.read(wav)
        assert len(audio) == len(np.load(wav.with_suffix(".npy"))) * 256 > 0


@pytest.mark.slow  # builds two engines (~20 s on 2 cores)
def test_mode_build_with_a_set_builds_every_engine_of_it(tmp_path, checkpoint):
    common = [
        "model=tiny",
        f"checkpoint={checkpoint}",
        "engine_set=default",
        "engine_set.engines=[i32_o256,i64_o512]",
    ]
    run(tmp_path, *common, "mode=build")
    assert len(list((tmp_path / "engines").glob("*.engine"))) == 2  # it had built engine= alone
    _, output = run(tmp_path, *common, "engine_set.build_missing=false", "text=Hello there.")
    assert "building" not in output


@pytest.mark.slow  # two runs that build a set (~20 s on 2 cores)
def test_an_engine_missing_from_the_set_is_built(tmp_path, checkpoint):
    common = ["model=tiny", f"checkpoint={checkpoint}", "engine_set=default", "text=Hello there."]
    run(tmp_path, *common)
    (engine,) = (tmp_path / "engines").glob("fastspeech.fp32.b1.i64.o512.*.engine")  # .<vocoder>.eager
    engine.unlink()
    _, output = run(tmp_path, *common)
    assert output.count("building engine") == 1 and f"{engine.name}: no engine file yet" in output


def test_too_long_line_with_splitting_off_fails_before_loading_engines(tmp_path):
    code, output = run(
        tmp_path,
        "model=tiny",
        "engine_set=default",
        "engine_set.split=false",
        f"text='{'word ' * 40}'",
        check=False,
    )
    assert code == 1 and "text is 199 tokens, longer than the largest engine of the set" in one_error_line(
        output
    )
    assert "building engine" not in output


@pytest.mark.parametrize("name", sorted(p.stem for p in (ROOT / "conf" / "engine_set").glob("*.yaml")))
def test_every_engine_set_names_engines_that_exist(name):
    from hydra import compose, initialize_config_dir

    from fastspeech import pipeline

    with initialize_config_dir(config_dir=str(ROOT / "conf"), version_base="1.3"):
        cfg = compose(config_name="config", overrides=[f"engine_set={name}"])
    configs = pipeline.engine_set_configs(cfg)
    assert [c.name for c in configs] == list(cfg.engine_set.engines)
    assert len({(c.max_in, c.max_out) for c in configs}) == len(configs), "two engines of the same size"
    assert all(c.max_out >= c.max_in >= 1 for c in configs)


@pytest.mark.parametrize(
    "batches, want",
    [(None, [4]), ([8, 1], [1, 8]), ([1, 1, 8], [1, 8]), ([], [4]), ([0, 8], None), (["x"], None)],
)
def test_engine_set_batches_are_checked_before_any_engine_loads(batches, want):
    from omegaconf import OmegaConf

    from fastspeech.errors import ConfigError
    from fastspeech.pipeline import set_batches

    cfg = OmegaConf.create({"batch_size": 4, "engine_set": {"name": "default", "batches": batches}})
    if want is None:
        with pytest.raises(ConfigError, match=r"engine_set.batches=.* must list batch sizes >= 1"):
            set_batches(cfg)
    else:
        assert set_batches(cfg) == want


def test_a_text_arriving_while_a_long_one_runs_goes_next_whatever_a_call_costs(tmp_path):
    """A later piece of a text counts one call's latency later per piece (`Scheduler.rank_delay`): a
    short text queued t seconds after a long one goes right after the long one's pieces that were
    due by then, for fast and slow calls alike. The long text here is queued before any call was
    timed (the default 20 ms per piece); the first call's latency re-keys its queued pieces. A fixed
    20 ms put the short text behind all 20 pieces when calls take 0.4 s, as on a CPU (8-11 s)."""
    from fastspeech.router import Scheduler

    router = make_router(random_model(seed=6), tmp_path, [(16, 80)])
    long = " ".join(f"Word {w} here." for w in "abcdefghijklmnopqrst")  # 20 sentences
    for call_s in (0.01, 0.4):  # a GPU-like and a CPU-like call
        scheduler = Scheduler(router)
        assert scheduler.add(1, long, since=0.0, sentences=True) == 20
        batch = scheduler.next_batch()  # the long text's first piece
        results, calls = scheduler.execute(batch)
        calls[0]["latency_s"] = call_s  # as if it had taken call_s
        scheduler.finish(batch, (results, calls))
        assert scheduler.rank_delay == call_s
        scheduler.add(2, "Short one.", since=5.5 * call_s, sentences=True)  # while piece 6 is due
        order = []
        while (batch := scheduler.next_batch()) is not None:
            order += [p.key for p in batch.pieces]
        assert order.index((2,)) == 5, order  # after the long text's pieces 1-5, before the rest


def test_a_text_cut_into_sentences_is_encoded_once_and_kept_whole_when_a_sentence_says_nothing(
    tmp_path, monkeypatch
):
    """`sentences=True` (the server): each sentence is encoded once, the whole text not again; a
    "sentence" with nothing to say (quotes alone) keeps the text whole; a text that cannot be encoded raises
    the error the whole text gives, and nothing is queued."""
    import fastspeech.router as router_module
    from fastspeech.errors import TextError
    from fastspeech.router import Scheduler

    encoded = []

    def counting(text, on_unknown="error"):
        encoded.append(text)
        return text_to_ids(text, on_unknown)

    monkeypatch.setattr(router_module, "text_to_ids", counting)
    scheduler = Scheduler(make_router(random_model(seed=6), tmp_path, [(16, 80), (64, 320)]))
    text = "It works. Does it? Yes, 3 times!"
    assert scheduler.add(1, text, sentences=True) == 3
    assert encoded == ["It works.", "Does it?", "Yes, 3 times!"]
    queued = sorted((p for q in scheduler.queues for p in q), key=lambda p: p.key)
    assert [p.ids for p in queued] == [tuple(text_to_ids(c)) for c in encoded]
    encoded.clear()
    assert scheduler.add(2, 'Go now. ""', sentences=True) == 1  # the quotes alone say nothing
    assert encoded == ["Go now.", '""', 'Go now. ""']
    with pytest.raises(TextError) as caught:
        scheduler.add(3, "Fine. Bad \u0007 here.", sentences=True)
    with pytest.raises(TextError) as whole:
        text_to_ids("Fine. Bad \u0007 here.")
    assert str(caught.value) == str(whole.value) and 3 not in scheduler.items
    assert scheduler.add(4, "One. Two.") == 1 and encoded[-1] == "One. Two."  # sentences off: whole


def test_the_rank_delay_follows_the_measured_call_latency(tmp_path):
    from fastspeech.router import RANK_DELAY, Scheduler

    router = make_router(random_model(seed=6), tmp_path, [(16, 80)])
    scheduler = Scheduler(router)
    assert scheduler.rank_delay == RANK_DELAY  # before any call is timed
    delays = []
    for i, latency in enumerate([0.1] + [0.5] * 12):
        scheduler.add(i, "Hello there.")
        batch = scheduler.next_batch()
        results, calls = scheduler.execute(batch)
        calls[0]["latency_s"] = latency
        scheduler.finish(batch, (results, calls))
        delays.append(scheduler.rank_delay)
    assert delays[0] == 0.1  # the first call's own latency, then a running mean
    assert delays == sorted(delays) and 0.45 < delays[-1] < 0.5, delays


def scheduler_over(caps: list[int], lanes: list | None = None, batch1_lanes: list | None = None):
    """A `Scheduler` over stand-in engines of these batch sizes, on these lanes (their `stream`s;
    None: no stream), each shape also at batch 1 on `batch1_lanes` where given -- all it reads of a
    router."""
    from fastspeech.router import Scheduler

    class Spec(NamedTuple):
        batch: int

    class FakeEngine(NamedTuple):
        spec: Spec
        stream: object = None

    class FakeRouter(NamedTuple):
        engines: list
        sizes: list | None = None

    lanes = lanes or [None] * len(caps)
    engines = [FakeEngine(Spec(c), lane) for c, lane in zip(caps, lanes)]
    if batch1_lanes is None:
        return Scheduler(FakeRouter(engines))
    sizes = [[FakeEngine(Spec(1), b1), e] for e, b1 in zip(engines, batch1_lanes)]
    return Scheduler(FakeRouter(engines, sizes))


def test_while_a_call_runs_the_next_comes_from_another_lane_where_one_is_ready():
    """Two calls on different lanes run at once on the device; two on one lane, one after the other.
    So with a call running on lane A, the first ready bucket of another lane goes next, and a bucket
    of lane A only when no other is ready; with no call running, or no lanes, strict priority."""
    from fastspeech.router import _Piece

    lane_a, lane_b = object(), object()
    scheduler = scheduler_over([1, 1, 1], [lane_a, lane_b, lane_a])
    for engine, since in ((0, 1.0), (2, 2.0), (1, 3.0)):  # by priority: engine 0, then 2, then 1
        scheduler.queues[engine].push(_Piece((engine,), "t", (1,), engine, since=since))
    assert scheduler.ready()[1] == 0
    assert scheduler.ready(busy=[lane_b])[1] == 0
    assert scheduler.ready(busy=[lane_a])[1] == 1  # lane B's bucket, although it holds the latest piece
    assert scheduler.ready(busy=[lane_a, lane_b])[1] == 0  # every lane busy: strict priority
    assert scheduler.ready(busy=[lane_a, lane_b], elsewhere_only=True) is None
    assert scheduler.next_batch(busy=[lane_a]).engine == 1
    assert scheduler.ready(busy=[lane_a])[1] == 0  # nothing ready elsewhere: lane A's first bucket
    assert scheduler.ready(busy=[lane_a], elsewhere_only=True) is None
    assert scheduler.ready(busy=[object()])[1] == 0  # a lane none of these engines is on
    # A shape at two batch sizes: a call of one piece runs on the batch-1 engine's lane (the lanes'
    # turns), a fuller call on the larger engine's (larger batches stay on the first lane).
    two = scheduler_over([8, 8], [lane_a, lane_a], batch1_lanes=[lane_a, lane_b])
    assert two.lane(1, 1) is lane_b and two.lane(1, 2) is lane_a and two.lane(1, 50) is lane_a
    for engine, since in ((0, 1.0), (1, 2.0)):
        two.queues[engine].push(_Piece((engine,), "t", (1,), engine, since=since))
    assert two.ready(10.0, busy=[lane_a])[1] == 1  # one piece queued there: it runs on lane B
    two.queues[1].push(_Piece((9,), "t", (1,), 1, since=3.0))
    assert two.ready(10.0, busy=[lane_a])[1] == 0  # two pieces: lane A's batch-8 engine, strict priority
    plain = scheduler_over([1, 1], None)  # engines without streams: one lane, strict priority
    for engine, since in ((0, 1.0), (1, 2.0)):
        plain.queues[engine].push(_Piece((engine,), "t", (1,), engine, since=since))
    assert plain.ready(busy=[None])[1] == 0 and plain.next_batch().engine == 0


def test_scheduler_queues_take_and_wake_as_a_sorted_list_would():
    """The scheduler's heap queues against the plain rules (sort the queue, take a batch; the earliest
    arrival for max_wait) over random pushes, takes, overflow re-queues under the same key, cancels
    and timed calls that move the step; `ready`, `next_batch`, `wake_at` and `pending` agree at every
    step. The first half queues every piece at one arrival time (the command line's case, whose
    queues keep their keys when the step moves), the second half at many."""
    from fastspeech.router import _Piece

    rng = np.random.default_rng(0)
    caps = [1, 3, 2]
    scheduler = scheduler_over(caps)
    plain: list[list[_Piece]] = [[] for _ in caps]  # the reference: unsorted lists
    taken: list[_Piece] = []
    calls = [0] * 4  # by pieces per call
    steps_seen = [0, 0]  # the step moved, by half
    for step in range(3000):
        op = rng.random()
        p = None
        if op < 0.5:  # a new piece (its item may have several)
            item = int(rng.integers(0, 40))
            key = (item, int(rng.integers(0, 4)), step)
            since = float(rng.integers(0, 50)) if step >= 1500 else 0.0
            p = _Piece(key, "t", (1,), int(rng.integers(0, 3)), since=since, rank=int(rng.integers(0, 3)))
        elif op < 0.6 and taken:  # an overflowed piece queued again: same key and since, another engine
            p = replace(taken.pop(int(rng.integers(0, len(taken)))), engine=int(rng.integers(0, 3)))
        elif op < 0.62:  # a timed call: the step follows the calls' mean latency
            before = scheduler._step
            scheduler._time_call(float(rng.choice([0.5, 4.0, 30.0])))
            steps_seen[step >= 1500] += scheduler._step != before
        elif op < 0.65:  # cancel an item
            item = int(rng.integers(0, 40))
            want = sum(p.key[0] == item for q in plain for p in q)
            scheduler.items[item] = "queued"  # `add` records the item; cancel pops it
            assert scheduler.cancel(item) == want
            plain = [[p for p in q if p.key[0] != item] for q in plain]
        elif op >= 0.65:  # the next call, with and without a wait limit
            now, max_wait = float(rng.integers(0, 80)), float(rng.choice([0.0, 20.0]))
            ready = [
                (min(p.priority(scheduler._step) for p in q), k)
                for k, q in enumerate(plain)
                if q and (len(q) >= caps[k] or now - min(p.since for p in q) >= max_wait)
            ]
            assert scheduler.ready(now, max_wait) == (min(ready) if ready else None)
            heads = [min(p.since for p in q) for q in plain if q]
            assert scheduler.wake_at(7.0) == (min(heads) + 7.0 if heads else None)
            batch = scheduler.next_batch(now, max_wait)
            if ready:
                k = min(ready)[1]
                plain[k].sort(key=lambda p: p.priority(scheduler._step))
                want, plain[k] = plain[k][: caps[k]], plain[k][caps[k] :]
                assert batch.engine == k and batch.pieces == want
                taken += want
            else:
                assert batch is None
            calls[len(batch.pieces) if batch else 0] += 1
        if p is not None:
            scheduler.queues[p.engine].push(p)
            plain[p.engine].append(p)
        assert scheduler.pending() == sum(map(len, plain))
        assert scheduler.batches_left() == sum(-(-len(q) // c) for q, c in zip(plain, caps))
    assert min(calls) >= 10, calls  # empty, 1-, 2- and 3-piece calls all happened
    assert min(steps_seen) >= 5, steps_seen  # the step moved often, in both halves


def test_queues_of_one_arrival_keep_their_keys_until_another_arrival_joins(monkeypatch):
    """The command line queues every text at once: there the step cannot change the order, so its
    queues are never re-keyed, however often noisy call times move the step (re-keying every piece
    at every move cost 2 ms of host time per call over 1,000 texts). A piece of another arrival
    re-keys its queue once, and then the order is the sorted-list rule's at the current step."""
    from fastspeech.router import _Piece, _Queue

    rekeys = []
    original = _Queue._rekey
    monkeypatch.setattr(_Queue, "_rekey", lambda q: (rekeys.append(len(q)), original(q))[1])
    rng = np.random.default_rng(1)
    scheduler = scheduler_over([2, 1])
    queued = []
    for item in range(300):  # three pieces per text, all queued at 0.0
        for rank in range(3):
            p = _Piece((item, rank), "t", (1,), int(rng.integers(0, 2)), since=0.0, rank=rank)
            scheduler.queues[p.engine].push(p)
            queued.append(p)
    moves, taken = 0, {0: [], 1: []}
    for _ in range(150):  # calls whose latencies jump around
        before = scheduler._step
        scheduler._time_call(float(rng.choice([1e-5, 1e-3, 0.1])))
        moves += scheduler._step != before
        batch = scheduler.next_batch()
        taken[batch.engine] += batch.pieces
    assert moves >= 10 and rekeys == [], (moves, rekeys)
    for k, pieces in taken.items():  # each engine's pieces by rank, then key, whatever the step
        mine = sorted((p for p in queued if p.engine == k), key=lambda p: (p.rank, p.key))
        assert pieces == mine[: len(pieces)] and len(pieces) > 20

    step = scheduler._step  # the keys are still RANK_DELAY's (0.02 per rank): order differs at this step
    assert not 0.013 < step < 0.027, step
    late = _Piece((999, 0), "t", (1,), 0, since=1.5 * step, rank=0)  # between ranks 1 and 2 at this step
    n = len(scheduler.queues[0])
    scheduler.queues[0].push(late)
    assert rekeys == [n]  # that queue alone, once
    left = list(scheduler.queues[0])
    want = sorted(left, key=lambda p: p.priority(step))
    got = []
    while scheduler.queues[0]:
        got += scheduler.queues[0].take(2)
    assert got == want and late in got
