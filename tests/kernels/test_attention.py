"""attention: the Triton kernel (real on CUDA, interpreted on CPU) and the op vs a float64 softmax.

Contract: valid query rows (t < length) equal softmax attention over the keys j < length; padding
rows (t >= length) are zeros; every output element is written (outputs start NaN-poisoned).
"""

from __future__ import annotations

import importlib

import pytest
import torch
from helpers import DEVICE, check_compile_fullgraph, check_export_round_trip, requires_cuda

from kernels import attention, attention_reference

kernel_module = importlib.import_module("kernels.attention")  # `kernels.attention` is also the op
launch_attention = kernel_module.launch_attention

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TOL = {  # vs the float64 softmax; fp16/bf16: inputs are rounded already, p is rounded once for P @ V
    torch.float32: {"atol": 2e-5, "rtol": 2e-5},
    torch.float16: {"atol": 1e-2, "rtol": 1e-2},
    torch.bfloat16: {"atol": 2e-2, "rtol": 2e-2},
}


def exact(qkv: torch.Tensor, lengths: torch.Tensor, n_head: int) -> torch.Tensor:
    """The contract in float64, written out: masked softmax(q k^T / sqrt(d)) v, padding rows zero."""
    B, T, C = qkv.shape
    d = C // (3 * n_head)
    q, k, v = qkv.double().view(B, T, n_head, 3 * d).transpose(1, 2).split(d, dim=-1)
    valid = torch.arange(T, device=qkv.device)[None, :] < lengths.to(qkv.device)[:, None]  # (B, T)
    scores = (q @ k.transpose(-1, -2)) / d**0.5
    scores = scores.masked_fill(~valid[:, None, None, :], float("-inf"))
    out = (torch.softmax(scores, -1).nan_to_num(0.0) @ v).transpose(1, 2).reshape(B, T, n_head * d)
    return out * valid[..., None]


def run_kernel(qkv: torch.Tensor, lengths: torch.Tensor, n_head: int, **blocks) -> torch.Tensor:
    """Launch into a NaN-poisoned buffer: any element the kernel skips stays NaN and fails the test."""
    B, T, C = qkv.shape
    out = torch.full((B, T, C // 3), float("nan"), dtype=qkv.dtype, device=qkv.device)
    return launch_attention(qkv, lengths, n_head, out, **blocks)


def check(qkv: torch.Tensor, lengths: torch.Tensor, n_head: int, **blocks) -> torch.Tensor:
    got = run_kernel(qkv, lengths, n_head, **blocks)
    assert not got.isnan().any(), "kernel left output elements unwritten"
    want = exact(qkv, lengths, n_head)
    torch.testing.assert_close(got.double(), want, **TOL[qkv.dtype])
    padding = torch.arange(qkv.shape[1], device=qkv.device)[None, :] >= lengths[:, None]
    assert (got[padding] == 0).all(), "padding rows must be zeros"
    return got


def random_qkv(B: int, T: int, n_head: int, d: int, dtype: torch.dtype) -> torch.Tensor:
    return torch.randn(B, T, n_head * 3 * d, device=DEVICE).to(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "B, T, n_head, lengths",
    [
        (1, 1, 2, [1]),  # T=1
        (3, 37, 2, [37, 1, 0]),  # full, one key, empty
        (2, 130, 1, [130, 65]),  # > two key blocks, a partial last block
        (1, 100, 2, [250]),  # length > T: clamped to T
    ],
)
def test_random(B, T, n_head, lengths, dtype):
    check(random_qkv(B, T, n_head, 64, dtype), torch.tensor(lengths, device=DEVICE), n_head)


@pytest.mark.parametrize("len_dtype", [torch.int32, torch.int64])
def test_lengths_in_either_width(len_dtype):
    qkv = random_qkv(2, 20, 2, 64, torch.float16)
    check(qkv, torch.tensor([20, 7], device=DEVICE, dtype=len_dtype), 2)


@pytest.mark.parametrize("d, n_head", [(16, 3), (32, 2), (40, 1)])  # 40: not a power of 2 (masked lanes)
def test_other_head_sizes(d, n_head):
    check(random_qkv(2, 19, n_head, d, torch.float32), torch.tensor([19, 11], device=DEVICE), n_head)


@pytest.mark.parametrize("block_m, block_n, num_warps", [(16, 16, 1), (32, 64, 2), (64, 32, 4), (128, 64, 8)])
def test_tile_sizes(block_m, block_n, num_warps):
    # Lengths with and without a partial last key block (64-row tiles and up mask only that one),
    # and an empty row.
    qkv = random_qkv(5, 75, 2, 64, torch.float16)
    lengths = torch.tensor([75, 33, 64, 32, 0], device=DEVICE)
    check(qkv, lengths, 2, block_m=block_m, block_n=block_n, num_warps=num_warps)


@pytest.mark.parametrize("B, T", [(1, 128), (1, 1024), (8, 1024), (64, 128), (64, 1024), (256, 1024)])
def test_default_tiles_fill_the_gpu_and_fp32_stops_at_64_rows(B, T):
    """The largest query tile that still fills 132 SMs; fp32's IEEE dot products never get 128-row
    tiles (15-20x slower than 64-row ones on the H200, run 45)."""
    half, fp32 = (kernel_module.default_blocks(B, T, 2, dtype) for dtype in (torch.float16, torch.float32))
    for blocks in (half, fp32):
        programs = B * 2 * -(-T // blocks.block_m)
        assert programs >= kernel_module.FILL_PROGRAMS or blocks.block_m == 16, (B, T, blocks)
    assert fp32.block_m <= 64 and fp32.num_warps == 4
    assert fp32.block_m == min(half.block_m, 64)


def test_strided_views_in_and_out():
    """qkv read through its strides (a channel slice of a time-major tensor); out likewise."""
    wide = torch.randn(21, 3, 2 * 192 + 5, device=DEVICE)
    qkv = wide.transpose(0, 1)[:, :, 3 : 3 + 2 * 192]  # a view: batch stride < time stride, offset 3
    assert not qkv.is_contiguous() and qkv.stride() == (2 * 192 + 5, 3 * (2 * 192 + 5), 1)
    lengths = torch.tensor([21, 4, 13], device=DEVICE)
    out_wide = torch.full((3, 21, 200), float("nan"), device=DEVICE)
    out = out_wide[:, :, 7 : 7 + 128]
    launch_attention(qkv, lengths, 2, out)
    torch.testing.assert_close(out.double(), exact(qkv, lengths, 2), **TOL[torch.float32])
    assert out_wide[:, :, :7].isnan().all() and out_wide[:, :, 7 + 128 :].isnan().all(), "wrote outside out"


def test_padding_does_not_change_valid_rows():
    """The same item alone and padded inside a longer batch row gives the same valid rows."""
    qkv = random_qkv(1, 50, 2, 64, torch.float32)
    alone = run_kernel(qkv[:, :30].contiguous(), torch.tensor([30], device=DEVICE), 2)
    padded = run_kernel(qkv, torch.tensor([30], device=DEVICE), 2)
    torch.testing.assert_close(padded[:, :30], alone, atol=1e-6, rtol=1e-6)


# ---------------------------------------------------------------------------------------------
# The op: dispatch, reference, checks, compile and export


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_op_and_reference_follow_the_contract(dtype):
    qkv = random_qkv(3, 24, 2, 64, dtype)
    lengths = torch.tensor([24, 9, 0], device=DEVICE)
    for got in (attention(qkv, lengths, 2), attention_reference(qkv, lengths, 2)):
        assert got.shape == (3, 24, 128) and got.dtype == dtype
        torch.testing.assert_close(got.double(), exact(qkv, lengths, 2), **TOL[dtype])
        assert (got[2] == 0).all() and (got[1, 9:] == 0).all()


@pytest.mark.parametrize(
    "qkv_shape, lengths, n_head, message",
    [
        ((2, 5, 384), torch.ones(2, dtype=torch.long), 5, r"not n_head \* 3 \* d for n_head=5"),
        ((2, 5, 384), torch.ones(3, dtype=torch.long), 2, r"lengths must be \(B,\) = \(2,\)"),
        ((2, 5, 384), torch.ones(2), 2, "lengths must be int32 or int64"),
        ((5, 384), torch.ones(5, dtype=torch.long), 2, r"qkv must be \(B, T, n_head \* 3 \* d\)"),
    ],
)
def test_bad_inputs_are_named(qkv_shape, lengths, n_head, message):
    with pytest.raises(ValueError, match=message):
        attention(torch.randn(qkv_shape, device=DEVICE), lengths.to(DEVICE), n_head)


def test_gradient_is_the_references():
    """Training (scripts/train_demo.py) backpropagates through the op: the reference's gradient."""
    qkv = torch.randn(2, 11, 2 * 192, device=DEVICE, requires_grad=True)
    lengths = torch.tensor([11, 6], device=DEVICE)
    grad = torch.randn(2, 11, 128, device=DEVICE)
    (got,) = torch.autograd.grad(attention(qkv, lengths, 2), qkv, grad)
    (want,) = torch.autograd.grad(attention_reference(qkv, lengths, 2), qkv, grad)
    torch.testing.assert_close(got, want)


class _Block(torch.nn.Module):
    """Projection -> attention -> output projection, as `MultiHeadAttention` uses the op."""

    def __init__(self):
        super().__init__()
        self.linear, self.fc = torch.nn.Linear(48, 2 * 3 * 16), torch.nn.Linear(2 * 16, 48)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.ops.fastspeech.attention(self.linear(x), lengths, 2)) + x


def test_export_round_trip():
    x, lengths = torch.randn(2, 9, 48, device=DEVICE), torch.tensor([9, 4], device=DEVICE)
    check_export_round_trip(_Block().to(DEVICE), (x, lengths), "fastspeech.attention.default")


@pytest.mark.slow
def test_compile_fullgraph():
    x, lengths = torch.randn(2, 9, 48, device=DEVICE), torch.tensor([9, 4], device=DEVICE)
    check_compile_fullgraph(_Block().to(DEVICE), (x, lengths))


@pytest.mark.slow
def test_model_sized_rows_under_the_interpreter():
    """DLE's mel side at B=1: T=1024, 2 heads, d 64, 900 valid rows (the engine's default tiles)."""
    qkv = random_qkv(1, 1024, 2, 64, torch.float16)
    check(qkv, torch.tensor([900], device=DEVICE), 2)


# ---------------------------------------------------------------------------------------------
# On a GPU: the engine's shapes, and Inductor calling the kernel


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B, T", [(1, 128), (1, 1024), (8, 1024), (64, 1024), (3, 257)])
def test_engine_shapes_cuda(B, T, dtype):
    torch.manual_seed(0)
    qkv = random_qkv(B, T, 2, 64, dtype)
    lengths = torch.randint(0, T + 1, (B,), device="cuda")
    lengths[0] = T
    check(qkv, lengths, 2)


@pytest.mark.cuda
@requires_cuda
def test_inductor_calls_the_kernel_cuda():
    from torch._inductor.utils import run_and_get_code

    torch._dynamo.reset()
    model = _Block().cuda().half()
    x, lengths = torch.randn(2, 33, 48, device="cuda").half(), torch.tensor([33, 10], device="cuda")
    compiled = torch.compile(model, fullgraph=True, dynamic=False)
    with torch.no_grad():
        got, code = run_and_get_code(compiled, x, lengths)
        torch.testing.assert_close(got, model(x, lengths), atol=1e-2, rtol=1e-2)
    assert "_attention_kernel" in "\n".join(code)
