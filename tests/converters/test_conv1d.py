"""conv1d's TensorRT path: a decomposition into TensorRT's own layers, checked without and with TensorRT.

Everywhere: the decomposition's math (against nn.Conv1d and the float64 contract), that an exported
graph decomposed with it (the `run_decompositions` step Torch-TensorRT runs) holds only ATen layers
TensorRT converts, keeps x's dtype and computes the op's numbers (`register()`: test_decompositions.py).
With TensorRT (`requires_tensorrt`; never run so far): the op inside a
Torch-TensorRT engine against the reference.
"""

import pytest
import torch
import torch.nn.functional as F
from helpers import needs_tensorrt, requires_cuda, tensorrt_engine

from converters import conv1d as converter
from kernels import conv1d_reference
from kernels.conv1d import conv1d_layers

TOL = {  # vs conv1d_reference (fp32 math, one rounding); the layers run in x's dtype
    torch.float32: {"atol": 1e-5, "rtol": 1e-5},
    torch.float16: {"atol": 1e-2, "rtol": 1e-2},
    torch.bfloat16: {"atol": 2e-2, "rtol": 2e-2},
}
# Layers TensorRT converts natively; anything else in a decomposed graph would need a converter.
TENSORRT_LAYERS = {
    "aten.permute.default",
    "aten.convolution.default",
    "aten.constant_pad_nd.default",
    "aten.relu.default",
    "aten.arange.start_step",
    "aten.unsqueeze.default",
    "aten.lt.Tensor",
    "aten.full.default",
    "aten.where.self",
    "aten.add.Tensor",
}


class _Convs(torch.nn.Module):
    """Two convs as FastSpeech's feed-forward block uses them (relu and masked, then plain), residual."""

    def __init__(self, k: int = 3, padding: int = 1, bias: bool = True):
        super().__init__()
        self.padding = padding
        self.w_1 = torch.nn.Conv1d(16, 40, k, bias=bias).requires_grad_(False)
        self.w_2 = torch.nn.Conv1d(40, 16, k, bias=bias).requires_grad_(False)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        op, p = torch.ops.fastspeech.conv1d, self.padding
        h = op(x, self.w_1.weight.permute(2, 0, 1), self.w_1.bias, lengths, p, True)
        return op(h, self.w_2.weight.permute(2, 0, 1), self.w_2.bias, lengths, p, False) + x


def call_targets(program: torch.export.ExportedProgram) -> set[str]:
    return {str(n.target) for n in program.graph.nodes if n.op == "call_function"}


@pytest.mark.parametrize("k, padding", [(3, 1), (5, 2), (1, 0), (3, 0), (3, 2)])
@pytest.mark.parametrize("relu, bias", [(True, True), (False, False)])
def test_layers_are_nn_conv1d_then_relu_then_row_mask(k, padding, relu, bias):
    conv = torch.nn.Conv1d(16, 24, k, bias=bias)
    x, lengths = torch.randn(3, 11, 16), torch.tensor([11, 4, 0])
    with torch.no_grad():
        # nn.Conv1d itself, fed `padding` zero rows before and k - 1 - padding after: T rows out
        want = conv(F.pad(x.transpose(1, 2), (padding, k - 1 - padding))).transpose(1, 2)
        want = F.relu(want) if relu else want
        want = want * (torch.arange(11)[None, :] < lengths[:, None])[..., None]
        got = conv1d_layers(x, conv.weight.permute(2, 0, 1), conv.bias, lengths, padding, relu)
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_layers_in_half_precision_match_the_reference(dtype):
    conv = torch.nn.Conv1d(40, 33, 3, padding=1)
    x, lengths = torch.randn(2, 13, 40).to(dtype), torch.tensor([13, 20])
    w, b = conv.weight.detach().permute(2, 0, 1).to(dtype), conv.bias.detach().to(dtype)
    got = conv1d_layers(x, w, b, lengths, 1, True)
    assert got.dtype == dtype
    torch.testing.assert_close(got, conv1d_reference(x, w, b, lengths, 1, True), **TOL[dtype])


@pytest.mark.parametrize("k, padding, bias", [(3, 1, True), (3, 0, False)])  # the model's; uneven, no bias
def test_decomposed_export_holds_only_tensorrt_layers(k, padding, bias):
    """The step Torch-TensorRT runs: export (the op stays whole), then `run_decompositions` with the
    default table plus ours; what is left converts to TensorRT layers and computes the op's numbers."""
    model = _Convs(k, padding, bias)
    x, lengths = torch.randn(2, 9, 16), torch.tensor([9, 5])
    program = torch.export.export(model, (x, lengths))
    assert "fastspeech.conv1d.default" in call_targets(program)
    table = torch.export.default_decompositions()
    table.update(converter.decomposition_table())
    decomposed = program.run_decompositions(table)
    targets = call_targets(decomposed)
    assert "aten.convolution.default" in targets and not any("fastspeech" in t for t in targets)
    assert targets <= TENSORRT_LAYERS, targets - TENSORRT_LAYERS
    torch.testing.assert_close(decomposed.module()(x, lengths), model(x, lengths), atol=1e-5, rtol=1e-5)


def test_decomposition_keeps_half_precision():
    """An fp16 engine gets fp16 convolutions: no cast to fp32 around them (the reference's upcast)."""
    model = _Convs().half()
    x, lengths = torch.randn(2, 9, 16).half(), torch.tensor([9, 5])
    decomposed = torch.export.export(model, (x, lengths)).run_decompositions(converter.decomposition_table())
    convs = [n for n in decomposed.graph.nodes if "conv" in str(n.target)]
    assert convs and all(n.meta["val"].dtype == torch.float16 for n in convs)
    assert not any("_to_copy" in str(n.target) for n in decomposed.graph.nodes)


# ---------------------------------------------------------------------------------------------
# On a GPU: the layers TensorRT would build, in fp16 at FastSpeech's shapes (cuDNN standing in)


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("c_in, c_out, relu", [(384, 1536, True), (1536, 384, False), (384, 256, True)])
def test_layers_at_model_shapes_cuda(c_in, c_out, relu):
    torch.manual_seed(0)
    conv = torch.nn.Conv1d(c_in, c_out, 3, padding=1).cuda().half()
    x = torch.randn(8, 1024, c_in, device="cuda").half()
    lengths = torch.randint(0, 1025, (8,), device="cuda")
    w, b = conv.weight.detach().permute(2, 0, 1), conv.bias.detach()
    got = conv1d_layers(x, w, b, lengths, 1, relu)
    torch.testing.assert_close(got, conv1d_reference(x, w, b, lengths, 1, relu), **TOL[torch.float16])


# ---------------------------------------------------------------------------------------------
# With TensorRT


@pytest.mark.requires_tensorrt
@needs_tensorrt
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_op_in_a_tensorrt_engine_matches_reference(dtype):
    torch.manual_seed(0)
    model = _Convs().cuda().to(dtype)
    x, lengths = torch.randn(2, 256, 16, device="cuda").to(dtype), torch.tensor([256, 100], device="cuda")
    engine = tensorrt_engine(model, [x, lengths])
    torch.testing.assert_close(engine(x, lengths), model(x, lengths), **TOL[dtype])
