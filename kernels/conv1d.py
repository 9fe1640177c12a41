"""`torch.ops.fastspeech.conv1d`: a k-tap 1-D convolution over time on (B, T, C) activations, one kernel.

Contract: conv1d(x, weight, bias, lengths, padding, relu) -> out
  x (B, T, C_in) fp32/fp16/bf16; weight (k, C_out, C_in) of x's dtype, "tap-major":
  weight[j] == nn.Conv1d.weight[:, :, j] (so `conv.weight.permute(2, 0, 1)` is this tensor; a free view
  when the Conv1d's weight is stored that way); bias (C_out,) of x's dtype, or None; lengths (B,) int32
  or int64; padding int with 0 <= padding <= k - 1; relu bool -> out (B, T, C_out) of x's dtype:
    out[b, t, o] = act(bias[o] + sum_j sum_c weight[j, o, c] * x[b, t + j - padding, c]) * (t < lengths[b])
  with x taken as zero outside 0 <= t + j - padding < T: nn.Conv1d's own zero padding (stride 1,
  dilation 1), `padding` rows before and k - 1 - padding after, so the output keeps T rows (for odd k
  and padding = (k - 1) / 2 that is exactly `nn.Conv1d(padding=padding)`). act = relu or identity.
  Rows t >= lengths[b] are exactly 0 (lengths beyond T act as T; lengths <= 0 give all-zero rows).
  Input rows past the length are used as given (the caller masks its inputs where it needs to). Sums
  accumulate in fp32 and round once to x's dtype. The output shape depends only on the input shapes.

Why: FastSpeech's feed-forward convs ran as three kernels each: w_1 (384 -> 1536) as an "unfold" copy
(3 shifted copies of x), a GEMM with K = 3 C_in, then relu * row mask; w_2 (1536 -> 384) as a GEMM into
(B, T, 3 C_out) taps and a shifted sum. This op reads the shifted rows of x straight from x (no unfold
or taps buffer) and applies bias, relu and the row mask in the GEMM's epilogue.

The kernel is an implicit GEMM: M = B T rows, N = C_out, and a K loop over taps j (outer) x C_in blocks
(inner), flattened into one loop so Triton pipelines it as one. For an output tile (BLOCK_M rows,
BLOCK_N channels) and tap j, the A tile is rows t + j - padding of x (row m -> b = m // T, t = m % T;
rows outside [0, T) load as zeros, so no row ever reads another batch item), the B tile is
weight[j, n-block, c-block]; `tl.dot` accumulates in fp32 (tensor cores for fp16/bf16 — wgmma on sm90;
IEEE fp32 for fp32 inputs, no TF32). Program ids are swizzled in groups of GROUP_M row tiles so that
consecutive programs share weight column blocks in L2. Tiles come from `default_blocks`.

The reference (`conv1d_reference`, also the CPU implementation) is `F.conv1d` on x.transpose(1, 2)
with weight.permute(1, 2, 0), then relu and the row mask, computed in fp32 and cast to x's dtype
(half-precision inputs are rounded already; only the one final rounding differs from the kernel's).
`conv1d_layers` is the same math in x's dtype: what the TensorRT path builds (converters/conv1d.py).
"""

from __future__ import annotations

import os
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from kernels.utils import check_int32_offsets

FILL_PROGRAMS = 132  # programs that fill the GPU: our H100's (and H200's) SM count
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# ---------------------------------------------------------------------------------------------
# Triton kernel
# ---------------------------------------------------------------------------------------------
@triton.jit
def _conv1d_kernel(
    x_ptr,
    w_ptr,
    bias_ptr,
    len_ptr,
    out_ptr,
    B,
    T,
    stride_xb,
    stride_xt,
    stride_xc,
    stride_wj,
    stride_wo,
    stride_wc,
    stride_bias,
    stride_ob,
    stride_ot,
    stride_oc,
    stride_len,
    C_IN: tl.constexpr,
    C_OUT: tl.constexpr,
    KSIZE: tl.constexpr,
    PADDING: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    RELU: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    FP32_DOT: tl.constexpr,
):
    M = B * T
    # Group-M swizzle: GROUP_M consecutive programs walk down one column of tiles, sharing its weights.
    pid = tl.program_id(0)
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_n: tl.constexpr = (C_OUT + BLOCK_N - 1) // BLOCK_N
    group = pid // (GROUP_M * tiles_n)
    first_m = group * GROUP_M
    group_rows = tl.minimum(tiles_m - first_m, GROUP_M)
    pid_m = first_m + (pid % (GROUP_M * tiles_n)) % group_rows
    pid_n = (pid % (GROUP_M * tiles_n)) // group_rows

    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,) flat rows m = b * T + t
    cols = pid_n * BLOCK_N + tl.arange(0, BLOCK_N)  # (BLOCK_N,) output channels
    ks = tl.arange(0, BLOCK_K)  # (BLOCK_K,) input channels within a block
    row_ok = rows < M
    col_ok = cols < C_OUT
    b = rows // T
    t = rows - b * T
    # int64 batch offsets, int32 offsets inside a batch row (the launcher checks they fit).
    x_rows = x_ptr + b.to(tl.int64) * stride_xb + t * stride_xt  # (BLOCK_M,) -> x[b, t, 0]
    w_cols = w_ptr + cols * stride_wo  # (BLOCK_N,) -> weight[0, o, 0]

    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    C_BLOCKS: tl.constexpr = (C_IN + BLOCK_K - 1) // BLOCK_K
    for step in range(KSIZE * C_BLOCKS):  # taps outer, input-channel blocks inner, one flat loop
        j = step // C_BLOCKS
        c = (step % C_BLOCKS) * BLOCK_K + ks
        c_ok = c < C_IN
        src = t + (j - PADDING)  # source rows; outside [0, T) they are the conv's zero padding
        a_ok = row_ok & (src >= 0) & (src < T)
        a = tl.load(
            x_rows[:, None] + ((j - PADDING) * stride_xt + c * stride_xc)[None, :],
            mask=a_ok[:, None] & c_ok[None, :],
            other=0.0,
        )  # (BLOCK_M, BLOCK_K)
        w = tl.load(
            w_cols[None, :] + (j * stride_wj + c * stride_wc)[:, None],
            mask=c_ok[:, None] & col_ok[None, :],
            other=0.0,
        )  # (BLOCK_K, BLOCK_N)
        if FP32_DOT:
            acc = tl.dot(a.to(tl.float32), w.to(tl.float32), acc, input_precision="ieee")
        else:
            acc = tl.dot(a, w, acc)

    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols * stride_bias, mask=col_ok, other=0.0).to(tl.float32)[None, :]
    if RELU:
        acc = tl.maximum(acc, 0.0)
    length = tl.load(len_ptr + b * stride_len, mask=row_ok, other=0)  # (BLOCK_M,) lengths[b]
    acc = tl.where((t < length)[:, None], acc, 0.0)  # padding rows: exactly 0 (t < T <= a longer length)

    o_ptrs = out_ptr + (b.to(tl.int64) * stride_ob + t * stride_ot)[:, None] + (cols * stride_oc)[None, :]
    tl.store(o_ptrs, acc.to(out_ptr.dtype.element_ty), mask=row_ok[:, None] & col_ok[None, :])


# ---------------------------------------------------------------------------------------------
# Launcher
# ---------------------------------------------------------------------------------------------
class Blocks(NamedTuple):
    """One launch configuration: tile sizes, warps, pipeline stages and the program-id swizzle group."""

    block_m: int
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int
    group_m: int = 8


# (BLOCK_M, BLOCK_N) in order of preference: larger tiles reuse each loaded row and weight more.
TILES = ((128, 256), (128, 128), (64, 128), (64, 64), (32, 64))


def default_blocks(M: int, N: int, c_in: int, dtype: torch.dtype) -> Blocks:
    """The largest output tile that still gives >= FILL_PROGRAMS programs (the smallest when none does).

    M = B * T rows, N = C_out, c_in = C_in. Column tiles wider than 64 are used only when they divide N
    (N = 384: no 256-wide tiles, which would leave a third of the last column tile empty). fp32 (IEEE
    dot products, no tensor cores, twice the bytes) keeps to tiles of at most 128 x 128 and 32-wide K
    steps. Examples (fp16): B=1, T=1024, N=1536: 64 x 128 (192 programs); N=384: 32 x 64 (192);
    B=64, T=1024: 128 x 256 for N=1536 / 256, 128 x 128 for N=384. Tuned in
    benchmarks/kernels/bench_conv1d.py (--sweep).
    """
    wide = dtype.itemsize <= 2
    tiles = [(bm, bn) for bm, bn in TILES if (bn <= 64 or N % bn == 0) and (wide or bm * bn <= 128 * 128)]
    block_m, block_n = tiles[-1]
    for bm, bn in tiles:
        if triton.cdiv(M, bm) * triton.cdiv(N, bn) >= FILL_PROGRAMS:
            block_m, block_n = bm, bn
            break
    block_k = max(16, min(64 if wide else 32, triton.next_power_of_2(c_in)))
    big = block_m * block_n >= 128 * 128
    return Blocks(block_m, block_n, block_k, num_warps=8 if big else 4, num_stages=3 if block_n == 256 else 4)


def launch_grid(M: int, N: int, blocks: Blocks) -> tuple[int]:
    """One program per (BLOCK_M, BLOCK_N) output tile (1-D: the kernel swizzles the program ids)."""
    return (triton.cdiv(M, blocks.block_m) * triton.cdiv(N, blocks.block_n),)


def fp32_dot(dtype: torch.dtype) -> bool:
    """Dot products on fp32 operands in IEEE fp32: for fp32 inputs (no TF32), and for bf16 under
    Triton's CPU interpreter, whose bf16 `tl.dot` is wrong (see kernels/attention.py)."""
    return dtype == torch.float32 or (dtype == torch.bfloat16 and os.environ.get("TRITON_INTERPRET") == "1")


def launch_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    lengths: torch.Tensor,
    padding: int,
    relu: bool,
    out: torch.Tensor,
    *,
    blocks: Blocks | None = None,
) -> torch.Tensor:
    """Run the kernel into `out` (B, T, C_out), any strides; every element of `out` is written.

    Takes the output buffer so tests can poison it and benchmarks can reuse it. Launches on torch's
    current stream. `blocks` defaults to `default_blocks`; override it only to sweep.
    """
    B, T, c_in = x.shape
    k, c_out, _ = weight.shape
    if out.numel() == 0:
        return out
    check_int32_offsets("conv1d", x, out, weight.unsqueeze(0))
    blocks = blocks or default_blocks(B * T, c_out, c_in, x.dtype)
    wrap_triton(_conv1d_kernel)[launch_grid(B * T, c_out, blocks)](
        x,
        weight,
        x if bias is None else bias,  # never read when HAS_BIAS is False
        lengths,
        out,
        B,
        T,
        x.stride(0),
        x.stride(1),
        x.stride(2),
        weight.stride(0),
        weight.stride(1),
        weight.stride(2),
        0 if bias is None else bias.stride(0),
        out.stride(0),
        out.stride(1),
        out.stride(2),
        lengths.stride(0),
        C_IN=c_in,
        C_OUT=c_out,
        KSIZE=k,
        PADDING=padding,
        HAS_BIAS=bias is not None,
        RELU=relu,
        BLOCK_M=blocks.block_m,
        BLOCK_N=blocks.block_n,
        BLOCK_K=blocks.block_k,
        GROUP_M=blocks.group_m,
        FP32_DOT=fp32_dot(x.dtype),
        num_warps=blocks.num_warps,
        num_stages=blocks.num_stages,
    )
    return out


# ---------------------------------------------------------------------------------------------
# Plain PyTorch: the reference (also the CPU implementation) and the same math in x's dtype
# ---------------------------------------------------------------------------------------------
def conv1d_layers(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    lengths: torch.Tensor,
    padding: int,
    relu: bool,
) -> torch.Tensor:
    """The contract in PyTorch's own layers, in x's dtype: conv (NCW) -> relu -> row mask.

    What TensorRT builds for the op (converters/conv1d.py); `conv1d_reference` runs it in fp32.
    """
    k, T = weight.shape[0], x.shape[1]
    h = x.transpose(1, 2)  # (B, C_in, T): nn.Conv1d's layout
    w = weight.permute(1, 2, 0)  # (C_out, C_in, k): nn.Conv1d's weight
    if 2 * padding == k - 1:
        out = F.conv1d(h, w, bias, padding=padding)
    else:  # uneven padding: `padding` rows before, k - 1 - padding after
        out = F.conv1d(F.pad(h, (padding, k - 1 - padding)), w, bias)
    out = out.transpose(1, 2)  # (B, T, C_out)
    if relu:
        out = F.relu(out)
    valid = torch.arange(T, device=x.device)[None, :] < lengths.to(x.device)[:, None]  # (B, T)
    return torch.where(valid[..., None], out, torch.zeros((), dtype=out.dtype, device=out.device))


def conv1d_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    lengths: torch.Tensor,
    padding: int,
    relu: bool,
) -> torch.Tensor:
    """`conv1d_layers` in fp32, cast to x's dtype (the kernel's accuracy: one rounding at the end)."""
    fp32_bias = None if bias is None else bias.float()
    return conv1d_layers(x.float(), weight.float(), fp32_bias, lengths, padding, relu).to(x.dtype)


# ---------------------------------------------------------------------------------------------
# torch custom op
# ---------------------------------------------------------------------------------------------
def _check_inputs(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    lengths: torch.Tensor,
    padding: int,
) -> None:
    """Static checks (shapes, dtypes, devices): safe while tracing."""
    if x.dim() != 3:
        raise ValueError(f"conv1d: x must be (B, T, C_in), got shape {tuple(x.shape)}")
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"conv1d: x must be float32, float16 or bfloat16, got {x.dtype}")
    if weight.dim() != 3:
        raise ValueError(
            f"conv1d: weight must be (k, C_out, C_in) (nn.Conv1d's weight.permute(2, 0, 1)), "
            f"got shape {tuple(weight.shape)}"
        )
    k, c_out, c_in = weight.shape
    if c_in != x.shape[2] or k < 1 or c_out < 1:
        raise ValueError(
            f"conv1d: weight {tuple(weight.shape)} is not (k, C_out, C_in) for x's C_in={x.shape[2]}; "
            "pass nn.Conv1d's weight.permute(2, 0, 1)"
        )
    if not 0 <= padding <= k - 1:
        raise ValueError(f"conv1d: padding must be in [0, k - 1] = [0, {k - 1}], got {padding}")
    if bias is not None and bias.shape != (c_out,):
        raise ValueError(f"conv1d: bias must be (C_out,) = ({c_out},), got {tuple(bias.shape)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.dtype != x.dtype:
            raise ValueError(f"conv1d: {name} is {t.dtype}, x is {x.dtype}; cast them to one dtype")
    if lengths.shape != x.shape[:1]:
        raise ValueError(f"conv1d: lengths must be (B,) = ({x.shape[0]},), got {tuple(lengths.shape)}")
    if lengths.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"conv1d: lengths must be int32 or int64, got {lengths.dtype}")
    for name, t in (("weight", weight), ("bias", bias), ("lengths", lengths)):
        if t is not None and t.device != x.device:
            raise ValueError(f"conv1d: {name} on {t.device}, x on {x.device}; move them together")


@triton_op("fastspeech::conv1d", mutates_args=())
def conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],  # noqa: UP045 - the op schema is inferred from this annotation
    lengths: torch.Tensor,
    padding: int,
    relu: bool,
) -> torch.Tensor:
    """Dispatch: Triton kernel on CUDA, the PyTorch reference elsewhere (CPU).

    The device branch lives in the body because Inductor traces into a triton_op's body (and ignores
    kernels registered per device) when it compiles; eager CPU calls also reach `_conv1d_cpu`.
    """
    _check_inputs(x, weight, bias, lengths, padding)
    B, T, _ = x.shape
    if x.is_cuda:
        out = torch.empty((B, T, weight.shape[1]), dtype=x.dtype, device=x.device)
        return launch_conv1d(x, weight, bias, lengths, padding, relu, out)
    return conv1d_reference(x, weight, bias, lengths, padding, relu)


@conv1d.register_kernel("cpu")
def _conv1d_cpu(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],  # noqa: UP045
    lengths: torch.Tensor,
    padding: int,
    relu: bool,
) -> torch.Tensor:
    """Eager CPU: the PyTorch reference, after the same checks."""
    _check_inputs(x, weight, bias, lengths, padding)
    return conv1d_reference(x, weight, bias, lengths, padding, relu)


def _setup_context(ctx, inputs, output) -> None:
    x, weight, bias, lengths, padding, relu = inputs
    ctx.save_for_backward(x, weight, bias, lengths)
    ctx.padding, ctx.relu = padding, relu


def _backward(ctx, grad: torch.Tensor) -> tuple:
    """Gradients through the reference: the op has no backward kernel of its own; training
    (scripts/train_demo.py) is the only caller that needs one."""
    x, weight, bias, lengths = ctx.saved_tensors
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_() if t is not None else None for t in (x, weight, bias)]
        out = conv1d_reference(*leaves, lengths, ctx.padding, ctx.relu)
        wanted = [i for i, t in enumerate(leaves) if t is not None and ctx.needs_input_grad[i]]
        grads = torch.autograd.grad(out, [leaves[i] for i in wanted], grad) if wanted else ()
    result: list = [None] * 6
    for i, g in zip(wanted, grads):
        result[i] = g
    return tuple(result)


conv1d.register_autograd(_backward, setup_context=_setup_context)
