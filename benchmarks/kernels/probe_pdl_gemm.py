"""Probe (issue 17): how much of a small GEMM's time in a CUDA graph is its launch and its weight loads?

At batch 1 the engine is ~112 kernels of 1.5-8 µs; the phoneme side's cuBLAS GEMMs (M = 32-256 rows)
take 3.4-5.4 µs each for work that needs well under 1 µs. This probe times a chain shaped like the
phoneme side's GEMMs (per layer: qkv 384 -> 1152, fc 128 -> 384, w_1 taps 384 -> 4608, w_2 taps
1536 -> 1152; each GEMM reads the previous one's output, 6 layers = 24 GEMMs) captured in one CUDA graph,
cold L2, as:
- `cublas`: torch.mm (what the engine runs);
- `triton`: a plain Triton GEMM (one program per 64 x 64 output tile, K steps of 64);
- `triton_pdl`: the same launched with programmatic dependent launch (Hopper): each program lets the next
  kernel launch at once (`gdc_launch_dependents`) and waits for the previous one's writes
  (`gdc_wait`) before its first load, so launches overlap;
- `triton_pdl_prefetch`: as `triton_pdl`, but before waiting each program prefetches its weight tile
  into L2 (weights do not depend on the previous kernel), so the weight loads overlap too.
Also a chain of 100 one-program kernels (`floor`, with and without PDL): the dependent-launch floor alone.

Run on a CUDA GPU (sm90): python -m benchmarks.kernels.probe_pdl_gemm [--rows 32,128,256]
"""

from __future__ import annotations

import argparse
import statistics
from functools import partial

import torch
import triton
import triton.language as tl

from benchmarks.kernels.common import environment, graph_of, markdown_table, time_us
from kernels.linear import prefetch_l2

# (K, N) of one layer's GEMMs in order; each reads the first K columns of the previous output.
LAYER = [(384, 1152), (128, 384), (384, 4608), (1536, 1152)]
LAYERS = 6
BM, BN, BK = 64, 64, 64
SHAPES = [(384, 1152), (128, 384), (384, 4608), (1536, 1536)]  # --shapes: (K, N), N >= K to chain


@triton.jit
def _mm_kernel(
    a_ptr, w_ptr, b_ptr, c_ptr, M, stride_am, stride_wn, stride_cm,
    K: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    PDL: tl.constexpr, PREFETCH: tl.constexpr, LINES: tl.constexpr, HAS_BIAS: tl.constexpr = False,
):  # fmt: skip
    """c = a @ w^T (+ b): one program per output tile; with PDL it lets the next kernel launch at once,
    (with PREFETCH) prefetches its weight rows into L2, then waits for the previous kernel."""
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    rk = tl.arange(0, BLOCK_K)
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()
        if PREFETCH:  # one prefetch per 128-byte line of this program's weight rows
            line = tl.minimum(tl.arange(0, LINES), K // 64 - 1)
            prefetch_l2(w_ptr + rn[:, None] * stride_wn + line[None, :] * 64)
        tl.extra.cuda.gdc_wait()
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        a = tl.load(a_ptr + rm[:, None] * stride_am + (k0 + rk)[None, :], mask=rm[:, None] < M, other=0.0)
        w = tl.load(w_ptr + rn[:, None] * stride_wn + (k0 + rk)[None, :])
        acc = tl.dot(a, w.T, acc)
    if HAS_BIAS:
        acc += tl.load(b_ptr + rn).to(tl.float32)[None, :]
    tl.store(
        c_ptr + rm[:, None] * stride_cm + rn[None, :], acc.to(c_ptr.dtype.element_ty), mask=rm[:, None] < M
    )


@triton.jit
def _tiny_kernel(x_ptr, PDL: tl.constexpr):
    if PDL:
        tl.extra.cuda.gdc_launch_dependents()
        tl.extra.cuda.gdc_wait()
    tl.store(x_ptr, tl.load(x_ptr) + 1)


def tiny_chain(x: torch.Tensor, pdl: bool) -> None:
    for _ in range(100):
        _tiny_kernel[(1,)](x, PDL=pdl, launch_pdl=pdl)


def chain(M: int, variant: str, weights: list[torch.Tensor], outs: list[torch.Tensor], x: torch.Tensor):
    """Run the GEMM chain from x; returns the last output. Variant names: cublas, triton, triton_pdl,
    triton_pdl_prefetch, optionally suffixed _BMxBN (tile)."""
    name, _, tile = variant.partition("_bm")
    bm, bn = (int(v) for v in tile.split("x")) if tile else (BM, BN)
    a = x
    for w, out in zip(weights, outs):
        K = w.shape[1]
        a = a[:, :K]
        if name == "cublas":
            torch.mm(a, w.T, out=out)
        else:
            pdl = name != "triton"
            grid = (triton.cdiv(M, bm), w.shape[0] // bn)
            _mm_kernel[grid](
                a, w, w, out, M, a.stride(0), w.stride(0), out.stride(0),
                K=K, BLOCK_M=bm, BLOCK_N=bn, BLOCK_K=BK, PDL=pdl, PREFETCH=name == "triton_pdl_prefetch",
                LINES=triton.next_power_of_2(K // 64), num_warps=4, num_stages=3, launch_pdl=pdl,
            )  # fmt: skip
        a = out
    return a


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="32,128,256", help="M values (B * T of the phoneme side)")
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument(
        "--shapes", action="store_true", help="also chains of 24 GEMMs of one shape each (K, N), per tile"
    )
    args = parser.parse_args()
    torch.manual_seed(0)
    dev = "cuda"
    rows = []
    x_tiny = torch.zeros(1, device=dev, dtype=torch.int32)
    for pdl in (False, True):
        g = graph_of(partial(tiny_chain, x_tiny, pdl))
        us = time_us(g.replay, reps=args.reps)
        rows.append(
            {"variant": f"floor{'_pdl' if pdl else ''}", "M": 1, "chain": round(us, 1), "per": round(us / 100, 2),
             "rel_err": "", "spread": ""}
        )  # fmt: skip
    for M in (int(m) for m in args.rows.split(",")):
        weights = [torch.randn(n, k, device=dev).div_(k**0.5).half() for _ in range(LAYERS) for k, n in LAYER]
        x = torch.randn(M, 1536, device=dev).half()
        results = {}
        for variant in ("cublas", "triton", "triton_pdl", "triton_pdl_prefetch"):
            outs = [torch.empty(M, w.shape[0], device=dev, dtype=torch.half) for w in weights]
            g = graph_of(partial(chain, M, variant, weights, outs, x))
            g.replay()
            torch.cuda.synchronize()
            results[variant] = outs[-1].float().clone()
            times = [time_us(g.replay, reps=args.reps) for _ in range(3)]
            us = statistics.median(times)
            ref = results["cublas"]
            err = ((results[variant] - ref).abs().max() / ref.abs().max()).item()
            rows.append(
                {"variant": variant, "M": M, "chain": round(us, 1), "per": round(us / len(weights), 2),
                 "rel_err": f"{err:.1e} (|ref| {ref.abs().mean().item():.2f})",
                 "spread": f"{min(times):.1f}-{max(times):.1f}"}
            )  # fmt: skip
            print(rows[-1], flush=True)
        if not args.shapes:
            continue
        for K, N in SHAPES:
            weights = [torch.randn(N, K, device=dev).div_(K**0.5).half() for _ in range(24)]
            outs = [torch.empty(M, N, device=dev, dtype=torch.half) for _ in weights]
            for variant in ("cublas", "triton_pdl_prefetch", "triton_pdl_prefetch_bm32x64",
                            "triton_pdl_prefetch_bm64x32", "triton_pdl_prefetch_bm32x32"):  # fmt: skip
                g = graph_of(partial(chain, M, variant, weights, outs, x))
                us = statistics.median(time_us(g.replay, reps=args.reps) for _ in range(3))
                rows.append(
                    {"variant": f"{variant} K={K} N={N}", "M": M, "chain": round(us, 1), "per": round(us / 24, 2),
                     "rel_err": "", "spread": ""}
                )  # fmt: skip
                print(rows[-1], flush=True)
    print(environment())
    print(
        markdown_table(
            rows,
            [
                ("variant", "variant"),
                ("M", "M"),
                ("chain", "µs per chain"),
                ("per", "µs per kernel"),
                ("spread", "3 medians"),
                ("rel_err", "max err vs cuBLAS"),
            ],
        )
    )


if __name__ == "__main__":
    main()
