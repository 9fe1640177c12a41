"""regulate_length: the Triton kernel (real on CUDA, interpreted on CPU) and the op vs two references.

The op only copies rows, so every comparison is exact (torch.equal), whatever the dtype. Sizes in the
unmarked tests stay small because Triton's interpreter is slow; the `cuda` tests run full sizes.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from helpers import DEVICE, requires_cuda
from torch.nn.utils.rnn import pad_sequence

from kernels.regulate_length import launch_regulate_length, regulate_length, regulate_length_reference

DTYPES = [torch.float32, torch.float16, torch.bfloat16]


def straightforward(x: torch.Tensor, durations: torch.Tensor, max_out: int) -> torch.Tensor:
    """Independent reference, DLE's way: per-item repeat_interleave + pad_sequence, then crop/pad."""
    rows = [torch.repeat_interleave(x[b], durations[b].long(), dim=0) for b in range(x.shape[0])]
    out = pad_sequence(rows, batch_first=True)[:, :max_out]
    return F.pad(out, (0, 0, 0, max_out - out.shape[1]))


def random_inputs(B: int, Ti: int, H: int, dtype: torch.dtype, high: int = 5, dur_dtype=torch.int64):
    x = torch.randn(B, Ti, H, device=DEVICE).to(dtype)
    durations = torch.randint(0, high, (B, Ti), device=DEVICE, dtype=dur_dtype)
    return x, durations


def run_kernel(x: torch.Tensor, durations: torch.Tensor, max_out: int, **blocks) -> torch.Tensor:
    """Launch into a NaN-poisoned buffer: any element the kernel skips stays NaN and fails the test."""
    out = torch.full((x.shape[0], max_out, x.shape[2]), float("nan"), dtype=x.dtype, device=x.device)
    return launch_regulate_length(x, durations, out, **blocks)


def check(x: torch.Tensor, durations: torch.Tensor, max_out: int, **blocks) -> None:
    got = run_kernel(x, durations, max_out, **blocks)
    assert not got.isnan().any(), "kernel left output elements unwritten"
    assert torch.equal(got, regulate_length_reference(x, durations, max_out))
    assert torch.equal(got, straightforward(x, durations, max_out))


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dur_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("B,Ti,H,max_out", [(1, 1, 257, 5), (7, 13, 257, 40), (2, 5, 384, 16)])
def test_random(B, Ti, H, max_out, dtype, dur_dtype):
    x, durations = random_inputs(B, Ti, H, dtype, dur_dtype=dur_dtype)
    check(x, durations, max_out)


@pytest.mark.parametrize("wide_scan", [False, True])
def test_long_input_chunks_the_scan(wide_scan):
    """Ti = 1000 (the seed's plugin stopped at 1024 via one block scan); small H keeps it quick."""
    x, durations = random_inputs(2, 1000, 8, torch.float32, high=3)
    check(x, durations, 1100, block_to=64, wide_scan=wide_scan)  # totals ~1000: zero tails


def test_zero_durations_and_all_zero_row():
    x, durations = random_inputs(3, 11, 257, torch.float16)
    durations[0, ::2] = 0  # scattered zeros
    durations[1] = 0  # an all-zero row: its output is all zeros
    check(x, durations, 30)
    assert torch.equal(run_kernel(x, durations, 30)[1], torch.zeros(30, 257, dtype=x.dtype, device=DEVICE))


@pytest.mark.parametrize("excess", [0, 1])
def test_total_exactly_max_out_and_one_more(excess):
    x, durations = random_inputs(2, 9, 257, torch.float32, high=6)
    durations[:, 0] += 1  # nonzero total
    max_out = int(durations.sum(1).max()) - excess
    check(x, durations, max_out)


@pytest.mark.parametrize("wide_scan", [False, True])
@pytest.mark.parametrize("dur_dtype,huge", [(torch.int32, 2**31 - 1), (torch.int64, 2**40)])
def test_huge_durations(dur_dtype, huge, wide_scan):
    """Durations far beyond max_out must neither overflow the running sum nor reach past the output.

    Both scan widths: int64 is picked only for max_out > 2^31 / 129, too big to test directly.
    """
    x, durations = random_inputs(2, 6, 257, torch.bfloat16, dur_dtype=dur_dtype)
    durations[0, 2] = huge
    durations[1, :] = huge
    got = run_kernel(x, durations, 24, wide_scan=wide_scan)
    assert torch.equal(got, regulate_length_reference(x, durations, 24))
    first = int(durations[0, :2].sum())
    assert torch.equal(got[0, first:], x[0, 2].expand(24 - first, -1))  # token 2 fills the rest
    assert torch.equal(got[1], x[1, 0].expand(24, -1))


def test_non_contiguous_inputs_and_output():
    xt = torch.randn(3, 257, 10, device=DEVICE)  # (B, H, Ti) storage, viewed as (B, Ti, H)
    x = xt.transpose(1, 2)
    durations = torch.randint(0, 4, (3, 20), device=DEVICE)[:, ::2]  # (B, Ti) with stride 2
    assert not x.is_contiguous() and not durations.is_contiguous()
    out = torch.full((3, 257, 25), float("nan"), device=DEVICE).transpose(1, 2)  # strided output
    launch_regulate_length(x, durations, out)
    assert torch.equal(out, straightforward(x, durations, 25))


def test_kernel_treats_negative_durations_as_zero():
    """The compiled-graph behaviour: no check there, and the kernel clamps negatives to 0."""
    x, durations = random_inputs(2, 8, 257, torch.float32)
    durations[0, 3] = -4
    expected = straightforward(x, durations.clamp_min(0), 20)
    assert torch.equal(run_kernel(x, durations, 20), expected)


def test_op_matches_and_shapes_are_static():
    x, durations = random_inputs(7, 13, 257, torch.float16)
    got = torch.ops.fastspeech.regulate_length(x, durations, 33)
    assert got.shape == (7, 33, 257) and got.dtype == torch.float16
    assert torch.equal(got, straightforward(x, durations, 33))
    assert regulate_length(x, durations, 0).shape == (7, 0, 257)


def test_op_rejects_negative_durations_in_eager():
    x, durations = random_inputs(2, 5, 16, torch.float32)
    durations[1, 2] = -1
    with pytest.raises(ValueError, match="durations must be >= 0"):
        regulate_length(x, durations, 10)


@pytest.mark.parametrize(
    "bad,match",
    [
        (lambda x, d: (x, d.float(), 4), "int32 or int64"),
        (lambda x, d: (x, d[:, :-1], 4), r"durations must be \(B, Ti\)"),
        (lambda x, d: (x[0], d, 4), r"x must be \(B, Ti, H\)"),
        (lambda x, d: (x, d, -1), "max_out must be >= 0"),
    ],
)
def test_op_rejects_bad_inputs(bad, match):
    x, durations = random_inputs(2, 5, 16, torch.float32)
    with pytest.raises(ValueError, match=match):
        regulate_length(*bad(x, durations))


# ---------------------------------------------------------------------------------------------
# Full sizes on the GPU
# ---------------------------------------------------------------------------------------------
@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,Ti,To,H", [(64, 128, 1024, 384), (8, 32, 256, 384), (7, 1000, 3000, 257)])
def test_cuda_full_sizes(B, Ti, To, H, dtype):
    x, durations = random_inputs(B, Ti, H, dtype, high=2 * To // Ti + 1)
    check(x, durations, To)
    assert torch.equal(regulate_length(x, durations, To), straightforward(x, durations, To))


@pytest.mark.cuda
@requires_cuda
def test_cuda_launches_on_current_stream():
    """The kernel must run on torch's current stream: a producer queued on a side stream comes first.

    Uses the launcher: the eager op's host check (durations.min()) would sync and hide a wrong stream.
    """
    x, durations = random_inputs(8, 128, 384, torch.float16)
    src = torch.full_like(x, float("nan"))
    out = torch.full((8, 1024, 384), float("nan"), dtype=x.dtype, device="cuda")
    side = torch.cuda.Stream()
    torch.cuda.synchronize()
    with torch.cuda.stream(side):
        torch.cuda._sleep(50_000_000)  # ~25 ms: a kernel on another stream would read the NaNs
        src.copy_(x)
        launch_regulate_length(src, durations, out)
    side.synchronize()
    assert torch.equal(out, straightforward(x, durations, 1024))
