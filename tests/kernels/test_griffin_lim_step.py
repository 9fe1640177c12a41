"""griffin_lim_step: the Triton kernel (real on CUDA, interpreted on CPU) and the op vs the references.

The reference's pieces are checked against torch.fft first (`unpack_rfft` after a half-length complex
FFT is rfft; `pack_irfft` before an unnormalized inverse is irfft); then the kernel against the
reference in float64, over odd sizes, both momentum cases, strided frames and NaN-poisoned outputs.
"""

from __future__ import annotations

import pytest
import torch
from helpers import DEVICE, check_compile_fullgraph, check_export_round_trip, requires_cuda

from kernels.griffin_lim_step import (
    griffin_lim_step,
    griffin_lim_step_reference,
    launch_griffin_lim_step,
    pack_irfft,
    unpack_rfft,
)


def spectra(B: int, T: int, M: int, seed: int, device: str = DEVICE):
    """z, z_prev (B, T, M, 2) of unit scale and a non-negative magnitude (B, T, M + 1), all fp32."""
    g = torch.Generator().manual_seed(seed)
    z, z_prev = torch.randn(2, B, T, M, 2, generator=g).unbind(0)
    magnitude = torch.rand(B, T, M + 1, generator=g) * 3
    magnitude[..., ::5] = 0  # silent bins: the step must give 0, not NaN
    return z.to(device), z_prev.to(device), magnitude.to(device)


def run_kernel(z, z_prev, magnitude, keep):
    """Launch into a NaN-poisoned buffer: any element the kernel skips stays NaN and fails the test."""
    out = torch.full(z.shape, float("nan"), dtype=z.dtype, device=z.device)
    return launch_griffin_lim_step(z, z_prev, magnitude, keep, out)


@pytest.mark.parametrize("n", [2, 4, 6, 16, 1024])
def test_half_length_fft_packing_is_rfft_and_irfft(n):
    """`unpack_rfft` after a complex FFT of the n / 2 sample pairs is `torch.fft.rfft`; an inverse
    complex FFT after `pack_irfft` is `torch.fft.irfft`, which ignores imag(X[0]) and imag(X[n/2])
    (the random spectra here have them)."""
    g = torch.Generator().manual_seed(n)
    x = torch.randn(2, 3, n, dtype=torch.float64, generator=g)
    pairs = torch.view_as_complex(x.reshape(2, 3, n // 2, 2))
    got = torch.view_as_complex(unpack_rfft(torch.view_as_real(torch.fft.fft(pairs))).contiguous())
    torch.testing.assert_close(got, torch.fft.rfft(x), atol=1e-10, rtol=0)
    spec = torch.randn(2, 3, n // 2 + 1, 2, dtype=torch.float64, generator=g)
    back = torch.fft.ifft(torch.view_as_complex(pack_irfft(spec)), norm="forward")
    want = torch.fft.irfft(torch.view_as_complex(spec), n=n)
    torch.testing.assert_close(torch.view_as_real(back).reshape(2, 3, n), want, atol=1e-12, rtol=0)


def test_reference_is_the_griffin_lim_update():
    """The reference = unpack, momentum, magnitude * phase, pack, step by step with torch.fft."""
    z, z_prev, magnitude = (t.double() for t in spectra(2, 5, 8, seed=1, device="cpu"))
    keep = 0.99 / 1.99
    rebuilt = torch.fft.rfft(
        torch.view_as_real(torch.fft.ifft(torch.view_as_complex(z), norm="forward")).flatten(-2)
    )
    previous = torch.fft.rfft(
        torch.view_as_real(torch.fft.ifft(torch.view_as_complex(z_prev), norm="forward")).flatten(-2)
    )
    update = rebuilt - keep * previous
    spec = magnitude * update / (update.abs() + 1e-16)
    want = torch.fft.irfft(spec, n=16)  # what the next inverse FFT of the packed output must give
    got = torch.fft.ifft(
        torch.view_as_complex(griffin_lim_step_reference(z, z_prev, magnitude, keep)), norm="forward"
    )
    torch.testing.assert_close(torch.view_as_real(got).flatten(-2), want, atol=1e-12, rtol=0)


@pytest.mark.parametrize("keep", [0.0, 0.4974874371859297])
@pytest.mark.parametrize("B,T,M", [(1, 1, 1), (2, 3, 2), (3, 5, 3), (1, 7, 8), (2, 3, 64), (1, 2, 512)])
def test_kernel_matches_float64_reference(B, T, M, keep):
    z, z_prev, magnitude = spectra(B, T, M, seed=B * 100 + T * 10 + M)
    got = run_kernel(z, z_prev, magnitude, keep)
    want = griffin_lim_step_reference(z.double(), z_prev.double(), magnitude.double(), keep)
    assert not got.isnan().any()
    torch.testing.assert_close(got.double(), want, atol=2e-6, rtol=1e-5)


@pytest.mark.parametrize("keep", [0.0, 0.4974874371859297])
def test_negative_magnitudes_count_as_zero_in_kernel_and_reference(keep):
    """The vocoder passes the least-squares magnitude before its clamp (a matmul's own buffer, so
    Inductor keeps one copy for the loop): kernel and reference both take max(magnitude, 0)."""
    z, z_prev, magnitude = spectra(2, 5, 16, seed=7)
    signed = magnitude - 1.5  # about half the bins negative
    assert (signed < 0).float().mean() > 0.3
    got = run_kernel(z, z_prev, signed, keep)
    clamped = griffin_lim_step_reference(z.double(), z_prev.double(), signed.clamp_min(0).double(), keep)
    torch.testing.assert_close(got.double(), clamped, atol=2e-6, rtol=1e-5)
    torch.testing.assert_close(
        griffin_lim_step_reference(z.double(), z_prev.double(), signed.double(), keep),
        clamped,
        atol=0,
        rtol=0,
    )


def test_kernel_reads_strided_frames_and_ignores_z_prev_without_momentum():
    """z as the engine passes it: the first T frames of a longer FFT output (a strided view); with
    keep = 0 the kernel must not read z_prev (NaN there changes nothing)."""
    z_full, _, magnitude = spectra(2, 9, 16, seed=3)
    z = z_full[:, :6]
    magnitude = magnitude[:, :6].contiguous()
    nan = torch.full_like(z, float("nan"))
    got = run_kernel(z, nan, magnitude, 0.0)
    want = griffin_lim_step_reference(z.double(), torch.zeros_like(z).double(), magnitude.double(), 0.0)
    torch.testing.assert_close(got.double(), want, atol=2e-6, rtol=1e-5)


def test_op_on_cpu_is_the_reference():
    z, z_prev, magnitude = spectra(2, 4, 8, seed=4, device="cpu")
    got = griffin_lim_step(z, z_prev, magnitude, 0.3)
    torch.testing.assert_close(got, griffin_lim_step_reference(z, z_prev, magnitude, 0.3))


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda z, p, m: (z[..., :1], p, m), r"z must be \(B, T, M, 2\)"),
        (lambda z, p, m: (z, p[:, :2], m), "z_prev must have z's shape"),
        (lambda z, p, m: (z, p, m[..., :-1]), r"magnitude must be \(B, T, M \+ 1\)"),
        (lambda z, p, m: (z.double(), p, m), "z must be float32"),
        (lambda z, p, m: (z.transpose(1, 2).contiguous().transpose(1, 2), p, m), "bins must be contiguous"),
        (lambda z, p, m: (z, p, m.transpose(1, 2).contiguous().transpose(1, 2)), "bins must be contiguous"),
    ],
)
def test_bad_inputs_are_one_line_errors(change, message):
    z, z_prev, magnitude = spectra(2, 3, 4, seed=5, device="cpu")
    args = change(z, z_prev, magnitude)
    with pytest.raises(ValueError, match=message) as info:
        griffin_lim_step(*args, 0.5)
    assert "\n" not in str(info.value)


class Step(torch.nn.Module):
    def forward(self, z, z_prev, magnitude):
        return torch.ops.fastspeech.griffin_lim_step(z, z_prev, magnitude, 0.5) * 2


def test_compiles_fullgraph_and_exports():
    args = spectra(2, 3, 8, seed=6)
    check_compile_fullgraph(Step(), args)
    check_export_round_trip(Step(), args, "fastspeech.griffin_lim_step.default")


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("B,T", [(1, 256), (32, 1024), (3, 257)])
def test_cuda_full_size(B, T):
    """DLE's n_fft 1024 (M = 512) at the engines' frame counts, against the float64 reference."""
    z, z_prev, magnitude = spectra(B, T, 512, seed=B + T)
    got = run_kernel(z, z_prev, magnitude, 0.4974874371859297)
    want = griffin_lim_step_reference(z.double(), z_prev.double(), magnitude.double(), 0.4974874371859297)
    torch.testing.assert_close(got.double(), want, atol=2e-6, rtol=1e-5)
