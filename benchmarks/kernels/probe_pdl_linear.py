"""Probe (issue 17): the attention projections as dependent-launch Triton GEMMs, inside the engine.

Runs 63-64 timed chains of GEMMs alone: a Triton GEMM launched with programmatic dependent launch
(Hopper's `griddepcontrol`), which prefetches its weight tile into L2 before waiting for the previous
kernel, beat cuBLAS by ~1.3-1.5 µs on the projections' shapes. Inductor gives dependent launch only
to the kernels it generates (they wait before their first load of a previous kernel's output and
let the next kernel launch after their loads), not to cuBLAS and not to user Triton kernels. This
probe puts such a GEMM into the engine as an opaque custom op (`probe::pdl_linear`, launched by its
own code with `launch_pdl=True`) for `MultiHeadAttention.linear` (qkv) and `fc`, builds the engine
with and without it, and times the engines' calls side by side (interleaved rounds). Since run 79
it also builds the model as committed (`kernels/linear.py`, which lets the next kernel launch only
after its own wait) next to the first version (`probe::pdl_linear`: runs 63-64's `_mm_kernel` from
probe_pdl_gemm.py with a bias, which lets the next kernel launch at once). Run 95 added w_2 as split-K
fp32 (or fp16) partials summed in the shifted sum (`w2_split*`): 0.87-0.95x the committed model,
not kept; run 96 (`--kernels`): the split GEMM took 160 µs a call against cuBLAS's ~80.

Run on a CUDA GPU (sm90): python -m benchmarks.kernels.probe_pdl_linear [--shapes i128_o1024,i32_o256]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from functools import partial
from pathlib import Path

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

import kernels
from benchmarks.kernels.common import environment, kernel_profile
from benchmarks.kernels.probe_pdl_gemm import _mm_kernel
from benchmarks.latency import calibrated_model, sample_tokens, time_calls
from fastspeech import model as model_module
from fastspeech.engine import EngineSpec, load_or_build
from kernels.linear import prefetch_l2


@torch.library.custom_op("probe::pdl_linear", mutates_args=())
def pdl_linear(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
    """x @ weight^T + bias through `_mm_kernel`, dependent launch and weight prefetch on."""
    N, K = weight.shape
    x2 = x.reshape(-1, K).contiguous()
    M = x2.shape[0]
    y = x2.new_empty(M, N)
    bm = 64 if M >= 512 else 32
    w = weight.contiguous()
    _mm_kernel[(triton.cdiv(M, bm), N // 64)](
        x2, w, bias, y, M, x2.stride(0), w.stride(0), y.stride(0),
        K=K, BLOCK_M=bm, BLOCK_N=64, BLOCK_K=64, PDL=True, PREFETCH=True, LINES=triton.next_power_of_2(K // 64),
        HAS_BIAS=True, num_warps=4, num_stages=3, launch_pdl=True,
    )  # fmt: skip
    return y.view(*x.shape[:-1], N)


@pdl_linear.register_fake
def _(x, weight, bias):
    return x.new_empty(*x.shape[:-1], weight.shape[0])


def attention_forward_pdl(self, x, lengths, acts, name):
    """MultiHeadAttention.forward with both projections through this probe's `pdl_linear`."""
    qkv = pdl_linear(x, self.linear.weight, self.linear.bias)
    out = model_module.self_attention(qkv, lengths, self.n_head)
    out = pdl_linear(out, self.fc.weight, self.fc.bias) + x
    return self.layer_norm(out)


def cublas_linear(x, layer):
    return layer(x)


def conv1d_taps_op(max_rows: int):
    """`fastspeech.model.conv1d` with its multiply-first GEMM through the `linear` op for K <= 384 and
    up to `max_rows` rows (the FFN's w_1 and the duration predictor's convs at batch 1; not w_2)."""
    original = model_module.conv1d

    def conv1d(x, conv, lengths, relu):
        B, T, c_in = x.shape
        if x.dtype == torch.float32 or B * T > max_rows or c_in > 384 or B * T >= model_module.OP_MIN_ROWS:
            return original(x, conv, lengths, relu)
        taps = conv.weight.permute(2, 0, 1)
        k, pad = conv.kernel_size[0], conv.padding[0]
        y = kernels.linear(x, taps.flatten(0, 1), None)  # (B, T, k * C_out)
        y = F.pad(y.view(B, T, k, -1), (0, 0, 0, 0, pad, k - 1 - pad))
        out = conv.bias
        for j in range(k):
            out = out + y[:, j : j + T, j]
        out = torch.relu(out) if relu else out
        return out * (torch.arange(T, device=x.device)[None, :, None] < lengths[:, None, None]).to(out.dtype)

    return conv1d


@triton.jit
def _partials_kernel(
    x_ptr, w_ptr, out_ptr, M, N, K_SPLIT, stride_xm, stride_wn, stride_os, stride_om,
    BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr, LINES: tl.constexpr,
):  # fmt: skip
    """Split-K: program (i, j, s) writes the fp32 partial product of K block s for output tile (i, j);
    the weight slice prefetched into L2 before the dependent-launch wait."""
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    k_start = tl.program_id(2) * K_SPLIT
    m_ok, n_ok = rm < M, rn < N
    rk = tl.arange(0, BLOCK_K)
    line = tl.minimum(tl.arange(0, LINES) * 64, K_SPLIT - 1)
    prefetch_l2(w_ptr + tl.minimum(rn, N - 1)[:, None] * stride_wn + k_start + line[None, :])
    tl.extra.cuda.gdc_wait()
    tl.extra.cuda.gdc_launch_dependents()
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K_SPLIT, BLOCK_K):
        k_ok = (k0 + rk) < K_SPLIT
        a = tl.load(x_ptr + rm[:, None] * stride_xm + (k_start + k0 + rk)[None, :], mask=m_ok[:, None] & k_ok[None, :], other=0.0)  # fmt: skip
        w = tl.load(w_ptr + rn[:, None] * stride_wn + (k_start + k0 + rk)[None, :], mask=n_ok[:, None] & k_ok[None, :], other=0.0)  # fmt: skip
        acc = tl.dot(a, w.T, acc)
    out = out_ptr + tl.program_id(2) * stride_os + rm[:, None] * stride_om + rn[None, :]
    tl.store(out, acc.to(out_ptr.dtype.element_ty), mask=m_ok[:, None] & n_ok[None, :])


@torch.library.custom_op("probe::linear_partials", mutates_args=())
def linear_partials(x: torch.Tensor, weight: torch.Tensor, split: int, half: bool) -> torch.Tensor:
    """(split, M, N) partial products of x (M, K) @ weight (N, K)^T over K / split each: fp32, or
    rounded to x's dtype (`half`)."""
    M, K = x.shape
    N = weight.shape[0]
    out = torch.empty(split, M, N, device=x.device, dtype=x.dtype if half else torch.float32)
    bm = 32 if M < 512 else 64
    ks = K // split
    _partials_kernel[(triton.cdiv(M, bm), triton.cdiv(N, 64), split)](
        x, weight, out, M, N, ks, x.stride(0), weight.stride(0), out.stride(0), out.stride(1),
        BLOCK_M=bm, BLOCK_N=64, BLOCK_K=64, LINES=triton.next_power_of_2(triton.cdiv(ks, 64)),
        num_warps=4, num_stages=3, launch_pdl=True,
    )  # fmt: skip
    return out


@linear_partials.register_fake
def _(x, weight, split, half):
    return x.new_empty(split, x.shape[0], weight.shape[0], dtype=x.dtype if half else torch.float32)


def conv1d_w2_split(splits: dict[int, int], half: bool = False):
    """`fastspeech.model.conv1d` with w_2's multiply-first GEMM (C_in 1536, the multiply-first path
    at batch 1) as split-K partials that the shifted sum adds up (Inductor fuses it with the
    residual + LayerNorm after): split = splits[largest key >= rows]."""
    original = model_module.conv1d

    def conv1d(x, conv, lengths, relu):
        B, T, c_in = x.shape
        rows = B * T
        fits = [m for m in splits if rows <= m]
        if x.dtype == torch.float32 or c_in <= 384 or not fits or rows >= model_module.OP_MIN_ROWS_NARROWING:
            return original(x, conv, lengths, relu)
        split = splits[min(fits)]
        taps = conv.weight.permute(2, 0, 1)
        k, pad = conv.kernel_size[0], conv.padding[0]
        p = linear_partials(x.reshape(rows, c_in), taps.flatten(0, 1), split, half)
        y = p[0].float()
        for i in range(1, split):
            y = y + p[i].float()
        y = F.pad(y.view(B, T, k, -1), (0, 0, 0, 0, pad, k - 1 - pad))
        out = conv.bias.float()
        for j in range(k):
            out = out + y[:, j : j + T, j]
        out = torch.relu(out) if relu else out
        out = out * (torch.arange(T, device=x.device)[None, :, None] < lengths[:, None, None]).to(out.dtype)
        return out.to(x.dtype)

    return conv1d


# variant -> {fastspeech.model attribute: replacement} while its engine builds ("forward": the
# MultiHeadAttention.forward)
ORIGINAL = {"forward": model_module.MultiHeadAttention.forward, "linear": model_module.linear,
            "conv1d": model_module.conv1d}  # fmt: skip
VARIANTS = {
    "cublas": {"linear": cublas_linear},
    "linear_op": {},  # the model as committed: kernels/linear.py for qkv and fc
    "probe_trigger_first": {"forward": attention_forward_pdl},  # `probe::pdl_linear` (run 78)
    "linear_op_conv_taps_256": {"conv1d": conv1d_taps_op(256)},  # + w_1, duration predictor, <= 256 rows
    "linear_op_conv_taps_1024": {"conv1d": conv1d_taps_op(1024)},  # the same up to 1024 rows
    "w2_split": {"conv1d": conv1d_w2_split({256: 4, 1024: 2})},  # + w_2 as split-K partials (run 95)
    "w2_split_more": {"conv1d": conv1d_w2_split({128: 8, 256: 4, 1024: 2})},
    "w2_split_4": {"conv1d": conv1d_w2_split({1024: 4})},
    "w2_split_half": {"conv1d": conv1d_w2_split({256: 4, 1024: 2}, half=True)},  # fp16 partials
}


def apply(swaps: dict) -> None:
    for name, fn in {**ORIGINAL, **swaps}.items():
        if name == "forward":
            model_module.MultiHeadAttention.forward = fn
        else:
            setattr(model_module, name, fn)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shapes", default="i128_o1024,i32_o256")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument(
        "--variants", default="cublas,linear_op,probe_trigger_first", help=f"of {', '.join(VARIANTS)}"
    )
    parser.add_argument("--calls", type=int, default=300)
    parser.add_argument(
        "--sequence", action="store_true", help="first time each engine's calls one after another, twice"
    )
    parser.add_argument(
        "--kernels", action="store_true", help="also each engine's kernel count and time, profiled"
    )
    args = parser.parse_args()
    print(environment())
    dev = torch.device("cuda")
    for shape in args.shapes.split(","):
        max_in, max_out = (int(n) for n in shape.removeprefix("i").split("_o"))
        ids = sample_tokens(max_in)
        model = calibrated_model(ids, target_frames=round(max_out * 900 / 1024), device=dev).half()
        tokens, alpha = torch.tensor([ids], device=dev), torch.ones(1, device=dev)
        spec = EngineSpec(1, max_in, max_out, "fp16", "inductor")
        runners, outs = {}, {}
        with tempfile.TemporaryDirectory() as folder, torch.inference_mode():
            for variant in args.variants.split(","):
                torch._dynamo.reset()
                apply(VARIANTS[variant])
                try:
                    engine = load_or_build(model, spec, Path(folder) / variant, dev, {}, force_build=True)
                finally:
                    apply({})
                runners[variant] = partial(engine.runner, tokens, alpha)
                outs[variant] = runners[variant]()[0].float().clone()
            err = {v: (o - outs["cublas"]).abs().max().item() for v, o in outs.items()}
            if args.kernels:
                for v, fn in runners.items():
                    profiled = kernel_profile(fn)
                    print(f"{shape} {v}: {profiled['kernels']:.0f} kernels, {1e3 * profiled['kernel_ms']:.1f} µs a call; largest (name, per call, µs):", flush=True)  # fmt: skip
                    for name, count, us in profiled["top"]:
                        print(f"    {name:90} {count:5.1f} {us:8.1f}", flush=True)
            if args.sequence:  # each engine's 1000 calls once, in build order, twice: mean and median
                for rnd in (1, 2):
                    for v, fn in runners.items():
                        ts = time_calls(fn, 1000, warmup=10) * 1e3
                        print(f"{shape} sequence {rnd} {v}: mean {ts.mean():.4f} ms, median {statistics.median(ts):.4f}", flush=True)  # fmt: skip
            times = {v: [] for v in runners}
            for _ in range(args.rounds):
                for v, fn in runners.items():
                    times[v].append(statistics.median(time_calls(fn, args.calls, warmup=20)) * 1e3)
        base = statistics.median(times["cublas"])
        for v, ts in times.items():
            med = statistics.median(ts)
            print(f"{shape} B=1 {v}: {med:.4f} ms per call (rounds {', '.join(f'{t:.4f}' for t in ts)}), "
                  f"{base / med:.3f}x cublas; max |mel - cublas mel| {err[v]:.4f}", flush=True)  # fmt: skip


if __name__ == "__main__":
    main()
