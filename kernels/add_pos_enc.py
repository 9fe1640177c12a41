"""`torch.ops.fastspeech.add_pos_enc`: add DLE's sinusoidal positional encoding to valid rows.

Contract: x (B, T, H) fp32/fp16/bf16, lengths (B,) integer -> x + PE(t + 1) for t < lengths[b];
rows at t >= lengths[b] (padding) are returned unchanged (DLE's PyTorch semantics: padding takes
table row 0, all zeros; the seed's TensorRT plugin added PE to padding too). PE is DLE's table
(`get_sinusoid_encoding_table`): angle(p, j) = p / 10000^(2*floor(j/2)/H), sin for even j, cos for odd.
The sum is computed in fp32 and rounded once to x's dtype.

Accuracy (fp32: within 1e-4 absolute of the float64-built table up to position 2048; max error
3.8e-7 measured on CPU, including the fp32 rounding of x + PE; the H100 run passes the same 1e-4 test).
A plain fp32 `sin(p * inv_freq)` can't meet that: near p = 2048 one ulp of the fp32 angle is 2.4e-4
rad, and an fp32 inv_freq adds p * 6e-8 more. The kernel instead
  1. computes inv_freq = r^k (k = j // 2, r = 10000^(-2/H)) in float64 by binary powering, from r
     passed as two fp32 halves (Triton types Python float arguments as fp32; hi + lo carries ~48 bits);
     only float64 multiplies and adds, no float64 transcendental (so nothing depends on libdevice);
  2. forms the angle p * inv_freq in float64 and range-reduces it to [-pi, pi] in float64
     (Cody-Waite: n = round(angle / 2pi), angle - n*C1 - n*C2 with C1 = fp32(2pi), exact products);
  3. rounds the reduced angle to fp32 (error <= 1.2e-7), adds pi/2 on odd columns (cos x = sin(x +
     pi/2)), and takes one fp32 sin: total error a few 1e-7, independent of the position.
fp64 math is cheap here: the kernel is memory bound, and each program computes its (BLOCK_T, BLOCK_H)
PE tile once and reuses it for several batch rows (the PE does not depend on b).
"""

from __future__ import annotations

import struct

import torch
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from kernels.utils import check_int32_offsets


# ---------------------------------------------------------------------------------------------
# Triton kernel
# ---------------------------------------------------------------------------------------------
@triton.jit
def _add_pos_enc_kernel(
    x_ptr,
    len_ptr,
    out_ptr,
    B,
    T,
    H,
    b_per_prog,
    ratio_hi,
    ratio_lo,
    stride_xb,
    stride_xt,
    stride_xh,
    stride_ob,
    stride_ot,
    stride_oh,
    stride_len,
    BLOCK_T: tl.constexpr,
    BLOCK_H: tl.constexpr,
    N_BITS: tl.constexpr,
):
    pid_t = tl.program_id(0)
    pid_h = tl.program_id(1)
    pid_b = tl.program_id(2)

    rows = pid_t * BLOCK_T + tl.arange(0, BLOCK_T)  # (BLOCK_T,) time index t; position t + 1
    cols = pid_h * BLOCK_H + tl.arange(0, BLOCK_H)  # (BLOCK_H,) channel j
    tile_ok = (rows < T)[:, None] & (cols < H)[None, :]

    # Batch rows b0 .. b0 + n_rows - 1 (n_rows >= 1) share the PE tile. Scalar int64 base pointers
    # step one batch row at a time; offsets inside a row are int32 (the launcher checks they fit).
    # The first row's loads go out before the PE math, so its memory latency overlaps that math.
    offs_x = rows[:, None] * stride_xt + cols[None, :] * stride_xh
    offs_o = rows[:, None] * stride_ot + cols[None, :] * stride_oh
    b0 = pid_b.to(tl.int64) * b_per_prog
    x_row = x_ptr + b0 * stride_xb
    o_row = out_ptr + b0 * stride_ob
    len_p = len_ptr + b0 * stride_len
    n_rows = tl.minimum(b_per_prog, B - b0).to(tl.int32)
    length = tl.load(len_p)
    x = tl.load(x_row + offs_x, mask=tile_ok, other=0.0)

    # inv_freq[j] = r^(j // 2) in float64, r = 10000^(-2/H) given as fp32 hi + lo.
    k = cols // 2
    base = (tl.zeros([BLOCK_H], dtype=tl.float64) + ratio_hi) + ratio_lo
    inv_freq = tl.full([BLOCK_H], 1.0, dtype=tl.float64)
    for bit in tl.static_range(N_BITS):
        inv_freq = tl.where(((k >> bit) & 1) != 0, inv_freq * base, inv_freq)
        base = base * base

    # angle in float64, reduced to [-pi, pi] in float64; Cody-Waite 2pi = C1 + C2, C1 exact in fp32.
    angle = (rows + 1).to(tl.float64)[:, None] * inv_freq[None, :]  # (BLOCK_T, BLOCK_H)
    n = (angle * 0.15915494309189535 + 0.5).to(tl.int32).to(tl.float64)  # round(angle / 2pi), angle >= 0
    reduced = (angle - n * 6.2831854820251465) - n * -1.7484556000744487e-07
    phase = tl.where((cols % 2) == 1, 1.5707963267948966, 0.0)  # odd j: cos(a) = sin(a + pi/2)
    pe = tl.sin(reduced.to(tl.float32) + phase[None, :])  # (BLOCK_T, BLOCK_H) fp32

    for i in range(n_rows):
        y = (x.to(tl.float32) + pe).to(x.dtype)
        y = tl.where((rows < length)[:, None], y, x)  # padding rows: copied bit for bit
        tl.store(o_row + offs_o, y, mask=tile_ok)
        # Prefetch the next batch row (nothing after the last) while this row's store drains.
        more = i + 1 < n_rows
        next_t = tl.where(more, T, 0)  # rows to load from the next batch row
        x_row += stride_xb
        o_row += stride_ob
        len_p += stride_len
        length = tl.load(len_p, mask=more, other=0)
        x = tl.load(x_row + offs_x, mask=(rows < next_t)[:, None] & (cols < H)[None, :], other=0.0)


# ---------------------------------------------------------------------------------------------
# Launcher
# ---------------------------------------------------------------------------------------------
def _ratio_split(H: int) -> tuple[float, float]:
    """r = 10000^(-2/H) as (hi, lo): hi = fp32(r), lo = fp32(r - hi); hi + lo = r to ~2^-48 relative."""
    ratio = 10000.0 ** (-2.0 / H)
    hi = _to_fp32(ratio)
    return hi, _to_fp32(ratio - hi)


def _to_fp32(value: float) -> float:
    """Round a Python float to the nearest fp32 (pure Python: this runs while torch.compile traces)."""
    return struct.unpack("f", struct.pack("f", value))[0]


def launch_add_pos_enc(
    x: torch.Tensor,
    lengths: torch.Tensor,
    out: torch.Tensor,
    *,
    block_t: int | None = None,
    block_h: int | None = None,
    b_per_prog: int | None = None,
    num_warps: int | None = None,
) -> torch.Tensor:
    """Run the kernel into `out` (same shape as x, any strides); every element of `out` is written.

    Takes the output buffer so tests can poison it and benchmarks can reuse it; `out` may be `x`
    itself (each element is read before it is written, by the same program). Launches on torch's
    current stream. Block sizes default to the tuned values (benchmarks/kernels/bench_add_pos_enc.py).
    """
    B, T, H = x.shape
    if x.numel() == 0:
        return out
    check_int32_offsets("add_pos_enc", x, out)
    block_h = block_h or min(128, max(16, triton.next_power_of_2(H)))
    block_t = block_t or min(16, max(8, triton.next_power_of_2(T)))
    tiles = triton.cdiv(T, block_t) * triton.cdiv(H, block_h)
    if b_per_prog is None:
        # Enough programs to fill the GPU (~1024), each reusing its PE tile over as many rows as that allows.
        groups = min(B, max(1, triton.cdiv(1024, tiles)))
        b_per_prog = triton.cdiv(B, groups)
    num_warps = num_warps or 4
    ratio_hi, ratio_lo = _ratio_split(H)
    n_bits = max(1, ((H - 1) // 2).bit_length())  # enough bits for k = j // 2 <= (H - 1) // 2
    grid = (triton.cdiv(T, block_t), triton.cdiv(H, block_h), triton.cdiv(B, b_per_prog))
    wrap_triton(_add_pos_enc_kernel)[grid](
        x,
        lengths,
        out,
        B,
        T,
        H,
        b_per_prog,
        ratio_hi,
        ratio_lo,
        x.stride(0),
        x.stride(1),
        x.stride(2),
        out.stride(0),
        out.stride(1),
        out.stride(2),
        lengths.stride(0),
        BLOCK_T=block_t,
        BLOCK_H=block_h,
        N_BITS=n_bits,
        num_warps=num_warps,
    )
    return out


# ---------------------------------------------------------------------------------------------
# Plain PyTorch reference (also the CPU implementation)
# ---------------------------------------------------------------------------------------------
def sinusoid_table(n_position: int, d_hid: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """DLE's table (n_position, d_hid) built in float64, row 0 (the padding position) all zeros."""
    pos = torch.arange(n_position, dtype=torch.float64)[:, None]
    j = torch.arange(d_hid, dtype=torch.float64)[None, :]
    angle = pos / torch.pow(10000.0, 2 * torch.div(j, 2, rounding_mode="floor") / d_hid)
    table = torch.where(j.long() % 2 == 0, torch.sin(angle), torch.cos(angle))
    table[0] = 0.0
    return table.to(dtype)


def add_pos_enc_reference(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Plain PyTorch: gather rows 1..T of the float64-built table, add where t < length."""
    _, T, H = x.shape
    table = sinusoid_table(T + 1, H).to(x.device)[1:]  # (T, H), positions 1..T
    valid = torch.arange(T, device=x.device)[None, :] < lengths.to(x.device)[:, None]  # (B, T)
    return (x.float() + table[None] * valid[..., None]).to(x.dtype)


# ---------------------------------------------------------------------------------------------
# torch custom op
# ---------------------------------------------------------------------------------------------
def _check_inputs(x: torch.Tensor, lengths: torch.Tensor) -> None:
    """Static checks (shapes, dtypes, devices): safe while tracing."""
    if x.dim() != 3:
        raise ValueError(f"add_pos_enc: x must be (B, T, H), got shape {tuple(x.shape)}")
    if lengths.shape != x.shape[:1]:
        raise ValueError(f"add_pos_enc: lengths must be (B,) = ({x.shape[0]},), got {tuple(lengths.shape)}")
    if lengths.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"add_pos_enc: lengths must be int32 or int64, got {lengths.dtype}")
    if lengths.device != x.device:
        raise ValueError(f"add_pos_enc: lengths on {lengths.device}, x on {x.device}; move them together")


@triton_op("fastspeech::add_pos_enc", mutates_args=())
def add_pos_enc(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Dispatch: Triton kernel on CUDA, the PyTorch reference elsewhere (CPU).

    The device branch lives in the body because Inductor traces into a triton_op's body (and ignores
    kernels registered per device) when it compiles; eager CPU calls also reach `_add_pos_enc_cpu`.
    """
    _check_inputs(x, lengths)
    if x.is_cuda:
        return launch_add_pos_enc(x, lengths, torch.empty(x.shape, dtype=x.dtype, device=x.device))
    return add_pos_enc_reference(x, lengths)


@add_pos_enc.register_kernel("cpu")
def _add_pos_enc_cpu(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """Eager CPU: the PyTorch reference, after the same checks."""
    _check_inputs(x, lengths)
    return add_pos_enc_reference(x, lengths)
