"""`torch.ops.fastspeech.fft_layer`: one whole FFT block (FastSpeech's transformer layer) in one kernel.

Contract: fft_layer(x, lengths, w_qkv, b_qkv, w_fc, b_fc, ln1_w, ln1_b, w_1, b_1, w_2, b_2, ln2_w,
ln2_b, n_head, padding, eps) -> out (B, T, H) of x's dtype, with x (B, T, H) fp32/fp16/bf16, lengths
(B,) int32/int64 and every weight of x's dtype, in the shapes `FFTBlock` holds them:
w_qkv (n_head * 3 * d, H) (`MultiHeadAttention.linear`, DLE's head-major [q | k | v] layout), w_fc
(H, n_head * d), w_1 (k, D_inner, H) and w_2 (k, H, D_inner) tap-major (`conv.weight.permute(2, 0,
1)`, as the `conv1d` op takes them), biases and LayerNorm affines 1-D. With valid[b, t] = t < lengths[b]:
    y   = LayerNorm1(attention(x @ w_qkv^T + b_qkv, lengths) @ w_fc^T + b_fc + x) * valid
    h   = relu(conv1d(y, w_1) + b_1) * valid
    out = LayerNorm2(conv1d(h, w_2) + b_2 + y) * valid
where attention is the `attention` op's contract (keys t < lengths[b], padding query rows zero) and
conv1d the `conv1d` op's (k taps, `padding` zero rows before, k - 1 - padding after). That is
`FFTBlock.forward` (fastspeech/model.py) exactly; sums and LayerNorm statistics run in fp32.

Why (issue 17): at batch 1 a layer was 8-9 kernels of a few microseconds each, most at their latency
floor (launch, pipeline fill, a tile or two per SM), plus a gap between kernels; 112 kernels per
forward. Fusing neighbours into epilogues was tried and lost (docs/kernels.md, run 6): it trades a
launch for serial latency inside one program. This kernel keeps every step as wide as before but
runs the whole layer as one *persistent* launch: NUM_PROGRAMS programs (at most one per SM, all
resident at once) walk the tiles of six phases, with a grid-wide barrier between phases:

    0  qkv  = x @ w_qkv^T + b_qkv                        tiles BLOCK_M x BLOCK_N
    1  att  = attention(qkv)                             the attention op's own tiles (`attention_tile`)
    2  y    = LN1(att @ w_fc^T + b_fc + x) * valid       full rows: BLOCK_R x H
    3  hid  = relu(conv(y, w_1) + b_1) * valid           tiles BLOCK_M x BLOCK_N, implicit GEMM
    4  part = conv(hid, w_2), split over K in SPLIT_K    tiles BLOCK_M x BLOCK_N x SPLIT_K, fp32
    5  out  = LN2(sum(part) + b_2 + y) * valid           full rows: BLOCK_R x H

The intermediates go through global memory (L2 at these sizes), in scratch the op allocates. The
barrier is a counter in global memory: each program adds 1 with release semantics after its tiles
and spins until the count reaches NUM_PROGRAMS x (barriers passed); that needs every program
resident, so the launcher never starts more programs than the GPU has SMs. The w_2 conv is split
over its K = k x D_inner (4,608) so that a few row tiles still fill the GPU; the split partials are
summed in phase 5 in a fixed order (deterministic, no atomics on data).

The same kernel runs one phase per launch (PHASE_LO == PHASE_HI: no barrier): that is how the CPU
interpreter runs it (it runs programs one after another, so a barrier there would wait forever),
and a test compares the two on CUDA.

The reference (`fft_layer_reference`, also the CPU implementation) is `fft_layer_layers` in fp32:
F.linear, the attention op, F.layer_norm and `conv1d_layers`, the layer as separate PyTorch layers.
`fft_layer_layers` in x's dtype is also the TensorRT path (converters/fft_layer.py).
"""

from __future__ import annotations

from typing import NamedTuple

import torch
import torch.nn.functional as F
import triton
import triton.language as tl
from torch.library import triton_op, wrap_triton

from kernels.attention import attention_tile, block_d, fp32_dot, head_dim, qk_scale
from kernels.attention import default_blocks as attention_blocks
from kernels.conv1d import conv1d_layers

FLOAT_DTYPES = (torch.float32, torch.float16, torch.bfloat16)
PHASES = 6
WEIGHT_NAMES = (
    "w_qkv",
    "b_qkv",
    "w_fc",
    "b_fc",
    "ln1_w",
    "ln1_b",
    "w_1",
    "b_1",
    "w_2",
    "b_2",
    "ln2_w",
    "ln2_b",
)


# ---------------------------------------------------------------------------------------------
# Triton kernel
# ---------------------------------------------------------------------------------------------
@triton.jit
def _conv_acc(
    a_ptr,
    w_ptr,
    rows,
    cols,
    M,
    T,
    step_lo,
    step_hi,
    C_IN: tl.constexpr,
    C_OUT: tl.constexpr,
    KSIZE: tl.constexpr,
    PADDING: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    FP32_DOT: tl.constexpr,
):
    """fp32 (BLOCK_M, BLOCK_N) tile of a k-tap conv over time, K steps [step_lo, step_hi):
    acc[m, o] = sum_j sum_c a[m + j - PADDING, c] * w[j, o, c], rows outside the batch row's [0, T)
    read as zero. a (M, C_IN) and w (KSIZE, C_OUT, C_IN) contiguous; a Linear is KSIZE 1, PADDING 0.
    Steps run taps outer, C_IN blocks of BLOCK_K inner (the `conv1d` kernel's loop)."""
    C_BLOCKS: tl.constexpr = (C_IN + BLOCK_K - 1) // BLOCK_K
    ks = tl.arange(0, BLOCK_K)
    row_ok = rows < M
    col_ok = cols < C_OUT
    t = rows % T
    acc = tl.zeros((BLOCK_M, BLOCK_N), dtype=tl.float32)
    for step in range(step_lo, step_hi):
        j = step // C_BLOCKS
        c = (step % C_BLOCKS) * BLOCK_K + ks
        c_ok = c < C_IN
        src = t + (j - PADDING)
        a_ok = row_ok & (src >= 0) & (src < T)
        a = tl.load(
            a_ptr + (rows + (j - PADDING))[:, None] * C_IN + c[None, :],
            mask=a_ok[:, None] & c_ok[None, :],
            other=0.0,
        )  # (BLOCK_M, BLOCK_K)
        w = tl.load(
            w_ptr + j * (C_OUT * C_IN) + cols[None, :] * C_IN + c[:, None],
            mask=c_ok[:, None] & col_ok[None, :],
            other=0.0,
        )  # (BLOCK_K, BLOCK_N)
        if FP32_DOT:
            acc = tl.dot(a.to(tl.float32), w.to(tl.float32), acc, input_precision="ieee")
        else:
            acc = tl.dot(a, w, acc)
    return acc


@triton.jit
def _row_valid(len_ptr, stride_len, rows, M, T):
    """(BLOCK,) bool: flat row m = b * T + t exists and t < lengths[b]."""
    row_ok = rows < M
    b = rows // T
    length = tl.load(len_ptr + b * stride_len, mask=row_ok, other=0)
    return row_ok & (rows - b * T < length)


@triton.jit
def _layer_norm(v, cols, g_ptr, be_ptr, H: tl.constexpr, EPS: tl.constexpr):
    """LayerNorm over the first H of v's (BLOCK_R, BLOCK_H) columns, fp32, with affine g, be."""
    col_ok = cols < H
    v = tl.where(col_ok[None, :], v, 0.0)
    mean = tl.sum(v, 1) / H
    d = tl.where(col_ok[None, :], v - mean[:, None], 0.0)
    rstd = 1.0 / tl.sqrt(tl.sum(d * d, 1) / H + EPS)
    g = tl.load(g_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    be = tl.load(be_ptr + cols, mask=col_ok, other=0.0).to(tl.float32)
    return d * rstd[:, None] * g[None, :] + be[None, :]


@triton.jit
def _barrier(bar_ptr, PHASE: tl.constexpr, PHASE_LO: tl.constexpr, PHASE_HI: tl.constexpr, NUM_PROGRAMS):
    """Grid-wide barrier after PHASE, when the next phase runs in this launch: every program's stores
    are visible to every program after it. The counter only grows within a launch (zeroed by the op)."""
    if PHASE_LO <= PHASE and PHASE < PHASE_HI:  # noqa: PLR1716 - Triton has no chained comparisons
        tl.debug_barrier()  # the program's threads have all issued their stores
        tl.atomic_add(bar_ptr, 1, sem="release", scope="gpu")
        target = NUM_PROGRAMS * (PHASE - PHASE_LO + 1)
        while tl.atomic_add(bar_ptr, 0, sem="acquire", scope="gpu") < target:
            pass
        tl.debug_barrier()


@triton.jit
def _fft_layer_kernel(
    x_ptr,
    len_ptr,
    wqkv_ptr,
    bqkv_ptr,
    wfc_ptr,
    bfc_ptr,
    g1_ptr,
    be1_ptr,
    w1_ptr,
    b1_ptr,
    w2_ptr,
    b2_ptr,
    g2_ptr,
    be2_ptr,
    qkv_ptr,
    att_ptr,
    y_ptr,
    hid_ptr,
    part_ptr,
    out_ptr,
    bar_ptr,
    B,
    T,
    stride_len,
    NUM_PROGRAMS,
    H: tl.constexpr,
    N_HEAD: tl.constexpr,
    HEAD_DIM: tl.constexpr,
    D_INNER: tl.constexpr,
    KSIZE: tl.constexpr,
    PADDING: tl.constexpr,
    EPS: tl.constexpr,
    QK_SCALE: tl.constexpr,
    BLOCK_D: tl.constexpr,
    ATT_M: tl.constexpr,
    ATT_N: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_N: tl.constexpr,
    BLOCK_K: tl.constexpr,
    BLOCK_R: tl.constexpr,
    BLOCK_H: tl.constexpr,
    BLOCK_KR: tl.constexpr,
    SPLIT_K: tl.constexpr,
    PHASE_LO: tl.constexpr,
    PHASE_HI: tl.constexpr,
    FP32_DOT: tl.constexpr,
):
    pid = tl.program_id(0)
    M = B * T
    QKV: tl.constexpr = N_HEAD * 3 * HEAD_DIM
    ATT: tl.constexpr = N_HEAD * HEAD_DIM
    tiles_m = tl.cdiv(M, BLOCK_M)
    tiles_r = tl.cdiv(M, BLOCK_R)
    cols_h = tl.arange(0, BLOCK_H)
    col_h_ok = cols_h < H

    # 0: qkv = x @ w_qkv^T + b_qkv
    if PHASE_LO <= 0 and 0 <= PHASE_HI:
        TILES_N0: tl.constexpr = (QKV + BLOCK_N - 1) // BLOCK_N
        for tile in range(pid, tiles_m * TILES_N0, NUM_PROGRAMS):
            rows = (tile // TILES_N0) * BLOCK_M + tl.arange(0, BLOCK_M)
            cols = (tile % TILES_N0) * BLOCK_N + tl.arange(0, BLOCK_N)
            acc = _conv_acc(
                x_ptr, wqkv_ptr, rows, cols, M, T, 0, (H + BLOCK_K - 1) // BLOCK_K,
                H, QKV, 1, 0, BLOCK_M, BLOCK_N, BLOCK_K, FP32_DOT,
            )  # fmt: skip
            acc += tl.load(bqkv_ptr + cols, mask=cols < QKV, other=0.0).to(tl.float32)[None, :]
            tl.store(
                qkv_ptr + rows[:, None] * QKV + cols[None, :],
                acc.to(qkv_ptr.dtype.element_ty),
                mask=(rows < M)[:, None] & (cols < QKV)[None, :],
            )
    _barrier(bar_ptr, 0, PHASE_LO, PHASE_HI, NUM_PROGRAMS)

    # 1: att = attention(qkv, lengths): the attention op's tiles (query rows of one head, batch row)
    if PHASE_LO <= 1 and 1 <= PHASE_HI:
        tiles_q = tl.cdiv(T, ATT_M)
        for tile in range(pid, B * N_HEAD * tiles_q, NUM_PROGRAMS):
            attention_tile(
                qkv_ptr, len_ptr, att_ptr, T, T * QKV, QKV, 1, T * ATT, ATT, 1, stride_len,
                tile % tiles_q, (tile // tiles_q) % N_HEAD, (tile // (tiles_q * N_HEAD)).to(tl.int64),
                QK_SCALE, HEAD_DIM, BLOCK_D, ATT_M, ATT_N, FP32_DOT,
            )  # fmt: skip
    _barrier(bar_ptr, 1, PHASE_LO, PHASE_HI, NUM_PROGRAMS)

    # 2: y = LN1(att @ w_fc^T + b_fc + x) * valid, whole rows
    if PHASE_LO <= 2 and 2 <= PHASE_HI:
        for tile in range(pid, tiles_r, NUM_PROGRAMS):
            rows = tile * BLOCK_R + tl.arange(0, BLOCK_R)
            mask = (rows < M)[:, None] & col_h_ok[None, :]
            acc = _conv_acc(
                att_ptr, wfc_ptr, rows, cols_h, M, T, 0, (ATT + BLOCK_KR - 1) // BLOCK_KR,
                ATT, H, 1, 0, BLOCK_R, BLOCK_H, BLOCK_KR, FP32_DOT,
            )  # fmt: skip
            acc += tl.load(bfc_ptr + cols_h, mask=col_h_ok, other=0.0).to(tl.float32)[None, :]
            acc += tl.load(x_ptr + rows[:, None] * H + cols_h[None, :], mask=mask, other=0.0).to(tl.float32)
            acc = _layer_norm(acc, cols_h, g1_ptr, be1_ptr, H, EPS)
            acc = tl.where(_row_valid(len_ptr, stride_len, rows, M, T)[:, None], acc, 0.0)
            tl.store(y_ptr + rows[:, None] * H + cols_h[None, :], acc.to(y_ptr.dtype.element_ty), mask=mask)
    _barrier(bar_ptr, 2, PHASE_LO, PHASE_HI, NUM_PROGRAMS)

    # 3: hid = relu(conv(y, w_1) + b_1) * valid
    if PHASE_LO <= 3 and 3 <= PHASE_HI:
        TILES_N3: tl.constexpr = (D_INNER + BLOCK_N - 1) // BLOCK_N
        for tile in range(pid, tiles_m * TILES_N3, NUM_PROGRAMS):
            rows = (tile // TILES_N3) * BLOCK_M + tl.arange(0, BLOCK_M)
            cols = (tile % TILES_N3) * BLOCK_N + tl.arange(0, BLOCK_N)
            acc = _conv_acc(
                y_ptr, w1_ptr, rows, cols, M, T, 0, KSIZE * ((H + BLOCK_K - 1) // BLOCK_K),
                H, D_INNER, KSIZE, PADDING, BLOCK_M, BLOCK_N, BLOCK_K, FP32_DOT,
            )  # fmt: skip
            acc += tl.load(b1_ptr + cols, mask=cols < D_INNER, other=0.0).to(tl.float32)[None, :]
            acc = tl.maximum(acc, 0.0)
            acc = tl.where(_row_valid(len_ptr, stride_len, rows, M, T)[:, None], acc, 0.0)
            tl.store(
                hid_ptr + rows[:, None] * D_INNER + cols[None, :],
                acc.to(hid_ptr.dtype.element_ty),
                mask=(rows < M)[:, None] & (cols < D_INNER)[None, :],
            )
    _barrier(bar_ptr, 3, PHASE_LO, PHASE_HI, NUM_PROGRAMS)

    # 4: part[s] = conv(hid, w_2) over the s-th of SPLIT_K slices of its K steps, fp32
    if PHASE_LO <= 4 and 4 <= PHASE_HI:
        TILES_N4: tl.constexpr = (H + BLOCK_N - 1) // BLOCK_N
        STEPS: tl.constexpr = KSIZE * ((D_INNER + BLOCK_K - 1) // BLOCK_K)
        for tile in range(pid, tiles_m * TILES_N4 * SPLIT_K, NUM_PROGRAMS):
            s = tile % SPLIT_K
            mn = tile // SPLIT_K
            rows = (mn // TILES_N4) * BLOCK_M + tl.arange(0, BLOCK_M)
            cols = (mn % TILES_N4) * BLOCK_N + tl.arange(0, BLOCK_N)
            acc = _conv_acc(
                hid_ptr, w2_ptr, rows, cols, M, T, (s * STEPS) // SPLIT_K, ((s + 1) * STEPS) // SPLIT_K,
                D_INNER, H, KSIZE, PADDING, BLOCK_M, BLOCK_N, BLOCK_K, FP32_DOT,
            )  # fmt: skip
            tl.store(
                part_ptr + s * M * H + rows[:, None] * H + cols[None, :],
                acc,
                mask=(rows < M)[:, None] & (cols < H)[None, :],
            )
    _barrier(bar_ptr, 4, PHASE_LO, PHASE_HI, NUM_PROGRAMS)

    # 5: out = LN2(sum(part) + b_2 + y) * valid, whole rows
    if PHASE_LO <= 5 and 5 <= PHASE_HI:
        for tile in range(pid, tiles_r, NUM_PROGRAMS):
            rows = tile * BLOCK_R + tl.arange(0, BLOCK_R)
            mask = (rows < M)[:, None] & col_h_ok[None, :]
            offs = rows[:, None] * H + cols_h[None, :]
            acc = tl.load(y_ptr + offs, mask=mask, other=0.0).to(tl.float32)
            acc += tl.load(b2_ptr + cols_h, mask=col_h_ok, other=0.0).to(tl.float32)[None, :]
            for s in range(SPLIT_K):
                acc += tl.load(part_ptr + s * M * H + offs, mask=mask, other=0.0)
            acc = _layer_norm(acc, cols_h, g2_ptr, be2_ptr, H, EPS)
            acc = tl.where(_row_valid(len_ptr, stride_len, rows, M, T)[:, None], acc, 0.0)
            tl.store(out_ptr + offs, acc.to(out_ptr.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------
# Launcher
# ---------------------------------------------------------------------------------------------
class Blocks(NamedTuple):
    """One launch configuration (see the module docstring for the phases' tiles)."""

    block_m: int  # GEMM phases 0, 3, 4: rows per tile
    block_n: int  # and columns per tile
    block_k: int  # and K per step
    block_r: int  # row phases 2, 5: rows per tile (all H columns)
    block_kr: int  # phase 2's K per step (its tile is BLOCK_R x H wide)
    split_k: int  # phase 4: K slices of the w_2 conv
    num_warps: int
    num_stages: int


def device_programs(device: torch.device) -> int:
    """The most programs a persistent launch may start on `device`: one per SM, all resident.
    Off CUDA (the interpreter runs programs in turn, one phase per launch) a small number that still
    makes each program walk several tiles."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).multi_processor_count
    return 4


def default_blocks(M: int, H: int, d_inner: int, ksize: int, programs: int, dtype: torch.dtype) -> Blocks:
    """Tiles for M = B * T rows. 64-row GEMM tiles from M = 512 (B=1, T=1024: 16 x 24 tiles of
    64 x 64 in phase 3), 32 rows below, 16 for a handful of rows; the w_2 conv is split over K until
    its tiles fill `programs` (B=1, T=1024: 16 x 6 tiles, not split; T=128: 4 x 6 tiles x 5). fp32 (IEEE dots, twice
    the bytes) keeps 32-wide K steps and 2 pipeline stages so the whole-row phase fits shared memory."""
    wide = dtype.itemsize <= 2
    block_m = 64 if M >= 512 else 32 if M > 16 else 16
    block_n, block_k = 64, 64 if wide else 32
    tiles = triton.cdiv(M, block_m) * triton.cdiv(H, block_n)
    steps = ksize * triton.cdiv(d_inner, block_k)
    split_k = max(1, min(steps, programs // max(tiles, 1)))
    return Blocks(block_m, block_n, block_k, 16, 32 if wide else 16, split_k, 4, 3 if wide else 2)


def launch_fft_layer(
    x: torch.Tensor,
    lengths: torch.Tensor,
    weights: tuple[torch.Tensor, ...],
    n_head: int,
    padding: int,
    eps: float,
    out: torch.Tensor,
    *,
    blocks: Blocks | None = None,
    programs: int | None = None,
    phases: tuple[tuple[int, int], ...] | None = None,
) -> torch.Tensor:
    """Run the kernel into `out` (B, T, H), contiguous; every element of `out` is written.

    `weights` = (w_qkv, b_qkv, w_fc, b_fc, ln1_w, ln1_b, w_1, b_1, w_2, b_2, ln2_w, ln2_b). One
    persistent launch over all phases on CUDA, one launch per phase under the interpreter; `phases`
    ((first, last), ...) overrides that split (tests), `programs` the program count (at most
    `device_programs` when a launch spans phases) and `blocks` the tiles (sweeps).
    """
    B, T, H = x.shape
    if out.numel() == 0:
        return out
    w_qkv, b_qkv, w_fc, b_fc, g1, be1, w_1, b_1, w_2, b_2, g2, be2 = weights
    k, d_inner, _ = w_1.shape
    d = head_dim(w_qkv.shape[:1], n_head)
    M = B * T
    most = device_programs(x.device)
    programs = programs or most
    blocks = blocks or default_blocks(M, H, d_inner, k, programs, x.dtype)
    if phases is None:
        phases = ((0, PHASES - 1),) if x.is_cuda else tuple((p, p) for p in range(PHASES))
    if programs > most and any(lo < hi for lo, hi in phases):
        raise ValueError(f"fft_layer: {programs} programs cannot all be resident with {most} SMs")
    if (blocks.split_k + 3) * M * max(H, d_inner) >= 2**31:
        raise ValueError(
            f"fft_layer: B * T = {M} rows overflow the kernel's int32 offsets; use a smaller batch"
        )
    att = attention_blocks(B, T, n_head)  # phase 1: the attention op's own tiles for this shape
    dt = x.dtype
    scratch = (  # qkv, att, y, hid, part: the phases' outputs
        torch.empty((M, w_qkv.shape[0]), dtype=dt, device=x.device),
        torch.empty((M, n_head * d), dtype=dt, device=x.device),
        torch.empty((M, H), dtype=dt, device=x.device),
        torch.empty((M, d_inner), dtype=dt, device=x.device),
        torch.empty((blocks.split_k, M, H), dtype=torch.float32, device=x.device),
    )
    for lo, hi in phases:
        bar = torch.zeros(1, dtype=torch.int32, device=x.device)
        wrap_triton(_fft_layer_kernel)[(programs,)](
            x, lengths, w_qkv, b_qkv, w_fc, b_fc, g1, be1, w_1, b_1, w_2, b_2, g2, be2,
            *scratch, out, bar,
            B, T, lengths.stride(0), programs,
            H=H, N_HEAD=n_head, HEAD_DIM=d, D_INNER=d_inner, KSIZE=k, PADDING=padding, EPS=eps,
            QK_SCALE=qk_scale(d), BLOCK_D=block_d(d), ATT_M=att.block_m, ATT_N=att.block_n,
            BLOCK_M=blocks.block_m, BLOCK_N=blocks.block_n, BLOCK_K=blocks.block_k,
            BLOCK_R=blocks.block_r, BLOCK_H=triton.next_power_of_2(H), BLOCK_KR=blocks.block_kr,
            SPLIT_K=blocks.split_k, PHASE_LO=lo, PHASE_HI=hi, FP32_DOT=fp32_dot(dt),
            num_warps=blocks.num_warps, num_stages=blocks.num_stages,
        )  # fmt: skip
    return out


# ---------------------------------------------------------------------------------------------
# Plain PyTorch: the layer as separate layers (TensorRT's path) and the reference
# ---------------------------------------------------------------------------------------------
def fft_layer_layers(
    x: torch.Tensor,
    lengths: torch.Tensor,
    weights: tuple[torch.Tensor, ...],
    n_head: int,
    padding: int,
    eps: float,
) -> torch.Tensor:
    """The contract as PyTorch layers in x's dtype: linear, the attention op, layer norms, convs."""
    w_qkv, b_qkv, w_fc, b_fc, g1, be1, w_1, b_1, w_2, b_2, g2, be2 = weights
    H = x.shape[2]
    valid = (torch.arange(x.shape[1], device=x.device)[None, :] < lengths.to(x.device)[:, None])[..., None]
    att = torch.ops.fastspeech.attention(F.linear(x, w_qkv, b_qkv), lengths, n_head)
    y = F.layer_norm(F.linear(att, w_fc, b_fc) + x, (H,), g1, be1, eps) * valid
    hid = conv1d_layers(y, w_1, b_1, lengths, padding, relu=True)
    z = conv1d_layers(hid, w_2, b_2, lengths, padding, relu=False)
    return F.layer_norm(z + y, (H,), g2, be2, eps) * valid


def fft_layer_reference(
    x: torch.Tensor,
    lengths: torch.Tensor,
    weights: tuple[torch.Tensor, ...],
    n_head: int,
    padding: int,
    eps: float,
) -> torch.Tensor:
    """`fft_layer_layers` in fp32, cast to x's dtype (also the op's CPU implementation)."""
    return fft_layer_layers(x.float(), lengths, tuple(w.float() for w in weights), n_head, padding, eps).to(
        x.dtype
    )


# ---------------------------------------------------------------------------------------------
# torch custom op
# ---------------------------------------------------------------------------------------------
def _check_inputs(
    x: torch.Tensor, lengths: torch.Tensor, weights: tuple[torch.Tensor, ...], n_head: int, padding: int
) -> None:
    """Static checks (shapes, dtypes, devices): safe while tracing."""
    if x.dim() != 3:
        raise ValueError(f"fft_layer: x must be (B, T, H), got shape {tuple(x.shape)}")
    if x.dtype not in FLOAT_DTYPES:
        raise ValueError(f"fft_layer: x must be float32, float16 or bfloat16, got {x.dtype}")
    H = x.shape[2]
    if len(weights) != len(WEIGHT_NAMES):
        raise ValueError(
            f"fft_layer: weights must be the {len(WEIGHT_NAMES)} tensors {', '.join(WEIGHT_NAMES)}"
        )
    w_qkv, w_1 = weights[0], weights[6]
    rows = w_qkv.shape[0] if w_qkv.dim() == 2 else 0
    if n_head < 1 or rows < 3 * n_head or rows % (3 * n_head):
        raise ValueError(
            f"fft_layer: w_qkv must be (n_head * 3 * d, H) for n_head={n_head}, got {tuple(w_qkv.shape)}"
        )
    d = rows // (3 * n_head)
    if w_1.dim() != 3:
        raise ValueError(f"fft_layer: w_1 must be tap-major (k, D_inner, H), got shape {tuple(w_1.shape)}")
    k, d_inner = w_1.shape[:2]
    expected = {
        "w_qkv": (n_head * 3 * d, H), "b_qkv": (n_head * 3 * d,), "w_fc": (H, n_head * d), "b_fc": (H,),
        "ln1_w": (H,), "ln1_b": (H,), "w_1": (k, d_inner, H), "b_1": (d_inner,), "w_2": (k, H, d_inner),
        "b_2": (H,), "ln2_w": (H,), "ln2_b": (H,),
    }  # fmt: skip
    for (name, shape), t in zip(expected.items(), weights):
        if tuple(t.shape) != shape:
            raise ValueError(f"fft_layer: {name} must be {shape} for x's H={H}, got {tuple(t.shape)}")
        if t.dtype != x.dtype:
            raise ValueError(f"fft_layer: {name} is {t.dtype}, x is {x.dtype}; cast them to one dtype")
        if t.device != x.device:
            raise ValueError(f"fft_layer: {name} on {t.device}, x on {x.device}; move them together")
    if not 0 <= padding <= k - 1:
        raise ValueError(f"fft_layer: padding must be in [0, k - 1] = [0, {k - 1}], got {padding}")
    if lengths.shape != x.shape[:1]:
        raise ValueError(f"fft_layer: lengths must be (B,) = ({x.shape[0]},), got {tuple(lengths.shape)}")
    if lengths.dtype not in (torch.int32, torch.int64):
        raise ValueError(f"fft_layer: lengths must be int32 or int64, got {lengths.dtype}")
    if lengths.device != x.device:
        raise ValueError(f"fft_layer: lengths on {lengths.device}, x on {x.device}; move them together")


@triton_op("fastspeech::fft_layer", mutates_args=())
def fft_layer(
    x: torch.Tensor,
    lengths: torch.Tensor,
    weights: list[torch.Tensor],
    n_head: int,
    padding: int,
    eps: float,
) -> torch.Tensor:
    """Dispatch: the persistent Triton kernel on CUDA, the PyTorch reference elsewhere (CPU).

    `weights` as in `launch_fft_layer`. The device branch lives in the body because Inductor traces
    into a triton_op's body when it compiles (see kernels/attention.py).
    """
    weights = tuple(weights)
    _check_inputs(x, lengths, weights, n_head, padding)
    if x.is_cuda:
        x, weights = x.contiguous(), tuple(w.contiguous() for w in weights)
        return launch_fft_layer(x, lengths, weights, n_head, padding, eps, torch.empty_like(x))
    return fft_layer_reference(x, lengths, weights, n_head, padding, eps)


@fft_layer.register_kernel("cpu")
def _fft_layer_cpu(
    x: torch.Tensor,
    lengths: torch.Tensor,
    weights: list[torch.Tensor],
    n_head: int,
    padding: int,
    eps: float,
) -> torch.Tensor:
    """Eager CPU: the PyTorch reference, after the same checks."""
    weights = tuple(weights)
    _check_inputs(x, lengths, weights, n_head, padding)
    return fft_layer_reference(x, lengths, weights, n_head, padding, eps)
