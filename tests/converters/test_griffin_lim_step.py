"""griffin_lim_step's TensorRT path: its reference as a decomposition, checked without TensorRT.

An exported graph decomposed with it (the `run_decompositions` step Torch-TensorRT runs) holds only
elementwise ATen layers that TensorRT converts (no float64, which TensorRT lacks) and computes the
op's numbers (`register()` is checked in test_decompositions.py).
"""

import torch

from converters import griffin_lim_step as converter
from kernels.griffin_lim_step import griffin_lim_step_reference

# Layers TensorRT converts natively (elementwise, shuffle, concatenation, slice, iota, unary, clamp).
TENSORRT_LAYERS = {
    "aten.sub.Tensor",
    "aten.mul.Tensor",
    "aten.add.Tensor",
    "aten.div.Tensor",
    "aten.neg.default",
    "aten.sqrt.default",
    "aten.clamp.default",  # the magnitude clamped at 0 (an elementwise max in TensorRT)
    "aten.cos.default",
    "aten.sin.default",
    "aten.cat.default",
    "aten.flip.default",
    "aten.slice.Tensor",
    "aten.select.int",
    "aten.unsqueeze.default",
    "aten.view.default",
    "aten.arange.start_step",
    "aten.gt.Scalar",
    "aten.lt.Scalar",
    "aten.bitwise_and.Tensor",
    "aten.sum.dim_IntList",
    "aten.pow.Tensor_Scalar",
}


class _Step(torch.nn.Module):
    def forward(self, z, z_prev, magnitude):
        return torch.ops.fastspeech.griffin_lim_step(z, z_prev, magnitude, 0.5)


def call_targets(program) -> set[str]:
    return {str(n.target) for n in program.graph.nodes if n.op == "call_function"}


def test_decomposed_export_holds_only_tensorrt_layers():
    g = torch.Generator().manual_seed(0)
    z, z_prev = torch.randn(2, 2, 3, 8, 2, generator=g).unbind(0)
    magnitude = torch.rand(2, 3, 9, generator=g)
    program = torch.export.export(_Step(), (z, z_prev, magnitude))
    assert "fastspeech.griffin_lim_step.default" in call_targets(program)
    table = torch.export.default_decompositions()
    table.update(converter.decomposition_table())
    decomposed = program.run_decompositions(table)
    targets = call_targets(decomposed)
    assert not any("fastspeech" in t for t in targets)
    assert targets <= TENSORRT_LAYERS, targets - TENSORRT_LAYERS
    dtypes = {
        n.meta["val"].dtype for n in decomposed.graph.nodes if isinstance(n.meta.get("val"), torch.Tensor)
    }
    assert torch.float64 not in dtypes
    want = griffin_lim_step_reference(z, z_prev, magnitude, 0.5)
    torch.testing.assert_close(decomposed.module()(z, z_prev, magnitude), want, atol=1e-6, rtol=1e-6)
