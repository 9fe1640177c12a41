"""linear's TensorRT path: a decomposition into TensorRT's own matrix multiply, checked without and with TensorRT.

Everywhere: the layers equal `F.linear`; an exported graph decomposed with them (the
`run_decompositions` step Torch-TensorRT runs) holds only ATen layers TensorRT converts, keeps x's
dtype and computes the op's numbers (`register()`: test_decompositions.py). With TensorRT (`requires_tensorrt`; never run so far): the op inside a Torch-TensorRT engine.
"""

import pytest
import torch
from helpers import needs_tensorrt, tensorrt_engine

from converters import linear as converter
from kernels import linear_reference
from kernels.linear import linear_layers

# Layers TensorRT converts natively; anything else in a decomposed graph would need a converter.
TENSORRT_LAYERS = {
    "aten.permute.default",
    "aten.view.default",
    "aten.addmm.default",
    "aten.mm.default",
    "aten.add.Tensor",
    "aten.mul.Tensor",
    "aten.tanh.default",
    "aten.slice.Tensor",
}


class _Projections(torch.nn.Module):
    def __init__(self, bias: bool = True):
        super().__init__()
        self.qkv = torch.nn.Linear(16, 48, bias=bias).requires_grad_(False)
        self.fc = torch.nn.Linear(16, 16, bias=bias).requires_grad_(False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        op = torch.ops.fastspeech.linear
        h = op(x, self.qkv.weight, self.qkv.bias)
        q, k, v = h[..., :16], h[..., 16:32], h[..., 32:]
        return op(torch.tanh(q) * k + v, self.fc.weight, self.fc.bias) + x


def call_targets(program: torch.export.ExportedProgram) -> set[str]:
    return {str(n.target) for n in program.graph.nodes if n.op == "call_function"}


@pytest.mark.parametrize("bias", [True, False])
def test_layers_are_f_linear(bias):
    layer = torch.nn.Linear(24, 40, bias=bias)
    x = torch.randn(3, 11, 24)
    with torch.no_grad():
        torch.testing.assert_close(linear_layers(x, layer.weight, layer.bias), layer(x), atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_layers_in_half_precision_match_the_reference(dtype):
    layer = torch.nn.Linear(40, 33)
    x, w, b = torch.randn(2, 13, 40).to(dtype), layer.weight.detach().to(dtype), layer.bias.detach().to(dtype)
    got = linear_layers(x, w, b)
    assert got.dtype == dtype
    torch.testing.assert_close(got, linear_reference(x, w, b), atol=2e-2, rtol=2e-2)


@pytest.mark.parametrize("bias", [True, False])
def test_decomposed_export_holds_only_tensorrt_layers(bias):
    """The step Torch-TensorRT runs: export (the op stays whole), then `run_decompositions` with the
    default table plus ours; what is left converts to TensorRT layers and computes the op's numbers."""
    model = _Projections(bias)
    x = torch.randn(2, 9, 16)
    program = torch.export.export(model, (x,))
    assert "fastspeech.linear.default" in call_targets(program)
    table = torch.export.default_decompositions()
    table.update(converter.decomposition_table())
    decomposed = program.run_decompositions(table)
    targets = call_targets(decomposed)
    assert targets & {"aten.addmm.default", "aten.mm.default"} and not any("fastspeech" in t for t in targets)
    assert targets <= TENSORRT_LAYERS, targets - TENSORRT_LAYERS
    torch.testing.assert_close(decomposed.module()(x), model(x), atol=1e-5, rtol=1e-5)


def test_decomposition_keeps_half_precision():
    """An fp16 engine gets fp16 matrix multiplies: no cast to fp32 around them (the reference's upcast)."""
    model = _Projections().half()
    decomposed = torch.export.export(model, (torch.randn(2, 9, 16).half(),)).run_decompositions(
        converter.decomposition_table()
    )
    mms = [n for n in decomposed.graph.nodes if "mm" in str(n.target) or "linear" in str(n.target)]
    assert mms and all(n.meta["val"].dtype == torch.float16 for n in mms)
    assert not any("_to_copy" in str(n.target) for n in decomposed.graph.nodes)


@pytest.mark.requires_tensorrt
@needs_tensorrt
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_op_in_a_tensorrt_engine_matches_reference(dtype):
    torch.manual_seed(0)
    model = _Projections().cuda().to(dtype)
    x = torch.randn(2, 256, 16, device="cuda").to(dtype)
    engine = tensorrt_engine(model, [x])
    tol = 1e-5 if dtype == torch.float32 else 1e-2
    torch.testing.assert_close(engine(x), model(x), atol=tol, rtol=tol)
