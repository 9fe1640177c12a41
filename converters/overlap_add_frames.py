"""TensorRT path for "fastspeech::overlap_add_frames": its PyTorch reference as a decomposition, no plugin.

The reference is pads, slices, adds, a division and a strided framing (`unfold`) of the stored
signal: the same ATen ops Griffin-Lim ran before the op existed. It is registered like conv1d's
(`converters.register_decomposition`). The CPU test lists what is left after decomposition; whether
Torch-TensorRT converts each of those ops (the framing especially) has not been checked against a
TensorRT build, and Griffin-Lim's FFTs around the op have no TensorRT layer anyway
(`converters/griffin_lim_step.py`, docs/tensorrt.md).
"""

from __future__ import annotations

from collections.abc import Callable

import torch

from converters import register_decomposition
from kernels.overlap_add_frames import overlap_add_frames_reference  # importing it registers the op


def op_overload() -> torch._ops.OpOverload:
    """The overload that appears in exported graphs (`fastspeech.overlap_add_frames.default`)."""
    return torch.ops.fastspeech.overlap_add_frames.default


def decomposition_table() -> dict[torch._ops.OpOverload, Callable[..., torch.Tensor]]:
    """{op: its replacement}, the form `ExportedProgram.run_decompositions` and Torch-TensorRT take."""
    return {op_overload(): overlap_add_frames_reference}


def register() -> None:
    """Add the decomposition to Torch-TensorRT's registry (idempotent; imports torch_tensorrt)."""
    register_decomposition(op_overload(), overlap_add_frames_reference)
