"""Probe (issue 17, batch 64): can the FFN convs reach cuBLAS's rate as Triton kernels on Hopper's copy engine?

Run 30's batch-64 profile (H200): the `conv1d` op's w_1 (384 -> 1536) runs at ~475 TFLOP/s while
cuBLAS runs the same-size w_2 GEMM (1536 -> 3 x 384 taps) at ~680. The op loads its tiles through
masked pointer loads, one program per output tile. Here the same implicit GEMM loads them with tensor
descriptors (TMA): x as a (B, T, C_in) descriptor, so a tap's shifted rows outside [0, T) come back as
zeros from the copy engine itself (the conv's padding, no masks), the weight as (k, C_out, C_in), the
output stored through a (B, T, C_out) descriptor (rows past T clipped). Row tiles stay inside one
batch item. Variants: one program per tile, or persistent (one program per SM walking tiles), with
Triton's `flatten` and `warp_specialize` loop options where they compile.

    python -m benchmarks.kernels.probe_conv1d_tma          # CUDA only; prints one table

Batch 64 is timed cold-L2 (benchmarks/kernels/common.py); batch 1 as 20 launches in one CUDA graph
(as the engine replays them), per launch. `cuBLAS` rows: torch.mm on an already-unfolded x (w_1:
(B T, 3 C_in) @ (3 C_in, C_out)) or into the taps (w_2: (B T, C_in) @ (C_in, 3 C_out)), the GEMM alone.
"""

from __future__ import annotations

import itertools

import torch
import triton
import triton.language as tl

from benchmarks.kernels import common
from kernels.conv1d import conv1d_reference, default_blocks, launch_conv1d


@triton.jit
def _conv1d_tma_kernel(
    x_ptr,
    w_ptr,
    bias_ptr,
    len_ptr,
    out_ptr,
    B,
    T,
    C_IN: tl.constexpr,
    C_OUT: tl.constexpr,
    KSIZE: tl.constexpr,
    PADDING: tl.constexpr,
    RELU: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    PROGRAMS: tl.constexpr,
    FLATTEN: tl.constexpr,
    WARP_SPECIALIZE: tl.constexpr,
):
    x_desc = tl.make_tensor_descriptor(
        x_ptr, shape=[B, T, C_IN], strides=[T * C_IN, C_IN, 1], block_shape=[1, BLOCK_M, BLOCK_K]
    )
    w_desc = tl.make_tensor_descriptor(
        w_ptr, shape=[KSIZE, C_OUT, C_IN], strides=[C_OUT * C_IN, C_IN, 1], block_shape=[1, BLOCK_N, BLOCK_K]
    )
    o_desc = tl.make_tensor_descriptor(
        out_ptr, shape=[B, T, C_OUT], strides=[T * C_OUT, C_OUT, 1], block_shape=[1, BLOCK_M, BLOCK_N]
    )
    tiles_t = tl.cdiv(T, BLOCK_M)
    tiles_m = B * tiles_t
    tiles_n: tl.constexpr = (C_OUT + BLOCK_N - 1) // BLOCK_N
    C_BLOCKS: tl.constexpr = (C_IN + BLOCK_K - 1) // BLOCK_K
    for tile in tl.range(
        tl.program_id(0), tiles_m * tiles_n, PROGRAMS, flatten=FLATTEN, warp_specialize=WARP_SPECIALIZE
    ):
        group = tile // (GROUP_M * tiles_n)
        first_m = group * GROUP_M
        group_rows = tl.minimum(tiles_m - first_m, GROUP_M)
        pid_m = first_m + (tile % (GROUP_M * tiles_n)) % group_rows
        pid_n = (tile % (GROUP_M * tiles_n)) // group_rows
        b = pid_m // tiles_t
        t0 = (pid_m - b * tiles_t) * BLOCK_M
        n0 = pid_n * BLOCK_N
        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for step in range(KSIZE * C_BLOCKS):
            j = step // C_BLOCKS
            c0 = (step - j * C_BLOCKS) * BLOCK_K
            a = x_desc.load([b, t0 + j - PADDING, c0]).reshape(BLOCK_M, BLOCK_K)
            w = w_desc.load([j, n0, c0]).reshape(BLOCK_N, BLOCK_K)
            acc = tl.dot(a, w.T, acc)
        cols = n0 + tl.arange(0, BLOCK_N)
        acc += tl.load(bias_ptr + cols, mask=cols < C_OUT, other=0.0).to(tl.float32)[None, :]
        if RELU:
            acc = tl.maximum(acc, 0.0)
        t = t0 + tl.arange(0, BLOCK_M)
        acc = tl.where((t < tl.load(len_ptr + b))[:, None], acc, 0.0)
        o_desc.store([b, t0, n0], acc.to(out_ptr.dtype.element_ty).reshape(1, BLOCK_M, BLOCK_N))


def _alloc(size: int, align: int, stream) -> torch.Tensor:
    return torch.empty(size, dtype=torch.int8, device="cuda")


def launch_tma(x, weight, bias, lengths, out, cfg):
    bm, bn, bk, warps, stages, persistent, flatten, ws = cfg
    B, T, c_in = x.shape
    k, c_out, _ = weight.shape
    tiles = B * triton.cdiv(T, bm) * triton.cdiv(c_out, bn)
    sms = torch.cuda.get_device_properties(x.device).multi_processor_count
    programs = min(tiles, sms) if persistent else tiles
    _conv1d_tma_kernel[(programs,)](
        x, weight, bias, lengths, out, B, T,
        C_IN=c_in, C_OUT=c_out, KSIZE=k, PADDING=1, RELU=c_out > c_in,
        BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=bk, GROUP_M=8, PROGRAMS=programs,
        FLATTEN=flatten, WARP_SPECIALIZE=ws, num_warps=warps, num_stages=stages,
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


TILES = [(128, 256, 64, 8, 3), (128, 256, 64, 8, 4), (128, 128, 64, 8, 4), (128, 128, 64, 4, 4),
         (256, 128, 64, 8, 3), (64, 128, 64, 4, 4), (64, 64, 64, 4, 4), (64, 256, 64, 4, 3)]  # fmt: skip
MODES = [(False, False, False), (True, False, False), (True, True, False), (True, True, True), (True, False, True)]


def probe(B: int, T: int, c_in: int, c_out: int) -> None:
    torch.manual_seed(0)
    dtype, dev = torch.float16, "cuda"
    n = max(1, round(0.88 * T))
    lengths = torch.full((B,), n, device=dev, dtype=torch.int32)
    x = torch.randn(B, T, c_in, device=dev, dtype=dtype)
    x[:, n:] = 0
    weight = (torch.randn(3, c_out, c_in, device=dev) / (3 * c_in) ** 0.5).to(dtype)
    bias = torch.randn(c_out, device=dev, dtype=dtype)
    relu = c_out > c_in
    ref = conv1d_reference(x, weight, bias, lengths, 1, relu).float()
    out = torch.empty(B, T, c_out, device=dev, dtype=dtype)
    flops = 2 * B * T * c_in * c_out * 3
    timer = common.time_us if B >= 8 else graph_us
    rows = []

    def add(name, fn, check=True):
        try:
            out.fill_(float("nan"))
            fn()
            torch.cuda.synchronize()
            err = (out.float() - ref).abs().max().item() if check else float("nan")
            us = timer(fn)
            rows.append((name, us, flops / us / 1e6, err))
        except Exception as e:  # a variant that does not compile is a result too
            rows.append((name, float("nan"), float("nan"), f"{type(e).__name__}: {str(e).splitlines()[0][:90]}"))

    d = default_blocks(B * T, c_out, c_in, dtype)
    add(f"op today {d.block_m}x{d.block_n}x{d.block_k} w{d.num_warps} s{d.num_stages}",
        common.direct_launch(lambda: launch_conv1d(x, weight, bias, lengths, 1, relu, out)))  # fmt: skip
    if c_out > c_in:  # w_1: the GEMM over an unfolded x
        a = torch.cat([torch.nn.functional.pad(x, (0, 0, 1 - j, j - 1))[:, :T] for j in range(3)], -1)
        a = a.reshape(B * T, 3 * c_in)
        wt = weight.permute(0, 2, 1).reshape(3 * c_in, c_out)
        o2 = torch.empty(B * T, c_out, device=dev, dtype=dtype)
        add("cuBLAS mm, unfolded x (GEMM only)", lambda: torch.mm(a, wt, out=o2), check=False)
    else:  # w_2: the GEMM into the taps
        a = x.reshape(B * T, c_in)
        wt = weight.reshape(3 * c_out, c_in).t()
        o2 = torch.empty(B * T, 3 * c_out, device=dev, dtype=dtype)
        add("cuBLAS mm into taps (GEMM only)", lambda: torch.mm(a, wt, out=o2), check=False)
    for tile, mode in itertools.product(TILES, MODES):
        bm, bn = tile[:2]
        if bn > c_out or (c_out % bn and bn > 64):
            continue
        cfg = (*tile, *mode)
        name = f"tma {bm}x{bn}x{tile[2]} w{tile[3]} s{tile[4]} {'persist' if mode[0] else 'grid'}"
        name += " flat" * mode[1] + " ws" * mode[2]
        add(name, lambda cfg=cfg: launch_tma(x, weight, bias, lengths, out, cfg))
    print(f"\n### B={B} T={T} {c_in}->{c_out} fp16 ({'cold L2' if B >= 8 else 'CUDA graph, per launch'})")
    print("| variant | µs | TFLOP/s | max abs err |\n|---|---|---|---|")
    for name, us, tf, err in rows:
        e = f"{err:.3g}" if isinstance(err, float) else err
        print(f"| {name} | {us:.1f} | {tf:.0f} | {e} |")


def main() -> None:
    triton.set_allocator(_alloc)
    print(common.environment())
    for B, T in ((64, 1024), (1, 1024), (1, 128)):
        for c_in, c_out in ((384, 1536), (1536, 384)):
            probe(B, T, c_in, c_out)


if __name__ == "__main__":
    main()
