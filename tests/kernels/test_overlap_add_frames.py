"""overlap_add_frames: the Triton kernel (real on CUDA, interpreted on CPU) and the op vs the references.

The reference is checked against torch itself (`istft_tail` is torch.istft after the inverse FFT,
`stft_frames` feeds torch.stft's FFT); then the kernel against the float64 reference over frame
sizes, hops, lengths and NaN-poisoned outputs.
"""

from __future__ import annotations

import pytest
import torch
from helpers import DEVICE, check_compile_fullgraph, check_export_round_trip, requires_cuda

from kernels.overlap_add_frames import (
    istft_tail,
    launch_overlap_add_frames,
    overlap_add_frames,
    overlap_add_frames_reference,
    stft_frames,
)


def inputs(B: int, n: int, N: int, seed: int, device: str = DEVICE):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(B, n, N, generator=g).to(device), torch.hann_window(N).to(device)


def test_reference_is_torch_istft_then_torch_stft_frames():
    """istft_tail(irfft(S)) = torch.istft(S); rfft(stft_frames(x)) = torch.stft(x) (centred, constant pad)."""
    N, hop, n = 64, 16, 9
    g = torch.Generator().manual_seed(0)
    spec = torch.randn(2, N // 2 + 1, n, generator=g, dtype=torch.complex128)
    window = torch.hann_window(N, dtype=torch.float64)
    length = (n - 1) * hop
    frames = torch.fft.irfft(spec.transpose(1, 2), n=N)
    want = torch.istft(spec, N, hop, N, window, center=True, length=length)
    torch.testing.assert_close(istft_tail(frames, window, hop, length), want)
    stft = torch.stft(want, N, hop, N, window, center=True, pad_mode="constant", return_complex=True)
    torch.testing.assert_close(torch.fft.rfft(stft_frames(want, window, hop)), stft.transpose(1, 2))


@pytest.mark.parametrize(
    "B,n,N,hop,length,block",
    [
        (1, 1, 8, 2, 2, None),
        (2, 5, 16, 4, 16, None),
        (3, 7, 16, 8, 48, None),
        (1, 4, 8, 8, 16, None),  # R = 1: no overlap
        (2, 6, 12, 3, 17, None),  # odd hop, R = 4, a length that is no whole number of hops
        (2, 5, 40, 10, 44, 4),  # hop 10 in blocks of 4: 3 programs per hop block, the last masked
        (1, 9, 1024, 256, 2048, None),
        (2, 3, 1024, 256, 256, 64),  # 4 programs per hop block
        (1, 3, 800, 200, 400, None),  # hop 200 in one 256-lane block
    ],
)
def test_kernel_matches_float64_reference(B, n, N, hop, length, block):
    frames, window = inputs(B, n, N, seed=n * N + hop)
    window = window + 0.01  # Hann's zero ends would leave edge samples with a zero envelope at tiny N
    want = overlap_add_frames_reference(frames.double(), window.double(), hop, length)
    out = torch.full(want.shape, float("nan"), device=frames.device)
    got = launch_overlap_add_frames(frames, window, hop, length, out, block=block)
    assert not got.isnan().any()
    torch.testing.assert_close(got.double(), want, atol=1e-6, rtol=1e-5)


def test_kernel_reads_strided_frames():
    """Frames as a slice of a longer batch of frames (strided rows), DLE's Hann window."""
    full, window = inputs(2, 12, 64, seed=7)
    frames = full[:, 2:8]
    want = overlap_add_frames_reference(frames.double(), window.double(), 16, 5 * 16)
    out = torch.full(want.shape, float("nan"), device=frames.device)
    torch.testing.assert_close(
        launch_overlap_add_frames(frames, window, 16, 80, out, block=64).double(), want
    )


def test_op_on_cpu_is_the_reference():
    frames, window = inputs(2, 5, 32, seed=1, device="cpu")
    got = overlap_add_frames(frames, window, 8, 32)
    torch.testing.assert_close(got, overlap_add_frames_reference(frames, window, 8, 32))


@pytest.mark.parametrize(
    "args, message",
    [
        (lambda f, w: (f[0], w, 8, 32), r"frames must be \(B, n, N\)"),
        (lambda f, w: (f, w[:-1], 8, 32), r"window must be \(N,\)"),
        (lambda f, w: (f, w, 12, 32), "hop=12 must divide"),
        (lambda f, w: (f, w, 8, 0), "length=0 must be 1 to 48"),
        (lambda f, w: (f, w, 8, 49), "length=49 must be 1 to 48"),
        (lambda f, w: (f.double(), w, 8, 32), "frames must be float32"),
        (lambda f, w: (f.transpose(1, 2).contiguous().transpose(1, 2), w, 8, 32), "must be contiguous"),
    ],
)
def test_bad_inputs_are_one_line_errors(args, message):
    frames, window = inputs(2, 5, 32, seed=2, device="cpu")
    with pytest.raises(ValueError, match=message) as info:
        overlap_add_frames(*args(frames, window))
    assert "\n" not in str(info.value)


class Frames(torch.nn.Module):
    def forward(self, frames, window):
        return torch.ops.fastspeech.overlap_add_frames(frames, window, 8, 32) * 2


def test_compiles_fullgraph_and_exports():
    args = inputs(2, 5, 32, seed=3)
    check_compile_fullgraph(Frames(), args)
    check_export_round_trip(Frames(), args, "fastspeech.overlap_add_frames.default")


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("B,n", [(1, 256), (32, 1024), (3, 257)])
def test_cuda_full_size(B, n):
    """DLE's STFT (1024 / 256, Hann) at the engines' frame counts, against the float64 reference."""
    frames, window = inputs(B, n, 1024, seed=B + n)
    length = (n - 1) * 256
    want = overlap_add_frames_reference(frames.double(), window.double(), 256, length)
    got = overlap_add_frames(frames, window, 256, length)
    torch.testing.assert_close(got.double(), want, atol=1e-5, rtol=1e-5)
