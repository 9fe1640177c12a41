"""Probe (issue 17, batch 64): the attention op's kernel through tensor descriptors, persistent.

Run 37 found the conv op 1.2x faster once its tiles moved through tensor descriptors (TMA) with a
persistent grid whose loops Triton flattens. Here the same for `kernels/attention.py`'s kernel: q, k
and v tiles loaded through a (B, T, n_head * 3 * d) descriptor of the fused projection at each head's
column offsets, the output stored through a (B, T, n_head * d) one; one program per (query tile,
head, item) or persistent. Against the op as it is and SDPA's flash backend (no mask, contiguous
q/k/v, a lower bound that cannot skip padding).

    python -m benchmarks.kernels.probe_attention_tma          # CUDA only; prints one table per shape

B >= 8 timed cold-L2 (benchmarks/kernels/common.py); B = 1 as 20 launches in one CUDA graph, per launch.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from benchmarks.kernels import common
from kernels.attention import attention_reference, default_blocks, launch_attention, qk_scale

N_HEAD, D = 2, 64


@triton.jit
def _attention_tma_kernel(
    qkv_ptr,
    len_ptr,
    out_ptr,
    B,
    T,
    QK_SCALE: tl.constexpr,
    N_HEAD: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    PROGRAMS: tl.constexpr,
    FLATTEN: tl.constexpr,
):
    C: tl.constexpr = N_HEAD * 3 * HEAD_DIM
    q_desc = tl.make_tensor_descriptor(qkv_ptr, [B, T, C], [T * C, C, 1], [1, BLOCK_M, HEAD_DIM])
    kv_desc = tl.make_tensor_descriptor(qkv_ptr, [B, T, C], [T * C, C, 1], [1, BLOCK_N, HEAD_DIM])
    o_desc = tl.make_tensor_descriptor(
        out_ptr,
        [B, T, N_HEAD * HEAD_DIM],
        [T * N_HEAD * HEAD_DIM, N_HEAD * HEAD_DIM, 1],
        [1, BLOCK_M, HEAD_DIM],
    )
    tiles_m = tl.cdiv(T, BLOCK_M)
    for tile in tl.range(tl.program_id(0), B * N_HEAD * tiles_m, PROGRAMS, flatten=FLATTEN):
        m = tile % tiles_m
        h = (tile // tiles_m) % N_HEAD
        b = tile // (tiles_m * N_HEAD)
        length = tl.minimum(tl.maximum(tl.load(len_ptr + b).to(tl.int32), 0), T)
        t0 = m * BLOCK_M
        steps = tl.where(t0 < length, tl.cdiv(length, BLOCK_N), 0)
        col = h * 3 * HEAD_DIM
        q = q_desc.load([b, t0, col]).reshape(BLOCK_M, HEAD_DIM)
        acc = tl.zeros([BLOCK_M, HEAD_DIM], dtype=tl.float32)
        m_i = tl.full([BLOCK_M], float("-inf"), dtype=tl.float32)
        l_i = tl.zeros([BLOCK_M], dtype=tl.float32)
        for i in range(steps):
            s0 = i * BLOCK_N
            k = kv_desc.load([b, s0, col + HEAD_DIM]).reshape(BLOCK_N, HEAD_DIM)
            v = kv_desc.load([b, s0, col + 2 * HEAD_DIM]).reshape(BLOCK_N, HEAD_DIM)
            qk = tl.dot(q, k.T) * QK_SCALE
            qk = tl.where((s0 + tl.arange(0, BLOCK_N) < length)[None, :], qk, float("-inf"))
            m_new = tl.maximum(m_i, tl.max(qk, 1))
            alpha = tl.math.exp2(m_i - m_new)
            p = tl.math.exp2(qk - m_new[:, None])
            l_i = l_i * alpha + tl.sum(p, 1)
            acc = acc * alpha[:, None] + tl.dot(p.to(v.dtype), v)
            m_i = m_new
        acc = acc / tl.where(l_i > 0, l_i, 1.0)[:, None]
        acc = tl.where((t0 + tl.arange(0, BLOCK_M) < length)[:, None], acc, 0.0)
        o_desc.store([b, t0, h * HEAD_DIM], acc.to(out_ptr.dtype.element_ty).reshape(1, BLOCK_M, HEAD_DIM))


def launch_tma(qkv, lengths, out, bm, bn, warps, stages, persistent, flatten):
    B, T, _ = qkv.shape
    tiles = B * N_HEAD * triton.cdiv(T, bm)
    sms = torch.cuda.get_device_properties(qkv.device).multi_processor_count if qkv.is_cuda else 132
    programs = min(tiles, sms) if persistent else tiles
    _attention_tma_kernel[(programs,)](
        qkv, lengths, out, B, T, QK_SCALE=qk_scale(D), N_HEAD=N_HEAD, HEAD_DIM=D, BLOCK_M=bm, BLOCK_N=bn,
        PROGRAMS=programs, FLATTEN=flatten, num_warps=warps, num_stages=stages,
    )  # fmt: skip
    return out


def graph_us(fn, launches: int = 20, replays: int = 50) -> float:
    """Per launch, `launches` back-to-back launches captured in one CUDA graph (warm L2)."""
    fn()
    torch.cuda.synchronize()
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        for _ in range(launches):
            fn()
    g.replay()
    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    torch.cuda.synchronize()
    start.record()
    for _ in range(replays):
        g.replay()
    end.record()
    torch.cuda.synchronize()
    return 1e3 * start.elapsed_time(end) / (launches * replays)


CONFIGS = [  # (BLOCK_M, BLOCK_N, warps, stages)
    (128, 64, 8, 2), (128, 64, 8, 3), (128, 128, 8, 2), (128, 64, 4, 3), (64, 64, 4, 3), (64, 128, 4, 2),
    (32, 128, 4, 2), (16, 128, 4, 2),
]  # fmt: skip


def probe(B: int, T: int, fill: float) -> None:
    torch.manual_seed(0)
    qkv = torch.randn(B, T, N_HEAD * 3 * D, device="cuda", dtype=torch.float16)
    lengths = torch.full((B,), max(1, round(fill * T)), device="cuda", dtype=torch.int32)
    ref = attention_reference(qkv, lengths, N_HEAD).float()
    out = torch.empty(B, T, N_HEAD * D, device="cuda", dtype=torch.float16)
    timer = common.time_us if B >= 8 else graph_us
    flops = 4 * B * N_HEAD * T * T * D
    rows = []

    def add(name, fn, check=True):
        try:
            out.fill_(float("nan"))
            fn()
            torch.cuda.synchronize()
            err = (out.float() - ref).abs().max().item() if check else float("nan")
            us = timer(fn)
            rows.append((name, us, flops / us / 1e6, err))
        except Exception as e:  # noqa: BLE001 - a variant that does not compile is a result too
            rows.append(
                (name, float("nan"), float("nan"), f"{type(e).__name__}: {str(e).splitlines()[0][:90]}")
            )

    d = default_blocks(B, T, N_HEAD)
    add(f"op today {d.block_m}x{d.block_n} w{d.num_warps}",
        common.direct_launch(lambda: launch_attention(qkv, lengths, N_HEAD, out)))  # fmt: skip
    q, k, v = (t.contiguous() for t in qkv.view(B, T, N_HEAD, 3 * D).transpose(1, 2).split(D, dim=-1))
    add(
        "SDPA flash (no mask, contiguous q/k/v)", lambda: F.scaled_dot_product_attention(q, k, v), check=False
    )
    for bm, bn, warps, stages in CONFIGS:
        for persistent, flatten in ((False, False), (True, False), (True, True)):
            name = f"tma {bm}x{bn} w{warps} s{stages} {'persist' if persistent else 'grid'}{' flat' if flatten else ''}"
            add(
                name, lambda c=(bm, bn, warps, stages, persistent, flatten): launch_tma(qkv, lengths, out, *c)
            )
    print(f"\n### B={B} T={T} fill={fill} fp16 ({'cold L2' if B >= 8 else 'CUDA graph, per launch'})")
    print("| variant | µs | TFLOP/s (every key) | max abs err |\n|---|---|---|---|")
    for name, us, tf, err in rows:
        e = f"{err:.3g}" if isinstance(err, float) else err
        print(f"| {name} | {us:.1f} | {tf:.0f} | {e} |")


def main() -> None:
    triton.set_allocator(lambda size, align, stream: torch.empty(size, dtype=torch.int8, device="cuda"))
    print(common.environment())
    for B, T, fill in (
        (64, 1024, 1.0),
        (64, 1024, 0.88),
        (64, 128, 0.88),
        (8, 1024, 0.88),
        (1, 1024, 0.88),
        (1, 128, 0.88),
    ):
        probe(B, T, fill)


if __name__ == "__main__":
    main()
