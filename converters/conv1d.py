"""TensorRT path for "fastspeech::conv1d": a decomposition into TensorRT's own layers, no plugin.

The op's math is an ordinary convolution, an activation and a select, all of which TensorRT has as
native layers and tunes itself (its convolutions pick their own implicit-GEMM tactics per shape). So
instead of a plugin, the op is replaced in the graph, before conversion, by `conv1d_layers`
(kernels/conv1d.py): transpose to (B, C_in, T) -> `aten.convolution` (weight.permute(1, 2, 0) is
nn.Conv1d's weight; uneven padding as one explicit pad) -> transpose back -> relu (when asked) ->
`where(t < lengths[b], out, 0)`. It runs in x's dtype, so an fp16 engine keeps fp16 convolutions; the
row mask is built from `lengths` inside the engine (iota + compare), no mask tensor is passed in.

Registered with Torch-TensorRT's decomposition registry, the mechanism its lowering phase uses for
"a higher-level op replaced by an equivalent subgraph of Core ATen ops using a plain PyTorch function"
(https://docs.pytorch.org/TensorRT/contributors/lowering.html: `@register_torch_trt_decomposition(op,
registry=TORCH_TRT_DECOMPOSITIONS)`; source `py/torch_tensorrt/dynamo/lowering/_decompositions.py`).
`torch_tensorrt.compile(..., ir="dynamo")` exports the graph (triton ops stay whole in the export) and
calls `ExportedProgram.run_decompositions(get_decompositions())`, whose table then holds ours too.
That step is plain `torch.export`, so the CPU tests run it with `decomposition_table()` and check the
graph and its numbers; only the engine build needs TensorRT (`requires_tensorrt`; never run so far).

Why not a plugin like the other ops: TensorRT converts these layers natively (a plugin would hide the
conv from its tactic selection and fusion), and the op's optional bias does not map onto
`generate_plugin_converter`'s fixed list of plugin inputs. The trade-off: a TensorRT engine runs
TensorRT's convolution, not the Triton kernel Inductor engines run.
"""

from __future__ import annotations

from converters import Decomposition
from kernels.conv1d import conv1d_layers  # importing kernels.conv1d registers the op

DECOMPOSITION = Decomposition("conv1d", conv1d_layers)
# The module's converter interface (`register_all`, the tests): the op's overload, {op: replacement}
# for `run_decompositions`, and registration with Torch-TensorRT.
op_overload, decomposition_table, register = (
    DECOMPOSITION.op_overload,
    DECOMPOSITION.table,
    DECOMPOSITION.register,
)
