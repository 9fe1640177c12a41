"""Probe (issue 17): the attention kernel with the output projection `fc` in its epilogue, per head.

Each program of the attention kernel owns BLOCK_M query rows of one (batch row, head). Here it also
multiplies its (BLOCK_M, d) output by that head's d columns of fc's weight and stores the (BLOCK_M,
C_out) product in fp32 to its own head's partial buffer (n_head, B, T, C_out): fc(out) =
sum_h partial[h] + bias. In the model the sum and bias would ride in the LayerNorm kernel that
follows (it already reads fc's output and the residual), so the fc GEMM's launch goes away.

Times the two sequences as CUDA-graph replays (20 copies of the sequence per graph, warm L2):
  now:   attention op -> F.linear(out, W, b)            (the Triton kernel, then cuBLAS)
  fused: attention_fc -> nothing                        (+ `sum`: the partials summed, an upper bound)

    python -m benchmarks.kernels.probe_attention_fc
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from kernels.attention import block_d, default_blocks, launch_attention, qk_scale

N_HEAD, D, C_OUT = 2, 64, 384


@triton.jit
def _attention_fc_kernel(
    qkv_ptr,
    len_ptr,
    w_ptr,
    out_ptr,
    T,
    stride_qb,
    stride_qt,
    stride_qc,
    stride_wo,
    stride_wi,
    stride_oh,
    stride_ob,
    stride_ot,
    stride_oc,
    QK_SCALE: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_D: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    C_OUT: tl.constexpr,
    BLOCK_C: tl.constexpr,
):
    pid_m = tl.program_id(0)
    h = tl.program_id(1)
    b = tl.program_id(2).to(tl.int64)
    length = tl.load(len_ptr + b).to(tl.int32)
    length = tl.minimum(tl.maximum(length, 0), T)
    rows = pid_m * BLOCK_M + tl.arange(0, BLOCK_M)
    dims = tl.arange(0, BLOCK_D)
    dim_ok = dims < HEAD_DIM
    q_base = qkv_ptr + b * stride_qb + (h * 3 * HEAD_DIM) * stride_qc
    k_base = q_base + HEAD_DIM * stride_qc
    v_base = k_base + HEAD_DIM * stride_qc
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    if pid_m * BLOCK_M < length:
        row_ok = rows < length
        q = tl.load(
            q_base + rows[:, None] * stride_qt + dims[None, :] * stride_qc,
            mask=row_ok[:, None] & dim_ok[None, :],
            other=0.0,
        )
        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        for start_n in range(0, length, BLOCK_N):
            cols = start_n + tl.arange(0, BLOCK_N)
            key_ok = cols < length
            offs = cols[:, None] * stride_qt + dims[None, :] * stride_qc
            k = tl.load(k_base + offs, mask=key_ok[:, None] & dim_ok[None, :], other=0.0)
            v = tl.load(v_base + offs, mask=key_ok[:, None] & dim_ok[None, :], other=0.0)
            qk = tl.dot(q, tl.trans(k))
            qk = tl.where(key_ok[None, :], qk * QK_SCALE, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(qk, 1))
            alpha = tl.math.exp2(m_i - m_new)
            p = tl.math.exp2(qk - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_new
        acc = acc / l_i[:, None]
        acc = tl.where(row_ok[:, None], acc, 0.0)
    a = acc.to(w_ptr.dtype.element_ty)  # the attention output rounded as fc's input is today
    out_base = out_ptr + h * stride_oh + b * stride_ob + rows[:, None] * stride_ot
    for c0 in tl.static_range(0, C_OUT, BLOCK_C):
        co = c0 + tl.arange(0, BLOCK_C)
        w = tl.load(
            w_ptr + co[:, None] * stride_wo + (h * HEAD_DIM + dims)[None, :] * stride_wi,
            mask=(co < C_OUT)[:, None] & dim_ok[None, :],
            other=0.0,
        )
        part = tl.dot(a, tl.trans(w))  # (BLOCK_M, BLOCK_C) fp32
        tl.store(out_base + co[None, :] * stride_oc, part, mask=(rows < T)[:, None] & (co < C_OUT)[None, :])


def attention_fc(qkv, lengths, w, out, block_m=None, block_n=None, num_warps=None, block_c=128):
    B, T, _ = qkv.shape
    blocks = default_blocks(B, T, N_HEAD, qkv.dtype)
    block_m, block_n = block_m or blocks.block_m, block_n or blocks.block_n
    grid = (triton.cdiv(T, block_m), N_HEAD, B)
    _attention_fc_kernel[grid](
        qkv, lengths, w, out, T,
        qkv.stride(0), qkv.stride(1), qkv.stride(2), w.stride(0), w.stride(1),
        out.stride(0), out.stride(1), out.stride(2), out.stride(3),
        QK_SCALE=qk_scale(D), HEAD_DIM=D, BLOCK_D=block_d(D), BLOCK_M=block_m, BLOCK_N=block_n,
        C_OUT=w.shape[0], BLOCK_C=block_c, num_warps=num_warps or blocks.num_warps,
    )  # fmt: skip
    return out


def graph_us(fn, copies: int = 20, replays: int = 50) -> float:
    """µs per sequence: `copies` sequences captured in one CUDA graph, median of `replays` replays."""
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):
        for _ in range(3):
            fn()
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(copies):
            fn()
    times = []
    for _ in range(replays):
        a, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        a.record()
        g.replay()
        e.record()
        e.synchronize()
        times.append(a.elapsed_time(e) * 1e3 / copies)
    return sorted(times)[len(times) // 2]


def main() -> None:
    torch.manual_seed(0)
    print(f"{torch.cuda.get_device_name()}, torch {torch.__version__}, triton {triton.__version__}, fp16")
    print("| B | T | fill | now: attention + fc µs | fused µs | fused + sum µs | fused, 8 warps | fused, BLOCK_C 64 | max err |")
    print("|---|---|---|---|---|---|---|---|---|")
    for B, T in [(1, 32), (1, 128), (1, 256), (1, 1024), (2, 1024), (8, 128), (8, 1024), (64, 128), (64, 1024)]:
        for fill in (1.0, 0.88):
            dt = torch.float16
            qkv = torch.randn(B, T, N_HEAD * 3 * D, device="cuda", dtype=dt)
            lengths = torch.full((B,), max(1, round(fill * T)), device="cuda", dtype=torch.long)
            w = (torch.randn(C_OUT, N_HEAD * D, device="cuda") / 12).to(dt)
            bias = torch.randn(C_OUT, device="cuda", dtype=dt)
            att = torch.empty(B, T, N_HEAD * D, device="cuda", dtype=dt)
            y = torch.empty(B, T, C_OUT, device="cuda", dtype=dt)
            parts = torch.full((N_HEAD, B, T, C_OUT), float("nan"), device="cuda")
            ysum = torch.empty(B, T, C_OUT, device="cuda")

            def now():
                launch_attention(qkv, lengths, N_HEAD, att)
                torch.addmm(bias, att.view(-1, N_HEAD * D), w.t(), out=y.view(-1, C_OUT))

            def fused(**kw):
                attention_fc(qkv, lengths, w, parts, **kw)

            def fused_sum():
                fused()
                torch.sum(parts, 0, out=ysum)

            now()
            fused()
            torch.cuda.synchronize()
            ref = (parts.sum(0) + bias.float()).to(dt)
            err = (ref.float() - y.float()).abs().max().item()
            t_now, t_f, t_fs = graph_us(now), graph_us(fused), graph_us(fused_sum)
            t_f8 = graph_us(lambda: fused(num_warps=8))
            t_c64 = graph_us(lambda: fused(block_c=64))
            print(
                f"| {B} | {T} | {fill} | {t_now:.2f} | {t_f:.2f} | {t_fs:.2f} | {t_f8:.2f} | {t_c64:.2f} | {err:.4f} |",
                flush=True,
            )


if __name__ == "__main__":
    main()
