"""µs and GB/s of `fastspeech::overlap_add_frames` vs its PyTorch reference, eager and under Inductor.

Run on a CUDA GPU:  python -m benchmarks.kernels.bench_overlap_add_frames --results results/kernels/overlap_add_frames.json
Shapes: DLE's STFT (n_fft 1024, hop 256, Hann), n frames of the engines (256: i32_o256, 1024:
i128_o1024) at batch 1 and 32, length (n - 1) * hop as Griffin-Lim uses it. Bytes = frames read once
+ out written once (fp32). Columns: `kernel` = the Triton launch into a preallocated output;
`reference` = the plain PyTorch reference (overlap-add, stored signal, strided framing) eager;
`inductor` = the reference compiled by `torch.compile` (counted in `inductor kernels`), what the
engine runs without the op; `block 128` / `block 64`: the kernel with 2 / 4 programs per hop block. Median GPU
time of one call with a cold L2 (benchmarks/kernels/common.py).
"""

from __future__ import annotations

import torch

from benchmarks.kernels import common
from kernels.overlap_add_frames import launch_overlap_add_frames, overlap_add_frames_reference

N, HOP = 1024, 256
SHAPES = [(1, 256), (1, 1024), (32, 256), (32, 1024)]


def measure(B: int, n: int, peak: float) -> dict:
    frames = torch.randn(B, n, N, device="cuda")
    window = torch.hann_window(N, device="cuda")
    length = (n - 1) * HOP
    out = torch.full((B, length // HOP + 1, N), float("nan"), device="cuda")
    launch_overlap_add_frames(frames, window, HOP, length, out)
    want = overlap_add_frames_reference(frames.double(), window.double(), HOP, length)
    correct = bool(torch.allclose(out.double(), want, atol=1e-5, rtol=1e-5))
    compiled = torch.compile(overlap_add_frames_reference, fullgraph=True, dynamic=False)
    nbytes = frames.nbytes + out.nbytes

    def kernel(block: int | None = None) -> float:
        return common.time_us(
            common.direct_launch(
                lambda: launch_overlap_add_frames(frames, window, HOP, length, out, block=block)
            )
        )

    t_kernel = kernel()
    t_ref = common.time_us(lambda: overlap_add_frames_reference(frames, window, HOP, length))
    t_ind = common.time_us(lambda: compiled(frames, window, HOP, length))
    gbps = nbytes / t_kernel / 1e3
    return {
        "B": B, "n": n, "MB": nbytes / 1e6, "correct": correct,
        "kernel_us": t_kernel, "reference_us": t_ref, "inductor_us": t_ind,
        "inductor_kernels": common.kernel_profile(lambda: compiled(frames, window, HOP, length))["kernels"],
        "kernel_us_block128": kernel(128), "kernel_us_block64": kernel(64),
        "kernel_gbps": gbps, "pct_of_peak_copy": 100 * gbps / peak, "speedup_vs_inductor": t_ind / t_kernel,
    }  # fmt: skip


def main() -> None:
    common.run_rows(__doc__, "results/kernels/overlap_add_frames.json", measure, SHAPES, [
        ("B", "B"), ("n", "frames"), ("MB", "MB moved"), ("kernel_us", "kernel µs"), ("kernel_us_block128", "block 128 µs"),
        ("kernel_us_block64", "block 64 µs"), ("reference_us", "reference µs"),
        ("inductor_us", "Inductor µs"), ("inductor_kernels", "Inductor kernels"), ("kernel_gbps", "kernel GB/s"),
        ("pct_of_peak_copy", "% peak copy"), ("speedup_vs_inductor", "x vs Inductor"), ("correct", "correct"),
    ])  # fmt: skip


if __name__ == "__main__":
    main()
