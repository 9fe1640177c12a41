"""Probe (issue 17, run 118): can a Triton kernel run Griffin-Lim's FFT near cuFFT's time?

A Griffin-Lim iteration is 4 kernels: two cuFFT calls and our two Triton kernels between them
(`overlap_add_frames`, `griffin_lim_step`). Fusing those away needs the FFT inside a Triton kernel.
This probe writes the M-point complex FFT (DLE's n_fft 1024 runs as M = 512 packed pairs) the
four-step way, M = R1 x R2 with x[n1 R2 + n2] and X[k1 + R1 k2]:
  Y[k1, n2] = sum_n1 W_R1^(n1 k1) x[n1, n2]      (R1-point DFTs: a batched `tl.dot`)
  Y[k1, n2] *= W_M^(k1 n2)                        (twiddles)
  X[k1, k2] = sum_n2 Y[k1, n2] W_R2^(n2 k2)      (R2-point DFTs: a second batched `tl.dot`)
with F frames per program and complex products as four real dots. It times the kernel against
`torch.fft.fft` (cuFFT) for B=1 and 256 / 1024 frames, each as 50 calls in one CUDA graph, over the
dot precisions (`tf32x3` and `ieee` keep fp32-level error, which Griffin-Lim needs; `tf32` does not),
frames per program and warps.

Result on an H100 (run 118, docs/kernels_history.md "Runs 118-122"): cuFFT 2.33 / 4.07 µs, the best Triton
fp32-level variant 12.9 / 17.6 µs (timed then without the L2 flush, which touches only the first
call of each 50). Griffin-Lim keeps cuFFT.

Run on a CUDA GPU: python -m benchmarks.kernels.probe_triton_fft [--results probe_triton_fft.json]
(on the CPU under TRITON_INTERPRET=1 it checks the results only).
"""

from __future__ import annotations

import argparse
import json
from functools import partial

import torch
import triton
import triton.language as tl

from benchmarks.kernels.common import graph_of, time_us


@triton.jit
def _dft(R: tl.constexpr, SIGN: tl.constexpr):
    """The R-point DFT matrix exp(SIGN 2πi jk / R) as (cos, sin), (R, R) each."""
    i = tl.arange(0, R)[:, None]
    j = tl.arange(0, R)[None, :]
    angle = ((i * j) % R).to(tl.float32) * (SIGN * 6.283185307179586 / R)
    return tl.cos(angle), tl.sin(angle)


@triton.jit
def _fft_kernel(x_ptr, out_ptr, n_rows, R1: tl.constexpr, R2: tl.constexpr, F: tl.constexpr,
                PRECISION: tl.constexpr, SIGN: tl.constexpr):  # fmt: skip
    M: tl.constexpr = R1 * R2
    f = tl.program_id(0) * F + tl.arange(0, F)[:, None, None]  # (F, 1, 1) frames
    n1 = tl.arange(0, R1)[None, :, None]
    n2 = tl.arange(0, R2)[None, None, :]
    ok = f < n_rows
    offs = f.to(tl.int64) * (2 * M) + 2 * (n1 * R2 + n2)  # real pairs, frame-major
    xr = tl.load(x_ptr + offs, mask=ok, other=0.0)
    xi = tl.load(x_ptr + offs + 1, mask=ok, other=0.0)
    ar, ai = _dft(R1, SIGN)
    ar = tl.broadcast_to(ar[None, :, :], (F, R1, R1))
    ai = tl.broadcast_to(ai[None, :, :], (F, R1, R1))
    yr = tl.dot(ar, xr, input_precision=PRECISION) - tl.dot(ai, xi, input_precision=PRECISION)
    yi = tl.dot(ar, xi, input_precision=PRECISION) + tl.dot(ai, xr, input_precision=PRECISION)
    k1 = tl.arange(0, R1)[None, :, None]
    angle = ((k1 * n2) % M).to(tl.float32) * (SIGN * 6.283185307179586 / M)
    c, s = tl.cos(angle), tl.sin(angle)
    yr, yi = yr * c - yi * s, yr * s + yi * c
    br, bi = _dft(R2, SIGN)
    br = tl.broadcast_to(br[None, :, :], (F, R2, R2))
    bi = tl.broadcast_to(bi[None, :, :], (F, R2, R2))
    zr = tl.dot(yr, br, input_precision=PRECISION) - tl.dot(yi, bi, input_precision=PRECISION)
    zi = tl.dot(yr, bi, input_precision=PRECISION) + tl.dot(yi, br, input_precision=PRECISION)
    k2 = tl.arange(0, R2)[None, None, :]
    out = f.to(tl.int64) * (2 * M) + 2 * (k1 + R1 * k2)
    tl.store(out_ptr + out, zr, mask=ok)
    tl.store(out_ptr + out + 1, zi, mask=ok)


def triton_fft(x: torch.Tensor, out: torch.Tensor | None = None, *, frames_per_program: int = 4,
               precision: str = "tf32x3", r1: int = 16, num_warps: int = 4) -> torch.Tensor:  # fmt: skip
    """The forward FFT over the last complex axis of real pairs x (..., M, 2) float32, M = r1 * r2."""
    M = x.shape[-2]
    r2 = M // r1
    if x.dtype != torch.float32 or x.shape[-1] != 2 or r1 < 16 or r2 < 16 or r1 * r2 != M:
        raise ValueError(
            f"triton_fft: needs float32 (..., M, 2) with M = {r1} x (>= 16), got {tuple(x.shape)}"
        )
    x = x.contiguous()
    out = torch.empty_like(x) if out is None else out
    rows = x.numel() // (2 * M)
    grid = (triton.cdiv(rows, frames_per_program),)
    _fft_kernel[grid](x, out, rows, R1=r1, R2=r2, F=frames_per_program, PRECISION=precision, SIGN=-1,
                      num_warps=num_warps)  # fmt: skip
    return out


def graph_us(fn, calls: int = 50, reps: int = 20) -> float:
    """µs per call of `calls` back-to-back calls in one CUDA graph (the kernel benchmarks' `time_us`
    of its replay: median, L2 flushed before each replay, so only the first call of a chain is cold)."""
    return time_us(graph_of(lambda: [fn() for _ in range(calls)]).replay, reps=reps) / calls


def measure(frames: int, cuda: bool) -> dict:
    """One row: cuFFT's µs and each Triton variant's µs and error, B=1 and `frames` frames of 512."""
    x = torch.randn(1, frames, 512, 2, device="cuda" if cuda else "cpu")
    want = torch.view_as_real(torch.fft.fft(torch.view_as_complex(x.double()), dim=-1))
    row: dict = {"frames": frames}
    if cuda:
        xc = torch.view_as_complex(x)
        row["cufft_us"] = graph_us(lambda: torch.fft.fft(xc, dim=-1))
    for precision in ("tf32x3", "ieee", "tf32") if cuda else ("ieee",):
        for per_program in (4, 8, 16) if cuda else (4,):
            for warps in (4, 8) if cuda else (4,):
                kw = {"frames_per_program": per_program, "precision": precision, "num_warps": warps}
                got = triton_fft(x, **kw)
                error = ((got.double() - want).abs().max() / want.abs().max()).item()
                us = graph_us(partial(triton_fft, x, got, **kw)) if cuda else None
                row[f"{precision}_F{per_program}_w{warps}"] = {"us": us, "rel_error": error}
    print(json.dumps(row), flush=True)
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--results", default=None, help="JSON file for the numbers")
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    rows = [measure(frames, cuda) for frames in (256, 1024)]
    if args.results:
        with open(args.results, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
