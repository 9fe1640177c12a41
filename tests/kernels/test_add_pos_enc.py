"""add_pos_enc: the Triton kernel (real on CUDA, interpreted on CPU) and the op vs the references.

Accuracy contract: in fp32 within 1e-4 absolute of x + the float64-built table, positions 1..2048.
Padding rows (t >= length) must come back bit for bit.
"""

from __future__ import annotations

import pytest
import torch
from helpers import DEVICE, requires_cuda

from kernels.add_pos_enc import add_pos_enc, add_pos_enc_reference, launch_add_pos_enc, sinusoid_table

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TOL = {  # vs add_pos_enc_reference (same fp32 sum, rounded once; fp16/bf16 may differ by one ulp)
    torch.float32: {"atol": 1e-5, "rtol": 1e-5},
    torch.float16: {"atol": 1e-2, "rtol": 1e-2},
    torch.bfloat16: {"atol": 1e-2, "rtol": 1e-2},
}
PE_ATOL_FP32 = 1e-4  # the bound vs the float64 table


def exact(x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    """x + PE in float64, straight from the float64 table: positions 1..T on rows t < length."""
    _, T, H = x.shape
    table = sinusoid_table(T + 1, H, torch.float64).to(x.device)[1:]
    valid = torch.arange(T, device=x.device)[None, :] < lengths[:, None]
    return x.double() + table[None] * valid[..., None]


def run_kernel(x: torch.Tensor, lengths: torch.Tensor, **blocks) -> torch.Tensor:
    """Launch into a NaN-poisoned buffer: any element the kernel skips stays NaN and fails the test."""
    out = torch.full(x.shape, float("nan"), dtype=x.dtype, device=x.device)
    return launch_add_pos_enc(x, lengths, out, **blocks)


def check(x: torch.Tensor, lengths: torch.Tensor, **blocks) -> torch.Tensor:
    got = run_kernel(x, lengths, **blocks)
    assert not got.isnan().any(), "kernel left output elements unwritten"
    torch.testing.assert_close(got, add_pos_enc_reference(x, lengths), **TOL[x.dtype])
    if x.dtype == torch.float32:
        assert (got.double() - exact(x, lengths)).abs().max() <= PE_ATOL_FP32
    padding = torch.arange(x.shape[1], device=x.device)[None, :] >= lengths[:, None]
    assert torch.equal(got[padding], x[padding]), "padding rows must be unchanged"
    return got


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("len_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("B,T,H", [(1, 1, 257), (7, 13, 257), (2, 40, 384), (7, 5, 16)])
def test_random(B, T, H, dtype, len_dtype):
    x = torch.randn(B, T, H, device=DEVICE).to(dtype)
    lengths = torch.randint(0, T + 1, (B,), device=DEVICE, dtype=len_dtype)
    lengths[0] = T  # at least one full row
    check(x, lengths)


def test_fp32_within_1e4_of_float64_table_to_position_2048():
    """The hard case: angles up to 2048 rad.

    Big blocks only under the interpreter (fewer, larger programs run faster there); on a GPU such a
    tile takes Triton minutes to compile, so CUDA uses the default launch.
    """
    x = torch.randn(2, 2048, 384, device=DEVICE)
    lengths = torch.tensor([2048, 1500], device=DEVICE)
    blocks = {} if DEVICE == "cuda" else {"block_t": 256, "block_h": 512}
    got = run_kernel(x, lengths, **blocks)
    err = (got.double() - exact(x, lengths)).abs().max().item()
    assert err <= PE_ATOL_FP32, f"max abs error {err:.2e} vs the float64 table"


def test_lengths_zero_and_beyond_t():
    x = torch.randn(3, 9, 257, device=DEVICE)
    lengths = torch.tensor([0, 9, 50], device=DEVICE)  # no valid row; all valid; longer than T
    got = check(x, lengths)
    assert torch.equal(got[0], x[0])


@pytest.mark.parametrize("b_per_prog", [1, 2, 3])
def test_batch_loop_tails(b_per_prog):
    """Programs reuse one PE tile over several batch rows; B not a multiple of that must still work."""
    x = torch.randn(7, 20, 257, device=DEVICE)
    lengths = torch.randint(0, 21, (7,), device=DEVICE)
    check(x, lengths, b_per_prog=b_per_prog, block_t=8, block_h=64)


def test_non_contiguous_inputs_and_output():
    x = torch.randn(3, 257, 12, device=DEVICE).transpose(1, 2)  # (B, T, H) with H strided
    lengths = torch.randint(0, 13, (6,), device=DEVICE)[::2]
    out = torch.full((3, 257, 12), float("nan"), device=DEVICE).transpose(1, 2)
    launch_add_pos_enc(x, lengths, out)
    torch.testing.assert_close(out, add_pos_enc_reference(x, lengths), **TOL[torch.float32])


def test_in_place_output():
    x = torch.randn(2, 10, 257, device=DEVICE)
    lengths = torch.tensor([10, 4], device=DEVICE)
    expected = add_pos_enc_reference(x, lengths)
    launch_add_pos_enc(x, lengths, x)
    torch.testing.assert_close(x, expected, **TOL[torch.float32])


@pytest.mark.parametrize("dtype", DTYPES)
def test_op_matches_reference(dtype):
    x = torch.randn(7, 13, 257, device=DEVICE).to(dtype)
    lengths = torch.randint(0, 14, (7,), device=DEVICE)
    got = torch.ops.fastspeech.add_pos_enc(x, lengths)
    assert got.shape == x.shape and got.dtype == dtype
    torch.testing.assert_close(got, add_pos_enc_reference(x, lengths), **TOL[dtype])


def test_reference_is_the_float64_table():
    x = torch.randn(2, 2048, 64)
    lengths = torch.tensor([2048, 7])
    assert (add_pos_enc_reference(x, lengths).double() - exact(x, lengths)).abs().max() <= 1e-5


def test_op_rejects_bad_inputs():
    x = torch.randn(2, 5, 16)
    with pytest.raises(ValueError, match="int32 or int64"):
        add_pos_enc(x, torch.tensor([5.0, 3.0]))
    with pytest.raises(ValueError, match=r"lengths must be \(B,\)"):
        add_pos_enc(x, torch.tensor([5, 3, 1]))


# ---------------------------------------------------------------------------------------------
# Full sizes on the GPU
# ---------------------------------------------------------------------------------------------
@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B,T,H", [(64, 1024, 384), (64, 128, 384), (1, 2048, 384), (7, 1000, 257)])
def test_cuda_full_sizes(B, T, H, dtype):
    x = torch.randn(B, T, H, device="cuda").to(dtype)
    lengths = torch.randint(0, T + 1, (B,), device="cuda")
    lengths[0] = T
    check(x, lengths)
    torch.testing.assert_close(add_pos_enc(x, lengths), add_pos_enc_reference(x, lengths), **TOL[dtype])


@pytest.mark.cuda
@requires_cuda
def test_cuda_fp32_accuracy_default_blocks():
    """Same bound as the CPU test, on the GPU's own sin and float64 units, default launch."""
    x = torch.randn(3, 2048, 384, device="cuda")
    lengths = torch.tensor([2048, 2048, 100], device="cuda")
    err = (add_pos_enc(x, lengths).double() - exact(x, lengths)).abs().max().item()
    assert err <= PE_ATOL_FP32, f"max abs error {err:.2e} vs the float64 table"


@pytest.mark.cuda
@requires_cuda
def test_cuda_launches_on_current_stream():
    """The op must run on torch's current stream: a producer queued on a side stream comes first."""
    x = torch.randn(8, 1024, 384, device="cuda", dtype=torch.float16)
    lengths = torch.randint(0, 1025, (8,), device="cuda")
    src = torch.full_like(x, float("nan"))
    side = torch.cuda.Stream()
    torch.cuda.synchronize()
    with torch.cuda.stream(side):
        torch.cuda._sleep(50_000_000)  # ~25 ms: a kernel on another stream would read the NaNs
        src.copy_(x)
        got = add_pos_enc(src, lengths)
    side.synchronize()
    torch.testing.assert_close(got, add_pos_enc_reference(x, lengths), **TOL[torch.float16])
