"""`torch.ops.fastspeech.attention`: FastSpeech's self-attention, length-aware, read from the fused projection.

Contract: qkv (B, T, n_head * 3 * d) fp32/fp16/bf16, the output of `MultiHeadAttention.linear`, laid
out head-major with [q | k | v] inside each head's 3 * d columns (DLE's layout); lengths (B,) integer;
n_head int -> out (B, T, n_head * d) of qkv's dtype, head h in columns h * d .. h * d + d - 1 (the
layout `fc` reads). With L = clamp(lengths[b], 0, T):
  out[b, t, head h] = softmax_j(q_t . k_j / sqrt(d)) @ v_j over keys j < L, for query rows t < L;
  out[b, t] = 0 for query rows t >= L (padding; the model zeroes those rows after the block anyway).
This equals `F.scaled_dot_product_attention` with DLE's key-padding mask on every valid row, and
needs no mask tensor, no q/k/v split or permute, and no work for padding.

The kernel (flash-attention forward, one pass with online softmax, fp32 accumulators): each program
owns BLOCK_M query rows of one (batch row, head). Keys are visited in BLOCK_N blocks up to L only (keys
>= L are never loaded; in 64-row tiles and up only the last block, which may reach past L, is masked); a query
tile wholly at or past L stores zeros and loads nothing else. q, k and v are loaded straight from
qkv through its strides. Small query tiles keep the GPU full at batch 1:
at B=1, T=1024, 2 heads, BLOCK_M=16 gives 128 programs (cuDNN's 128-row tiles: 16 of 132 SMs).
fp32 inputs use IEEE fp32 dot products (no TF32), so fp32 engines stay within fp32 tolerances
(`fp32_dot`); fp16/bf16 use the tensor cores with fp32 accumulation.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from kernels.utils import check_int32_offsets, fp32_dot, register_reference_autograd

FILL_PROGRAMS = 132  # programs that fill the GPU: our H100's (and H200's) SM count


# ---------------------------------------------------------------------------------------------
# Triton kernel
# ---------------------------------------------------------------------------------------------
@triton.jit
def _attend(
    q,
    k_base,
    v_base,
    start_n,
    length,
    m_i,
    l_i,
    acc,
    dims,
    dim_ok,
    stride_qt,
    stride_qc,
    QK_SCALE: tl.constexpr,
    BLOCK_N: tl.constexpr,
    FP32_DOT: tl.constexpr,
    MASKED: tl.constexpr,
):
    """One block of BLOCK_N keys from start_n into the running (max, sum, acc). Only the last block
    of a row can reach past the length (MASKED): the others load and score without masks. The max is
    kept in scaled log2 units, so the scale rides in one fused multiply-add per score."""
    cols = start_n + tl.arange(0, BLOCK_N)
    offs = cols[:, None] * stride_qt + dims[None, :] * stride_qc  # (BLOCK_N, BLOCK_D)
    if MASKED:
        key_ok = cols < length
        mask = key_ok[:, None] & dim_ok[None, :]
    else:
        mask = dim_ok[None, :]
    k = tl.load(k_base + offs, mask=mask, other=0.0)
    v = tl.load(v_base + offs, mask=mask, other=0.0)
    if FP32_DOT:
        qk = tl.dot(q.to(tl.float32), tl.trans(k.to(tl.float32)), input_precision="ieee")
    else:
        qk = tl.dot(q, tl.trans(k))
    if MASKED:
        qk = tl.where(key_ok[None, :], qk, float("-inf"))  # (BLOCK_M, BLOCK_N)
    m_new = tl.maximum(m_i, tl.max(qk, 1) * QK_SCALE)  # finite: key start_n < length is valid
    alpha = tl.math.exp2(m_i - m_new)
    p = tl.math.exp2(qk * QK_SCALE - m_new[:, None])
    l_i = l_i * alpha + tl.sum(p, 1)
    if FP32_DOT:
        acc = acc * alpha[:, None] + tl.dot(p, v.to(tl.float32), input_precision="ieee")
    else:
        acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
    return m_new, l_i, acc


@triton.jit
def _attention_kernel(
    qkv_ptr,
    len_ptr,
    out_ptr,
    T,
    stride_qb,
    stride_qt,
    stride_qc,
    stride_ob,
    stride_ot,
    stride_oc,
    stride_len,
    QK_SCALE: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    FP32_DOT: tl.constexpr,
    SPLIT_TAIL: tl.constexpr,
):
    pid_m = tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)

    length = tl.load(len_ptr + b * stride_len).to(tl.int32)
    length = tl.minimum(tl.maximum(length, 0), T)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,) query rows t
    dims = tl.arange(0, BLOCK_D)  # (BLOCK_D,) head channels; BLOCK_D = HEAD_DIM unless d is not a power of 2
    dim_ok = dims < HEAD_DIM  # constant along whole tiles when BLOCK_D == HEAD_DIM: loads stay vectorized

    # int64 scalar batch offsets, int32 offsets inside a batch row (the launcher checks they fit).
    q_base = qkv_ptr + b * stride_qb + (h * 3 * HEAD_DIM) * stride_qc
    k_base = q_base + HEAD_DIM * stride_qc
    v_base = k_base + HEAD_DIM * stride_qc

    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    if pid_m * BLOCK_M < length:  # else the whole tile is padding: zeros, nothing loaded
        row_ok = rows < length
        q_ptrs = q_base + rows[:, None] * stride_qt + dims[None, :] * stride_qc
        q = tl.load(q_ptrs, mask=row_ok[:, None] & dim_ok[None, :], other=0.0)
        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # running max (scaled, log2 units)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running sum of exponentials
        # Keys >= length are never loaded. With SPLIT_TAIL the whole key blocks run unmasked and the
        # last partial one masked (1.11x at batch 64); without it every block is masked, one loop,
        # which short loops at batch 1 run faster (`split_tail`; runs 119-120, docs/kernels_history.md).
        full = length // BLOCK_N * BLOCK_N if SPLIT_TAIL else 0
        if SPLIT_TAIL:
            for start_n in range(0, full, BLOCK_N):
                m_i, l_i, acc = _attend(q, k_base, v_base, start_n, length, m_i, l_i, acc, dims, dim_ok,
                                        stride_qt, stride_qc, QK_SCALE, BLOCK_N, FP32_DOT, False)  # fmt: skip
        for start_n in range(full, length, BLOCK_N):
            m_i, l_i, acc = _attend(q, k_base, v_base, start_n, length, m_i, l_i, acc, dims, dim_ok,
                                    stride_qt, stride_qc, QK_SCALE, BLOCK_N, FP32_DOT, True)  # fmt: skip
        acc = acc / l_i[:, None]  # l_i >= 1 (the row max contributes exp2(0))
        acc = tl.where(row_ok[:, None], acc, 0.0)  # padding rows of a partly valid tile: zeros

    o_ptrs = out_ptr + b * stride_ob + rows[:, None] * stride_ot + (h * HEAD_DIM + dims)[None, :] * stride_oc
    tl.store(o_ptrs, acc.to(out_ptr.dtype.element_ty), mask=(rows < T)[:, None] & dim_ok[None, :])


# ---------------------------------------------------------------------------------------------
# Launcher
# ---------------------------------------------------------------------------------------------
class Blocks(NamedTuple):
    """One launch configuration: tile sizes and warps (shared with the TensorRT plugin's AOT kernel)."""

    block_m: int
    block_n: int
    num_warps: int


def default_blocks(B: int, T: int, n_head: int, dtype: torch.dtype = torch.float16) -> Blocks:
    """The largest query tile that still gives >= FILL_PROGRAMS programs (16 rows when none does).

    B=1, T=1024, 2 heads: 16-row tiles, 128 programs; B=64: 128-row tiles (1024 programs), where
    larger tiles use the tensor cores better. Tuned in benchmarks/kernels/bench_attention.py. fp32
    (IEEE fp32 dot products on the FMA units) stops at 64-row tiles with 4 warps: 128-row fp32 tiles
    ran 15-20x slower than 64-row ones (run 45, H200, T=1024: B=64 38.5 ms against 2.5 ms).
    """
    block_m = 16
    for candidate in (128, 64, 32) if dtype != torch.float32 else (64, 32):
        if B * n_head * triton.cdiv(T, candidate) >= FILL_PROGRAMS:
            block_m = candidate
            break
    # 16/32-row tiles run long serial key loops at batch 1: 128 keys per step (H100, B=1, T=1024,
    # fp16, cold L2: 13.0 µs against 16.4 µs with 64 keys per step).
    return Blocks(block_m, 128 if block_m <= 32 else 64, {16: 4, 32: 4, 64: 4, 128: 8}[block_m])


def split_tail(block_m: int) -> bool:
    """Whether the kernel runs its whole key blocks unmasked and only the last one masked: for query
    tiles of 64 rows and more (the batches that fill the GPU). H100, fp16, T=1024 (run 119): B=64
    105.3 -> 94.6 µs, B=8 20.6 -> 19.2; but at B=1 (16-row tiles, a few key blocks) the split loop
    ran 5-9% slower (T=1024 12.8 -> 13.4 µs), so small tiles keep one masked loop. Run 120, with this
    switch: B=64 104.2 -> 94.1 µs, batch 1 0.95-1.07x (noise)."""
    return block_m >= 64


def head_dim(qkv_shape: tuple[int, ...] | torch.Size, n_head: int) -> int:
    """d from qkv's last dim n_head * 3 * d; raises when that does not divide."""
    C = int(qkv_shape[-1])
    if n_head < 1 or C < 3 * n_head or C % (3 * n_head):
        raise ValueError(f"attention: qkv's last dim {C} is not n_head * 3 * d for n_head={n_head}")
    return C // (3 * n_head)


def block_d(d: int) -> int:
    """The kernel's tile width over a head's channels: d rounded up to a power of 2, at least 16 (tl.dot)."""
    return max(16, triton.next_power_of_2(d))


def launch_attention(
    qkv: torch.Tensor,
    lengths: torch.Tensor,
    n_head: int,
    out: torch.Tensor,
    *,
    block_m: int | None = None,
    block_n: int | None = None,
    num_warps: int | None = None,
) -> torch.Tensor:
    """Run the kernel into `out` (B, T, n_head * d), any strides; every element of `out` is written.

    Takes the output buffer so tests can poison it and benchmarks can reuse it. Launches on torch's
    current stream. Tile sizes default to `default_blocks`; override them only to sweep.
    """
    B, T, _ = qkv.shape
    d = head_dim(qkv.shape, n_head)
    if out.numel() == 0:
        return out
    check_int32_offsets("attention", qkv, out)
    blocks = default_blocks(B, T, n_head, qkv.dtype)
    block_m = block_m or blocks.block_m
    block_n = block_n or blocks.block_n
    num_warps = num_warps or blocks.num_warps
    grid = (triton.cdiv(T, block_m), n_head, B)
    wrap_triton(_attention_kernel)[grid](
        qkv,
        lengths,
        out,
        T,
        qkv.stride(0),
        qkv.stride(1),
        qkv.stride(2),
        out.stride(0),
        out.stride(1),
        out.stride(2),
        lengths.stride(0),
        QK_SCALE=qk_scale(d),
        HEAD_DIM=d,
        BLOCK_D=block_d(d),
        BLOCK_M=block_m,
        BLOCK_N=block_n,
        FP32_DOT=fp32_dot(qkv.dtype),
        SPLIT_TAIL=split_tail(block_m),
        num_warps=num_warps,
    )
    return out


def qk_scale(d: int) -> float:
    """1 / sqrt(d) (DLE's temperature), times log2(e): the kernel's softmax uses exp2.

    A constexpr of the kernel: a float runtime argument is typed fp64 when Inductor launches the
    kernel (seen with torch 2.11), which would turn the scores into fp64.
    """
    return 1.0 / math.sqrt(d) * 1.4426950408889634


# ---------------------------------------------------------------------------------------------
# Plain PyTorch reference (also the CPU implementation)
# ---------------------------------------------------------------------------------------------
def attention_reference(qkv: torch.Tensor, lengths: torch.Tensor, n_head: int) -> torch.Tensor:
    """`F.scaled_dot_product_attention` with a key-padding mask, padding query rows zeroed."""
    B, T, _ = qkv.shape
    d = head_dim(qkv.shape, n_head)
    q, k, v = qkv.view(B, T, n_head, 3 * d).transpose(1, 2).split(d, dim=-1)  # (B, n_head, T, d) each
    t = torch.arange(T, device=qkv.device)
    valid = t[None, :] < lengths.to(qkv.device)[:, None]  # (B, T)
    # A row with no valid key would softmax over nothing (NaN): let it see key 0; its output is zeroed.
    key_valid = (valid | (t == 0))[:, None, None, :]  # (B, 1, 1, T)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=key_valid)
    out = out.transpose(1, 2).reshape(B, T, n_head * d)
    return torch.where(valid[..., None], out, torch.zeros((), dtype=out.dtype, device=out.device))


# ---------------------------------------------------------------------------------------------
# torch custom op
# ---------------------------------------------------------------------------------------------
def _check_inputs(qkv: torch.Tensor, lengths: torch.Tensor, n_head: int) -> None:
    """Static checks (shapes, dtypes, devices): safe while tracing."""
    if qkv.dim() != 3:
        raise ValueError(f"attention: qkv must be (B, T, n_head * 3 * d), got shape {tuple(qkv.shape)}")
    head_dim(qkv.shape, n_head)
    if lengths.shape != qkv.shape[:1]:
        raise ValueError(f"attention: lengths must be (B,) = ({qkv.shape[0]},), got {tuple(lengths.shape)}")
    if lengths.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"attention: lengths must be int32 or int64, got {lengths.dtype}")
    if lengths.device != qkv.device:
        raise ValueError(f"attention: lengths on {lengths.device}, qkv on {qkv.device}; move them together")


@triton_op("fastspeech::attention", mutates_args=())
def attention(qkv: torch.Tensor, lengths: torch.Tensor, n_head: int) -> torch.Tensor:
    """Dispatch: Triton kernel on CUDA, the PyTorch reference elsewhere (CPU).

    The device branch lives in the body because Inductor traces into a triton_op's body (and ignores
    kernels registered per device) when it compiles; eager CPU calls also reach `_attention_cpu`.
    """
    _check_inputs(qkv, lengths, n_head)
    B, T, C = qkv.shape
    if qkv.is_cuda:
        out = torch.empty((B, T, C // 3), dtype=qkv.dtype, device=qkv.device)
        return launch_attention(qkv, lengths, n_head, out)
    return attention_reference(qkv, lengths, n_head)


@attention.register_kernel("cpu")
def _attention_cpu(qkv: torch.Tensor, lengths: torch.Tensor, n_head: int) -> torch.Tensor:
    """Eager CPU: the PyTorch reference, after the same checks."""
    _check_inputs(qkv, lengths, n_head)
    return attention_reference(qkv, lengths, n_head)


register_reference_autograd(attention, attention_reference)
