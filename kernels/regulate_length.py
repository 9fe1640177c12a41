"""`torch.ops.fastspeech.regulate_length`: FastSpeech's length regulator (repeat each token).

Contract: x (B, Ti, H) fp32/fp16/bf16, durations (B, Ti) int32/int64 >= 0, max_out int -> out
(B, max_out, H) of x's dtype, where row b holds x[b, i] repeated durations[b, i] times, in order,
cropped at max_out, zeros after the total. The output shape depends only on the input shapes and
`max_out`, never on the durations' values, so the op compiles and exports with static shapes.

Negative durations: eager calls raise `ValueError` (checked on the host, which costs one device sync
on CUDA). Inside `torch.compile` / `torch.export` graphs there is no check (it would need that sync,
or a data-dependent branch): compiled graphs treat a negative duration as 0, like the kernel and the
reference both do.

The kernel (what the seed's TensorRT RepeatPlugin did, without its faults) is output-centric: each
program owns a (BLOCK_TO frames, BLOCK_H channels) tile of one batch row. It finds, for every frame f,
the token index = #{i : end_i <= f} (`searchsorted(ends, f, right=True)`) by scanning the durations
in BLOCK_TI chunks with a running cumulative sum, so any Ti works and nothing is allocated beyond the
output; then it gathers those x rows and stores the tile, zeros where f >= total. Every output element
is written by exactly one program, so the output needs no zero fill beforehand. Durations are clamped
to [0, max_out] before the scan (a token longer than max_out covers every later frame either way) and
the running sum saturates at max_out, so huge durations can't overflow it; the scan runs in int32
unless max_out is so large (> 2^31 / (BLOCK_TI + 1)) that a chunk could overflow it, then in int64.
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from kernels.utils import check_int32_offsets


# ---------------------------------------------------------------------------------------------
# Triton kernel
# ---------------------------------------------------------------------------------------------
@triton.jit
def _regulate_length_kernel(
    x_ptr,
    dur_ptr,
    out_ptr,
    Ti,
    H,
    max_out,
    stride_xb,
    stride_xt,
    stride_xh,
    stride_db,
    stride_dt,
    stride_ob,
    stride_ot,
    stride_oh,
    BLOCK_TO: tl.constexpr,
    BLOCK_TI: tl.constexpr,
    BLOCK_H: tl.constexpr,
    WIDE_SCAN: tl.constexpr,
):
    pid_f = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)
    pid_h = tl.program_id(2)

    frames = pid_f * BLOCK_TO + tl.arange(0, BLOCK_TO)  # (BLOCK_TO,) output frame indices
    cols = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)  # (BLOCK_H,) channel indices

    # token[f] = number of tokens whose (exclusive) end frame is <= f; `total` = sum of durations.
    # The scan runs in int32 unless max_out * (BLOCK_TI + 1) could overflow it (WIDE_SCAN: int64):
    # durations are clamped to max_out and the running total saturates at max_out.
    if WIDE_SCAN:
        total = tl.zeros([], dtype=tl.int64)
    else:
        total = tl.zeros([], dtype=tl.int32)
    token = tl.zeros([BLOCK_TO], dtype=tl.int32)
    for i0 in range(0, Ti, BLOCK_TI):
        idx = i0 + tl.arange(0, BLOCK_TI)
        in_row = idx < Ti
        d = tl.load(dur_ptr + b * stride_db + idx * stride_dt, mask=in_row, other=0)
        d = tl.minimum(tl.maximum(d, 0), max_out).to(total.dtype)  # negative -> 0; > max_out -> max_out
        ends = total + tl.cumsum(d, 0)  # (BLOCK_TI,) end frame of each token of this chunk
        done = (ends[None, :] <= frames[:, None]) & in_row[None, :]  # (BLOCK_TO, BLOCK_TI)
        token += tl.sum(done.to(tl.int32), 1)
        total = tl.minimum(total + tl.sum(d, 0), max_out)  # saturate: frames >= max_out don't exist

    token = tl.minimum(token, Ti - 1)  # frames past the total: any row, masked below
    filled = frames < total  # frames that hold a token; the rest are zeros
    in_out = frames < max_out
    col_ok = cols < H

    # int64 scalar batch offsets, int32 offsets inside a batch row (the launcher checks they fit).
    src = x_ptr + b * stride_xb + (token[:, None] * stride_xt + cols[None, :] * stride_xh)
    vals = tl.load(src, mask=(filled & in_out)[:, None] & col_ok[None, :], other=0.0)
    dst = out_ptr + b * stride_ob + (frames[:, None] * stride_ot + cols[None, :] * stride_oh)
    tl.store(dst, vals, mask=in_out[:, None] & col_ok[None, :])


# ---------------------------------------------------------------------------------------------
# Launcher
# ---------------------------------------------------------------------------------------------
def launch_regulate_length(
    x: torch.Tensor,
    durations: torch.Tensor,
    out: torch.Tensor,
    *,
    block_to: int | None = None,
    block_h: int | None = None,
    block_ti: int | None = None,
    num_warps: int | None = None,
    wide_scan: bool | None = None,
) -> torch.Tensor:
    """Run the kernel into `out` (B, max_out, H), any strides; every element of `out` is written.

    Takes the output buffer so tests can poison it and benchmarks can reuse it. Launches on torch's
    current stream (`wrap_triton` / Triton's default). Block sizes default to the tuned values
    (see benchmarks/kernels/bench_regulate_length.py); override them only to sweep. `wide_scan`
    forces the int64 duration scan (chosen automatically when max_out needs it; tests force it).
    """
    B, Ti, H = x.shape
    max_out = out.shape[1]
    if out.numel() == 0:
        return out
    check_int32_offsets("regulate_length", x, durations, out)
    # One program covers all of H up to 512 channels (H=384: 25% of lanes masked, but the duration
    # scan runs once per frame tile instead of once per 128 channels): fastest in the H100 sweep.
    block_h = block_h or min(512, max(16, triton.next_power_of_2(H)))
    block_to = block_to or 16
    block_ti = block_ti or min(128, max(16, triton.next_power_of_2(Ti)))
    num_warps = num_warps or 4
    grid = (triton.cdiv(max_out, block_to), B, triton.cdiv(H, block_h))
    wrap_triton(_regulate_length_kernel)[grid](
        x,
        durations,
        out,
        Ti,
        H,
        max_out,
        x.stride(0),
        x.stride(1),
        x.stride(2),
        durations.stride(0),
        durations.stride(1),
        out.stride(0),
        out.stride(1),
        out.stride(2),
        BLOCK_TO=block_to,
        BLOCK_TI=block_ti,
        BLOCK_H=block_h,
        WIDE_SCAN=max_out * (block_ti + 1) >= 2**31 if wide_scan is None else wide_scan,
        num_warps=num_warps,
    )
    return out


# ---------------------------------------------------------------------------------------------
# Plain PyTorch reference (also the CPU implementation)
# ---------------------------------------------------------------------------------------------
def regulate_length_reference(x: torch.Tensor, durations: torch.Tensor, max_out: int) -> torch.Tensor:
    """Plain PyTorch, no data-dependent shapes: each output frame finds its token by binary search."""
    B, Ti, H = x.shape
    ends = durations.clamp_min(0).long().cumsum(1)  # (B, Ti) exclusive end frame of each token
    frames = torch.arange(max_out, device=x.device).expand(B, max_out).contiguous()
    token = torch.searchsorted(ends, frames, right=True)  # (B, To) token index for each frame
    valid = frames < ends[:, -1:]
    token = token.clamp_max(Ti - 1)
    out = x.gather(1, token[..., None].expand(B, max_out, H))
    return out * valid[..., None].to(x.dtype)


# ---------------------------------------------------------------------------------------------
# torch custom op
# ---------------------------------------------------------------------------------------------
def _is_traced(t: torch.Tensor) -> bool:
    """True while torch.compile / torch.export trace (fake or meta tensors): no host checks then."""
    from torch._subclasses.fake_tensor import is_fake

    return torch.compiler.is_compiling() or is_fake(t) or t.device.type == "meta"


def _check_inputs(x: torch.Tensor, durations: torch.Tensor, max_out: int) -> None:
    """Shape/dtype checks (static, always run) and the eager-only negative-duration check."""
    if x.dim() != 3:
        raise ValueError(f"regulate_length: x must be (B, Ti, H), got shape {tuple(x.shape)}")
    if durations.shape != x.shape[:2]:
        raise ValueError(
            f"regulate_length: durations must be (B, Ti) = {tuple(x.shape[:2])}, got {tuple(durations.shape)}"
        )
    if durations.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"regulate_length: durations must be int32 or int64, got {durations.dtype}")
    if durations.device != x.device:
        raise ValueError(
            f"regulate_length: durations on {durations.device}, x on {x.device}; move them together"
        )
    if max_out < 0:
        raise ValueError(f"regulate_length: max_out must be >= 0, got {max_out}")
    if not _is_traced(durations) and durations.numel() > 0:
        lowest = int(durations.min())  # one device sync on CUDA: eager only
        if lowest < 0:
            raise ValueError(
                f"regulate_length: durations must be >= 0, got a minimum of {lowest}; clamp them first "
                "(durations.clamp_min(0)). Compiled graphs skip this check and treat negatives as 0."
            )


@triton_op("fastspeech::regulate_length", mutates_args=())
def regulate_length(x: torch.Tensor, durations: torch.Tensor, max_out: int) -> torch.Tensor:
    """Dispatch: Triton kernel on CUDA, the PyTorch reference elsewhere (CPU).

    The device branch lives in the body because Inductor traces into a triton_op's body (and ignores
    kernels registered per device) when it compiles; eager CPU calls also reach `_regulate_length_cpu`.
    """
    _check_inputs(x, durations, max_out)
    if x.is_cuda:
        out = torch.empty((x.shape[0], max_out, x.shape[2]), dtype=x.dtype, device=x.device)
        return launch_regulate_length(x, durations, out)
    return regulate_length_reference(x, durations, max_out)


@regulate_length.register_kernel("cpu")
def _regulate_length_cpu(x: torch.Tensor, durations: torch.Tensor, max_out: int) -> torch.Tensor:
    """Eager CPU: the PyTorch reference, after the same checks."""
    _check_inputs(x, durations, max_out)
    return regulate_length_reference(x, durations, max_out)
