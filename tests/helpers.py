"""Small random models and markers shared by the tests (import as `from helpers import ...`)."""

import contextlib
import importlib
import json
import os
import subprocess
import sys

import pytest
import torch

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the H100)")
# Where the kernel tests launch: a GPU when there is one, else the CPU, where the Triton kernels run
# under TRITON_INTERPRET=1 (set by conftest.py).
DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def _importable(*names: str) -> bool:
    try:
        for name in names:
            importlib.import_module(name)
        return True
    except Exception:  # noqa: BLE001 - a broken install counts as absent
        return False


needs_tensorrt = pytest.mark.skipif(
    not (torch.cuda.is_available() and _importable("tensorrt.plugin", "torch_tensorrt")),
    reason="needs TensorRT + Torch-TensorRT (not installable here)",
)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONF = os.path.join(ROOT, "conf")


def tiny_config(**overrides):
    """conf/model/tiny.yaml as a FastSpeechConfig (read from the YAML so the two never drift)."""
    from omegaconf import OmegaConf

    from fastspeech.model import FastSpeechConfig

    merged = OmegaConf.merge(
        OmegaConf.load(f"{CONF}/model/dle.yaml"), OmegaConf.load(f"{CONF}/model/tiny.yaml")
    )
    values = {k: v for k, v in OmegaConf.to_container(merged).items() if k != "defaults"}
    return FastSpeechConfig.from_dict({**values, **overrides})


def random_model(seed: int = 0, duration_bias: float = 1.5, **overrides):
    """A tiny FastSpeech with random weights whose durations are mostly 2-5 frames per token.

    Random weights alone predict ~0 frames; the bias on the duration head makes the length
    regulator do real work in tests.
    """
    from fastspeech.model import FastSpeech

    torch.manual_seed(seed)
    model = FastSpeech(tiny_config(**overrides)).eval()
    with torch.no_grad():
        model.length_regulator.duration_predictor.linear_layer.bias.fill_(duration_bias)
    return model


def out_of_memory(*args, **kwargs):
    """Stands in for a backend's build or load on a device that has run out of memory."""
    raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 1.25 GiB.")


def run_without_interpreter(script: str) -> list[dict]:
    """Run `script` in a fresh Python without TRITON_INTERPRET; its last stdout line is JSON.

    Triton cannot compile for a GPU under the interpreter (set by conftest on CPU machines), so
    ahead-of-time compiles are checked in a separate process.
    """
    env = {k: v for k, v in os.environ.items() if k != "TRITON_INTERPRET"}
    env["PYTHONPATH"] = os.pathsep.join([ROOT, env.get("PYTHONPATH", "")])
    done = subprocess.run(
        [sys.executable, "-c", script], check=False, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


class ShapeExpr:
    """Stands in for `trtp.ShapeExpr` in the converters' tests: only the int operators it has (no
    reflected ones, no min/max), so a shape rule that uses another fails here as it would there."""

    def __init__(self, value: int):
        self.value = value

    def __add__(self, other: int) -> "ShapeExpr":
        return ShapeExpr(self.value + other)

    def __floordiv__(self, other: int) -> "ShapeExpr":
        return ShapeExpr(self.value // other)


@contextlib.contextmanager
def one_thread():
    """Tiny matmuls: more CPU threads only add waiting on a busy 2-core runner."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def check_export_round_trip(model: torch.nn.Module, args: tuple, op: str) -> None:
    """`torch.export` keeps the custom op `op` (e.g. "fastspeech.conv1d.default") as one node, and the
    saved-then-loaded program equals the module."""
    import io

    program = torch.export.export(model, args)
    assert op in {str(n.target) for n in program.graph.nodes}
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    with torch.no_grad():
        got = torch.export.load(buffer).module()(*args)
        torch.testing.assert_close(got, model(*args), atol=1e-5, rtol=1e-5)


def check_compile_fullgraph(model: torch.nn.Module, args: tuple) -> None:
    """`torch.compile(fullgraph=True)` of a module around a custom op equals the module."""
    torch._dynamo.reset()
    compiled = torch.compile(model, fullgraph=True, dynamic=False)
    with torch.no_grad():
        torch.testing.assert_close(compiled(*args), model(*args), atol=1e-5, rtol=1e-5)


def tensorrt_engine(module: torch.nn.Module, inputs: list[torch.Tensor]):
    """`module` compiled whole by Torch-TensorRT (dynamo IR, every node in TensorRT, our plugins and
    decompositions registered): what the converter tests run under `requires_tensorrt`."""
    import torch_tensorrt

    import converters

    converters.register_all()
    return torch_tensorrt.compile(
        module, ir="dynamo", inputs=inputs, min_block_size=1, require_full_compilation=True
    )


def fake_trt_decomposition_registry(monkeypatch) -> dict:
    """Stand-ins for the two Torch-TensorRT modules `converters.register_decomposition` imports (no
    TensorRT here): returns the registry dict that `register()` fills. A second registration of an
    op raises, as torch's register_decomposition does."""
    import types

    registry: dict = {}

    def register_torch_trt_decomposition(op, registry=None):
        def add(fn):
            if op in registry:
                raise RuntimeError(f"duplicate registrations for {op}")
            registry[op] = fn
            return fn

        return add

    groups = types.ModuleType("torch_tensorrt.dynamo.lowering._decomposition_groups")
    groups.TORCH_TRT_DECOMPOSITIONS = registry
    decomps = types.ModuleType("torch_tensorrt.dynamo.lowering._decompositions")
    decomps.register_torch_trt_decomposition = register_torch_trt_decomposition
    for name in ("torch_tensorrt", "torch_tensorrt.dynamo", "torch_tensorrt.dynamo.lowering"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, groups.__name__, groups)
    monkeypatch.setitem(sys.modules, decomps.__name__, decomps)
    return registry


class LaneLog:
    """Engine calls in flight on stand-in lanes (CUDA streams in the product), for the router's and
    the batcher's rule: a call may join a busy lane only while fewer than two calls run. `start`
    asserts the rule and wraps a call's wait; `most` is the most calls in flight at once."""

    def __init__(self):
        self.running: list = []  # the lanes of the calls in flight
        self.most = 0

    def start(self, lane, wait):
        """A call submitted on `lane` whose results `wait()` gives -> its wait, which ends it here."""
        if len(self.running) >= 2:
            assert lane not in self.running, "a second call on a busy lane while two or more run"
        self.running.append(lane)
        self.most = max(self.most, len(self.running))

        def done():
            self.running.remove(lane)
            return wait()

        return done
