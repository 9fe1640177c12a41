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

from collections.abc import Callable

import torch

from converters import register_decomposition
from kernels.griffin_lim_step import griffin_lim_step_reference  # importing it registers the op

OP = "fastspeech::griffin_lim_step"


def op_overload() -> torch._ops.OpOverload:
    """The overload that appears in exported graphs (`fastspeech.griffin_lim_step.default`)."""
    return torch.ops.fastspeech.griffin_lim_step.default


def decomposition_table() -> dict[torch._ops.OpOverload, Callable[..., torch.Tensor]]:
    """{op: its replacement}, the form `ExportedProgram.run_decompositions` and Torch-TensorRT take."""
    return {op_overload(): griffin_lim_step_reference}


def register() -> None:
    """Add the decomposition to Torch-TensorRT's registry (idempotent; imports torch_tensorrt)."""
    register_decomposition(op_overload(), griffin_lim_step_reference)
