"""`torch.ops.fastspeech.attention_ln`: a whole self-attention sublayer after its input projection, one kernel.

Contract: attention_ln(qkv, x, lengths, n_head, fc_weight, fc_bias, ln_weight, ln_bias, eps) -> out
  qkv (B, T, n_head * 3 * d) fp32/fp16/bf16, laid out as the `attention` op reads it (kernels/attention.py);
  x (B, T, H) the sublayer's input (the residual); lengths (B,) int32/int64; fc_weight (H, n_head * d)
  and fc_bias (H,) an `nn.Linear(n_head * d, H)`'s; ln_weight, ln_bias (H,) an `nn.LayerNorm(H)`'s,
  eps its eps; every float tensor of qkv's dtype -> out (B, T, H) of qkv's dtype:
    a = attention(qkv, lengths, n_head)                   (the `attention` op, rounded to the dtype)
    out[b, t] = LayerNorm(a[b, t] @ fc_weight^T + fc_bias + x[b, t])   for t < L = clamp(lengths[b], 0, T)
    out[b, t] = 0                                                       for t >= L
  That is DLE's `MultiHeadAttention` from the scaled dot product on (fc, dropout = identity, residual,
  post-LayerNorm), followed by FastSpeech's row mask, which `FFTBlock` applies anyway.

Why: at batch 1 the sublayer ran as three kernels after the projection (attention, the fc GEMM with
its bias, residual + LayerNorm + mask), each a few microseconds of latency-bound work with a launch gap
between them (docs/kernels.md). Here one program owns BLOCK_M query rows of one batch item for *all*
heads: flash attention over the heads at once (3-D `tl.dot`s, one online softmax per head and row,
keys >= L never loaded), then the (BLOCK_M, n_head * d) result times fc's weight, bias and residual
added, BLOCK_C channels at a time, each stored into `out`; then, after a barrier, the LayerNorm over
the whole row reads them back (from L1/L2: the program's own rows), two-pass in fp32 like
`F.layer_norm`, and overwrites them. Nothing but `out` is written to memory.

The attention part is the `attention` kernel's online softmax with a head axis; the sublayer's first
and last roundings match the unfused path's: the attention result is rounded to the dtype before the fc
product (tensor cores for fp16/bf16, IEEE fp32 for fp32 and under the CPU interpreter's bf16, as in
`attention.fp32_dot`), and fc + bias + residual is rounded to the dtype before the LayerNorm (the
unfused path rounds fc + bias, then adds the residual in fp32), and `out` once at the end.

`attention_ln_layers` is the same math from the `attention` op and PyTorch's layers: the reference
(run in fp32) and the TensorRT path (converters/attention_ln.py: the attention plugin, then TensorRT's
own matmul and normalization layers).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from kernels.attention import FILL_PROGRAMS, attention, block_d, fp32_dot, head_dim, qk_scale
from kernels.utils import check_int32_offsets

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# ---------------------------------------------------------------------------------------------
# Triton kernel
# ---------------------------------------------------------------------------------------------
@triton.jit
def _attention_ln_kernel(
    qkv_ptr,
    x_ptr,
    len_ptr,
    fc_w_ptr,
    fc_b_ptr,
    ln_w_ptr,
    ln_b_ptr,
    out_ptr,
    T,
    stride_qb,
    stride_qt,
    stride_qc,
    stride_xb,
    stride_xt,
    stride_xc,
    stride_ob,
    stride_ot,
    stride_oc,
    stride_len,
    stride_w0,
    stride_w1,
    EPS: tl.constexpr,
    QK_SCALE: tl.constexpr,
    N_HEAD: tl.constexpr,
    BLOCK_HEAD: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    HIDDEN: tl.constexpr,
    BLOCK_C: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    FP32_DOT: tl.constexpr,
):
    pid_m = tl.program_id(0)
    b = tl.program_id(1).to(tl.int64)

    length = tl.load(len_ptr + b * stride_len).to(tl.int32)
    length = tl.minimum(tl.maximum(length, 0), T)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)  # (BLOCK_M,) query rows t
    row_ok = rows < length
    in_t = (rows < T)[:, None]
    o_rows = out_ptr + b * stride_ob + rows[:, None] * stride_ot  # (BLOCK_M, 1)

    if pid_m * BLOCK_M < length:  # else the whole tile is padding: zeros, nothing loaded
        heads = tl.arange(0, BLOCK_HEAD)
        dims = tl.arange(0, BLOCK_D)
        # (BLOCK_HEAD, 1, BLOCK_D): q's column of (head, channel) in qkv; [q | k | v] per head
        q_cols = (heads * 3 * HEAD_DIM)[:, None, None] + dims[None, None, :]
        hd_ok = (heads < N_HEAD)[:, None, None] & (dims < HEAD_DIM)[None, None, :]
        qkv_b = qkv_ptr + b * stride_qb
        q = tl.load(
            qkv_b + rows[None, :, None] * stride_qt + q_cols * stride_qc,
            mask=hd_ok & row_ok[None, :, None],
            other=0.0,
        )  # (BLOCK_HEAD, BLOCK_M, BLOCK_D)
        m_i = tl.full([BLOCK_HEAD, BLOCK_M], float("-inf"), dtype=tl.float32)  # running max (log2 units)
        l_i = tl.zeros([BLOCK_HEAD, BLOCK_M], dtype=tl.float32)  # running sum of exponentials
        acc = tl.zeros([BLOCK_HEAD, BLOCK_M, BLOCK_D], dtype=tl.float32)
        for start_n in range(0, length, BLOCK_N):  # keys >= length are never loaded
            keys = start_n + tl.arange(0, BLOCK_N)
            key_ok = keys < length
            k_ptrs = qkv_b + keys[None, :, None] * stride_qt + (q_cols + HEAD_DIM) * stride_qc
            kv_ok = hd_ok & key_ok[None, :, None]
            k = tl.load(k_ptrs, mask=kv_ok, other=0.0)  # (BLOCK_HEAD, BLOCK_N, BLOCK_D)
            v = tl.load(k_ptrs + HEAD_DIM * stride_qc, mask=kv_ok, other=0.0)
            if FP32_DOT:
                qk = tl.dot(q.to(tl.float32), tl.permute(k.to(tl.float32), (0, 2, 1)), input_precision="ieee")
            else:
                qk = tl.dot(q, tl.permute(k, (0, 2, 1)))
            # (BLOCK_HEAD, BLOCK_M, BLOCK_N) scores, log2 units
            qk = tl.where(key_ok[None, None, :], qk * QK_SCALE, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(qk, 2))  # finite: key start_n < length is valid
            alpha = tl.math.exp2(m_i - m_new)
            p = tl.math.exp2(qk - m_new[:, :, None])
            l_i = l_i * alpha + tl.sum(p, 2)
            if FP32_DOT:
                acc = acc * alpha[:, :, None] + tl.dot(p, v.to(tl.float32), input_precision="ieee")
            else:
                acc = acc * alpha[:, :, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_new
        a = (acc / l_i[:, :, None]).to(qkv_ptr.dtype.element_ty)  # the attention op's output, rounded
        a = tl.reshape(tl.permute(a, (1, 0, 2)), (BLOCK_M, BLOCK_HEAD * BLOCK_D))  # (BLOCK_M, heads * d)
        if FP32_DOT:
            a = a.to(tl.float32)
        k_idx = tl.arange(0, BLOCK_HEAD * BLOCK_D)  # a's columns -> fc's input channel (padding: none)
        k_ch = (k_idx // BLOCK_D) * HEAD_DIM + k_idx % BLOCK_D
        k_ok = (k_idx // BLOCK_D < N_HEAD) & (k_idx % BLOCK_D < HEAD_DIM)

        # Pass 1, BLOCK_C channels at a time (bounded registers and shared memory): y = a @ fc^T + bias
        # + x, stored into out as the dtype rounds it; the LayerNorm then reads those values back.
        total = tl.zeros([BLOCK_M], dtype=tl.float32)
        for c0 in tl.static_range(0, HIDDEN, BLOCK_C):
            cols = c0 + tl.arange(0, BLOCK_C)
            col_ok = cols < HIDDEN
            w = tl.load(
                fc_w_ptr + cols[None, :] * stride_w0 + k_ch[:, None] * stride_w1,
                mask=k_ok[:, None] & col_ok[None, :],
                other=0.0,
            )  # (heads * d, BLOCK_C): w[k, c] = fc_weight[c, k]
            if FP32_DOT:
                y = tl.dot(a, w.to(tl.float32), input_precision="ieee")
            else:
                y = tl.dot(a, w)
            y += tl.load(fc_b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)[None, :]
            x = tl.load(
                x_ptr + b * stride_xb + rows[:, None] * stride_xt + cols[None, :] * stride_xc,
                mask=in_t & col_ok[None, :],
                other=0.0,
            )
            y = (y + x.to(tl.float32)).to(out_ptr.dtype.element_ty)
            total += tl.sum(tl.where(col_ok[None, :], y.to(tl.float32), 0.0), 1)
            tl.store(o_rows + cols[None, :] * stride_oc, y, mask=in_t & col_ok[None, :])
        mean = total / HIDDEN
        tl.debug_barrier()  # pass 1's stores are visible to every thread of the program

        # Pass 2: the variance, two-pass like F.layer_norm; pass 3: normalize, scale, shift, mask.
        squares = tl.zeros([BLOCK_M], dtype=tl.float32)
        for c0 in tl.static_range(0, HIDDEN, BLOCK_C):
            cols = c0 + tl.arange(0, BLOCK_C)
            col_ok = cols < HIDDEN
            y = tl.load(o_rows + cols[None, :] * stride_oc, mask=in_t & col_ok[None, :], other=0.0)
            centered = tl.where(col_ok[None, :], y.to(tl.float32) - mean[:, None], 0.0)
            squares += tl.sum(centered * centered, 1)
        rstd = 1.0 / tl.sqrt(squares / HIDDEN + EPS)
        for c0 in tl.static_range(0, HIDDEN, BLOCK_C):
            cols = c0 + tl.arange(0, BLOCK_C)
            col_ok = cols < HIDDEN
            y = tl.load(o_rows + cols[None, :] * stride_oc, mask=in_t & col_ok[None, :], other=0.0)
            gamma = tl.load(ln_w_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
            beta = tl.load(ln_b_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
            out = (y.to(tl.float32) - mean[:, None]) * rstd[:, None] * gamma[None, :] + beta[None, :]
            out = tl.where(row_ok[:, None], out, 0.0)  # padding rows of a partly valid tile: zeros
            tl.store(
                o_rows + cols[None, :] * stride_oc,
                out.to(out_ptr.dtype.element_ty),
                mask=in_t & col_ok[None, :],
            )
    else:
        for c0 in tl.static_range(0, HIDDEN, BLOCK_C):
            cols = c0 + tl.arange(0, BLOCK_C)
            zeros = tl.zeros([BLOCK_M, BLOCK_C], dtype=out_ptr.dtype.element_ty)
            tl.store(o_rows + cols[None, :] * stride_oc, zeros, mask=in_t & (cols < HIDDEN)[None, :])


# ---------------------------------------------------------------------------------------------
# Launcher
# ---------------------------------------------------------------------------------------------
class Blocks(NamedTuple):
    """One launch configuration: query rows and keys per step, warps, pipeline stages of the key loop."""

    block_m: int
    block_n: int
    num_warps: int
    num_stages: int = 2


def default_blocks(B: int, T: int, dtype: torch.dtype) -> Blocks:
    """The largest query tile (64 or 32 rows) that still gives >= FILL_PROGRAMS programs, else 16.

    A program covers every head, so batch 1 at T=1024 gets 64 programs of 16 rows (the `attention`
    op: 128, one per head). 16-row tiles run long serial key loops: 128 keys per step, else 64.
    Two pipeline stages: the k and v tiles of all heads are buffered per stage (fp32, 128 keys,
    three stages: 384 KB of shared memory, over the H100's 227 KB); fp32 steps 64 keys at most.
    """
    block_m = 16
    for candidate in (64, 32):
        if B * triton.cdiv(T, candidate) >= FILL_PROGRAMS:
            block_m = candidate
            break
    block_n = 128 if block_m == 16 and dtype != torch.float32 else 64
    return Blocks(block_m, block_n, 8 if block_m == 64 else 4)


def block_c(hidden: int) -> int:
    """Channels per step of the fc/LayerNorm epilogue: up to 128 (a (heads * d, 128) weight tile)."""
    return min(128, max(16, triton.next_power_of_2(hidden)))


def launch_attention_ln(
    qkv: torch.Tensor,
    x: torch.Tensor,
    lengths: torch.Tensor,
    n_head: int,
    fc_weight: torch.Tensor,
    fc_bias: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
    out: torch.Tensor,
    *,
    block_m: int | None = None,
    block_n: int | None = None,
    num_warps: int | None = None,
    num_stages: int | None = None,
) -> torch.Tensor:
    """Run the kernel into `out` (B, T, H), any strides; every element of `out` is written.

    Takes the output buffer so tests can poison it and benchmarks can reuse it. Launches on torch's
    current stream. Tile sizes default to `default_blocks`; override them only to sweep. The weight
    vectors must be contiguous (the kernel indexes them with unit stride).
    """
    B, T, H = x.shape
    d = head_dim(qkv.shape, n_head)
    if out.numel() == 0:
        return out
    check_int32_offsets("attention_ln", qkv, x, out)
    blocks = default_blocks(B, T, qkv.dtype)
    block_m = block_m or blocks.block_m
    grid = (triton.cdiv(T, block_m), B)
    fc_bias, ln_weight, ln_bias = (t.contiguous() for t in (fc_bias, ln_weight, ln_bias))
    wrap_triton(_attention_ln_kernel)[grid](
        qkv,
        x,
        lengths,
        fc_weight,
        fc_bias,
        ln_weight,
        ln_bias,
        out,
        T,
        qkv.stride(0),
        qkv.stride(1),
        qkv.stride(2),
        x.stride(0),
        x.stride(1),
        x.stride(2),
        out.stride(0),
        out.stride(1),
        out.stride(2),
        lengths.stride(0),
        fc_weight.stride(0),
        fc_weight.stride(1),
        EPS=float(eps),
        QK_SCALE=qk_scale(d),
        N_HEAD=n_head,
        BLOCK_HEAD=triton.next_power_of_2(n_head),
        HEAD_DIM=d,
        BLOCK_D=block_d(d),
        HIDDEN=H,
        BLOCK_C=block_c(H),
        BLOCK_M=block_m,
        BLOCK_N=block_n or blocks.block_n,
        FP32_DOT=fp32_dot(qkv.dtype),
        num_warps=num_warps or blocks.num_warps,
        num_stages=num_stages or blocks.num_stages,
    )
    return out


# ---------------------------------------------------------------------------------------------
# Plain PyTorch: the op's layers (TensorRT path) and the reference (also the CPU implementation)
# ---------------------------------------------------------------------------------------------
def attention_ln_layers(
    qkv: torch.Tensor,
    x: torch.Tensor,
    lengths: torch.Tensor,
    n_head: int,
    fc_weight: torch.Tensor,
    fc_bias: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """The contract from the `attention` op and PyTorch's layers, in qkv's dtype: what TensorRT builds."""
    a = attention(qkv, lengths, n_head)
    out = F.layer_norm(F.linear(a, fc_weight, fc_bias) + x, (x.shape[-1],), ln_weight, ln_bias, eps)
    valid = torch.arange(x.shape[1], device=x.device)[None, :] < lengths.to(x.device)[:, None]  # (B, T)
    return torch.where(valid[..., None], out, torch.zeros((), dtype=out.dtype, device=out.device))


def attention_ln_reference(
    qkv: torch.Tensor,
    x: torch.Tensor,
    lengths: torch.Tensor,
    n_head: int,
    fc_weight: torch.Tensor,
    fc_bias: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """`attention_ln_layers` with the attention rounded to the dtype (as the kernel does) and the rest
    in fp32, cast to qkv's dtype once."""
    a = attention(qkv, lengths, n_head).float()
    floats = (t.float() for t in (x, fc_weight, fc_bias, ln_weight, ln_bias))
    x32, w, bias, gamma, beta = floats
    out = F.layer_norm(F.linear(a, w, bias) + x32, (x.shape[-1],), gamma, beta, eps)
    valid = torch.arange(x.shape[1], device=x.device)[None, :] < lengths.to(x.device)[:, None]
    return torch.where(valid[..., None], out, 0.0).to(qkv.dtype)


# ---------------------------------------------------------------------------------------------
# torch custom op
# ---------------------------------------------------------------------------------------------
def _check_inputs(
    qkv: torch.Tensor,
    x: torch.Tensor,
    lengths: torch.Tensor,
    n_head: int,
    fc_weight: torch.Tensor,
    fc_bias: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
) -> None:
    """Static checks (shapes, dtypes, devices): safe while tracing."""
    if qkv.dim() != 3 or x.dim() != 3 or qkv.shape[:2] != x.shape[:2]:
        raise ValueError(
            f"attention_ln: qkv (B, T, n_head * 3 * d) and x (B, T, H) must share B and T, "
            f"got {tuple(qkv.shape)} and {tuple(x.shape)}"
        )
    if qkv.dtype not in FLOAT_DTYPES:
        raise ValueError(f"attention_ln: qkv must be float32, float16 or bfloat16, got {qkv.dtype}")
    d, H = head_dim(qkv.shape, n_head), x.shape[2]
    tensors = {"x": (x, x.shape), "fc_weight": (fc_weight, (H, n_head * d))}
    tensors |= {
        name: (t, (H,)) for name, t in (("fc_bias", fc_bias), ("ln_weight", ln_weight), ("ln_bias", ln_bias))
    }
    for name, (t, shape) in tensors.items():
        if tuple(t.shape) != tuple(shape):
            raise ValueError(f"attention_ln: {name} must be {tuple(shape)}, got {tuple(t.shape)}")
        if t.dtype != qkv.dtype:
            raise ValueError(f"attention_ln: {name} is {t.dtype}, qkv is {qkv.dtype}; cast them to one dtype")
        if t.device != qkv.device:
            raise ValueError(f"attention_ln: {name} on {t.device}, qkv on {qkv.device}; move them together")
    if lengths.shape != qkv.shape[:1]:
        raise ValueError(
            f"attention_ln: lengths must be (B,) = ({qkv.shape[0]},), got {tuple(lengths.shape)}"
        )
    if lengths.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"attention_ln: lengths must be int32 or int64, got {lengths.dtype}")
    if lengths.device != qkv.device:
        raise ValueError(
            f"attention_ln: lengths on {lengths.device}, qkv on {qkv.device}; move them together"
        )


@triton_op("fastspeech::attention_ln", mutates_args=())
def attention_ln(
    qkv: torch.Tensor,
    x: torch.Tensor,
    lengths: torch.Tensor,
    n_head: int,
    fc_weight: torch.Tensor,
    fc_bias: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """Dispatch: Triton kernel on CUDA, the PyTorch reference elsewhere (CPU).

    The device branch lives in the body because Inductor traces into a triton_op's body (and ignores
    kernels registered per device) when it compiles; eager CPU calls also reach `_attention_ln_cpu`.
    """
    _check_inputs(qkv, x, lengths, n_head, fc_weight, fc_bias, ln_weight, ln_bias)
    if qkv.is_cuda:
        out = torch.empty(x.shape, dtype=x.dtype, device=x.device)
        return launch_attention_ln(qkv, x, lengths, n_head, fc_weight, fc_bias, ln_weight, ln_bias, eps, out)
    return attention_ln_reference(qkv, x, lengths, n_head, fc_weight, fc_bias, ln_weight, ln_bias, eps)


@attention_ln.register_kernel("cpu")
def _attention_ln_cpu(
    qkv: torch.Tensor,
    x: torch.Tensor,
    lengths: torch.Tensor,
    n_head: int,
    fc_weight: torch.Tensor,
    fc_bias: torch.Tensor,
    ln_weight: torch.Tensor,
    ln_bias: torch.Tensor,
    eps: float,
) -> torch.Tensor:
    """Eager CPU: the PyTorch reference, after the same checks."""
    _check_inputs(qkv, x, lengths, n_head, fc_weight, fc_bias, ln_weight, ln_bias)
    return attention_ln_reference(qkv, x, lengths, n_head, fc_weight, fc_bias, ln_weight, ln_bias, eps)


def _setup_context(ctx, inputs, output) -> None:
    qkv, x, lengths, n_head, fc_weight, fc_bias, ln_weight, ln_bias, eps = inputs
    ctx.save_for_backward(qkv, x, lengths, fc_weight, fc_bias, ln_weight, ln_bias)
    ctx.n_head, ctx.eps = n_head, eps


def _backward(ctx, grad: torch.Tensor) -> tuple:
    """Gradients through the reference: the op has no backward kernel of its own; training
    (scripts/train_demo.py) is the only caller that needs one."""
    qkv, x, lengths, *params = ctx.saved_tensors
    floats = [qkv, x, *params]  # positions 0, 1, 4, 5, 6, 7 of the op's inputs
    positions = [0, 1, 4, 5, 6, 7]
    with torch.enable_grad():
        leaves = [t.detach().requires_grad_() for t in floats]
        q, xx, w, bias, gamma, beta = leaves
        out = attention_ln_layers(q, xx, lengths, ctx.n_head, w, bias, gamma, beta, ctx.eps)
        wanted = [i for i, pos in enumerate(positions) if ctx.needs_input_grad[pos]]
        grads = torch.autograd.grad(out, [leaves[i] for i in wanted], grad) if wanted else ()
    result: list = [None] * 9
    for i, g in zip(wanted, grads):
        result[positions[i]] = g
    return tuple(result)


attention_ln.register_autograd(_backward, setup_context=_setup_context)
