"""TensorRT path for "fastspeech::overlap_add_frames": its PyTorch reference as a decomposition, no plugin.

The reference is pads, slices, adds, a division and a strided framing (`unfold`) of the stored
signal: the same ATen ops Griffin-Lim ran before the op existed. It is registered like conv1d's
(`converters.register_decomposition`). The CPU test lists what is left after decomposition; whether
Torch-TensorRT converts each of those ops (the framing especially) has not been checked against a
TensorRT build, and Griffin-Lim's FFTs around the op have no TensorRT layer anyway
(`converters/griffin_lim_step.py`, docs/tensorrt.md).
"""

from __future__ import annotations

from converters import Decomposition
from kernels.overlap_add_frames import overlap_add_frames_reference  # importing it registers the op

DECOMPOSITION = Decomposition("overlap_add_frames", overlap_add_frames_reference)
# The module's converter interface (`register_all`, the tests): the op's overload, {op: replacement}
# for `run_decompositions`, and registration with Torch-TensorRT.
op_overload, decomposition_table, register = (
    DECOMPOSITION.op_overload,
    DECOMPOSITION.table,
    DECOMPOSITION.register,
)
