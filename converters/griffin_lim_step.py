"""TensorRT path for "fastspeech::griffin_lim_step": its PyTorch reference as a decomposition, no plugin.

The op is elementwise complex arithmetic between two FFTs (unpack a half-length FFT, the momentum and
magnitude step, pack for the inverse), with each bin reading its mirror bin M - k: flips, a
concatenation, sqrt and the four arithmetic operations, all TensorRT layers. So the op is replaced
before conversion by `griffin_lim_step_reference` (kernels/griffin_lim_step.py), registered like
conv1d's (`converters.register_decomposition`); TensorRT then fuses the elementwise layers itself.

What this does not settle: Griffin-Lim's FFTs around the op. TensorRT has no FFT layer, so a TensorRT
engine with Griffin-Lim inside needs Torch-TensorRT to leave the FFTs to PyTorch (or a plugin for
them); like every TensorRT path here, that has never been run (docs/tensorrt.md).
"""

from __future__ import annotations

from converters import Decomposition
from kernels.griffin_lim_step import griffin_lim_step_reference  # importing it registers the op

DECOMPOSITION = Decomposition("griffin_lim_step", griffin_lim_step_reference)
# The module's converter interface (`register_all`, the tests): the op's overload, {op: replacement}
# for `run_decompositions`, and registration with Torch-TensorRT.
op_overload, decomposition_table, register = (
    DECOMPOSITION.op_overload,
    DECOMPOSITION.table,
    DECOMPOSITION.register,
)
