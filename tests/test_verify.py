"""Verify mode: a debug engine against eager PyTorch, activation by activation.

Passes on a healthy engine; names the first diverging activation when one weight inside the engine
(and only there) is perturbed; exit code 1 through `run.py`. Tolerances: conf/precision/fp32.yaml.
"""

import copy
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from helpers import random_model, requires_cuda

from fastspeech.backends import tensorrt_installed
from fastspeech.checkpoint import save_checkpoint
from fastspeech.engine import EngineSpec, load_or_build
from fastspeech.errors import ConfigError
from fastspeech.graph import activation_names
from fastspeech.verify import (
    DURATIONS,
    Tolerance,
    compare,
    compare_durations,
    reference_activations,
    verify,
    verify_engine,
)

ROOT = Path(__file__).resolve().parent.parent
FP32 = Tolerance(atol=1e-3, rtol=1e-3)
FP16 = Tolerance(atol=5e-2, rtol=2e-2)
PERTURBED = "phoneme_side.layer_stack.1.pos_ffn.w_2.weight"
DIVERGES_AT = "phoneme_side.layer_stack.1.pos_ffn.conv2"
IDS = [[20, 31, 5, 47, 11, 60, 38, 9, 52], [14, 3, 70]]  # two texts of different lengths
requires_tensorrt = pytest.mark.skipif(not tensorrt_installed(), reason="needs TensorRT and Torch-TensorRT")

# The seed's activation names for one side with two layers (model=tiny), in forward order.
SEED_NAMES = (
    ["emb", "phoneme_side.add_pos_enc"]
    + [
        f"phoneme_side.layer_stack.{i}{suffix}"
        for i in range(2)
        for suffix in (
            ".slf_attn.linear",
            ".slf_attn.scaled_dot",
            ".slf_attn.residual",
            ".slf_attn.ln",
            ".pos_ffn.conv1",
            ".pos_ffn.conv2",
            ".pos_ffn.residual",
            ".pos_ffn.ln",
            "",
        )
    ]
    + ["phoneme_side.seq", "length_regulator.seq", "length_regulator.dur"]
)


def debug_engine(model, tmp_path, device="cpu", **spec):
    """A debug engine on its own copy of the weights, so a test can perturb them."""
    spec = EngineSpec(**{"batch": 2, "max_in": 16, "max_out": 96, "debug": True, **spec})
    return load_or_build(copy.deepcopy(model).to(device, spec.dtype), spec, tmp_path, device)


def test_debug_engine_returns_every_seed_activation_in_forward_order(tmp_path):
    model = random_model(seed=1)
    names = activation_names(model)
    assert list(names[: len(SEED_NAMES)]) == SEED_NAMES
    assert names[-3:] == ("mel_side.layer_stack.1", "mel_side.seq", "out.seq")
    assert len(names) == len(set(names)) == 44
    engine = debug_engine(model, tmp_path)
    assert engine.spec.name.endswith(".eager.debug") and engine.activation_names == names
    outputs = engine.run(*engine.pad(IDS))
    assert len(outputs) == 5 + len(names)  # mel, mel_lens, frames, durations, wav
    assert outputs[5 + names.index("out.seq")].shape == (2, 96, 80)
    normal = load_or_build(model, EngineSpec(batch=2, max_in=16, max_out=96), tmp_path, "cpu")
    assert normal.activation_names == () and len(normal.run(*normal.pad(IDS))) == 5
    assert len(list(tmp_path.glob("*.engine"))) == 2  # debug and normal builds are different files


def test_healthy_engine_passes(tmp_path):
    model = random_model(seed=2)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    spec = EngineSpec(batch=2, max_in=16, max_out=96)
    report = verify(model, spec, IDS, FP32, tmp_path, "cpu")
    assert report.passed and report.first_divergence is None
    names = list(activation_names(model))
    names.remove(DURATIONS)
    names.insert(names.index("length_regulator.seq"), DURATIONS)  # durations come before the expansion
    assert [r.name for r in report.rows] == names
    for row in report.rows:
        assert row.mismatches == 0 and row.max_abs == 0.0, row  # eager engine: bit-identical
    dur = next(r for r in report.rows if r.name == DURATIONS)
    assert dur.shape == (2, 16) and dur.total == 32
    assert report.summary().startswith("verify: PASS (44 activations")
    assert "length_regulator.dur" in report.table() and "DIVERGED" not in report.table()
    for k, v in model.state_dict().items():
        assert torch.equal(v, before[k]), k  # verify never touches the caller's model


def test_weight_perturbed_inside_the_engine_is_named(tmp_path):
    model = random_model(seed=3)
    engine = debug_engine(model, tmp_path)
    assert engine.runner.model is not model  # the engine holds its own copy
    with torch.no_grad():
        weight = engine.runner.model.get_parameter(PERTURBED)
        weight.add_(
            0.5 * weight.std() * torch.randn(weight.shape, generator=torch.Generator().manual_seed(0))
        )
    report = verify_engine(engine, model, IDS, 1.0, FP32)
    assert not report.passed
    assert report.first_divergence.name == DIVERGES_AT
    names = [r.name for r in report.rows]
    for row in report.rows[: names.index(DIVERGES_AT)]:
        assert row.mismatches == 0, row  # everything before the perturbed weight still agrees
    summary = report.summary()
    assert summary.startswith(f"verify: FAIL (first divergence: {DIVERGES_AT})")
    assert f"{DIVERGES_AT}  " in report.table() and "DIVERGED" in report.table()


def test_perturb_option_changes_the_engine_copy_only(tmp_path):
    model = random_model(seed=4)
    before = model.get_parameter(PERTURBED).clone()
    spec = EngineSpec(batch=1, max_in=16, max_out=64)
    report = verify(model, spec, IDS[:1], FP32, tmp_path, "cpu", perturb=PERTURBED)
    assert report.first_divergence.name == DIVERGES_AT
    assert torch.equal(model.get_parameter(PERTURBED), before)
    with pytest.raises(ConfigError, match="no such parameter"):
        verify(model, spec, IDS[:1], FP32, tmp_path, "cpu", perturb="phoneme_side.nonexistent.weight")


def test_compare_threshold_counts_and_nan():
    ref = torch.tensor([[1.0, -4.0], [2.0, 0.0]])
    tol = Tolerance(atol=0.01, rtol=0.1)  # tau = 0.01 + 0.1 * 4 = 0.41
    at_tau = compare("x", ref + torch.tensor([[0.41, 0.0], [0.0, -0.41]]), ref, tol)
    assert at_tau.threshold == pytest.approx(0.41) and at_tau.mismatches == 0 and not at_tau.diverged
    over = compare("x", ref + torch.tensor([[0.5, 0.0], [0.0, -0.6]]), ref, tol)
    assert over.mismatches == 2 and over.total == 4 and over.max_abs == pytest.approx(0.6)
    assert over.rel == pytest.approx(math.hypot(0.5, 0.6) / ref.norm().item())
    nan = compare("x", torch.tensor([[1.0, float("nan")], [2.0, 0.0]]), ref, tol)
    assert nan.mismatches == 1 and nan.max_abs == math.inf
    half = compare("x", ref.half(), ref, tol)  # the engine side may be fp16
    assert half.mismatches == 0
    shape = compare("x", ref[:1], ref, tol)
    assert shape.diverged and "engine shape" in shape.note


def test_duration_flip_only_at_a_rounding_boundary():
    ref = torch.tensor([[2, 3, 4, 0]])
    frames = torch.tensor([[2.499, 3.2, 4.1, 0.0]])  # token 0 sits just under the 2.5 boundary
    alphas = torch.ones(1)
    row, flips = compare_durations(torch.tensor([[3, 3, 4, 0]]), ref, frames, alphas, Tolerance(1e-2, 0))
    assert (
        row.mismatches == 0
        and flips.tolist() == [[True, False, False, False]]
        and "1 one-frame flip" in row.note
    )
    far, _ = compare_durations(torch.tensor([[2, 4, 4, 0]]), ref, frames, alphas, Tolerance(1e-2, 0))
    assert far.mismatches == 1  # 3.2 -> 4 is no rounding accident
    two, _ = compare_durations(torch.tensor([[4, 3, 4, 0]]), ref, frames, alphas, Tolerance(1e-2, 0))
    assert two.mismatches == 1  # two frames off never is
    strict, _ = compare_durations(torch.tensor([[3, 3, 4, 0]]), ref, frames, alphas, Tolerance(1e-5, 0))
    assert strict.mismatches == 1  # margin 1e-5 * 3.5 < 0.001


def shift_log_durations(model, shift):
    with torch.no_grad():
        model.length_regulator.duration_predictor.linear_layer.bias.add_(shift)


def test_flipped_duration_pins_the_reference_and_passes(tmp_path):
    """A duration that rounds the other way in the engine must not fail verify in the mel side."""
    model = random_model(seed=5)
    spec = EngineSpec(batch=1, max_in=16, max_out=96, debug=True)
    tokens = torch.tensor([IDS[0] + [0] * 7])
    _, frames = reference_activations(model, tokens, torch.ones(1), 96)
    # Move token 0's unrounded duration to 2.5 frames: reference just under, engine just over.
    shift_log_durations(model, math.log(3.5) - math.log(float(frames[0, 0]) + 1))
    engine_model = copy.deepcopy(model)
    shift_log_durations(model, -2e-5)
    shift_log_durations(engine_model, 2e-5)
    engine = load_or_build(engine_model, spec, tmp_path, "cpu")
    report = verify_engine(engine, model, IDS[:1], 1.0, FP32)
    dur = next(r for r in report.rows if r.name == DURATIONS)
    assert "flip" in dur.note and dur.max_abs == 1
    assert report.passed, report.table()
    strict = verify_engine(engine, model, IDS[:1], 1.0, Tolerance(atol=1e-7, rtol=1e-3))
    assert strict.first_divergence.name == DURATIONS  # a flip is only allowed within the tolerance


# ---------------------------------------------------------------------------------------------
# run.py mode=verify


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    path = tmp_path_factory.mktemp("ckpt") / "checkpoint_000001.pt"
    save_checkpoint(random_model(seed=0, duration_bias=1.2), path, fmt="dle", step=1)
    return path


def run_verify(tmp_path, checkpoint, *overrides):
    cmd = [
        sys.executable,
        str(ROOT / "run.py"),
        "mode=verify",
        "model=tiny",
        "engine=i64_o512",
        "precision=fp16",
        "text='It just works.'",
        f"checkpoint={checkpoint}",
        f"engine_dir={tmp_path / 'engines'}",
        f"hydra.run.dir={tmp_path / 'hydra'}",
        "vocoder.n_iter=4",  # Griffin-Lim is in the engine; 4 iterations keep the test fast
        *overrides,
    ]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run(
        cmd, check=False, capture_output=True, text=True, cwd=tmp_path, env=env, timeout=300
    )


# The healthy run is `slow` (the in-process verify tests pass healthy engines); the perturbed run
# checks the command's failing exit code and report on every CI run.
@pytest.mark.parametrize("perturb", [pytest.param(None, marks=pytest.mark.slow), PERTURBED])
def test_cli_verify_exit_code_and_report(tmp_path, checkpoint, perturb):
    proc = run_verify(tmp_path, checkpoint, *([f"verify.perturb={perturb}"] if perturb else []))
    table = proc.stdout
    names = SEED_NAMES + [
        "mel_side.layer_stack.1.pos_ffn.conv2",
        "out.seq",
        "vocoder.magnitude",
        "vocoder.wav",
    ]
    for name in names:
        assert f"\n{name} " in table, name
    if perturb is None:
        assert proc.returncode == 0, proc.stderr[-3000:]
        # the model's 44 and Griffin-Lim's 2 (magnitude, wav): the default vocoder is in the engine
        assert "verify: PASS (46 activations" in table and "DIVERGED" not in table
    else:
        assert proc.returncode == 1
        errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and errors[0].startswith(
            f"error: verify: FAIL (first divergence: {DIVERGES_AT})"
        )
        assert "Traceback" not in proc.stderr


# ---------------------------------------------------------------------------------------------
# Compiled backends


@pytest.mark.slow
def test_inductor_debug_engine_passes_on_cpu(tmp_path):
    model = random_model(seed=6)
    spec = EngineSpec(batch=2, max_in=16, max_out=64, backend="inductor")
    report = verify(
        model, spec, IDS, FP32, tmp_path, "cpu", backend_options={"mode": None, "cuda_graphs": False}
    )
    assert report.passed, report.table()
    assert len(report.rows) == 44


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["eager", "inductor"])
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_verify_passes_then_names_the_perturbed_weight(tmp_path, backend, precision):
    model = random_model(seed=7, duration_bias=1.2)
    spec = EngineSpec(batch=2, max_in=16, max_out=96, precision=precision, backend=backend)
    tol = FP32 if precision == "fp32" else FP16
    options = {"mode": None, "cuda_graphs": True} if backend == "inductor" else None
    healthy = verify(model, spec, IDS, tol, tmp_path, "cuda", backend_options=options)
    assert healthy.passed, healthy.table()
    broken = verify(model, spec, IDS, tol, tmp_path, "cuda", backend_options=options, perturb=PERTURBED)
    assert broken.first_divergence.name == DIVERGES_AT, broken.table()


@requires_cuda
@requires_tensorrt
@pytest.mark.cuda
@pytest.mark.requires_tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_tensorrt_verify_passes_then_names_the_perturbed_weight(tmp_path, precision):
    model = random_model(seed=7, duration_bias=1.2)
    spec = EngineSpec(batch=2, max_in=16, max_out=96, precision=precision, backend="tensorrt")
    tol = FP32 if precision == "fp32" else FP16
    assert verify(model, spec, IDS, tol, tmp_path, "cuda").passed
    broken = verify(model, spec, IDS, tol, tmp_path, "cuda", perturb=PERTURBED)
    assert broken.first_divergence.name == DIVERGES_AT, broken.table()
