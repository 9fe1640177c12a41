"""conv1d_ln's TensorRT path: a decomposition into TensorRT's own layers, checked without and with TensorRT.

Everywhere: the layers against nn.Conv1d / nn.Linear + residual + nn.LayerNorm + row mask, that an
exported graph decomposed with them (Torch-TensorRT's `run_decompositions` step) holds only ATen layers
TensorRT converts, keeps x's dtype and computes the op's numbers, and what `register()` hands the
registry. With TensorRT (`requires_tensorrt`; never run so far): the op in an engine vs the reference.
"""

import pytest
import torch
import torch.nn.functional as F
from helpers import fake_trt_decomposition_registry, needs_tensorrt

from converters import conv1d_ln as converter
from kernels import conv1d_ln_reference
from kernels.conv1d_ln import conv1d_ln_layers

TOL = {
    torch.float32: {"atol": 1e-5, "rtol": 1e-5},
    torch.float16: {"atol": 2e-2, "rtol": 2e-2},
    torch.bfloat16: {"atol": 5e-2, "rtol": 5e-2},
}
TENSORRT_LAYERS = {  # as tests/converters/test_conv1d.py, plus the normalization layer
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
    "aten.native_layer_norm.default",
    "<built-in function getitem>",  # native_layer_norm's output from its (out, mean, rstd) tuple
}


class _SublayerEnds(torch.nn.Module):
    """The attention's fc (a k=1 conv) and the FFN's w_2, each + residual + LayerNorm, as the model
    calls the op."""

    def __init__(self):
        super().__init__()
        self.fc = torch.nn.Linear(8, 16).requires_grad_(False)
        self.w_2 = torch.nn.Conv1d(24, 16, 3, padding=1).requires_grad_(False)
        self.ln_1, self.ln_2 = torch.nn.LayerNorm(16), torch.nn.LayerNorm(16)
        for p in self.parameters():
            p.requires_grad_(False)

    def forward(self, heads, hidden, x, lengths):
        op = torch.ops.fastspeech.conv1d_ln
        ln_1, ln_2 = self.ln_1, self.ln_2
        y = op(
            heads, self.fc.weight[None], self.fc.bias, lengths, 0, False, x, ln_1.weight, ln_1.bias, ln_1.eps
        )
        w = self.w_2.weight.permute(2, 0, 1)
        return op(hidden, w, self.w_2.bias, lengths, 1, False, y, ln_2.weight, ln_2.bias, ln_2.eps)


def inputs(dtype=torch.float32):
    return (
        torch.randn(2, 9, 8).to(dtype),
        torch.randn(2, 9, 24).to(dtype),
        torch.randn(2, 9, 16).to(dtype),
        torch.tensor([9, 5]),
    )


def call_targets(program: torch.export.ExportedProgram) -> set[str]:
    return {str(n.target) for n in program.graph.nodes if n.op == "call_function"}


@pytest.mark.parametrize("relu, residual, affine", [(False, True, True), (True, False, False)])
def test_layers_are_the_projection_residual_layer_norm_then_row_mask(relu, residual, affine):
    conv, norm = torch.nn.Conv1d(12, 20, 3, padding=1), torch.nn.LayerNorm(20, elementwise_affine=affine)
    x, lengths = torch.randn(3, 11, 12), torch.tensor([11, 4, 0])
    res = torch.randn(3, 11, 20) if residual else None
    with torch.no_grad():
        want = conv(x.transpose(1, 2)).transpose(1, 2)
        want = F.relu(want) if relu else want
        want = norm(want + res if residual else want)
        want = want * (torch.arange(11)[None, :] < lengths[:, None])[..., None]
        got = conv1d_ln_layers(
            x,
            conv.weight.permute(2, 0, 1),
            conv.bias,
            lengths,
            1,
            relu,
            res,
            norm.weight,
            norm.bias,
            norm.eps,
        )
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


def test_decomposed_export_holds_only_tensorrt_layers():
    model = _SublayerEnds()
    args = inputs()
    program = torch.export.export(model, args)
    assert "fastspeech.conv1d_ln.default" in call_targets(program)
    table = torch.export.default_decompositions()
    table.update(converter.decomposition_table())
    decomposed = program.run_decompositions(table)
    targets = call_targets(decomposed)
    assert "aten.native_layer_norm.default" in targets and not any("fastspeech" in t for t in targets)
    assert targets <= TENSORRT_LAYERS, targets - TENSORRT_LAYERS
    torch.testing.assert_close(decomposed.module()(*args), model(*args), atol=1e-5, rtol=1e-5)


def test_decomposition_keeps_half_precision():
    model = _SublayerEnds().half()
    decomposed = torch.export.export(model, inputs(torch.float16)).run_decompositions(
        converter.decomposition_table()
    )
    layers = [n for n in decomposed.graph.nodes if "conv" in str(n.target) or "layer_norm" in str(n.target)]
    assert len(layers) == 4 and all(
        (n.meta["val"][0] if isinstance(n.meta["val"], tuple) else n.meta["val"]).dtype == torch.float16
        for n in layers
    )
    assert not any("_to_copy" in str(n.target) for n in decomposed.graph.nodes)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_layers_in_half_precision_match_the_reference(dtype):
    conv, norm = torch.nn.Conv1d(40, 33, 3, padding=1), torch.nn.LayerNorm(33)
    x, res, lengths = (
        torch.randn(2, 13, 40).to(dtype),
        torch.randn(2, 13, 33).to(dtype),
        torch.tensor([13, 20]),
    )
    args = [t.detach().to(dtype) for t in (conv.weight.permute(2, 0, 1), conv.bias, norm.weight, norm.bias)]
    w, b, g, beta = args
    got = conv1d_ln_layers(x, w, b, lengths, 1, True, res, g, beta, 1e-5)
    assert got.dtype == dtype
    torch.testing.assert_close(
        got, conv1d_ln_reference(x, w, b, lengths, 1, True, res, g, beta, 1e-5), **TOL[dtype]
    )


def test_register_hands_the_layers_to_the_registry_once(monkeypatch):
    registry = fake_trt_decomposition_registry(monkeypatch)
    converter.register()
    converter.register()  # idempotent
    assert registry == {torch.ops.fastspeech.conv1d_ln.default: conv1d_ln_layers}


@pytest.mark.requires_tensorrt
@needs_tensorrt
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_op_in_a_tensorrt_engine_matches_reference(dtype):
    import torch_tensorrt

    import converters

    converters.register_all()
    torch.manual_seed(0)
    model = _SublayerEnds().cuda().to(dtype)
    args = [t.cuda() for t in inputs(dtype)]
    engine = torch_tensorrt.compile(
        model, ir="dynamo", inputs=args, min_block_size=1, require_full_compilation=True
    )
    torch.testing.assert_close(engine(*args), model(*args), **TOL[dtype])
