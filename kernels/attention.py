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
>= L are never loaded); a query tile wholly at or past L stores zeros and loads nothing else. q, k and
v are loaded straight from qkv through its strides. Small query tiles keep the GPU full at batch 1:
at B=1, T=1024, 2 heads, BLOCK_M=16 gives 128 programs (cuDNN's 128-row tiles: 16 of 132 SMs).
fp32 inputs use IEEE fp32 dot products (no TF32), so fp32 engines stay within fp32 tolerances
(`fp32_dot`); fp16/bf16 use the tensor cores with fp32 accumulation.
"""

from __future__ import annotations

import math
import os
from typing import NamedTuple

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from kernels.utils import check_int32_offsets, register_reference_autograd

FILL_PROGRAMS = 132  # programs that fill the GPU: our H100's (and H200's) SM count
SPLIT_MIN_T = 512  # split the keys from this many (`split_blocks`)...
SPLIT_KEYS = 128  # ...into splits of this many keys


# ---------------------------------------------------------------------------------------------
# Triton kernel
# ---------------------------------------------------------------------------------------------
@triton.jit
def _attend_keys(q, k_base, v_base, start, end, stride_qt, stride_qc, dims, dim_ok, acc, m_i, l_i,
                 QK_SCALE: tl.constexpr, BLOCK_N: tl.constexpr, FP32_DOT: tl.constexpr):  # fmt: skip
    """Online softmax over keys start .. end - 1 (BLOCK_N at a time; keys >= end never loaded) ->
    (acc, m_i, l_i): the unnormalized output, the running row max (log2 units), the sum of exponentials."""
    for start_n in range(start, end, BLOCK_N):
        cols = start_n + tl.arange(0, BLOCK_N)
        key_ok = cols < end
        offs = cols[:, None] * stride_qt + dims[None, :] * stride_qc  # (BLOCK_N, BLOCK_D)
        k = tl.load(k_base + offs, mask=key_ok[:, None] & dim_ok[None, :], other=0.0)
        v = tl.load(v_base + offs, mask=key_ok[:, None] & dim_ok[None, :], other=0.0)
        if FP32_DOT:
            qk = tl.dot(q.to(tl.float32), tl.trans(k.to(tl.float32)), input_precision="ieee")
        else:
            qk = tl.dot(q, tl.trans(k))
        qk = tl.where(key_ok[None, :], qk * QK_SCALE, float("-inf"))  # (BLOCK_M, BLOCK_N)
        m_new = tl.maximum(m_i, tl.max(qk, 1))  # finite: key start_n < end is valid
        alpha = tl.math.exp2(m_i - m_new)
        p = tl.math.exp2(qk - m_new[:, None])
        l_i = l_i * alpha + tl.sum(p, 1)
        if FP32_DOT:
            acc = acc * alpha[:, None] + tl.dot(p, v.to(tl.float32), input_precision="ieee")
        else:
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
        m_i = m_new
    return acc, m_i, l_i


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
        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)  # running max (log2 units)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)  # running sum of exponentials
        acc, m_i, l_i = _attend_keys(
            q, k_base, v_base, 0, length, stride_qt, stride_qc, dims, dim_ok, acc, m_i, l_i,
            QK_SCALE, BLOCK_N, FP32_DOT,
        )  # fmt: skip
        acc = acc / l_i[:, None]  # l_i >= 1 (the row max contributes exp2(0))
        acc = tl.where(row_ok[:, None], acc, 0.0)  # padding rows of a partly valid tile: zeros

    o_ptrs = out_ptr + b * stride_ob + rows[:, None] * stride_ot + (h * HEAD_DIM + dims)[None, :] * stride_oc
    tl.store(o_ptrs, acc.to(out_ptr.dtype.element_ty), mask=(rows < T)[:, None] & dim_ok[None, :])


@triton.jit
def _attention_split_kernel(
    qkv_ptr,
    len_ptr,
    part_ptr,
    stat_ptr,
    B,
    T,
    stride_qb,
    stride_qt,
    stride_qc,
    stride_len,
    N_HEAD: tl.constexpr,
    SPLIT_KEYS: tl.constexpr,
    QK_SCALE: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    FP32_DOT: tl.constexpr,
):
    """Split keys, pass 1: program (query tile, head, b * SPLITS + s) attends over keys
    s * SPLIT_KEYS .. of its batch row and stores its unnormalized fp32 output into part
    (SPLITS, B, n_head, T, BLOCK_D) and its row max and sum into stat (SPLITS, B, n_head, T, 2).
    Tiles wholly past the length, and splits that start at or past it, store nothing (pass 2 reads
    neither)."""
    pid_m = tl.program_id(0)
    h = tl.program_id(1)
    s = tl.program_id(2) // B
    b = (tl.program_id(2) - s * B).to(tl.int64)
    length = tl.load(len_ptr + b * stride_len).to(tl.int32)
    length = tl.minimum(tl.maximum(length, 0), T)
    start = s * SPLIT_KEYS
    if (pid_m * BLOCK_M < length) & (start < length):
        rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
        dims = tl.arange(0, BLOCK_D)
        dim_ok = dims < HEAD_DIM
        q_base = qkv_ptr + b * stride_qb + (h * 3 * HEAD_DIM) * stride_qc
        k_base = q_base + HEAD_DIM * stride_qc
        v_base = k_base + HEAD_DIM * stride_qc
        q = tl.load(q_base + rows[:, None] * stride_qt + dims[None, :] * stride_qc,
                    mask=(rows < length)[:, None] & dim_ok[None, :], other=0.0)  # fmt: skip
        acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        end = tl.minimum(start + SPLIT_KEYS, length)
        acc, m_i, l_i = _attend_keys(
            q, k_base, v_base, start, end, stride_qt, stride_qc, dims, dim_ok, acc, m_i, l_i,
            QK_SCALE, BLOCK_N, FP32_DOT,
        )  # fmt: skip
        slot = (s * B + b) * N_HEAD + h  # (split, batch row, head), T rows each
        row_ok = rows < T
        tl.store(part_ptr + (slot * T + rows[:, None]) * BLOCK_D + dims[None, :], acc, mask=row_ok[:, None])
        tl.store(stat_ptr + (slot * T + rows) * 2, m_i, mask=row_ok)
        tl.store(stat_ptr + (slot * T + rows) * 2 + 1, l_i, mask=row_ok)


@triton.jit
def _attention_combine_kernel(
    part_ptr,
    stat_ptr,
    len_ptr,
    out_ptr,
    T,
    stride_ob,
    stride_ot,
    stride_oc,
    stride_len,
    N_HEAD: tl.constexpr,
    SPLITS: tl.constexpr,
    SPLIT_KEYS: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
):
    """Split keys, pass 2: merge the splits' partial softmaxes of BLOCK_M rows of one (batch row,
    head): m = max_s m_s, out = sum_s exp2(m_s - m) acc_s / sum_s exp2(m_s - m) l_s; rows at or past
    the length get zeros."""
    pid_m = tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    B = tl.num_programs(2)
    length = tl.load(len_ptr + b * stride_len).to(tl.int32)
    length = tl.minimum(tl.maximum(length, 0), T)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    row_ok = rows < length
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    if pid_m * BLOCK_M < length:
        m = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        for s in tl.static_range(SPLITS):  # the running max over the splits that hold keys
            if s * SPLIT_KEYS < length:
                m_s = tl.load(stat_ptr + (((s * B + b) * N_HEAD + h) * T + rows) * 2, mask=row_ok, other=0.0)
                m = tl.maximum(m, m_s)
        total = tl.zeros([BLOCK_M], dtype=tl.float32)
        for s in tl.static_range(SPLITS):
            if s * SPLIT_KEYS < length:
                slot = (s * B + b) * N_HEAD + h
                m_s = tl.load(stat_ptr + (slot * T + rows) * 2, mask=row_ok, other=0.0)
                l_s = tl.load(stat_ptr + (slot * T + rows) * 2 + 1, mask=row_ok, other=0.0)
                scale = tl.where(row_ok, tl.math.exp2(m_s - m), 0.0)
                part = tl.load(part_ptr + (slot * T + rows[:, None]) * BLOCK_D + dims[None, :],
                               mask=row_ok[:, None], other=0.0)  # fmt: skip
                acc += part * scale[:, None]
                total += l_s * scale
        acc = tl.where(row_ok[:, None], acc / tl.where(row_ok, total, 1.0)[:, None], 0.0)
    o_ptrs = out_ptr + b * stride_ob + rows[:, None] * stride_ot + (h * HEAD_DIM + dims)[None, :] * stride_oc
    tl.store(o_ptrs, acc.to(out_ptr.dtype.element_ty), mask=(rows < T)[:, None] & (dims < HEAD_DIM)[None, :])


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


def head_dim(qkv_shape: tuple[int, ...] | torch.Size, n_head: int) -> int:
    """d from qkv's last dim n_head * 3 * d; raises when that does not divide."""
    C = int(qkv_shape[-1])
    if n_head < 1 or C < 3 * n_head or C % (3 * n_head):
        raise ValueError(f"attention: qkv's last dim {C} is not n_head * 3 * d for n_head={n_head}")
    return C // (3 * n_head)


def block_d(d: int) -> int:
    """The kernel's tile width over a head's channels: d rounded up to a power of 2, at least 16 (tl.dot)."""
    return max(16, triton.next_power_of_2(d))


class SplitBlocks(NamedTuple):
    """Split-key launch: query tile, key step and warps of pass 1, keys per split (a multiple of
    block_n), and pass 2's row tile."""

    block_m: int
    block_n: int
    num_warps: int
    split_keys: int
    combine_m: int = 64


def split_blocks(B: int, T: int, n_head: int, dtype: torch.dtype = torch.float16) -> SplitBlocks | None:
    """Split the keys where even 16-row query tiles leave the GPU short of work and each program's
    key loop is long: B * n_head * ceil(T / 16) <= FILL_PROGRAMS and T >= SPLIT_MIN_T (batch 1 at
    T=1024: 128 programs walking 8 key steps each, ~9 µs, where the work needs ~1). Then 64-row
    query tiles and splits of SPLIT_KEYS keys (B=1, T=1024: 16 tiles x 2 heads x 8 splits = 256
    programs of one 128-key step), and a second pass merges the splits. None: one pass
    (`default_blocks`). fp16/bf16 only (fp32 keeps one pass). The TensorRT plugin always runs one pass.
    """
    if dtype == torch.float32 or T < SPLIT_MIN_T or B * n_head * triton.cdiv(T, 16) > FILL_PROGRAMS:
        return None
    return SplitBlocks(64, 128, 4, SPLIT_KEYS)


def launch_attention(
    qkv: torch.Tensor,
    lengths: torch.Tensor,
    n_head: int,
    out: torch.Tensor,
    *,
    block_m: int | None = None,
    block_n: int | None = None,
    num_warps: int | None = None,
    split: SplitBlocks | None | bool = True,
) -> torch.Tensor:
    """Run the kernel(s) into `out` (B, T, n_head * d), any strides; every element of `out` is written.

    Takes the output buffer so tests can poison it and benchmarks can reuse it. Launches on torch's
    current stream. One pass with `default_blocks` tiles, or split keys in two passes where
    `split_blocks` says so (`split=True`); `split=False` forces one pass, a `SplitBlocks` forces that
    split. Tile overrides are for sweeps.
    """
    B, T, _ = qkv.shape
    d = head_dim(qkv.shape, n_head)
    if out.numel() == 0:
        return out
    check_int32_offsets("attention", qkv, out)
    if split is True:  # tile overrides (sweeps) mean one pass
        split = None if block_m or block_n or num_warps else split_blocks(B, T, n_head, qkv.dtype)
    if split:
        return _launch_split(qkv, lengths, n_head, out, d, split)
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
        num_warps=num_warps,
    )
    return out


def _launch_split(
    qkv: torch.Tensor, lengths: torch.Tensor, n_head: int, out: torch.Tensor, d: int, blocks: SplitBlocks
) -> torch.Tensor:
    """The two passes: partial softmaxes per key split into fp32 scratch, then their merge into out."""
    B, T, _ = qkv.shape
    splits = triton.cdiv(T, blocks.split_keys)
    part = torch.empty((splits, B, n_head, T, block_d(d)), dtype=torch.float32, device=qkv.device)
    stat = torch.empty((splits, B, n_head, T, 2), dtype=torch.float32, device=qkv.device)
    wrap_triton(_attention_split_kernel)[(triton.cdiv(T, blocks.block_m), n_head, splits * B)](
        qkv,
        lengths,
        part,
        stat,
        B,
        T,
        qkv.stride(0),
        qkv.stride(1),
        qkv.stride(2),
        lengths.stride(0),
        N_HEAD=n_head,
        SPLIT_KEYS=blocks.split_keys,
        QK_SCALE=qk_scale(d),
        HEAD_DIM=d,
        BLOCK_D=block_d(d),
        BLOCK_M=blocks.block_m,
        BLOCK_N=blocks.block_n,
        FP32_DOT=fp32_dot(qkv.dtype),
        num_warps=blocks.num_warps,
    )
    wrap_triton(_attention_combine_kernel)[(triton.cdiv(T, blocks.combine_m), n_head, B)](
        part,
        stat,
        lengths,
        out,
        T,
        out.stride(0),
        out.stride(1),
        out.stride(2),
        lengths.stride(0),
        N_HEAD=n_head,
        SPLITS=splits,
        SPLIT_KEYS=blocks.split_keys,
        HEAD_DIM=d,
        BLOCK_D=block_d(d),
        BLOCK_M=blocks.combine_m,
        num_warps=4,
    )
    return out


def fp32_dot(dtype: torch.dtype) -> bool:
    """Dot products on fp32 operands in IEEE fp32: for fp32 inputs (no TF32), and for bf16 under
    Triton's CPU interpreter, whose bf16 `tl.dot` returns garbage (triton 3.9, seen in the CPU tests)."""
    return dtype == torch.float32 or (dtype == torch.bfloat16 and os.environ.get("TRITON_INTERPRET") == "1")


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
