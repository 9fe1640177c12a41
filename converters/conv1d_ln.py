"""TensorRT path for "fastspeech::conv1d_ln": a decomposition into TensorRT's own layers, no plugin.

As for `conv1d` (converters/conv1d.py, which says why a decomposition and how Torch-TensorRT applies
it): the op is replaced before conversion by `conv1d_ln_layers` (kernels/conv1d_ln.py), i.e.
`conv1d_layers` (convolution, relu, row mask) -> + residual -> `aten.native_layer_norm` -> row mask,
all in x's dtype. TensorRT has a normalization layer and fuses such chains itself; the Triton kernel
runs in Inductor engines only.
"""

from __future__ import annotations

from converters import Decomposition
from kernels.conv1d_ln import conv1d_ln_layers  # importing kernels.conv1d_ln registers the op

DECOMPOSITION = Decomposition("conv1d_ln", conv1d_ln_layers)
op_overload, decomposition_table, register = (
    DECOMPOSITION.op_overload,
    DECOMPOSITION.table,
    DECOMPOSITION.register,
)
