"""Probe (issue 17, host overhead): can the device write only the valid part of a call's outputs
straight into pinned host memory, with no wait in the middle of the call?

Today (`engine.HostIO`) a batch-1 call copies its mel and wav rows whole (1.4 MB for i128_o1024),
because only the device knows `mel_lens` until the call is waited for; the two-phase rule that
copies only the valid rows needs that wait, and lost. Here a Triton kernel reads the lengths on the
device and writes the valid rows itself into mapped pinned memory (UVA: a pinned tensor's address is
valid on the device), against `copy_` of whole rows and `copy_` of exactly the valid rows (the bound
if the host knew the lengths). Each: issue + transfer + synchronize from an idle GPU, median µs.

    python -m benchmarks.probe_zero_copy          # CUDA only
"""

from __future__ import annotations

import numpy as np
import torch
import triton
import triton.language as tl

from benchmarks.latency import time_calls


@triton.jit
def _rows_to_host(src, dst, lens, per_frame, row_stride, BLOCK: tl.constexpr):
    """dst[b, :lens[b] * per_frame] = src[b, :lens[b] * per_frame]; program (chunk, row)."""
    b = tl.program_id(1)
    offs = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    n = tl.load(lens + b) * per_frame
    keep = offs < n
    tl.store(dst + b * row_stride + offs, tl.load(src + b * row_stride + offs, mask=keep), mask=keep)


def rows_to_host(src: torch.Tensor, dst: torch.Tensor, lens: torch.Tensor, per_frame: int) -> None:
    B, row = src.shape[0], src[0].numel()
    block = 4096
    _rows_to_host[(triton.cdiv(row, block), B)](src, dst, lens, per_frame, row, BLOCK=block)


def median_us(fn, n: int = 300) -> float:
    """Median wall time of one synchronized call (`benchmarks.latency.time_calls`), µs."""
    return float(np.median(time_calls(fn, n, warmup=20))) * 1e6


def probe(name: str, max_out: int, fill: float) -> None:
    dev = torch.device("cuda")
    mel_d = torch.randn(1, max_out, 80, device=dev)
    wav_d = torch.randn(1, max_out * 256, device=dev)
    mel_h = torch.empty(mel_d.shape, pin_memory=True)
    wav_h = torch.empty(wav_d.shape, pin_memory=True)
    n = int(max_out * fill)
    lens = torch.tensor([n], device=dev, dtype=torch.int32)

    def whole():
        mel_h.copy_(mel_d, non_blocking=True)
        wav_h.copy_(wav_d, non_blocking=True)

    def valid_copy():  # the bound: the host knows n
        mel_h[:, :n].copy_(mel_d[:, :n], non_blocking=True)
        wav_h[:, : n * 256].copy_(wav_d[:, : n * 256], non_blocking=True)

    def zero_copy():
        rows_to_host(mel_d, mel_h, lens, 80)
        rows_to_host(wav_d, wav_h, lens, 256)

    row = {"whole rows copy_": whole, "valid rows copy_": valid_copy}
    try:
        mel_h.zero_(), wav_h.zero_()
        zero_copy()
        torch.cuda.synchronize()
        ok = torch.equal(mel_h[:, :n], mel_d[:, :n].cpu()) and torch.equal(
            wav_h[:, : n * 256], wav_d[:, : n * 256].cpu()
        )
        untouched = not wav_h[:, n * 256 :].any().item()
        print(f"{name} fill {fill}: zero-copy kernel correct {ok}, past the length untouched {untouched}")
        row["valid rows, device-written"] = zero_copy
    except Exception as exc:  # noqa: BLE001 - the probe reports what the launcher says
        print(f"{name}: the kernel cannot write pinned memory here: {type(exc).__name__}: {exc}")
    for label, fn in row.items():
        print(f"{name} fill {fill}: {label}: {median_us(fn):.1f} µs")


def main() -> None:
    print(torch.cuda.get_device_name(), torch.__version__, triton.__version__)
    for name, max_out in (("i32_o256", 256), ("i128_o1024", 1024)):
        for fill in (0.5, 0.88):
            probe(name, max_out, fill)


if __name__ == "__main__":
    main()
