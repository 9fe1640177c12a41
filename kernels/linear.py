"""`torch.ops.fastspeech.linear`: `F.linear` for a few rows, launched with programmatic dependent launch.

Contract: linear(x, weight, bias) -> out, as `F.linear`: x (..., K) fp32/fp16/bf16, weight (N, K) and
bias (N,) or None of x's dtype -> out (..., N) of x's dtype, out = x @ weight^T + bias, accumulated in
fp32 and rounded once.

Why (issue 17): at batch 1 a projection (FastSpeech's qkv 384 -> 384 and fc 128 -> 384, over 32-1024
rows) is a few MFLOP, and cuBLAS takes ~3.4 µs for it in a CUDA graph: a kernel boundary (~1.2 µs),
then its weights from HBM, then the work. On Hopper a kernel launched with programmatic dependent
launch may start while the kernel before it is still running. This one then prefetches its weight
tile into L2 (weights never depend on the previous kernel), waits (`gdc_wait`) until the previous
kernel's writes are visible, and only then reads x. Inductor launches its own pointwise and
reduction kernels that way (`enable_pdl`, on in conf/backend), but not cuBLAS's GEMMs and not
user Triton kernels it traces into. So this op is an *opaque* custom op (`torch.library.custom_op`,
not `triton_op`): Inductor calls it as it is, and its launcher passes `launch_pdl=True`. The kernel
lets the next kernel launch (`gdc_launch_dependents`) only after its own wait, so a kernel after it
never starts before everything before it has finished.

Measured inside the engine (run 80, H200, fp16, batch 1, the engines' calls in interleaved rounds;
`benchmarks/kernels/probe_pdl_linear.py`): with qkv and fc through this op i128_o1024 takes 0.524 ->
0.505 ms a call (1.037x) and i32_o256 0.398 -> 0.383 ms (1.039x). Letting the next kernel launch at
once, before the wait, was 1.047x / 1.063x, but then a kernel after this one could start before the
one before it has finished: not kept. Alone, outside a chain of dependent kernels, the op is no
faster than cuBLAS; in a chain of 24 (`benchmarks/kernels/bench_linear.py`, run 79) it is 1.10-1.37x
from 32 to 2048 rows, ties at 4096 and loses at 8192 (one 32/64 x 64 tile per program, no split over
K): `fastspeech.model.linear` uses it up to LINEAR_OP_MAX_ROWS = 2048 rows.

The kernel: one program per (BLOCK_M x BLOCK_N) output tile, a K loop of BLOCK_K steps, fp32
accumulation (`tl.dot`, tensor cores for fp16/bf16, IEEE fp32 for fp32 inputs), bias in the epilogue.
On the CPU interpreter (no dependent launch there) the same kernel runs without the PDL steps.

The reference (`linear_reference`, also the CPU implementation) is `F.linear` in fp32, cast to x's
dtype. `linear_layers` is `F.linear` in x's dtype: what TensorRT builds (converters/linear.py).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

from kernels.conv1d import FLOAT_DTYPES
from kernels.utils import fp32_dot, register_reference_autograd


# ---------------------------------------------------------------------------------------------
# Triton kernel
# ---------------------------------------------------------------------------------------------
@triton.jit
def prefetch_l2(ptrs):
    """Ask L2 to fetch the 128-byte lines at `ptrs` (no data comes back to the program); the
    benchmark probes use it too."""
    tl.inline_asm_elementwise(
        "prefetch.global.L2 [$1]; mov.u32 $0, 0;", "=r,l", [ptrs], dtype=tl.int32, is_pure=False, pack=1
    )


@triton.jit
def _linear_kernel(
    x_ptr, w_ptr, b_ptr, out_ptr, M, N, K, stride_xm, stride_wn, stride_om,
    HAS_BIAS: tl.constexpr, BLOCK_M: tl.constexpr, BLOCK_N: tl.constexpr, BLOCK_K: tl.constexpr,
    PDL: tl.constexpr, LINES: tl.constexpr, FP32_DOT: tl.constexpr,
):  # fmt: skip
    rm = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rn = tl.program_id(1) * BLOCK_N + tl.arange(0, BLOCK_N)
    m_ok, n_ok = rm < M, rn < N
    rm, rn = rm.to(tl.int64), rn.to(tl.int64)  # row offsets past 2^31 elements stay exact
    rk = tl.arange(0, BLOCK_K)
    if PDL:
        # This program's weight rows, a prefetch per 64 elements (a 128-byte line in fp16/bf16), inside W.
        line = tl.minimum(tl.arange(0, LINES) * 64, K - 1)
        prefetch_l2(w_ptr + tl.minimum(rn, N - 1)[:, None] * stride_wn + line[None, :])
        tl.extra.cuda.gdc_wait()  # the previous kernel's writes (x among them) are visible from here on
        tl.extra.cuda.gdc_launch_dependents()  # after the wait: a kernel after this one starts after it
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for k0 in range(0, K, BLOCK_K):
        k_ok = (k0 + rk) < K
        a = tl.load(
            x_ptr + rm[:, None] * stride_xm + (k0 + rk)[None, :],
            mask=m_ok[:, None] & k_ok[None, :],
            other=0.0,
        )
        w = tl.load(
            w_ptr + rn[:, None] * stride_wn + (k0 + rk)[None, :],
            mask=n_ok[:, None] & k_ok[None, :],
            other=0.0,
        )
        if FP32_DOT:
            acc = tl.dot(a.to(tl.float32), w.to(tl.float32).T, acc, input_precision="ieee")
        else:
            acc = tl.dot(a, w.T, acc)
    if HAS_BIAS:
        acc += tl.load(b_ptr + rn, mask=n_ok, other=0.0).to(tl.float32)[None, :]
    out = acc.to(out_ptr.dtype.element_ty)
    tl.store(out_ptr + rm[:, None] * stride_om + rn[None, :], out, mask=m_ok[:, None] & n_ok[None, :])


# ---------------------------------------------------------------------------------------------
# Launcher
# ---------------------------------------------------------------------------------------------
def dependent_launch(device: torch.device) -> bool:
    """Programmatic dependent launch: CUDA on sm90 (Hopper) or newer (the CPU interpreter has none)."""
    return device.type == "cuda" and torch.cuda.get_device_capability(device)[0] >= 9


def launch_linear(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, out: torch.Tensor
) -> torch.Tensor:
    """Run the kernel: x (M, K) and out (M, N) with unit last strides, weight (N, K) likewise.

    Takes the output buffer so tests can poison it; launches on torch's current stream; every
    element of `out` is written."""
    (M, K), N = x.shape, weight.shape[0]
    if out.numel() == 0:
        return out
    if K == 0:  # no K steps: the bias alone (the kernel would still be right, but skip the launch)
        return out.copy_(torch.zeros_like(out) if bias is None else bias.expand_as(out))
    block_m = 32 if M < 512 else 64
    pdl = dependent_launch(x.device)
    _linear_kernel[(triton.cdiv(M, block_m), triton.cdiv(N, 64))](
        x, weight, weight if bias is None else bias, out, M, N, K, x.stride(0), weight.stride(0), out.stride(0),
        HAS_BIAS=bias is not None, BLOCK_M=block_m, BLOCK_N=64, BLOCK_K=64 if x.dtype != torch.float32 else 32,
        PDL=pdl, LINES=triton.next_power_of_2(triton.cdiv(K, 64)), FP32_DOT=fp32_dot(x.dtype),
        num_warps=4, num_stages=3, **({"launch_pdl": True} if pdl else {}),
    )  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------
# Plain PyTorch: the reference (also the CPU implementation) and the same math in x's dtype
# ---------------------------------------------------------------------------------------------
def linear_layers(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """The contract as `F.linear` in x's dtype: what TensorRT builds for the op (converters/linear.py)."""
    return F.linear(x, weight, bias)


def linear_reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """`F.linear` in fp32, cast to x's dtype (the kernel's accuracy: one rounding at the end)."""
    return F.linear(x.float(), weight.float(), None if bias is None else bias.float()).to(x.dtype)


# ---------------------------------------------------------------------------------------------
# torch custom op
# ---------------------------------------------------------------------------------------------
def _check_inputs(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> None:
    """Static checks (shapes, dtypes, devices): safe while tracing."""
    if x.dim() < 1:
        raise ValueError("linear: x must have a last dimension (..., K), got a scalar")
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"linear: x must be float32, float16 or bfloat16, got {x.dtype}")
    if weight.dim() != 2 or weight.shape[1] != x.shape[-1]:
        raise ValueError(
            f"linear: weight must be (N, K) with K = x's last dim {x.shape[-1]} (nn.Linear's weight), "
            f"got shape {tuple(weight.shape)}"
        )
    if bias is not None and bias.shape != weight.shape[:1]:
        raise ValueError(f"linear: bias must be (N,) = ({weight.shape[0]},), got {tuple(bias.shape)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.dtype != x.dtype:
            raise ValueError(f"linear: {name} is {t.dtype}, x is {x.dtype}; cast them to one dtype")
        if t is not None and t.device != x.device:
            raise ValueError(f"linear: {name} on {t.device}, x on {x.device}; move them together")


@torch.library.custom_op("fastspeech::linear", mutates_args=())
def linear(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],  # noqa: UP045 - the op schema is inferred from this annotation
) -> torch.Tensor:
    """Triton kernel on CUDA (with dependent launch on Hopper), the PyTorch reference elsewhere."""
    _check_inputs(x, weight, bias)
    if not x.is_cuda:
        return linear_reference(x, weight, bias)
    K, N = x.shape[-1], weight.shape[0]
    x2 = x.reshape(-1, K)
    x2, w = (t if t.stride(-1) == 1 or t.numel() == 0 else t.contiguous() for t in (x2, weight))
    out = x2.new_empty(x2.shape[0], N)
    launch_linear(x2, w, None if bias is None else bias.contiguous(), out)
    return out.view(*x.shape[:-1], N)


@linear.register_fake
def _linear_fake(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    _check_inputs(x, weight, bias)
    return x.new_empty(*x.shape[:-1], weight.shape[0])


register_reference_autograd(linear, linear_reference)
