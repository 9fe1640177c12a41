"""Probe (issue 17): FFN w_1 as one cuBLASLt GEMM with bias + ReLU in its epilogue on an unfolded input.

Today at B * T < 4096 the engine runs w_1 (k = 3, 384 -> 1536, ReLU) as a cuBLAS GEMM into
(B, T, 3 x 1536) taps and one Inductor pass (shifted sum + bias + ReLU + row mask): two kernels, 9.4 MB
written and read again at T = 1024. If the LayerNorm kernel before it wrote the unfolded input
(rows t-1, t, t+1 side by side) as well, w_1 could be one GEMM with bias and ReLU in cuBLASLt's
epilogue (`torch._addmm_activation`), the row mask moving into w_2's shifted sum. This times, in
CUDA-graph replays with a cold L2, 6 different weights per replay:
- `taps + pass`: `fastspeech.model.conv1d` (the engine's path), compiled by Inductor;
- `unfolded, Lt relu`: `torch._addmm_activation(bias, U, W^T)` on a ready unfolded U, compiled;
- `unfolded, addmm + relu`: `F.linear` then ReLU, compiled (cuBLAS + a pointwise pass);
- `unfold copy`: the unfolding alone as its own kernel (what a separate pass would cost).

Run on a CUDA GPU: python -m benchmarks.kernels.probe_unfold_relu [--rows 128,256,1024]
"""

from __future__ import annotations

import argparse
import statistics

import torch
import torch.nn.functional as F

from benchmarks.kernels.common import environment, markdown_table, time_us
from benchmarks.kernels.probe_pdl_gemm import graph_of
from fastspeech.model import conv1d, tap_major

C_IN, C_OUT, K, REPS = 384, 1536, 3, 6


def unfold(x: torch.Tensor) -> torch.Tensor:
    """(B, T, C) -> (B, T, 3 C): rows t-1, t, t+1 side by side, zeros outside [0, T)."""
    p = F.pad(x, (0, 0, 1, 1))
    return torch.cat([p[:, :-2], p[:, 1:-1], p[:, 2:]], dim=-1)


def measure(T: int, reps: int) -> list[dict]:
    """The four rows at batch 1, T rows."""
    dev, dtype = "cuda", torch.float16
    rows = []
    lengths = torch.tensor([round(0.88 * T)], device=dev)
    x = torch.randn(1, T, C_IN, device=dev, dtype=dtype)
    convs = [tap_major(torch.nn.Conv1d(C_IN, C_OUT, K, padding=1)).to(dev, dtype).eval() for _ in range(REPS)]
    # unfolded weight (C_out, k * C_in): column j * C_in + c is tap j, input channel c
    flat = [c.weight.detach().permute(0, 2, 1).reshape(C_OUT, K * C_IN).contiguous() for c in convs]
    u = unfold(x).reshape(T, K * C_IN).contiguous()

    def taps_pass():
        return [conv1d(x, c, lengths, relu=True) for c in convs]

    def lt_relu():
        return [torch._addmm_activation(c.bias, u, w.T) for c, w in zip(convs, flat)]

    def addmm_relu():
        return [torch.relu(F.linear(u, w, c.bias)) for c, w in zip(convs, flat)]

    def unfold_copy():
        return [unfold(x) for _ in convs]

    with torch.no_grad():
        ref = taps_pass()
        for name, fn in (("taps + pass", taps_pass), ("unfolded, Lt relu", lt_relu),
                         ("unfolded, addmm + relu", addmm_relu), ("unfold copy", unfold_copy)):  # fmt: skip
            compiled = torch.compile(fn, fullgraph=True, dynamic=False)
            g = graph_of(compiled)
            us = statistics.median(time_us(g.replay, reps=reps) for _ in range(3))
            err = ""
            if name.startswith("unfolded"):
                out = compiled()
                valid = int(lengths)  # rows past the length: the old path masks them, the new one does not
                err = max(
                    (o.view(1, T, -1)[:, :valid] - r[:, :valid]).abs().max().item() for o, r in zip(out, ref)
                )
                err = f"{err:.1e}"
            rows.append({"T": T, "variant": name, "us": round(us / REPS, 2), "err": err})
            print(rows[-1], flush=True)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default="128,256,1024", help="T at batch 1")
    parser.add_argument("--reps", type=int, default=200)
    args = parser.parse_args()
    torch.manual_seed(0)
    rows = []
    for T in (int(t) for t in args.rows.split(",")):
        rows += measure(T, args.reps)
    print(environment())
    print(
        markdown_table(
            rows, [("T", "T"), ("variant", "w_1 as"), ("us", "µs per conv"), ("err", "max |diff| vs taps")]
        )
    )


if __name__ == "__main__":
    main()
