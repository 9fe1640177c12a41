"""TensorRT path for "fastspeech::attention_ln": a decomposition that keeps the attention plugin.

The op is the self-attention sublayer after its input projection: attention -> fc (nn.Linear) ->
+ residual -> LayerNorm -> row mask (kernels/attention_ln.py). Of those, only the attention is
something TensorRT lacks (it has its own plugin, converters/attention.py: no mask tensor, no q/k/v
split). The fc GEMM, the add and the LayerNorm are native TensorRT layers, which TensorRT tunes and
fuses itself (matmul with its bias and the residual add, a normalization layer). So instead of a
plugin, the op is replaced in the graph, before conversion, by `attention_ln_layers`
(kernels/attention_ln.py): the `fastspeech::attention` op (converted to its plugin) -> `F.linear`
(addmm) -> add x -> `F.layer_norm` -> `where(t < lengths[b], out, 0)`, the row mask built from
`lengths` inside the engine (iota + compare). It runs in qkv's dtype, so an fp16 engine keeps fp16
GEMMs and normalization.

Registered like conv1d's decomposition (converters/conv1d.py): with Torch-TensorRT's decomposition
registry (`register_torch_trt_decomposition(op, registry=TORCH_TRT_DECOMPOSITIONS)`, source
`py/torch_tensorrt/dynamo/lowering/_decompositions.py`), which `torch_tensorrt.compile(..., ir="dynamo")`
hands to `ExportedProgram.run_decompositions`. That step is plain `torch.export`, so the CPU tests run
it with `decomposition_table()` and check the graph and its numbers; only the engine build needs
TensorRT (`requires_tensorrt`; never run so far).

Why not a plugin of the fused kernel: a plugin would hide the fc GEMM and the LayerNorm from TensorRT's
tactic selection and fusion, and `generate_plugin_converter` maps one op to one plugin with a fixed
list of inputs; the decomposition reuses the attention plugin that already exists. The trade-off: a
TensorRT engine runs three kernels for the sublayer (the attention plugin, TensorRT's GEMM, its
normalization), not the one fused Triton kernel Inductor engines run.
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from kernels.attention_ln import attention_ln_layers  # importing kernels.attention_ln registers the op

OP = "fastspeech::attention_ln"


def op_overload() -> torch._ops.OpOverload:
    """The overload that appears in exported graphs (`fastspeech.attention_ln.default`)."""
    return torch.ops.fastspeech.attention_ln.default


def decomposition_table() -> dict[torch._ops.OpOverload, Callable[..., torch.Tensor]]:
    """{op: its replacement}, the form `ExportedProgram.run_decompositions` and Torch-TensorRT take."""
    return {op_overload(): attention_ln_layers}


def register() -> None:
    """Add the decomposition to Torch-TensorRT's registry (idempotent; imports torch_tensorrt).

    The `fastspeech::attention` op it leaves in the graph needs its plugin registered too
    (`converters.attention.register()`; `register_all()` does both).
    """
    from torch_tensorrt.dynamo.lowering._decomposition_groups import TORCH_TRT_DECOMPOSITIONS
    from torch_tensorrt.dynamo.lowering._decompositions import register_torch_trt_decomposition

    if op_overload() not in TORCH_TRT_DECOMPOSITIONS:  # torch's registry refuses a second registration
        register_torch_trt_decomposition(op_overload(), registry=TORCH_TRT_DECOMPOSITIONS)(
            attention_ln_layers
        )
