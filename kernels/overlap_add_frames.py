"""`torch.ops.fastspeech.overlap_add_frames`: Griffin-Lim's inverse STFT tail and next STFT head, one kernel.

Between a Griffin-Lim iteration's inverse FFT and its forward FFT (`fastspeech/vocoder/griffin_lim.py`)
the frames are windowed and overlap-added into a signal, divided by the overlapped squared windows,
and the signal is cut into the next centred STFT's windowed frames. As plain PyTorch (the reference)
that is a signal Inductor must store before the strided framing reads each sample R times: two
kernels. Here one program takes a hop block of the signal: it reads the block's R contributions
(each frame sample once), divides by the envelope and writes the block into the R next frames that
hold it (each output sample once): one kernel, no signal in memory. (An earlier form gathered each
output sample's R contributions: it read every frame sample R times and lost to Inductor's pair at
batch 32; docs/kernels_history.md, run 12.)

Contract: frames (B, n, N) float32 (the inverse FFTs, unwindowed; inner dimension contiguous),
window (N,) float32, hop with N % hop == 0 (R = N / hop overlapping frames), length -> out
(B, length // hop + 1, N) float32: the windowed frames of `torch.stft(center=True, pad_mode="constant")`
of the signal x (B, length) = `torch.istft`-style overlap-add of `frames * window` divided by the
overlapped squared windows, centred (the first N / 2 samples dropped). Sample s of output frame f is
signal position q = f * hop + s of the overlap-add (before dropping N / 2): with m = q // hop and
r = q % hop, y[q] = sum_j frames[m - j, j * hop + r] * window[j * hop + r] and env[q] = sum_j
window[j * hop + r]^2 over the frames 0 <= m - j < n; out = window[s] * y[q] / env[q] where
N / 2 <= q < N / 2 + length, else 0 (the centring pad).
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
def _overlap_add_frames_kernel(
    frames_ptr,
    window_ptr,
    out_ptr,
    n,
    n_out,
    length,
    stride_fb,
    stride_fn,
    stride_ob,
    stride_on,
    N: tl.constexpr,
    HOP: tl.constexpr,
    BLOCK: tl.constexpr,
):
    # One program per hop block k of the overlap-added signal (positions q = k * HOP + r): it sums
    # the block's R contributions (frame k - j's block j), divides by the envelope, and writes the
    # result into the R output frames that hold it (frame k - j's block j): every frame sample is
    # read once and every output sample written once.
    R: tl.constexpr = N // HOP
    n_blocks = n_out + R - 1
    pid = tl.program_id(0)
    b, k = pid // n_blocks, pid % n_blocks
    r = tl.program_id(1) * BLOCK + tl.arange(0, BLOCK)
    # k as a block: Triton's CPU interpreter (3.9) mis-types a block mask & a scalar comparison.
    kb = k + tl.zeros([BLOCK], dtype=tl.int32)
    ok = r < HOP
    src = frames_ptr + b.to(tl.int64) * stride_fb
    dst = out_ptr + b.to(tl.int64) * stride_ob
    y = tl.zeros([BLOCK], dtype=tl.float32)
    env = tl.zeros([BLOCK], dtype=tl.float32)
    for j in tl.static_range(R):
        m = kb - j
        valid = ok & (m >= 0) & (m < n)
        w = tl.load(window_ptr + j * HOP + r, mask=ok, other=0.0)
        y += tl.load(src + m * stride_fn + j * HOP + r, mask=valid, other=0.0) * w
        env += tl.where(valid, w * w, 0.0)
    q = k * HOP + r
    inside = (q >= N // 2) & (q < N // 2 + length)
    value = tl.where(inside, y / tl.where(inside, env, 1.0), 0.0)
    for j in tl.static_range(R):
        f = kb - j
        w = tl.load(window_ptr + j * HOP + r, mask=ok, other=0.0)
        tl.store(dst + f * stride_on + j * HOP + r, w * value, mask=ok & (f >= 0) & (f < n_out))


# ---------------------------------------------------------------------------------------------
# Launcher
# ---------------------------------------------------------------------------------------------
def default_block(hop: int) -> int:
    """Lanes per program: the hop rounded up to a power of 2, at most 256 (DLE's hop: one program
    per hop block)."""
    return min(256, triton.next_power_of_2(hop))


def launch_overlap_add_frames(
    frames: torch.Tensor,
    window: torch.Tensor,
    hop: int,
    length: int,
    out: torch.Tensor,
    *,
    block: int | None = None,
) -> torch.Tensor:
    """Run the kernel into `out` (B, length // hop + 1, N); every element of `out` is written."""
    B, n, N = frames.shape
    n_out = out.shape[1]
    if out.numel() == 0:
        return out
    check_int32_offsets("overlap_add_frames", frames, out)
    block = block or default_block(hop)
    grid = (B * (n_out + N // hop - 1), triton.cdiv(hop, block))
    wrap_triton(_overlap_add_frames_kernel)[grid](
        frames,
        window,
        out,
        n,
        n_out,
        length,
        frames.stride(0),
        frames.stride(1),
        out.stride(0),
        out.stride(1),
        N=N,
        HOP=hop,
        BLOCK=block,
        num_warps=4 if block >= 256 else 2,
    )
    return out


# ---------------------------------------------------------------------------------------------
# Plain PyTorch reference (also the CPU implementation and the TensorRT decomposition)
# ---------------------------------------------------------------------------------------------
def overlap_add(blocks: torch.Tensor) -> torch.Tensor:
    """(B, frames, R, hop) -> (B, (frames + R - 1) * hop): block k of the output sums blocks[k - j, j].

    R shifted copies of the frames axis added together: plain pad + add, which Inductor fuses.
    """
    B, n_frames, R, hop = blocks.shape
    out = 0
    for j in range(R):
        out = out + torch.nn.functional.pad(blocks[:, :, j], (0, 0, j, R - 1 - j))  # (B, frames + R - 1, hop)
    return out.reshape(B, (n_frames + R - 1) * hop)


def istft_tail(frames: torch.Tensor, window: torch.Tensor, hop: int, length: int) -> torch.Tensor:
    """Inverse-transformed frames (B, n, N) -> signal (B, length): the window, the overlap-add,
    divided by the overlapped squared windows, the centring pad dropped (torch.istft's tail)."""
    B, n, N = frames.shape
    R = N // hop
    wav = overlap_add((frames * window).view(B, n, R, hop))  # (B, (n + R - 1) * hop)
    envelope = overlap_add(window.square().view(1, 1, R, hop).expand(1, n, R, hop))
    return wav[:, N // 2 : N // 2 + length] / envelope[:, N // 2 : N // 2 + length]


def stft_frames(wav: torch.Tensor, window: torch.Tensor, hop: int) -> torch.Tensor:
    """Signal (B, L) -> the centred STFT's windowed frames (B, L // hop + 1, N): pad + strided view."""
    N = window.shape[0]
    return torch.nn.functional.pad(wav, (N // 2, N // 2)).unfold(-1, N, hop) * window


def overlap_add_frames_reference(
    frames: torch.Tensor, window: torch.Tensor, hop: int, length: int
) -> torch.Tensor:
    """Plain PyTorch: `stft_frames(istft_tail(...))`, the signal in between stored."""
    return stft_frames(istft_tail(frames, window, hop, length), window, hop)


# ---------------------------------------------------------------------------------------------
# torch custom op
# ---------------------------------------------------------------------------------------------
def _check_inputs(frames: torch.Tensor, window: torch.Tensor, hop: int, length: int) -> None:
    """Static checks (shapes, dtypes, devices, strides): safe while tracing."""
    if frames.dim() != 3:
        raise ValueError(f"overlap_add_frames: frames must be (B, n, N), got shape {tuple(frames.shape)}")
    N = frames.shape[2]
    if window.shape != (N,):
        raise ValueError(f"overlap_add_frames: window must be (N,) = ({N},), got {tuple(window.shape)}")
    if hop < 1 or N % hop or N % 2:
        raise ValueError(f"overlap_add_frames: hop={hop} must divide the even frame size N={N}")
    cover = (frames.shape[1] - 1) * hop + N // 2  # the samples the frames reach past the centring pad
    if not 1 <= length <= cover:
        raise ValueError(
            f"overlap_add_frames: length={length} must be 1 to {cover}, what {frames.shape[1]} frames cover"
        )
    for name, t in (("frames", frames), ("window", window)):
        if t.dtype != torch.float32:
            raise ValueError(f"overlap_add_frames: {name} must be float32, got {t.dtype}")
        if t.device != frames.device:
            raise ValueError(f"overlap_add_frames: {name} on {t.device}, frames on {frames.device}")
    if (frames.stride(2) != 1 or window.stride(0) != 1) and frames.numel() > 0:
        raise ValueError("overlap_add_frames: frames' last dimension and the window must be contiguous")


@triton_op("fastspeech::overlap_add_frames", mutates_args=())
def overlap_add_frames(frames: torch.Tensor, window: torch.Tensor, hop: int, length: int) -> torch.Tensor:
    """Dispatch: Triton kernel on CUDA, the PyTorch reference elsewhere (CPU)."""
    _check_inputs(frames, window, hop, length)
    if frames.is_cuda:
        out = torch.empty(
            frames.shape[0], length // hop + 1, frames.shape[2], dtype=frames.dtype, device=frames.device
        )
        return launch_overlap_add_frames(frames, window, hop, length, out)
    return overlap_add_frames_reference(frames, window, hop, length)


@overlap_add_frames.register_kernel("cpu")
def _overlap_add_frames_cpu(
    frames: torch.Tensor, window: torch.Tensor, hop: int, length: int
) -> torch.Tensor:
    """Eager CPU: the PyTorch reference, after the same checks."""
    _check_inputs(frames, window, hop, length)
    return overlap_add_frames_reference(frames, window, hop, length)
