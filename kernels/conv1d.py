"""`torch.ops.fastspeech.conv1d`: a k-tap 1-D convolution over time on (B, T, C) activations, one kernel.

Contract: conv1d(x, weight, bias, lengths, padding, relu) -> out
  x (B, T, C_in) fp32/fp16/bf16; weight (k, C_out, C_in) of x's dtype, "tap-major":
  weight[j] == nn.Conv1d.weight[:, :, j] (so `conv.weight.permute(2, 0, 1)` is this tensor; a free view
  when the Conv1d's weight is stored that way); bias (C_out,) of x's dtype, or None; lengths (B,) int32
  or int64; padding int with 0 <= padding <= k - 1; relu bool -> out (B, T, C_out) of x's dtype:
    out[b, t, o] = act(bias[o] + sum_j sum_c weight[j, o, c] * x[b, t + j - padding, c]) * (t < lengths[b])
  with x taken as zero outside 0 <= t + j - padding < T: nn.Conv1d's own zero padding (stride 1,
  dilation 1), `padding` rows before and k - 1 - padding after, so the output keeps T rows (for odd k
  and padding = (k - 1) / 2 that is exactly `nn.Conv1d(padding=padding)`). act = relu or identity.
  Rows t >= lengths[b] are exactly 0 (lengths beyond T act as T; lengths <= 0 give all-zero rows).
  Input rows past the length are used as given (the caller masks its inputs where it needs to). Sums
  accumulate in fp32 and round once to x's dtype. The output shape depends only on the input shapes.

Why: FastSpeech's feed-forward convs ran as three kernels each: w_1 (384 -> 1536) as an "unfold" copy
(3 shifted copies of x), a GEMM with K = 3 C_in, then relu * row mask; w_2 (1536 -> 384) as a GEMM into
(B, T, 3 C_out) taps and a shifted sum. This op reads the shifted rows of x straight from x (no unfold
or taps buffer) and applies bias, relu and the row mask in the GEMM's epilogue.

The kernel is an implicit GEMM: M = B T rows, N = C_out, and a K loop over taps j (outer) x C_in blocks
(inner), flattened into one loop so Triton pipelines it as one. Its tiles move through tensor
descriptors (TMA, Hopper's copy engine): x as (B, T, C_in), so for an output tile (BLOCK_M rows of one
batch item, BLOCK_N channels) and tap j the A tile is rows t0 + j - padding .. of that item, and rows
outside [0, T) arrive as zeros (the conv's padding, no masks, never another item's rows); the weight as
(k, C_out, C_in); the output stored as (B, T, C_out), rows past T dropped. `tl.dot` accumulates in fp32
(wgmma on sm90 for fp16/bf16; IEEE fp32 for fp32 inputs, no TF32). The grid is persistent: one program
per SM walks the output tiles, swizzled in groups of GROUP_M row tiles so that consecutive tiles share
weight column blocks in L2. Tiles come from `default_blocks`. Run 35 (H200, fp16, B=64, T=1024): w_1
(384 -> 1536) 339 µs, 683 TFLOP/s, where the same kernel with masked pointer loads and one program per
tile took 414 µs and cuBLAS's GEMM alone on an unfolded x 319 µs (docs/kernels_history.md).

The reference (`conv1d_reference`, also the CPU implementation) is `F.conv1d` on x.transpose(1, 2)
with weight.permute(1, 2, 0), then relu and the row mask, computed in fp32 and cast to x's dtype
(half-precision inputs are rounded already; only the one final rounding differs from the kernel's).
`conv1d_layers` is the same math in x's dtype: what the TensorRT path builds (converters/conv1d.py).
"""

from __future__ import annotations

import math
from typing import NamedTuple, Optional

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from kernels.utils import fp32_dot, register_reference_autograd

FILL_PROGRAMS = 132  # programs that fill the GPU: our H100's (and H200's) SM count
FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)


# ---------------------------------------------------------------------------------------------
# Triton kernel
# ---------------------------------------------------------------------------------------------
@triton.jit
def _conv1d_kernel(
    x_ptr,
    w_ptr,
    bias_ptr,
    len_ptr,
    out_ptr,
    B,
    T,
    stride_xb,
    stride_xt,
    stride_wj,
    stride_wo,
    stride_bias,
    stride_ob,
    stride_ot,
    stride_len,
    C_IN: tl.constexpr,
    C_OUT: tl.constexpr,
    KSIZE: tl.constexpr,
    PADDING: tl.constexpr,
    HAS_BIAS: tl.constexpr,
    RELU: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    GROUP_M: tl.constexpr,
    PROGRAMS: tl.constexpr,
    SUBTILE: tl.constexpr,
    FP32_DOT: tl.constexpr,
):
    STORE_N: tl.constexpr = BLOCK_N // 2 if SUBTILE else BLOCK_N  # the epilogue's store width
    # Tensor descriptors (TMA on sm90): a tile load outside the tensor's shape reads zeros, so a tap's
    # source rows t + j - PADDING outside [0, T) are the conv's zero padding with no masks, and never
    # another batch item's rows (a row tile stays inside one item); a store outside it is dropped.
    x_desc = tl.make_tensor_descriptor(
        x_ptr, shape=[B, T, C_IN], strides=[stride_xb, stride_xt, 1], block_shape=[1, BLOCK_M, BLOCK_K]
    )
    w_desc = tl.make_tensor_descriptor(
        w_ptr,
        shape=[KSIZE, C_OUT, C_IN],
        strides=[stride_wj, stride_wo, 1],
        block_shape=[1, BLOCK_N, BLOCK_K],
    )
    o_desc = tl.make_tensor_descriptor(
        out_ptr, shape=[B, T, C_OUT], strides=[stride_ob, stride_ot, 1], block_shape=[1, BLOCK_M, STORE_N]
    )
    tiles_t = tl.cdiv(T, BLOCK_M)  # row tiles per batch item
    tiles_m = B * tiles_t
    tiles_n: tl.constexpr = (C_OUT + BLOCK_N - 1) // BLOCK_N
    C_BLOCKS: tl.constexpr = (C_IN + BLOCK_K - 1) // BLOCK_K
    # Persistent: PROGRAMS programs (one per SM) walk the output tiles; `flatten` lets Triton pipeline
    # the next tile's first loads under this tile's last steps and epilogue.
    for tile in tl.range(tl.program_id(0), tiles_m * tiles_n, PROGRAMS, flatten=True):
        # Group-M swizzle: GROUP_M consecutive tiles walk down one column of tiles, sharing its weights.
        group = tile // (GROUP_M * tiles_n)
        first_m = group * GROUP_M
        group_rows = tl.minimum(tiles_m - first_m, GROUP_M)
        pid_m = first_m + (tile % (GROUP_M * tiles_n)) % group_rows
        pid_n = (tile % (GROUP_M * tiles_n)) // group_rows
        b = pid_m // tiles_t
        t0 = (pid_m - b * tiles_t) * BLOCK_M
        n0 = pid_n * BLOCK_N
        length = tl.load(len_ptr + b * stride_len)
        # A tile wholly at or past the length is padding: no K steps, it stores zeros (a bound rather
        # than an `if`, so Triton still flattens the two loops into one pipeline).
        k_steps = tl.where(t0 < length, KSIZE * C_BLOCKS, 0)

        acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
        for step in range(k_steps):  # taps outer, input-channel blocks inner, one flat loop
            j = step // C_BLOCKS
            c0 = (step - j * C_BLOCKS) * BLOCK_K
            a = x_desc.load([b, t0 + j - PADDING, c0]).reshape(BLOCK_M, BLOCK_K)
            w = w_desc.load([j, n0, c0]).reshape(BLOCK_N, BLOCK_K)
            if FP32_DOT:
                acc = tl.dot(a.to(tl.float32), w.to(tl.float32).T, acc, input_precision="ieee")
            else:
                acc = tl.dot(a, w.T, acc)

        cols = n0 + tl.arange(0, BLOCK_N)
        if HAS_BIAS:
            acc += tl.load(bias_ptr + cols * stride_bias, mask=cols < C_OUT, other=0.0).to(tl.float32)[
                None, :
            ]
        if RELU:
            acc = tl.maximum(acc, 0.0)
        t = t0 + tl.arange(0, BLOCK_M)
        acc = tl.where((t < length)[:, None], acc, 0.0)  # padding rows: exactly 0
        acc = acc.to(out_ptr.dtype.element_ty)
        if SUBTILE:  # two half-width stores: half the shared memory to stage them, one more stage
            left, right = acc.reshape(BLOCK_M, 2, STORE_N).permute(0, 2, 1).split()
            o_desc.store([b, t0, n0], left.reshape(1, BLOCK_M, STORE_N))
            o_desc.store([b, t0, n0 + STORE_N], right.reshape(1, BLOCK_M, STORE_N))
        else:
            o_desc.store([b, t0, n0], acc.reshape(1, BLOCK_M, BLOCK_N))


# ---------------------------------------------------------------------------------------------
# Launcher
# ---------------------------------------------------------------------------------------------
class Blocks(NamedTuple):
    """One launch configuration: tile sizes, warps, pipeline stages, the program-id swizzle group, the
    number of persistent programs (None: one per SM, or every tile when there are fewer) and whether
    the epilogue stores its tile in two halves."""

    block_m: int
    block_n: int
    block_k: int
    num_warps: int
    num_stages: int
    group_m: int = 8
    programs: int | None = None
    subtile: bool = False


def default_blocks(B: int, T: int, N: int, c_in: int, dtype: torch.dtype) -> Blocks:
    """128 x 128 tiles (4 warps, 4 stages), or 128 x 256 (8 warps, 3 stages) where N divides into
    256-wide column tiles and there are at least two waves of them; smaller only for short T or
    narrow N. From run 37's sweep (H200, fp16, FastSpeech's four convs from 4096 to 65536 rows): the
    128 x 256 tile is 2-8% faster for w_1 from 8192 rows on, but 1.3x slower at 4096 (192 tiles, 1.45
    waves); every 64-row tile is slower, the long-K w_2 (K = 4608) most.

    Row tiles never span two batch items, so a batch item has ceil(T / BLOCK_M) of them. N = C_out,
    c_in = C_in. fp32 (IEEE dot products, no tensor cores, twice the bytes) keeps to 128 x 128 tiles,
    32-wide K steps and 3 stages: correct, but slow on the FMA units (run 43, H200: ~0.8 TFLOP/s for
    w_2 at B=64, T=1024), so the model never runs the op in fp32 (`fastspeech.model.conv1d`); smaller
    fp32 tiles were not swept.
    """
    wide = dtype.itemsize <= 2
    block_m = min(128, max(16, triton.next_power_of_2(T)))
    block_k = max(16, min(64 if wide else 32, triton.next_power_of_2(c_in)))
    wide_tiles = B * triton.cdiv(T, 128) * (N // 256)
    if wide and block_m == 128 and N % 256 == 0 and wide_tiles >= 2 * FILL_PROGRAMS:
        return Blocks(128, 256, block_k, num_warps=8, num_stages=3)
    block_n = min(128, max(16, triton.next_power_of_2(N)))
    return Blocks(block_m, block_n, block_k, num_warps=4, num_stages=4 if wide else 3)


def tma_ready(t: torch.Tensor) -> bool:
    """Whether a tensor descriptor can address `t`: unit last stride, every other stride (of a
    dimension longer than 1) and the start a multiple of 16 bytes (storage starts are: torch's
    allocators align them to 64 bytes or more)."""
    size = t.element_size()
    strides = [s for s, n in zip(t.stride()[:-1], t.shape[:-1]) if n > 1]
    return t.stride(-1) == 1 and all(s * size % 16 == 0 for s in (*strides, t.storage_offset()))


def tma_strides(t: torch.Tensor) -> tuple[int, ...]:
    """t's strides for its descriptor, a dimension of length 1 given a 16-byte multiple (its stride,
    any value to torch, is never stepped over, but the copy engine takes only such strides)."""
    aligned = 16 // t.element_size()
    inner = [triton.cdiv(math.prod(t.shape[i + 1 :]), aligned) * aligned for i in range(t.dim())]
    return tuple(s if n > 1 else a for s, n, a in zip(t.stride(), t.shape, inner))


def tma_empty(t: torch.Tensor) -> torch.Tensor:
    """An uninitialized buffer of t's shape and dtype that `tma_ready` accepts: freshly allocated
    (so its start is aligned), contiguous, the last dimension padded to 16 bytes (the descriptor's
    shape stays t's, so the kernel never touches the padding)."""
    pad = -t.shape[-1] % (16 // t.element_size())
    return t.new_empty(*t.shape[:-1], t.shape[-1] + pad)[..., : t.shape[-1]]


def set_scratch_allocator(device: torch.device) -> None:
    """Triton's global scratch, where each program writes the descriptors it makes, from torch's
    allocator on `device` (inside a CUDA graph capture: the graph's pool). Eager launches need it;
    Inductor's launcher sets its own."""
    triton.set_allocator(lambda size, alignment, stream: torch.empty(size, dtype=torch.int8, device=device))


def launch_conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    lengths: torch.Tensor,
    padding: int,
    relu: bool,
    out: torch.Tensor,
    *,
    blocks: Blocks | None = None,
) -> torch.Tensor:
    """Run the kernel into `out` (B, T, C_out), any strides; every element of `out` is written.

    Takes the output buffer so tests can poison it and benchmarks can reuse it. Launches on torch's
    current stream. `blocks` defaults to `default_blocks`; override it only to sweep. x, weight and out
    go to the kernel as they are when a tensor descriptor can address them (`tma_ready`: FastSpeech's
    contiguous activations and tap-major weights); otherwise through an aligned copy.
    """
    B, T, c_in = x.shape
    k, c_out, _ = weight.shape
    if out.numel() == 0:
        return out
    blocks = blocks or default_blocks(B, T, c_out, c_in, x.dtype)
    x, weight = (t if tma_ready(t) else tma_empty(t).copy_(t) for t in (x, weight))
    dst = out if tma_ready(out) else tma_empty(out)  # written whole by the kernel, then copied to out
    (sxb, sxt, _), (swj, swo, _), (sob, sot, _) = (tma_strides(t) for t in (x, weight, dst))
    tiles = B * triton.cdiv(T, blocks.block_m) * triton.cdiv(c_out, blocks.block_n)
    programs = min(tiles, blocks.programs or sm_count(x.device))
    set_scratch_allocator(x.device)
    wrap_triton(_conv1d_kernel)[(programs,)](
        x,
        weight,
        x if bias is None else bias,  # never read when HAS_BIAS is False
        lengths,
        dst,
        B,
        T,
        sxb,
        sxt,
        swj,
        swo,
        0 if bias is None else bias.stride(0),
        sob,
        sot,
        lengths.stride(0),
        C_IN=c_in,
        C_OUT=c_out,
        KSIZE=k,
        PADDING=padding,
        HAS_BIAS=bias is not None,
        RELU=relu,
        BLOCK_M=blocks.block_m,
        BLOCK_N=blocks.block_n,
        BLOCK_K=blocks.block_k,
        GROUP_M=blocks.group_m,
        PROGRAMS=programs,
        SUBTILE=blocks.subtile,
        FP32_DOT=fp32_dot(x.dtype),
        num_warps=blocks.num_warps,
        num_stages=blocks.num_stages,
    )
    if dst is not out:
        out.copy_(dst)
    return out


def sm_count(device: torch.device) -> int:
    """Persistent programs that fill the device: its SM count (FILL_PROGRAMS off CUDA)."""
    if device.type != "cuda":
        return FILL_PROGRAMS
    return torch.cuda.get_device_properties(device).multi_processor_count


# ---------------------------------------------------------------------------------------------
# Plain PyTorch: the reference (also the CPU implementation) and the same math in x's dtype
# ---------------------------------------------------------------------------------------------
def conv1d_layers(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    lengths: torch.Tensor,
    padding: int,
    relu: bool,
) -> torch.Tensor:
    """The contract in PyTorch's own layers, in x's dtype: conv (NCW) -> relu -> row mask.

    What TensorRT builds for the op (converters/conv1d.py); `conv1d_reference` runs it in fp32.
    """
    k, T = weight.shape[0], x.shape[1]
    h = x.transpose(1, 2)  # (B, C_in, T): nn.Conv1d's layout
    w = weight.permute(1, 2, 0)  # (C_out, C_in, k): nn.Conv1d's weight
    if 2 * padding == k - 1:
        out = F.conv1d(h, w, bias, padding=padding)
    else:  # uneven padding: `padding` rows before, k - 1 - padding after
        out = F.conv1d(F.pad(h, (padding, k - 1 - padding)), w, bias)
    out = out.transpose(1, 2)  # (B, T, C_out)
    if relu:
        out = F.relu(out)
    valid = torch.arange(T, device=x.device)[None, :] < lengths.to(x.device)[:, None]  # (B, T)
    return torch.where(valid[..., None], out, torch.zeros((), dtype=out.dtype, device=out.device))


def conv1d_reference(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    lengths: torch.Tensor,
    padding: int,
    relu: bool,
) -> torch.Tensor:
    """`conv1d_layers` in fp32, cast to x's dtype (the kernel's accuracy: one rounding at the end)."""
    fp32_bias = None if bias is None else bias.float()
    return conv1d_layers(x.float(), weight.float(), fp32_bias, lengths, padding, relu).to(x.dtype)


# ---------------------------------------------------------------------------------------------
# torch custom op
# ---------------------------------------------------------------------------------------------
def _check_inputs(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    lengths: torch.Tensor,
    padding: int,
) -> None:
    """Static checks (shapes, dtypes, devices): safe while tracing."""
    if x.dim() != 3:
        raise ValueError(f"conv1d: x must be (B, T, C_in), got shape {tuple(x.shape)}")
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"conv1d: x must be float32, float16 or bfloat16, got {x.dtype}")
    if weight.dim() != 3:
        raise ValueError(
            f"conv1d: weight must be (k, C_out, C_in) (nn.Conv1d's weight.permute(2, 0, 1)), "
            f"got shape {tuple(weight.shape)}"
        )
    k, c_out, c_in = weight.shape
    if c_in != x.shape[2] or k < 1 or c_out < 1:
        raise ValueError(
            f"conv1d: weight {tuple(weight.shape)} is not (k, C_out, C_in) for x's C_in={x.shape[2]}; "
            "pass nn.Conv1d's weight.permute(2, 0, 1)"
        )
    if not 0 <= padding <= k - 1:
        raise ValueError(f"conv1d: padding must be in [0, k - 1] = [0, {k - 1}], got {padding}")
    if bias is not None and bias.shape != (c_out,):
        raise ValueError(f"conv1d: bias must be (C_out,) = ({c_out},), got {tuple(bias.shape)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and t.dtype != x.dtype:
            raise ValueError(f"conv1d: {name} is {t.dtype}, x is {x.dtype}; cast them to one dtype")
    if lengths.shape != x.shape[:1]:
        raise ValueError(f"conv1d: lengths must be (B,) = ({x.shape[0]},), got {tuple(lengths.shape)}")
    if lengths.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"conv1d: lengths must be int32 or int64, got {lengths.dtype}")
    for name, t in (("weight", weight), ("bias", bias), ("lengths", lengths)):
        if t is not None and t.device != x.device:
            raise ValueError(f"conv1d: {name} on {t.device}, x on {x.device}; move them together")


@triton_op("fastspeech::conv1d", mutates_args=())
def conv1d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],  # noqa: UP045 - the op schema is inferred from this annotation
    lengths: torch.Tensor,
    padding: int,
    relu: bool,
) -> torch.Tensor:
    """Dispatch: Triton kernel on CUDA, the PyTorch reference elsewhere (CPU).

    The device branch lives in the body because Inductor traces into a triton_op's body (and ignores
    kernels registered per device) when it compiles; eager CPU calls also reach `_conv1d_cpu`.
    """
    _check_inputs(x, weight, bias, lengths, padding)
    B, T, _ = x.shape
    if x.is_cuda:
        out = torch.empty((B, T, weight.shape[1]), dtype=x.dtype, device=x.device)
        return launch_conv1d(x, weight, bias, lengths, padding, relu, out)
    return conv1d_reference(x, weight, bias, lengths, padding, relu)


@conv1d.register_kernel("cpu")
def _conv1d_cpu(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: Optional[torch.Tensor],  # noqa: UP045
    lengths: torch.Tensor,
    padding: int,
    relu: bool,
) -> torch.Tensor:
    """Eager CPU: the PyTorch reference, after the same checks."""
    _check_inputs(x, weight, bias, lengths, padding)
    return conv1d_reference(x, weight, bias, lengths, padding, relu)


register_reference_autograd(conv1d, conv1d_reference)
