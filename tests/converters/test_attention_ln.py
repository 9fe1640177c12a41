"""attention_ln's TensorRT path: a decomposition that keeps the attention op, checked without and with TensorRT.

Everywhere: the decomposition's math (against nn.Linear / nn.LayerNorm around the attention op and
against the reference), that an exported graph decomposed with it (the `run_decompositions` step
Torch-TensorRT runs) holds only the attention op (its own plugin) plus ATen layers TensorRT converts,
keeps the dtype and computes the op's numbers, and what `register()` hands Torch-TensorRT's registry.
With TensorRT (`requires_tensorrt`; never run so far): the op inside a Torch-TensorRT engine against
the reference.
"""

import sys
import types

import pytest
import torch
from helpers import needs_tensorrt, requires_cuda

from converters import attention_ln as converter
from kernels import attention, attention_ln_reference
from kernels.attention_ln import attention_ln_layers

TOL = {  # vs attention_ln_reference (fp32 after the attention); the layers run in qkv's dtype
    torch.float32: {"atol": 1e-5, "rtol": 1e-5},
    torch.float16: {"atol": 1e-2, "rtol": 1e-2},
    torch.bfloat16: {"atol": 3e-2, "rtol": 2e-2},
}
ATTENTION = "fastspeech.attention.default"  # stays in the graph: converters/attention.py's plugin
# Layers TensorRT converts natively; anything else in a decomposed graph would need a converter.
TENSORRT_LAYERS = {
    ATTENTION,
    "aten.view.default",
    "aten.permute.default",
    "aten.addmm.default",
    "aten.add.Tensor",
    "aten.native_layer_norm.default",
    "<built-in function getitem>",  # native_layer_norm's first output
    "aten.arange.start_step",
    "aten.unsqueeze.default",
    "aten.lt.Tensor",
    "aten.full.default",
    "aten.where.self",
}


class _Sublayer(torch.nn.Module):
    """Projection -> attention_ln, as `MultiHeadAttention` uses the op (DLE's parameter names)."""

    def __init__(self, H: int = 48, n_head: int = 2, d: int = 16):
        super().__init__()
        self.n_head = n_head
        self.linear, self.fc = torch.nn.Linear(H, n_head * 3 * d), torch.nn.Linear(n_head * d, H)
        self.layer_norm = torch.nn.LayerNorm(H)
        with torch.no_grad():  # LayerNorm's affine away from (1, 0) so a dropped one shows
            self.layer_norm.weight.uniform_(0.5, 1.5)
            self.layer_norm.bias.uniform_(-0.5, 0.5)
        self.requires_grad_(False)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        ln = self.layer_norm
        return torch.ops.fastspeech.attention_ln(
            self.linear(x), x, lengths, self.n_head, self.fc.weight, self.fc.bias, ln.weight, ln.bias, ln.eps
        )

    def args(self, qkv: torch.Tensor, x: torch.Tensor, lengths: torch.Tensor) -> tuple:
        """The op's arguments for given qkv, x and lengths, from this module's fc and layer_norm."""
        ln = self.layer_norm
        return (qkv, x, lengths, self.n_head, self.fc.weight, self.fc.bias, ln.weight, ln.bias, ln.eps)


def call_targets(program: torch.export.ExportedProgram) -> set[str]:
    return {str(n.target) for n in program.graph.nodes if n.op == "call_function"}


@pytest.mark.parametrize("n_head, d, H, lengths", [(2, 16, 48, [13, 5, 0]), (3, 24, 40, [20, 13, -1])])
def test_layers_are_attention_then_nn_linear_residual_layer_norm_row_mask(n_head, d, H, lengths):
    module = _Sublayer(H, n_head, d)
    qkv, x = torch.randn(3, 13, n_head * 3 * d), torch.randn(3, 13, H)
    lengths = torch.tensor(lengths)
    with torch.no_grad():
        want = module.layer_norm(module.fc(attention(qkv, lengths, n_head)) + x)
        want = want * (torch.arange(13)[None, :] < lengths[:, None])[..., None]
        got = attention_ln_layers(*module.args(qkv, x, lengths))
    torch.testing.assert_close(got, want, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(
        got, attention_ln_reference(*module.args(qkv, x, lengths)), **TOL[torch.float32]
    )


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_layers_in_half_precision_match_the_reference(dtype):
    module = _Sublayer().to(dtype)
    qkv, x = torch.randn(2, 17, 96).to(dtype), torch.randn(2, 17, 48).to(dtype)
    args = module.args(qkv, x, torch.tensor([17, 30]))
    got = attention_ln_layers(*args)
    assert got.dtype == dtype
    torch.testing.assert_close(got, attention_ln_reference(*args), **TOL[dtype])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_decomposed_export_holds_only_the_attention_op_and_tensorrt_layers(dtype):
    """The step Torch-TensorRT runs: export (the op stays whole), then `run_decompositions` with the
    default table plus ours; what is left is the attention op (its plugin) and layers TensorRT
    converts, and it computes the op's numbers."""
    model = _Sublayer().to(dtype)
    x, lengths = torch.randn(2, 9, 48).to(dtype), torch.tensor([9, 5])
    program = torch.export.export(model, (x, lengths))
    assert "fastspeech.attention_ln.default" in call_targets(program)
    table = torch.export.default_decompositions()
    table.update(converter.decomposition_table())
    decomposed = program.run_decompositions(table)
    targets = call_targets(decomposed)
    assert {ATTENTION, "aten.native_layer_norm.default", "aten.where.self"} <= targets
    assert "fastspeech.attention_ln.default" not in targets
    assert targets <= TENSORRT_LAYERS, targets - TENSORRT_LAYERS
    got = decomposed.module()(x, lengths)
    assert got.dtype == dtype
    torch.testing.assert_close(got, model(x, lengths), **TOL[dtype])
    assert (got[1, 5:] == 0).all()


def test_decomposition_keeps_half_precision():
    """An fp16 engine gets fp16 GEMMs and LayerNorm: no cast to fp32 around them (the reference's upcast)."""
    model = _Sublayer().half()
    x, lengths = torch.randn(2, 9, 48).half(), torch.tensor([9, 5])
    decomposed = torch.export.export(model, (x, lengths)).run_decompositions(converter.decomposition_table())
    layer_targets = ("aten.linear.default", "aten.layer_norm.default")
    layers = [n for n in decomposed.graph.nodes if n.op == "call_function" and str(n.target) in layer_targets]
    assert len(layers) == 3 and all(n.meta["val"].dtype == torch.float16 for n in layers)
    assert not any("_to_copy" in str(n.target) for n in decomposed.graph.nodes)


def test_register_hands_the_layers_to_the_registry_once(monkeypatch):
    """`register()` against stand-ins of the two Torch-TensorRT modules it uses (no TensorRT here)."""
    registry: dict = {}
    calls = []

    def register_torch_trt_decomposition(op, registry=None):
        calls.append(op)

        def add(fn):
            if op in registry:  # what torch's register_decomposition does with a duplicate
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

    converter.register()
    converter.register()  # idempotent
    assert registry == {torch.ops.fastspeech.attention_ln.default: attention_ln_layers}
    assert calls == [torch.ops.fastspeech.attention_ln.default]


# ---------------------------------------------------------------------------------------------
# On a GPU: the layers TensorRT would build, in fp16 at FastSpeech's shapes (cuBLAS standing in)


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("B, T", [(1, 128), (8, 1024)])
def test_layers_at_model_shapes_cuda(B, T):
    torch.manual_seed(0)
    module = _Sublayer(384, 2, 64).cuda().half()
    qkv = torch.randn(B, T, 384, device="cuda").half()
    x = torch.randn(B, T, 384, device="cuda").half()
    lengths = torch.randint(0, T + 1, (B,), device="cuda")
    args = module.args(qkv, x, lengths)
    torch.testing.assert_close(
        attention_ln_layers(*args), attention_ln_reference(*args), **TOL[torch.float16]
    )


# ---------------------------------------------------------------------------------------------
# With TensorRT


@pytest.mark.requires_tensorrt
@needs_tensorrt
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_op_in_a_tensorrt_engine_matches_reference(dtype):
    import torch_tensorrt

    import converters

    converters.register_all()
    torch.manual_seed(0)
    model = _Sublayer(384, 2, 64).cuda().to(dtype)
    x, lengths = torch.randn(2, 256, 384, device="cuda").to(dtype), torch.tensor([256, 100], device="cuda")
    engine = torch_tensorrt.compile(
        model, ir="dynamo", inputs=[x, lengths], min_block_size=1, require_full_compilation=True
    )
    torch.testing.assert_close(engine(x, lengths), model(x, lengths), **TOL[dtype])
