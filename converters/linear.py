"""TensorRT path for "fastspeech::linear": a decomposition into TensorRT's own matrix multiply, no plugin.

The op is `F.linear` launched so that it overlaps the kernel before it on Hopper (kernels/linear.py):
a scheduling trick for CUDA graphs of Inductor kernels, not new math. TensorRT builds and schedules
its own engine, so the op is replaced before conversion by `linear_layers` (`F.linear` in x's dtype,
which exports as `aten.linear` and decomposes to a matrix multiply and an add that TensorRT converts
natively, with its own GEMM tactics). Registered the way conv1d's is (converters/conv1d.py:
Torch-TensorRT's decomposition registry, which `torch_tensorrt.compile(..., ir="dynamo")` applies in
`run_decompositions`); the CPU tests run that step with `decomposition_table()`.
"""

from __future__ import annotations

from converters import Decomposition
from kernels.linear import linear_layers  # importing kernels.linear registers the op

DECOMPOSITION = Decomposition("linear", linear_layers)
op_overload, decomposition_table, register = (
    DECOMPOSITION.op_overload,
    DECOMPOSITION.table,
    DECOMPOSITION.register,
)
