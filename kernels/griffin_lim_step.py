"""`torch.ops.fastspeech.griffin_lim_step`: Griffin-Lim's magnitude step between two FFTs, one kernel.

Griffin-Lim (`fastspeech/vocoder/griffin_lim.py`) runs each real FFT of n = 2M points as a complex
FFT of M points over the frame's sample pairs z[m] = x[2m] + i x[2m + 1] (a free view of the frame),
so cuFFT runs a plain complex transform (no copy of its input, as torch's irfft makes, no scaling
kernel). What is left between the forward FFT and the next inverse FFT is this op:

Contract: z, z_prev (B, T, M, 2) float32, the M-point FFTs (real pairs) of this iteration's frames and
the previous iteration's; magnitude (B, T, M + 1) float32, negative values taken as 0; keep (the
momentum's weight, a float) -> out (B, T, M, 2) float32 with
  1. X = `unpack_rfft`(z - keep * z_prev): the real spectrum (B, T, M + 1) of the frames, less keep
     times the previous one (fast Griffin-Lim's momentum; both steps are linear, so on the FFTs),
  2. S = max(magnitude, 0) * X / (|X| + 1e-16), the imaginary parts of S[0] and S[M] dropped
     (irfft's rule),
  3. out = `pack_irfft`(S): the pairs whose unnormalized inverse M-point FFT is irfft(S, n=2M).
Each bin k needs bin M - k too (unpacking and packing pair them), so one program takes a frame and
each lane a pair (k, M - k): it loads z[k] and z[(M - k) mod M] (and z_prev's), builds X[k] and
X[M - k], takes both through the magnitude step and stores out[k] and out[M - k]. Unwritten as plain
PyTorch (`griffin_lim_step_reference`, the CPU path), the flips and stacks split into several
Inductor kernels (measured: 8 per iteration instead of 2).

The clamp is here, not in the caller, so that the caller can pass a matmul's own output: Inductor
realizes a pointwise expression passed to a user-defined Triton kernel once per call, and with 32
calls it kept 32 copies of the clamped magnitude alive from the start of the loop (run 111,
docs/kernels_history.md).

Accuracy: fp32 throughout; the twiddles exp(-iπk/M) are one fp32 cos/sin each (error ~1e-7).
"""

from __future__ import annotations

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from kernels.utils import check_int32_offsets


# ---------------------------------------------------------------------------------------------
# Triton kernel
# ---------------------------------------------------------------------------------------------
@triton.jit
def _magnitude_step(x_re, x_im, mag):
    """mag * x / (|x| + 1e-16)."""
    scale = mag / (tl.sqrt(x_re * x_re + x_im * x_im) + 1e-16)
    return x_re * scale, x_im * scale


@triton.jit
def _griffin_lim_step_kernel(
    z_ptr,
    prev_ptr,
    mag_ptr,
    out_ptr,
    T,
    stride_zb,
    stride_zt,
    stride_pb,
    stride_pt,
    stride_mb,
    stride_mt,
    stride_ob,
    stride_ot,
    M: tl.constexpr,
    KEEP: tl.constexpr,
    BLOCK: tl.constexpr,
):
    row = tl.program_id(0)  # one frame (b, t)
    b, t = row // T, row % T
    j = tl.arange(0, BLOCK)  # pair (j, M - j), j = 0 .. M // 2
    ok = j <= M // 2
    jr = (M - j) % M  # z's partner index: z[M] is z[0]
    z = z_ptr + b.to(tl.int64) * stride_zb + t * stride_zt
    a_re = tl.load(z + 2 * j, mask=ok, other=0.0)
    a_im = tl.load(z + 2 * j + 1, mask=ok, other=0.0)
    b_re = tl.load(z + 2 * jr, mask=ok, other=0.0)
    b_im = tl.load(z + 2 * jr + 1, mask=ok, other=0.0)
    if KEEP != 0.0:
        p = prev_ptr + b.to(tl.int64) * stride_pb + t * stride_pt
        a_re -= KEEP * tl.load(p + 2 * j, mask=ok, other=0.0)
        a_im -= KEEP * tl.load(p + 2 * j + 1, mask=ok, other=0.0)
        b_re -= KEEP * tl.load(p + 2 * jr, mask=ok, other=0.0)
        b_im -= KEEP * tl.load(p + 2 * jr + 1, mask=ok, other=0.0)

    # Unpack: with a = z[j], b = z[M - j], W = exp(-iπj/M) = c - i s:
    #   X[j]     = (a + conj b) / 2 - i W (a - conj b) / 2
    #   X[M - j] = (b + conj a) / 2 - i W' (b - conj a) / 2,  W' = W^(M - j) = -conj(W) = -c - i s
    theta = j.to(tl.float32) * (3.141592653589793 / M)
    c, s = tl.cos(theta), tl.sin(theta)
    e_re, e_im = (a_re + b_re) * 0.5, (a_im - b_im) * 0.5  # (a + conj b) / 2
    d_re, d_im = (a_re - b_re) * 0.5, (a_im + b_im) * 0.5  # (a - conj b) / 2
    wd_re, wd_im = c * d_re + s * d_im, c * d_im - s * d_re  # W d
    x_re, x_im = e_re + wd_im, e_im - wd_re  # e - i W d
    # (b + conj a) / 2 = conj(e), (b - conj a) / 2 = -conj(d), and W' (-conj d) = v:
    v_re, v_im = c * d_re + s * d_im, s * d_re - c * d_im
    y_re, y_im = e_re + v_im, -e_im - v_re  # conj(e) - i v

    # Magnitude step; irfft ignores the imaginary parts of bins 0 and M (both in lane j = 0).
    m = mag_ptr + b.to(tl.int64) * stride_mb + t * stride_mt
    x_re, x_im = _magnitude_step(x_re, x_im, tl.maximum(tl.load(m + j, mask=ok, other=0.0), 0.0))
    y_re, y_im = _magnitude_step(y_re, y_im, tl.maximum(tl.load(m + (M - j), mask=ok, other=0.0), 0.0))
    x_im = tl.where(j == 0, 0.0, x_im)
    y_im = tl.where(j == 0, 0.0, y_im)

    # Pack, for k = j (S[k] = x, S[M - k] = y) and k = M - j (S[k] = y, S[M - k] = x):
    #   out[k] = (E + i O) / M, E = (S[k] + conj S[M - k]) / 2, O = (S[k] - conj S[M - k]) / 2 * conj(W^k)
    # with conj(W^j) = c + i s and conj(W^(M - j)) = -c + i s.
    o = out_ptr + b.to(tl.int64) * stride_ob + t * stride_ot
    e_re, e_im = (x_re + y_re) * 0.5, (x_im - y_im) * 0.5
    d_re, d_im = (x_re - y_re) * 0.5, (x_im + y_im) * 0.5
    q_re, q_im = c * d_re - s * d_im, c * d_im + s * d_re  # d (c + i s)
    tl.store(o + 2 * j, (e_re - q_im) / M, mask=ok)
    tl.store(o + 2 * j + 1, (e_im + q_re) / M, mask=ok)
    # k = M - j: E' = conj(e) and O' = -conj(d) (-c + i s) = conj(q)
    second = ok & (j > 0) & (2 * j < M)  # k = 0 has no partner in out; k = M / 2 is its own
    tl.store(o + 2 * (M - j), (e_re + q_im) / M, mask=second)
    tl.store(o + 2 * (M - j) + 1, (q_re - e_im) / M, mask=second)


# ---------------------------------------------------------------------------------------------
# Launcher
# ---------------------------------------------------------------------------------------------
def launch_griffin_lim_step(
    z: torch.Tensor,
    z_prev: torch.Tensor,
    magnitude: torch.Tensor,
    keep: float,
    out: torch.Tensor,
    *,
    num_warps: int | None = None,
) -> torch.Tensor:
    """Run the kernel into `out` (B, T, M, 2); every element of `out` is written.

    z, z_prev and out may be any (B, T) strides with each frame's (M, 2) contiguous; magnitude any
    (B, T) strides with its M + 1 bins contiguous. One program per frame, a lane per bin pair.
    """
    B, T, M, _ = z.shape
    if z.numel() == 0:
        return out
    check_int32_offsets("griffin_lim_step", z, z_prev, magnitude, out)
    block = triton.next_power_of_2(M // 2 + 1)
    wrap_triton(_griffin_lim_step_kernel)[(B * T,)](
        z,
        z_prev,
        magnitude,
        out,
        T,
        z.stride(0),
        z.stride(1),
        z_prev.stride(0),
        z_prev.stride(1),
        magnitude.stride(0),
        magnitude.stride(1),
        out.stride(0),
        out.stride(1),
        M=M,
        KEEP=float(keep),
        BLOCK=block,
        num_warps=num_warps or max(1, min(8, block // 64)),
    )
    return out


# ---------------------------------------------------------------------------------------------
# Plain PyTorch reference (also the CPU implementation and the TensorRT decomposition)
# ---------------------------------------------------------------------------------------------
def _mul(x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    """Complex product of real pairs (..., 2)."""
    re = x[..., 0] * y[..., 0] - x[..., 1] * y[..., 1]
    return torch.stack([re, x[..., 0] * y[..., 1] + x[..., 1] * y[..., 0]], -1)


def _conj(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([x[..., 0], -x[..., 1]], -1)


def _twiddle(n: int, like: torch.Tensor) -> torch.Tensor:
    """exp(-2πik / n) for k = 0 .. n / 2 as real pairs (n / 2 + 1, 2), in like's dtype (TensorRT has
    no float64)."""
    angle = torch.arange(n // 2 + 1, dtype=like.dtype, device=like.device) * (-2 * torch.pi / n)
    return torch.stack([angle.cos(), angle.sin()], -1)


def unpack_rfft(z: torch.Tensor) -> torch.Tensor:
    """The real FFT X (..., M + 1, 2) of n = 2M samples from Z (..., M, 2), the complex FFT of the M
    pairs x[2m] + i x[2m + 1]: with Zc[k] = conj(Z[(M - k) mod M]), the even samples' spectrum is
    (Z + Zc) / 2, the odd ones' (Z - Zc) / 2i, and X[k] = even[k] + exp(-2πik / n) odd[k]."""
    M = z.shape[-2]
    z = torch.cat([z, z[..., :1, :]], -2)  # Z[k mod M] for k = 0 .. M
    zc = _conj(z.flip(-2))  # conj(Z[M - k])
    even, diff = (z + zc) / 2, (z - zc) / 2
    odd = torch.stack([diff[..., 1], -diff[..., 0]], -1)  # diff / i
    return even + _mul(_twiddle(2 * M, z), odd)


def pack_irfft(x: torch.Tensor) -> torch.Tensor:
    """`unpack_rfft`'s inverse: Z (..., M, 2) from a half spectrum X (..., M + 1, 2) such that the
    unnormalized inverse FFT of Z has the pairs (x[2m], x[2m + 1]) of x = irfft(X, n=2M). As irfft,
    the imaginary parts of X[0] and X[M] are ignored (a real signal has none)."""
    M = x.shape[-2] - 1
    k = torch.arange(M + 1, device=x.device)
    x = torch.stack([x[..., 0], x[..., 1] * ((k > 0) & (k < M))], -1)
    xc = _conj(x.flip(-2))[..., :M, :]  # conj(X[M - k])
    x = x[..., :M, :]
    even, odd = (x + xc) / 2, _mul((x - xc) / 2, _conj(_twiddle(2 * M, x)[:M]))
    return torch.stack([even[..., 0] - odd[..., 1], even[..., 1] + odd[..., 0]], -1) / M  # even + i odd


def griffin_lim_step_reference(
    z: torch.Tensor, z_prev: torch.Tensor, magnitude: torch.Tensor, keep: float
) -> torch.Tensor:
    """Plain PyTorch: unpack the momentum-corrected spectrum, the magnitude step (magnitude clamped
    at 0), pack."""
    x = unpack_rfft(z - keep * z_prev)
    s = magnitude.clamp_min(0)[..., None] * x / (x.square().sum(-1, keepdim=True).sqrt() + 1e-16)
    return pack_irfft(s)


# ---------------------------------------------------------------------------------------------
# torch custom op
# ---------------------------------------------------------------------------------------------
def _check_inputs(z: torch.Tensor, z_prev: torch.Tensor, magnitude: torch.Tensor) -> None:
    """Static checks (shapes, dtypes, devices, inner strides): safe while tracing."""
    if z.dim() != 4 or z.shape[-1] != 2:
        raise ValueError(f"griffin_lim_step: z must be (B, T, M, 2) real pairs, got shape {tuple(z.shape)}")
    if z_prev.shape != z.shape:
        raise ValueError(
            f"griffin_lim_step: z_prev must have z's shape {tuple(z.shape)}, got {tuple(z_prev.shape)}"
        )
    if magnitude.shape != (*z.shape[:2], z.shape[2] + 1):
        raise ValueError(
            f"griffin_lim_step: magnitude must be (B, T, M + 1) = {(*z.shape[:2], z.shape[2] + 1)}, "
            f"got {tuple(magnitude.shape)}"
        )
    for name, t in (("z", z), ("z_prev", z_prev), ("magnitude", magnitude)):
        if t.dtype != torch.float32:
            raise ValueError(f"griffin_lim_step: {name} must be float32, got {t.dtype}")
        if t.device != z.device:
            raise ValueError(f"griffin_lim_step: {name} on {t.device}, z on {z.device}; move them together")
    inner = [(z, (2, 1)), (z_prev, (2, 1)), (magnitude, (1,))]
    if any(t.stride()[2:] != want and t.numel() > 0 for t, want in inner):
        raise ValueError(
            "griffin_lim_step: each frame's bins must be contiguous (make the inputs contiguous)"
        )


@triton_op("fastspeech::griffin_lim_step", mutates_args=())
def griffin_lim_step(
    z: torch.Tensor, z_prev: torch.Tensor, magnitude: torch.Tensor, keep: float
) -> torch.Tensor:
    """Dispatch: Triton kernel on CUDA, the PyTorch reference elsewhere (CPU)."""
    _check_inputs(z, z_prev, magnitude)
    if z.is_cuda:
        return launch_griffin_lim_step(
            z, z_prev, magnitude, keep, torch.empty(z.shape, dtype=z.dtype, device=z.device)
        )
    return griffin_lim_step_reference(z, z_prev, magnitude, keep)


@griffin_lim_step.register_kernel("cpu")
def _griffin_lim_step_cpu(
    z: torch.Tensor, z_prev: torch.Tensor, magnitude: torch.Tensor, keep: float
) -> torch.Tensor:
    """Eager CPU: the PyTorch reference, after the same checks."""
    _check_inputs(z, z_prev, magnitude)
    return griffin_lim_step_reference(z, z_prev, magnitude, keep)
