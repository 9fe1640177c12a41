"""backend=tensorrt: its behaviour without TensorRT (everywhere), and whole engines with it.

The TensorRT tests (`requires_tensorrt`) have never run: TensorRT is not installable on our machines.
"""

import contextlib
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml
from helpers import needs_tensorrt, random_model

from fastspeech import backends
from fastspeech.backends import get_backend, resolve_backend
from fastspeech.backends.tensorrt import TensorRTBackend
from fastspeech.engine import EngineSpec, load_or_build
from fastspeech.errors import ConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
INSTALL = "pip install -e '.[trt]' in this checkout"


@pytest.fixture
def no_tensorrt(monkeypatch):
    monkeypatch.setattr(backends, "tensorrt_installed", lambda: False)


def test_imports_need_no_tensorrt():
    # A fresh interpreter in which importing tensorrt / torch_tensorrt fails, even where they exist.
    code = (
        "import sys; sys.modules['tensorrt'] = sys.modules['torch_tensorrt'] = None\n"
        "import converters, converters.add_pos_enc, converters.regulate_length, fastspeech.backends.tensorrt\n"
        "backend = fastspeech.backends.tensorrt.TensorRTBackend()\n"
        "try:\n    converters.register_all()\nexcept ImportError:\n    print('register_all needs tensorrt')\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
    done = subprocess.run(
        [sys.executable, "-c", code], check=False, env=env, capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert done.stdout.strip() == "register_all needs tensorrt"


def test_get_backend_without_tensorrt_says_how_to_install(no_tensorrt):
    with pytest.raises(ConfigError) as err:
        get_backend("tensorrt", workspace_size_gb=8)
    message = str(err.value)
    assert INSTALL in message and "\n" not in message


def test_check_available_needs_a_cuda_device():
    with pytest.raises(ConfigError, match="backend=tensorrt needs a CUDA GPU") as err:
        TensorRTBackend().check_available(torch.device("cpu"))
    assert "\n" not in str(err.value)


def test_check_available_without_tensorrt_says_how_to_install(no_tensorrt):
    with pytest.raises(ConfigError) as err:
        TensorRTBackend().check_available(torch.device("cuda"))
    assert INSTALL in str(err.value) and "\n" not in str(err.value)


def test_auto_picks_eager_on_cpu_and_inductor_on_cuda_without_tensorrt(no_tensorrt):
    assert resolve_backend("auto", torch.device("cpu"))[0] == "eager"
    assert resolve_backend("auto", torch.device("cuda"))[0] == "inductor"


def test_auto_picks_tensorrt_on_cuda_when_installed(monkeypatch):
    monkeypatch.setattr(backends, "tensorrt_installed", lambda: True)
    assert resolve_backend("auto", torch.device("cuda"))[0] == "tensorrt"
    assert resolve_backend("auto", torch.device("cpu"))[0] == "eager"


def test_workspace_option_from_the_backend_config(monkeypatch):
    monkeypatch.setattr(
        backends, "tensorrt_installed", lambda: True
    )  # the backend module itself needs no TensorRT
    with open(os.path.join(ROOT, "conf", "backend", "auto.yaml")) as f:
        options = yaml.safe_load(f)["tensorrt"]
    backend = get_backend("tensorrt", **options)
    assert isinstance(backend, TensorRTBackend)
    assert backend.workspace_size == int(options["workspace_size_gb"] * 2**30)
    assert TensorRTBackend(workspace_size_gb=0.5).workspace_size == 2**29


def test_tensorrt_runner_returns_pcm16_from_an_engine_with_float_audio(monkeypatch, tmp_path):
    """TensorRT has no int16 tensors: the backend compiles the graph with its wav left float32 and
    casts after the engine, so its runners (built and loaded) give the int16 of the other backends.
    Torch-TensorRT is stood in for by a module that 'compiles' to the graph itself (run eagerly)."""
    import types

    from fastspeech.graph import EngineGraph
    from fastspeech.vocoder import GriffinLim

    seen = {}

    def compile_(graph, **kwargs):
        seen["pcm16"], seen["kwargs"] = graph.pcm16, kwargs
        return graph

    fake = types.SimpleNamespace(
        Input=lambda shape, dtype: (shape, dtype),
        compile=compile_,
        save=lambda module, path, **kw: Path(path).write_bytes(b"program"),
        load=lambda path: types.SimpleNamespace(module=lambda: seen["graph"]),
    )
    monkeypatch.setitem(sys.modules, "torch_tensorrt", fake)
    monkeypatch.setattr("converters.register_all", lambda: None)
    monkeypatch.setattr(torch.cuda, "device", lambda device: contextlib.nullcontext())
    model, voc = random_model(seed=3), GriffinLim(n_iter=2)
    example = (torch.tensor([[5, 12, 40, 7], [9, 3, 0, 0]]), torch.ones(2))
    with torch.no_grad():
        want = EngineGraph(model, 24, voc).eval()(*example)
        graph = EngineGraph(model, 24, voc).eval()
        runner, payload = TensorRTBackend().build(graph, example)
        seen["graph"] = graph
        loaded = TensorRTBackend().load(EngineGraph(model, 24, voc).eval(), example, payload)
        float_wav = graph(*example)[4]
        built_out, loaded_out = runner(*example), loaded(*example)
    assert seen["pcm16"] is False and seen["kwargs"]["require_full_compilation"] and payload == b"program"
    assert float_wav.dtype == torch.float32 and want[4].dtype == torch.int16 and want[4].any()
    for out in (built_out, loaded_out):
        assert len(out) == len(want) and out[4].dtype == torch.int16
        for a, b in zip(out, want):
            assert torch.equal(a, b)


# ---------------------------------------------------------------------------------------------
# With TensorRT: whole engines at conf/engine/i32_o256.yaml


def _engine_sizes() -> dict:
    with open(os.path.join(ROOT, "conf", "engine", "i32_o256.yaml")) as f:
        return yaml.safe_load(f)


def _tolerance(precision: str) -> tuple[float, float]:
    with open(os.path.join(ROOT, "conf", "precision", f"{precision}.yaml")) as f:
        conf = yaml.safe_load(f)
    return conf["atol"], conf["rtol"]


def _model():
    """A tiny random model whose durations are exactly 3 frames per token in any precision.

    A constant duration head (log(1 + 3)) keeps rounding away from .5, so TensorRT and eager
    cannot disagree on a duration by a rounding flip; the mel then compares frame by frame.
    """
    model = random_model(duration_bias=math.log(4.0))
    with torch.no_grad():
        model.length_regulator.duration_predictor.linear_layer.weight.zero_()
    return model


TEXTS = [[5, 12, 40, 7, 7, 19, 33, 2], list(range(1, 33))]  # 8 tokens; exactly max_in = 32 tokens


@pytest.mark.requires_tensorrt
@needs_tensorrt
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_engine_matches_eager_and_survives_save_and_load(tmp_path, precision):
    sizes = _engine_sizes()
    model = _model().cuda()
    spec = {
        "batch": sizes["batch"],
        "max_in": sizes["max_in"],
        "max_out": sizes["max_out"],
        "precision": precision,
    }
    eager = load_or_build(model, EngineSpec(**spec, backend="eager"), tmp_path, "cuda")
    built = load_or_build(model, EngineSpec(**spec, backend="tensorrt"), tmp_path, "cuda")
    loaded = load_or_build(model, EngineSpec(**spec, backend="tensorrt"), tmp_path, "cuda", allow_build=False)
    atol, rtol = _tolerance(precision)

    for ids in TEXTS:
        want, got, again = eager([ids]), built([ids]), loaded([ids])
        assert torch.equal(got.durations.cpu(), want.durations.cpu())
        assert torch.equal(got.mel_lens.cpu(), want.mel_lens.cpu()) and got.mel_lens.item() == 3 * len(ids)
        assert (got.mel - want.mel).abs().max() <= atol + rtol * want.mel.abs().max()
        for a, b in zip(again, got):  # the loaded engine is the built one
            assert torch.equal(a, b)
