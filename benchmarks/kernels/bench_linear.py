"""µs of `fastspeech::linear` vs cuBLAS (`F.linear`, its reference) at the attention projections' shapes.

Run on a CUDA GPU:  python -m benchmarks.kernels.bench_linear --results results/kernels/linear.json

The op's gain is not in one call alone but in a chain: on Hopper each call starts (prefetching its
weights into L2) while the one before it runs. So two measurements per shape, both at M = B * T rows:
- `alone`: one call, median over calls with a cold L2 (common.time_us);
- `chain`: 24 dependent calls (qkv 384 -> 384, then fc reading the first 128 columns of its output
  128 -> 384, 12 times) captured in one CUDA graph, replayed with a cold L2, per call.
`fastspeech.model.LINEAR_OP_MAX_ROWS` is where the chain stops gaining.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from benchmarks.kernels import common
from kernels.linear import linear, linear_reference

ROWS = (32, 128, 256, 1024, 2048, 4096, 8192)
SHAPES = {"qkv": (384, 384), "fc": (128, 384)}  # (K, N)


def chain(impl, x: torch.Tensor, layers: list[tuple[torch.Tensor, torch.Tensor]]) -> torch.Tensor:
    h = x
    for i, (w, b) in enumerate(layers):
        h = impl(h if i % 2 == 0 else h[:, : w.shape[1]], w, b)
    return h


def measure(M: int, dtype: torch.dtype) -> list[dict]:
    rows = []
    for name, (K, N) in SHAPES.items():
        x = torch.randn(M, K, device="cuda").to(dtype)
        w, b = (torch.randn(N, K, device="cuda") / K**0.5).to(dtype), torch.randn(N, device="cuda").to(dtype)
        correct = torch.allclose(linear(x, w, b), linear_reference(x, w, b), atol=1e-2, rtol=1e-2)
        t_op = common.time_us(lambda x=x, w=w, b=b: linear(x, w, b))
        t_ref = common.time_us(lambda x=x, w=w, b=b: F.linear(x, w, b))
        rows.append({"M": M, "shape": name, "op_us": t_op, "cublas_us": t_ref, "speedup": t_ref / t_op, "correct": correct})  # fmt: skip
    x = torch.randn(M, 384, device="cuda").to(dtype)
    layers = [((torch.randn(384, k, device="cuda") / k**0.5).to(dtype), torch.zeros(384, device="cuda").to(dtype)) for k in (384, 128) * 12]  # fmt: skip
    got, want = chain(linear, x, layers), chain(F.linear, x, layers)
    t_op = common.time_us(common.graph_of(lambda: chain(linear, x, layers)).replay) / len(layers)
    t_ref = common.time_us(common.graph_of(lambda: chain(F.linear, x, layers)).replay) / len(layers)
    correct = torch.allclose(got.float(), want.float(), atol=5e-2, rtol=5e-2)
    rows.append({"M": M, "shape": "chain", "op_us": t_op, "cublas_us": t_ref, "speedup": t_ref / t_op, "correct": correct})  # fmt: skip
    return rows


def main() -> None:
    args = common.parse_args(__doc__.splitlines()[0], "results/kernels/linear.json")
    torch.manual_seed(0)
    rows = []
    for dtype_name in args.dtypes.split(","):
        if dtype_name == "fp32":  # the model keeps cuBLAS for fp32 (the op's IEEE fp32 dots are slow)
            continue
        for M in ROWS:
            for r in measure(M, common.DTYPES[dtype_name]):
                rows.append({"dtype": dtype_name, **r})
                print(rows[-1], flush=True)
    common.write_json(args.results, {"env": common.environment(), "rows": rows})
    print(f"\n{common.environment()}  all correct: {all(r['correct'] for r in rows)}\n")
    columns = [("dtype", "dtype"), ("M", "rows"), ("shape", "GEMM"), ("op_us", "op µs"), ("cublas_us", "cuBLAS µs"),
               ("speedup", "cuBLAS / op"), ("correct", "correct")]  # fmt: skip
    print(common.markdown_table(rows, columns))


if __name__ == "__main__":
    main()
