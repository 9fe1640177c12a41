"""Helpers the kernel launchers share."""

from __future__ import annotations

import os

import torch


def fp32_dot(dtype: torch.dtype) -> bool:
    """Dot products on fp32 operands in IEEE fp32: for fp32 inputs (no TF32), and for bf16 under
    Triton's CPU interpreter, whose bf16 `tl.dot` returns garbage (triton 3.9, seen in the CPU tests)."""
    return dtype == torch.float32 or (dtype == torch.bfloat16 and os.environ.get("TRITON_INTERPRET") == "1")


def check_int32_offsets(op: str, *tensors: torch.Tensor) -> None:
    """The kernels index inside one batch row with int32 offsets; refuse views that would overflow."""
    for t in tensors:
        span = sum((size - 1) * abs(stride) for size, stride in zip(t.shape[1:], t.stride()[1:]))
        if span >= 2**31:
            raise ValueError(
                f"{op}: a batch row of shape {tuple(t.shape)} spans {span} elements (> 2^31); make it contiguous"
            )


def register_reference_autograd(op, reference) -> None:
    """Give `op` gradients through its plain PyTorch `reference` (same arguments), for ops with no
    backward kernel of their own: training (scripts/train_demo.py) is the only caller that needs one.

    Gradients flow to the tensor arguments that need them, through `reference` recomputed.
    """

    def setup_context(ctx, inputs, output) -> None:
        ctx.is_tensor = [isinstance(a, torch.Tensor) for a in inputs]
        ctx.others = [None if t else a for a, t in zip(inputs, ctx.is_tensor)]
        ctx.save_for_backward(*(a for a, t in zip(inputs, ctx.is_tensor) if t))

    def backward(ctx, grad: torch.Tensor) -> tuple:
        saved = iter(ctx.saved_tensors)
        args = [next(saved) if t else a for a, t in zip(ctx.others, ctx.is_tensor)]
        wanted = [i for i, t in enumerate(ctx.is_tensor) if t and ctx.needs_input_grad[i]]
        with torch.enable_grad():
            for i in wanted:
                args[i] = args[i].detach().requires_grad_()
            grads = torch.autograd.grad(reference(*args), [args[i] for i in wanted], grad) if wanted else ()
        result: list = [None] * len(args)
        for i, g in zip(wanted, grads):
            result[i] = g
        return tuple(result)

    op.register_autograd(backward, setup_context=setup_context)
