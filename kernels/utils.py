"""Helpers the kernel launchers share."""

from __future__ import annotations

import torch


def check_int32_offsets(op: str, *tensors: torch.Tensor) -> None:
    """The kernels index inside one batch row with int32 offsets; refuse views that would overflow."""
    for t in tensors:
        span = sum((size - 1) * abs(stride) for size, stride in zip(t.shape[1:], t.stride()[1:]))
        if span >= 2**31:
            raise ValueError(
                f"{op}: a batch row of shape {tuple(t.shape)} spans {span} elements (> 2^31); make it contiguous"
            )
