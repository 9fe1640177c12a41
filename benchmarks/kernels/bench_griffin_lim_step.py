"""µs and GB/s of `fastspeech::griffin_lim_step` vs its PyTorch reference, eager and under Inductor.

Run on a CUDA GPU:  python -m benchmarks.kernels.bench_griffin_lim_step --results results/kernels/griffin_lim_step.json
Shapes: DLE's n_fft 1024 (M = 512 pairs), T frames of the engines (256: i32_o256, 1024: i128_o1024)
at batch 1 and 32. Bytes = z, z_prev (B, T, M, 2) and magnitude (B, T, M + 1) read once + out written
once (fp32). Columns: `kernel` = the Triton launch into a preallocated output; `reference` = the
plain PyTorch reference (eager); `inductor` = the reference compiled by `torch.compile` (what the
engine would run without the op: its flips and stacks split into several kernels, counted in
`inductor kernels`). Median GPU time of one call with a cold L2 (benchmarks/kernels/common.py).
"""

from __future__ import annotations

import torch

from benchmarks.kernels import common
from kernels.griffin_lim_step import griffin_lim_step_reference, launch_griffin_lim_step

M = 512
KEEP = 0.99 / 1.99  # the vocoder's momentum 0.99 as Griffin-Lim applies it
SHAPES = [(1, 256), (1, 1024), (32, 256), (32, 1024)]


def measure(B: int, T: int, peak: float) -> dict:
    z, z_prev = torch.randn(2, B, T, M, 2, device="cuda").unbind(0)
    magnitude = torch.rand(B, T, M + 1, device="cuda")
    out = torch.full_like(z, float("nan"))
    launch_griffin_lim_step(z, z_prev, magnitude, KEEP, out)
    want = griffin_lim_step_reference(z.double(), z_prev.double(), magnitude.double(), KEEP)
    correct = bool(torch.allclose(out.double(), want, atol=2e-6, rtol=1e-5))
    compiled = torch.compile(griffin_lim_step_reference, fullgraph=True, dynamic=False)
    nbytes = z.nbytes + z_prev.nbytes + magnitude.nbytes + out.nbytes
    t_kernel = common.time_us(
        common.direct_launch(lambda: launch_griffin_lim_step(z, z_prev, magnitude, KEEP, out))
    )
    t_ref = common.time_us(lambda: griffin_lim_step_reference(z, z_prev, magnitude, KEEP))
    t_ind = common.time_us(lambda: compiled(z, z_prev, magnitude, KEEP))
    gbps = nbytes / t_kernel / 1e3
    return {
        "B": B, "T": T, "M": M, "MB": nbytes / 1e6, "correct": correct,
        "kernel_us": t_kernel, "reference_us": t_ref, "inductor_us": t_ind,
        "inductor_kernels": common.kernel_profile(lambda: compiled(z, z_prev, magnitude, KEEP))["kernels"],
        "kernel_gbps": gbps, "pct_of_peak_copy": 100 * gbps / peak,
        "speedup_vs_reference": t_ref / t_kernel, "speedup_vs_inductor": t_ind / t_kernel,
    }  # fmt: skip


def main() -> None:
    common.run_rows(__doc__, "results/kernels/griffin_lim_step.json", measure, SHAPES, [
        ("B", "B"), ("T", "T"), ("MB", "MB moved"), ("kernel_us", "kernel µs"), ("reference_us", "reference µs"),
        ("inductor_us", "Inductor µs"), ("inductor_kernels", "Inductor kernels"), ("kernel_gbps", "kernel GB/s"),
        ("pct_of_peak_copy", "% peak copy"), ("speedup_vs_inductor", "x vs Inductor"), ("correct", "correct"),
    ])  # fmt: skip


if __name__ == "__main__":
    main()
