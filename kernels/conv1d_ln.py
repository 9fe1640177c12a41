"""`torch.ops.fastspeech.conv1d_ln`: the `conv1d` op with residual + LayerNorm + row mask in its epilogue.

Contract: conv1d_ln(x, weight, bias, lengths, padding, relu, residual, ln_weight, ln_bias, eps) -> out
  x, weight, bias, lengths, padding, relu as `conv1d` (kernels/conv1d.py); residual (B, T, C_out) of x's
  dtype or None; ln_weight, ln_bias (C_out,) of x's dtype or None (LayerNorm's affine parts); eps float:
    y[b, t] = act(bias + sum_j weight[j] @ x[b, t + j - padding]) (+ residual[b, t])
    out[b, t] = (y - mean(y)) / sqrt(var(y) + eps) * ln_weight + ln_bias   for t < lengths[b]
    out[b, t] = 0                                                              for t >= lengths[b]
  mean and the biased var over y's C_out channels, all in fp32 on the unrounded sums: y is never
  rounded to x's dtype (one rounding, at the end). That is `F.layer_norm(conv1d(...) + residual)`
  masked: FastSpeech's `fc` + residual + LayerNorm (a k=1 conv: fc.weight[None]) and its FFN's `w_2`
  + residual + LayerNorm, each one kernel.

Why: after each of those GEMMs, Inductor ran residual + LayerNorm + mask as one more memory-bound pass
(B=64, T=1024: ~40 µs a pass, 24 per call) over a (B, T, 384) tensor the GEMM had just written.
Here the GEMM's tile holds whole rows, so the epilogue normalizes them before the only store.

The kernel is `conv1d`'s (tensor descriptors, persistent programs, taps x C_in blocks as one flat K
loop, row tiles of one batch item, tiles wholly past the length run no K steps), except that a tile
spans every output channel: PIECES column blocks of BLOCK_N (384 = 3 x 128), one fp32 accumulator each,
all fed by the same x tile. The epilogue adds bias (+ ReLU) + residual to each piece, sums the pieces'
rows for the mean and variance, normalizes, scales and masks, and stores the pieces. Whole rows per
tile mean short row tiles (BLOCK_M 64, or fewer where that fills the GPU) and C_out up to
MAX_WIDTH channels.

The reference (`conv1d_ln_reference`, also the CPU implementation) is `conv1d_ln_layers` in fp32:
`conv1d_layers`, the residual, `F.layer_norm`, the row mask. The TensorRT path decomposes the op into
those layers (converters/conv1d_ln.py).
"""

from __future__ import annotations

from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from kernels.conv1d import (
    FILL_PROGRAMS,
    check_conv_inputs,
    conv1d_layers,
    fp32_dot,
    set_scratch_allocator,
    sm_count,
    tma_empty,
    tma_ready,
    tma_strides,
)
from kernels.utils import register_reference_autograd

MAX_PIECES = 4  # fp32 accumulators per tile (column blocks of one row tile)
MAX_WIDTH = 1024  # widest C_out: 4 pieces of 256 columns
SMEM_STAGES_BYTES = 180 * 1024  # shared memory for the pipelined x and weight tiles (sm90: 227 KB in all)


# ---------------------------------------------------------------------------------------------
# Triton kernel
# ---------------------------------------------------------------------------------------------
@triton.jit
def _mma(a, w_desc, j, n0, c0, acc, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, FP32_DOT: tl.constexpr):
    """acc += a @ weight[j, n0 : n0 + BLOCK_N, c0 : c0 + BLOCK_K].T (rows past C_out load as zeros)."""
    w = w_desc.load([j, n0, c0]).reshape(BLOCK_N, BLOCK_K)
    if FP32_DOT:
        return tl.dot(a.to(tl.float32), w.to(tl.float32).T, acc, input_precision="ieee")
    return tl.dot(a, w.T, acc)


@triton.jit
def _pre_norm(
    acc,
    r_desc,
    bias_ptr,
    stride_bias,
    b,
    t0,
    n0,
    C_OUT,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    RELU: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
):
    """One piece of y = act(acc + bias) + residual, fp32; columns past C_out are 0."""
    cols = n0 + tl.arange(0, BLOCK_N)
    if HAS_BIAS:
        acc += tl.load(bias_ptr + cols * stride_bias, mask=cols < C_OUT, other=0.0).to(tl.float32)[None, :]
    if RELU:
        acc = tl.maximum(acc, 0.0)
    if HAS_RESIDUAL:  # rows past T and columns past C_out arrive as zeros
        acc += r_desc.load([b, t0, n0]).reshape(BLOCK_M, BLOCK_N).to(tl.float32)
    return acc


@triton.jit
def _centered(y, mean, n0, C_OUT, BLOCK_N: tl.constexpr):
    """y - mean on the piece's real columns, 0 past C_out (so they add nothing to the variance)."""
    cols = n0 + tl.arange(0, BLOCK_N)
    return tl.where((cols < C_OUT)[None, :], y - mean[:, None], 0.0)


@triton.jit
def _store_normed(
    o_desc,
    d,
    rstd,
    row_ok,
    g_ptr,
    beta_ptr,
    stride_g,
    stride_beta,
    b,
    t0,
    n0,
    C_OUT,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    HAS_LN_WEIGHT: tl.constexpr,
    HAS_LN_BIAS: tl.constexpr,
):
    """Store one piece of d * rstd * ln_weight + ln_bias, rows past the length 0."""
    cols = n0 + tl.arange(0, BLOCK_N)
    out = d * rstd[:, None]
    if HAS_LN_WEIGHT:
        out = out * tl.load(g_ptr + cols * stride_g, mask=cols < C_OUT, other=0.0).to(tl.float32)[None, :]
    if HAS_LN_BIAS:
        out += tl.load(beta_ptr + cols * stride_beta, mask=cols < C_OUT, other=0.0).to(tl.float32)[None, :]
    out = tl.where(row_ok[:, None], out, 0.0).to(o_desc.dtype)
    o_desc.store([b, t0, n0], out.reshape(1, BLOCK_M, BLOCK_N))  # columns past C_out are dropped


@triton.jit
def _conv1d_ln_kernel(
    x_ptr,
    w_ptr,
    bias_ptr,
    len_ptr,
    res_ptr,
    g_ptr,
    beta_ptr,
    out_ptr,
    B,
    T,
    stride_xb,
    stride_xt,
    stride_wj,
    stride_wo,
    stride_rb,
    stride_rt,
    stride_ob,
    stride_ot,
    stride_bias,
    stride_g,
    stride_beta,
    stride_len,
    EPS,
    C_IN: tl.constexpr,
    C_OUT: tl.constexpr,
    KSIZE: tl.constexpr,
    PADDING: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    RELU: tl.constexpr,
    HAS_RESIDUAL: tl.constexpr,
    HAS_LN_WEIGHT: tl.constexpr,
    HAS_LN_BIAS: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    PIECES: tl.constexpr,
    PROGRAMS: tl.constexpr,
    FP32_DOT: tl.constexpr,
):
    x_desc = tl.make_tensor_descriptor(
        x_ptr, shape=[B, T, C_IN], strides=[stride_xb, stride_xt, 1], block_shape=[1, BLOCK_M, BLOCK_K]
    )
    w_desc = tl.make_tensor_descriptor(
        w_ptr,
        shape=[KSIZE, C_OUT, C_IN],
        strides=[stride_wj, stride_wo, 1],
        block_shape=[1, BLOCK_N, BLOCK_K],
    )
    r_desc = tl.make_tensor_descriptor(
        res_ptr, shape=[B, T, C_OUT], strides=[stride_rb, stride_rt, 1], block_shape=[1, BLOCK_M, BLOCK_N]
    )
    o_desc = tl.make_tensor_descriptor(
        out_ptr, shape=[B, T, C_OUT], strides=[stride_ob, stride_ot, 1], block_shape=[1, BLOCK_M, BLOCK_N]
    )
    tiles_t = tl.cdiv(T, BLOCK_M)  # row tiles per batch item; each spans all C_out channels
    C_BLOCKS: tl.constexpr = (C_IN + BLOCK_K - 1) // BLOCK_K
    for tile in tl.range(tl.program_id(0), B * tiles_t, PROGRAMS, flatten=True):
        b = tile // tiles_t
        t0 = (tile - b * tiles_t) * BLOCK_M
        length = tl.load(len_ptr + b * stride_len)
        k_steps = tl.where(t0 < length, KSIZE * C_BLOCKS, 0)  # padding tiles: no K steps, zeros stored

        acc0 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        acc1 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        acc2 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        acc3 = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for step in range(k_steps):  # taps outer, input-channel blocks inner; one x tile feeds every piece
            j = step // C_BLOCKS
            c0 = (step - j * C_BLOCKS) * BLOCK_K
            a = x_desc.load([b, t0 + j - PADDING, c0]).reshape(BLOCK_M, BLOCK_K)
            acc0 = _mma(a, w_desc, j, 0, c0, acc0, BLOCK_N, BLOCK_K, FP32_DOT)
            if PIECES > 1:
                acc1 = _mma(a, w_desc, j, BLOCK_N, c0, acc1, BLOCK_N, BLOCK_K, FP32_DOT)
            if PIECES > 2:
                acc2 = _mma(a, w_desc, j, 2 * BLOCK_N, c0, acc2, BLOCK_N, BLOCK_K, FP32_DOT)
            if PIECES > 3:
                acc3 = _mma(a, w_desc, j, 3 * BLOCK_N, c0, acc3, BLOCK_N, BLOCK_K, FP32_DOT)

        # Epilogue: y = act(acc + bias) + residual per piece, then LayerNorm over the whole row.
        y0 = _pre_norm(
            acc0,
            r_desc,
            bias_ptr,
            stride_bias,
            b,
            t0,
            0,
            C_OUT,
            BLOCK_M,
            BLOCK_N,
            HAS_BIAS,
            RELU,
            HAS_RESIDUAL,
        )
        total = tl.sum(y0, 1)
        if PIECES > 1:
            y1 = _pre_norm(
                acc1,
                r_desc,
                bias_ptr,
                stride_bias,
                b,
                t0,
                BLOCK_N,
                C_OUT,
                BLOCK_M,
                BLOCK_N,
                HAS_BIAS,
                RELU,
                HAS_RESIDUAL,
            )
            total += tl.sum(y1, 1)
        if PIECES > 2:
            y2 = _pre_norm(
                acc2,
                r_desc,
                bias_ptr,
                stride_bias,
                b,
                t0,
                2 * BLOCK_N,
                C_OUT,
                BLOCK_M,
                BLOCK_N,
                HAS_BIAS,
                RELU,
                HAS_RESIDUAL,
            )
            total += tl.sum(y2, 1)
        if PIECES > 3:
            y3 = _pre_norm(
                acc3,
                r_desc,
                bias_ptr,
                stride_bias,
                b,
                t0,
                3 * BLOCK_N,
                C_OUT,
                BLOCK_M,
                BLOCK_N,
                HAS_BIAS,
                RELU,
                HAS_RESIDUAL,
            )
            total += tl.sum(y3, 1)
        mean = total / C_OUT
        d0 = _centered(y0, mean, 0, C_OUT, BLOCK_N)
        squares = tl.sum(d0 * d0, 1)
        if PIECES > 1:
            d1 = _centered(y1, mean, BLOCK_N, C_OUT, BLOCK_N)
            squares += tl.sum(d1 * d1, 1)
        if PIECES > 2:
            d2 = _centered(y2, mean, 2 * BLOCK_N, C_OUT, BLOCK_N)
            squares += tl.sum(d2 * d2, 1)
        if PIECES > 3:
            d3 = _centered(y3, mean, 3 * BLOCK_N, C_OUT, BLOCK_N)
            squares += tl.sum(d3 * d3, 1)
        rstd = 1.0 / tl.sqrt(squares / C_OUT + EPS)
        row_ok = (t0 + tl.arange(0, BLOCK_M)) < length
        _store_normed(
            o_desc,
            d0,
            rstd,
            row_ok,
            g_ptr,
            beta_ptr,
            stride_g,
            stride_beta,
            b,
            t0,
            0,
            C_OUT,
            BLOCK_M,
            BLOCK_N,
            HAS_LN_WEIGHT,
            HAS_LN_BIAS,
        )
        if PIECES > 1:
            _store_normed(
                o_desc,
                d1,
                rstd,
                row_ok,
                g_ptr,
                beta_ptr,
                stride_g,
                stride_beta,
                b,
                t0,
                BLOCK_N,
                C_OUT,
                BLOCK_M,
                BLOCK_N,
                HAS_LN_WEIGHT,
                HAS_LN_BIAS,
            )
        if PIECES > 2:
            _store_normed(
                o_desc,
                d2,
                rstd,
                row_ok,
                g_ptr,
                beta_ptr,
                stride_g,
                stride_beta,
                b,
                t0,
                2 * BLOCK_N,
                C_OUT,
                BLOCK_M,
                BLOCK_N,
                HAS_LN_WEIGHT,
                HAS_LN_BIAS,
            )
        if PIECES > 3:
            _store_normed(
                o_desc,
                d3,
                rstd,
                row_ok,
                g_ptr,
                beta_ptr,
                stride_g,
                stride_beta,
                b,
                t0,
                3 * BLOCK_N,
                C_OUT,
                BLOCK_M,
                BLOCK_N,
                HAS_LN_WEIGHT,
                HAS_LN_BIAS,
            )


# ---------------------------------------------------------------------------------------------
# Launcher
# ---------------------------------------------------------------------------------------------
class Blocks(NamedTuple):
    """One launch configuration: row tile, piece width, K step, warps, pipeline stages, the number
    of persistent programs (None: one per SM, or every tile when there are fewer)."""

    block_m: int
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int
    programs: int | None = None


def pieces(c_out: int) -> tuple[int, int]:
    """(PIECES, BLOCK_N): the fewest padded columns covering c_out with up to MAX_PIECES power-of-2
    column blocks of 16-256 (384 -> 3 x 128, 256 -> 1 x 256, 80 -> 3 x 32); ties take fewer pieces."""
    if not 1 <= c_out <= MAX_WIDTH:
        raise ValueError(f"conv1d_ln: C_out must be 1..{MAX_WIDTH} (whole rows per tile), got {c_out}")
    options = []
    for n in range(1, MAX_PIECES + 1):
        width = max(16, triton.next_power_of_2(triton.cdiv(c_out, n)))
        if width <= 256:
            options.append((n * width, n, width))
    _, n, width = min(options)
    return n, width


def default_blocks(B: int, T: int, c_out: int, c_in: int, dtype: torch.dtype) -> Blocks:
    """64-row tiles (8 warps: a 64 x 384 fp32 accumulator is 96 registers a thread), or 32/16 rows where
    64-row tiles would leave a quarter of the SMs idle (B=4, T=1024: 64 tiles of 64 rows, 128 of 32).
    Pipeline stages: as many as fit SMEM_STAGES_BYTES, 2-4 (B=64, fp16, 384 wide: 3)."""
    n, width = pieces(c_out)
    block_k = max(16, min(64 if dtype.itemsize <= 2 else 32, triton.next_power_of_2(c_in)))
    block_m = 16
    for candidate in (64, 32):
        if B * triton.cdiv(T, candidate) >= FILL_PROGRAMS * 3 // 4:
            block_m = candidate
            break
    block_m = min(block_m, max(16, triton.next_power_of_2(T)))
    stage_bytes = (block_m + n * width) * block_k * dtype.itemsize
    stages = max(2, min(4, SMEM_STAGES_BYTES // stage_bytes))
    warps = 8 if block_m * n * width >= 64 * 256 else 4
    return Blocks(block_m, width, block_k, num_warps=warps, num_stages=stages)


def launch_conv1d_ln(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    lengths: torch.Tensor,
    padding: int,
    relu: bool,
    residual: torch.Tensor | None,
    ln_weight: torch.Tensor | None,
    ln_bias: torch.Tensor | None,
    eps: float,
    out: torch.Tensor,
    *,
    blocks: Blocks | None = None,
) -> torch.Tensor:
    """Run the kernel into `out` (B, T, C_out), any strides; every element of `out` is written.

    As `launch_conv1d`: tensors a descriptor cannot address go through aligned copies; `blocks`
    defaults to `default_blocks` (override it only to sweep).
    """
    B, T, c_in = x.shape
    k, c_out, _ = weight.shape
    if out.numel() == 0:
        return out
    blocks = blocks or default_blocks(B, T, c_out, c_in, x.dtype)
    if blocks.block_n * MAX_PIECES < c_out:
        raise ValueError(
            f"conv1d_ln: BLOCK_N {blocks.block_n} x {MAX_PIECES} pieces do not cover C_out={c_out}"
        )
    n_pieces = triton.cdiv(c_out, blocks.block_n)
    x, weight = (t if tma_ready(t) else tma_empty(t).copy_(t) for t in (x, weight))
    res = x.new_zeros(0) if residual is None else residual  # a stand-in the kernel never reads
    if residual is not None and not tma_ready(res):
        res = tma_empty(res).copy_(res)
    dst = out if tma_ready(out) else tma_empty(out)
    (sxb, sxt, _), (swj, swo, _), (sob, sot, _) = (tma_strides(t) for t in (x, weight, dst))
    srb, srt = (0, 0) if residual is None else tma_strides(res)[:2]
    tiles = B * triton.cdiv(T, blocks.block_m)
    programs = min(tiles, blocks.programs or sm_count(x.device))
    set_scratch_allocator(x.device)
    wrap_triton(_conv1d_ln_kernel)[(programs,)](
        x,
        weight,
        x if bias is None else bias,  # stand-ins are never read (HAS_* False)
        lengths,
        x if residual is None else res,
        x if ln_weight is None else ln_weight,
        x if ln_bias is None else ln_bias,
        dst,
        B,
        T,
        sxb,
        sxt,
        swj,
        swo,
        srb,
        srt,
        sob,
        sot,
        0 if bias is None else bias.stride(0),
        0 if ln_weight is None else ln_weight.stride(0),
        0 if ln_bias is None else ln_bias.stride(0),
        lengths.stride(0),
        float(eps),
        C_IN=c_in,
        C_OUT=c_out,
        KSIZE=k,
        PADDING=padding,
        HAS_BIAS=bias is not None,
        RELU=relu,
        HAS_RESIDUAL=residual is not None,
        HAS_LN_WEIGHT=ln_weight is not None,
        HAS_LN_BIAS=ln_bias is not None,
        BLOCK_M=blocks.block_m,
        BLOCK_N=blocks.block_n,
        BLOCK_K=blocks.block_k,
        PIECES=n_pieces,
        PROGRAMS=programs,
        FP32_DOT=fp32_dot(x.dtype),
        num_warps=blocks.num_warps,
        num_stages=blocks.num_stages,
    )
    if dst is not out:
        out.copy_(dst)
    return out


# ---------------------------------------------------------------------------------------------
# Plain PyTorch: the reference (also the CPU implementation) and the same math in x's dtype
# ---------------------------------------------------------------------------------------------
def conv1d_ln_layers(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    lengths: torch.Tensor,
    padding: int,
    relu: bool,
    residual: torch.Tensor | None,
    ln_weight: torch.Tensor | None,
    ln_bias: torch.Tensor | None,
    eps: float,
) -> torch.Tensor:
    """The contract in PyTorch's own layers, in x's dtype: `conv1d_layers` -> + residual -> layer_norm
    -> row mask. What TensorRT builds for the op (converters/conv1d_ln.py)."""
    y = conv1d_layers(x, weight, bias, lengths, padding, relu)  # rows past the length: 0 (masked again below)
    if residual is not None:
        y = y + residual
    y = F.layer_norm(y, (y.shape[-1],), ln_weight, ln_bias, eps)
    valid = torch.arange(x.shape[1], device=x.device)[None, :] < lengths.to(x.device)[:, None]
    return torch.where(valid[..., None], y, torch.zeros((), dtype=y.dtype, device=y.device))


def conv1d_ln_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    lengths: torch.Tensor,
    padding: int,
    relu: bool,
    residual: torch.Tensor | None,
    ln_weight: torch.Tensor | None,
    ln_bias: torch.Tensor | None,
    eps: float,
) -> torch.Tensor:
    """`conv1d_ln_layers` in fp32, cast to x's dtype (the kernel's accuracy: one rounding at the end)."""
    as_fp32 = [None if t is None else t.float() for t in (x, weight, bias, residual, ln_weight, ln_bias)]
    fx, fw, fb, fr, fg, fbeta = as_fp32
    return conv1d_ln_layers(fx, fw, fb, lengths, padding, relu, fr, fg, fbeta, eps).to(x.dtype)


# ---------------------------------------------------------------------------------------------
# torch custom op
# ---------------------------------------------------------------------------------------------
def _check_inputs(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    lengths: torch.Tensor,
    padding: int,
    residual: torch.Tensor | None,
    ln_weight: torch.Tensor | None,
    ln_bias: torch.Tensor | None,
    eps: float,
) -> None:
    """`conv1d`'s checks, then the residual's and LayerNorm's (shapes, dtypes, devices): safe while tracing."""
    check_conv_inputs("conv1d_ln", x, weight, bias, lengths, padding)
    c_out = weight.shape[1]
    pieces(c_out)  # raises for C_out past MAX_WIDTH
    if residual is not None and residual.shape != (*x.shape[:2], c_out):
        raise ValueError(
            f"conv1d_ln: residual must be (B, T, C_out) = {(*x.shape[:2], c_out)}, got {tuple(residual.shape)}"
        )
    for name, t in (("ln_weight", ln_weight), ("ln_bias", ln_bias)):
        if t is not None and t.shape != (c_out,):
            raise ValueError(f"conv1d_ln: {name} must be (C_out,) = ({c_out},), got {tuple(t.shape)}")
    for name, t in (("residual", residual), ("ln_weight", ln_weight), ("ln_bias", ln_bias)):
        if t is not None and t.dtype != x.dtype:
            raise ValueError(f"conv1d_ln: {name} is {t.dtype}, x is {x.dtype}; cast them to one dtype")
        if t is not None and t.device != x.device:
            raise ValueError(f"conv1d_ln: {name} on {t.device}, x on {x.device}; move them together")
    if not eps > 0:
        raise ValueError(f"conv1d_ln: eps must be > 0, got {eps}")


@triton_op("fastspeech::conv1d_ln", mutates_args=())
def conv1d_ln(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],  # noqa: UP045 - the op schema is inferred from these annotations
    lengths: torch.Tensor,
    padding: int,
    relu: bool,
    residual: Optional[torch.Tensor],  # noqa: UP045
    ln_weight: Optional[torch.Tensor],  # noqa: UP045
    ln_bias: Optional[torch.Tensor],  # noqa: UP045
    eps: float,
) -> torch.Tensor:
    """Dispatch: Triton kernel on CUDA, the PyTorch reference elsewhere (CPU); see `conv1d`."""
    _check_inputs(x, weight, bias, lengths, padding, residual, ln_weight, ln_bias, eps)
    B, T, _ = x.shape
    if x.is_cuda:
        out = torch.empty((B, T, weight.shape[1]), dtype=x.dtype, device=x.device)
        return launch_conv1d_ln(
            x, weight, bias, lengths, padding, relu, residual, ln_weight, ln_bias, eps, out
        )
    return conv1d_ln_reference(x, weight, bias, lengths, padding, relu, residual, ln_weight, ln_bias, eps)


@conv1d_ln.register_kernel("cpu")
def _conv1d_ln_cpu(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],  # noqa: UP045
    lengths: torch.Tensor,
    padding: int,
    relu: bool,
    residual: Optional[torch.Tensor],  # noqa: UP045
    ln_weight: Optional[torch.Tensor],  # noqa: UP045
    ln_bias: Optional[torch.Tensor],  # noqa: UP045
    eps: float,
) -> torch.Tensor:
    """Eager CPU: the PyTorch reference, after the same checks."""
    _check_inputs(x, weight, bias, lengths, padding, residual, ln_weight, ln_bias, eps)
    return conv1d_ln_reference(x, weight, bias, lengths, padding, relu, residual, ln_weight, ln_bias, eps)


register_reference_autograd(conv1d_ln, conv1d_ln_reference)
