"""conv1d: the Triton kernel (real on CUDA, interpreted on CPU) and the op vs the contract in float64.

Contract: out[b, t] = act(bias + sum_j weight[j] @ x[b, t + j - padding]) on rows t < lengths[b], zero
padding outside [0, T), rows t >= lengths[b] exactly 0; every output element is written (outputs
start NaN-poisoned). The CPU runs use small channel counts (the interpreter is slow); the `cuda`
tests run FastSpeech's own shapes.
"""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F
from helpers import (
    DEVICE,
    check_compile_fullgraph,
    check_export_round_trip,
    requires_cuda,
    run_without_interpreter,
)

from kernels import conv1d, conv1d_reference

kernel_module = importlib.import_module("kernels.conv1d")  # `kernels.conv1d` is also the op
launch_conv1d, Blocks = kernel_module.launch_conv1d, kernel_module.Blocks

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TOL = {  # vs float64 on the same (rounded) inputs: fp32 accumulation over K up to 3 x 1536, one final rounding
    torch.float32: {"atol": 1e-4, "rtol": 1e-4},
    torch.float16: {"atol": 1e-2, "rtol": 1e-2},
    torch.bfloat16: {"atol": 2e-2, "rtol": 2e-2},
}


def exact(x, weight, bias, lengths, padding: int, relu: bool) -> torch.Tensor:
    """The contract in float64, written out: a sum over taps of shifted rows times weight[j]."""
    k, T = weight.shape[0], x.shape[1]
    padded = F.pad(x.double(), (0, 0, padding, k - 1 - padding))  # (B, T + k - 1, C_in)
    out = sum(padded[:, j : j + T] @ weight[j].double().T for j in range(k))  # (B, T, C_out)
    if bias is not None:
        out = out + bias.double()
    if relu:
        out = out.clamp_min(0)
    valid = torch.arange(T, device=x.device)[None, :] < lengths.to(x.device)[:, None]
    return out * valid[..., None]


def random_inputs(B, T, c_in, c_out, k, dtype, bias=True):
    """x ~ N(0, 1), weights and bias at nn.Conv1d's initial scale (outputs of order 1)."""
    conv = torch.nn.Conv1d(c_in, c_out, k, bias=bias)
    x = torch.randn(B, T, c_in).to(DEVICE, dtype)
    weight = conv.weight.detach().permute(2, 0, 1).contiguous().to(DEVICE, dtype)  # (k, C_out, C_in)
    return x, weight, None if conv.bias is None else conv.bias.detach().to(DEVICE, dtype)


def run_kernel(x, weight, bias, lengths, padding, relu, **kwargs) -> torch.Tensor:
    """Launch into a NaN-poisoned buffer: any element the kernel skips stays NaN and fails the test."""
    out = torch.full((*x.shape[:2], weight.shape[1]), float("nan"), dtype=x.dtype, device=x.device)
    return launch_conv1d(x, weight, bias, lengths, padding, relu, out, **kwargs)


def check(x, weight, bias, lengths, padding, relu, **kwargs) -> torch.Tensor:
    got = run_kernel(x, weight, bias, lengths, padding, relu, **kwargs)
    assert not got.isnan().any(), "kernel left output elements unwritten"
    torch.testing.assert_close(got.double(), exact(x, weight, bias, lengths, padding, relu), **TOL[x.dtype])
    padding_rows = torch.arange(x.shape[1], device=x.device)[None, :] >= lengths[:, None]
    assert (got[padding_rows] == 0).all(), "rows at or past the length must be exactly 0"
    return got


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "B, T, c_in, c_out, k, padding, lengths, relu, bias",
    [
        (1, 1, 16, 16, 3, 1, [1], True, True),  # T=1: both outer taps read the zero padding
        (3, 7, 40, 33, 3, 1, [7, 1, 0], True, True),  # odd channels; full, one row, empty
        (2, 19, 32, 48, 5, 2, [25, 12], False, True),  # k=5; length beyond T acts as T
        (2, 12, 24, 20, 1, 0, [12, 5], True, False),  # k=1 (pointwise), no bias
        (2, 11, 16, 24, 3, 0, [11, 11], False, True),  # uneven padding: 0 before, 2 after
        (2, 11, 16, 24, 3, 2, [11, 6], True, True),  # 2 before, 0 after
        (1, 5, 16, 16, 3, 1, [-2], True, True),  # negative length: all rows zero
    ],
)
def test_random(B, T, c_in, c_out, k, padding, lengths, relu, bias, dtype):
    x, weight, b = random_inputs(B, T, c_in, c_out, k, dtype, bias)
    check(x, weight, b, torch.tensor(lengths, device=DEVICE), padding, relu)


@pytest.mark.parametrize("len_dtype", [torch.int32, torch.int64])
def test_lengths_in_either_width(len_dtype):
    x, weight, bias = random_inputs(2, 9, 16, 24, 3, torch.float16)
    check(x, weight, bias, torch.tensor([9, 4], device=DEVICE, dtype=len_dtype), 1, True)


@pytest.mark.parametrize(
    "blocks",
    [
        Blocks(16, 16, 16, 1, 2, 1),  # many tiles each way, 3 input-channel blocks (the last partial)
        Blocks(16, 32, 16, 2, 3, 2),  # group-M swizzle with a partial last group
        Blocks(16, 16, 16, 1, 2, 8, programs=3),  # 3 persistent programs walk 18 tiles, unevenly
        Blocks(32, 16, 32, 4, 4, 8, programs=1),  # one program walks every tile
        Blocks(16, 32, 16, 2, 3, 8, programs=5, subtile=True),  # the epilogue's two half-width stores
        Blocks(64, 64, 64, 4, 4, 8),  # one tile covers a whole batch item (and rows past T)
    ],
)
def test_tile_sizes(blocks):
    x, weight, bias = random_inputs(3, 13, 40, 33, 3, torch.float32)
    check(x, weight, bias, torch.tensor([13, 7, 0], device=DEVICE), 1, True, blocks=blocks)


def test_tiles_past_the_length_store_zeros_and_the_last_row_still_reads_padding_input():
    """Row tiles wholly past an item's length skip their K steps (zeros stored); the tile holding
    the last valid row still reads the input rows past the length through its right tap."""
    x, weight, bias = random_inputs(4, 50, 16, 24, 3, torch.float32)
    lengths = torch.tensor([50, 17, 3, 0], device=DEVICE)
    x[1, 17:] += 100.0  # input past the length, as given: it reaches output row 16 only
    got = check(x, weight, bias, lengths, 1, False, blocks=Blocks(16, 16, 16, 1, 2, 8, programs=5))
    x[1, 17:] -= 100.0
    assert not torch.allclose(got[1, 16], run_kernel(x, weight, bias, lengths, 1, False)[1, 16])


def test_rows_never_cross_batch_items():
    """An item alone and as the middle row of a batch (its tile shared with others) gives the same rows."""
    x, weight, bias = random_inputs(3, 6, 16, 16, 3, torch.float32)
    x[0] += 1e3  # neighbours that would show if a tap read across the batch boundary
    x[2] -= 1e3
    lengths = torch.tensor([6, 6, 6], device=DEVICE)
    batched = run_kernel(x, weight, bias, lengths, 1, False, blocks=Blocks(32, 16, 16, 4, 2, 8))
    alone = run_kernel(x[1:2].contiguous(), weight, bias, lengths[:1], 1, False)
    torch.testing.assert_close(batched[1:2], alone, atol=1e-5, rtol=1e-5)


def test_strided_views_in_and_out():
    """x, weight and out read and written through their strides (views a tensor descriptor cannot
    address: the launcher goes through aligned copies); nothing outside `out` is touched."""
    x_wide = torch.randn(10, 3, 50, device=DEVICE)
    x = x_wide.transpose(0, 1)[:, :, 5:37]  # (3, 10, 32), a view: batch stride < time stride, offset 5
    assert not x.is_contiguous() and x.stride() == (50, 150, 1)
    conv = torch.nn.Conv1d(32, 24, 3).to(DEVICE)
    weight = conv.weight.detach().permute(2, 0, 1)  # nn.Conv1d's weight as a view: not contiguous
    lengths = torch.tensor([10, 3, 8], device=DEVICE)
    out_wide = torch.full((3, 10, 30), float("nan"), device=DEVICE)
    out = out_wide[:, :, 4:28]
    launch_conv1d(x, weight, conv.bias.detach(), lengths, 1, True, out)
    want = exact(x, weight, conv.bias.detach(), lengths, 1, True)
    torch.testing.assert_close(out.double(), want, **TOL[torch.float32])
    assert out_wide[:, :, :4].isnan().all() and out_wide[:, :, 28:].isnan().all(), "wrote outside out"


def test_contiguous_views_that_start_off_16_bytes():
    """Contiguous x and out whose first element is 4 bytes past an aligned address: a tensor
    descriptor cannot start there, so the launcher goes through aligned buffers."""
    storage = torch.randn(1 + 2 * 9 * 16, device=DEVICE)
    x = storage[1:].view(2, 9, 16)
    assert x.is_contiguous() and x.storage_offset() * 4 % 16
    weight, bias = torch.randn(3, 8, 16, device=DEVICE) / 7, torch.randn(8, device=DEVICE)
    lengths = torch.tensor([9, 5], device=DEVICE)
    out_storage = torch.full((1 + 2 * 9 * 8,), float("nan"), device=DEVICE)
    out = out_storage[1:].view(2, 9, 8)
    launch_conv1d(x, weight, bias, lengths, 1, False, out)
    torch.testing.assert_close(out.double(), exact(x, weight, bias, lengths, 1, False), **TOL[torch.float32])
    assert out_storage[0].isnan(), "wrote before out"


@pytest.mark.parametrize("k, padding", [(3, 1), (5, 2), (1, 0)])
def test_equals_nn_conv1d_as_the_model_uses_it(k, padding):
    """FastSpeech's feed-forward step relu(conv(x)) * row mask, with `conv.weight.permute(2, 0, 1)`."""
    conv = torch.nn.Conv1d(24, 40, k, padding=padding).to(DEVICE)
    lengths = torch.tensor([17, 9], device=DEVICE)
    valid = (torch.arange(17, device=DEVICE)[None, :] < lengths[:, None])[..., None]  # (B, T, 1)
    x = torch.randn(2, 17, 24, device=DEVICE) * valid
    with torch.no_grad():
        want = F.relu(conv(x.transpose(1, 2)).transpose(1, 2)) * valid
        for got in (
            run_kernel(x, conv.weight.permute(2, 0, 1), conv.bias, lengths, padding, True),
            conv1d(x, conv.weight.permute(2, 0, 1), conv.bias, lengths, padding, True),
        ):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# The op: dispatch, reference, checks, gradient, compile and export


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_op_and_reference_follow_the_contract(dtype):
    x, weight, bias = random_inputs(3, 12, 16, 24, 3, dtype)
    lengths = torch.tensor([12, 5, 0], device=DEVICE)
    for got in (
        conv1d(x, weight, bias, lengths, 1, True),
        conv1d_reference(x, weight, bias, lengths, 1, True),
    ):
        assert got.shape == (3, 12, 24) and got.dtype == dtype
        torch.testing.assert_close(got.double(), exact(x, weight, bias, lengths, 1, True), **TOL[dtype])
        assert (got[2] == 0).all() and (got[1, 5:] == 0).all()


def _bad(**changes):
    args = {
        "x": torch.randn(2, 5, 16),
        "weight": torch.randn(3, 8, 16),
        "bias": torch.randn(8),
        "lengths": torch.ones(2, dtype=torch.long),
        "padding": 1,
        "relu": True,
    }
    args.update(changes)
    return {k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v for k, v in args.items()}


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"weight": torch.randn(8, 16, 3)}, r"weight \(8, 16, 3\) is not \(k, C_out, C_in\) for x's C_in=16"),
        ({"weight": torch.randn(3, 8, 12)}, r"is not \(k, C_out, C_in\) for x's C_in=16"),
        ({"weight": torch.randn(8, 16)}, r"weight must be \(k, C_out, C_in\)"),
        ({"padding": 3}, r"padding must be in \[0, k - 1\] = \[0, 2\], got 3"),
        ({"padding": -1}, r"padding must be in \[0, k - 1\]"),
        ({"bias": torch.randn(9)}, r"bias must be \(C_out,\) = \(8,\)"),
        ({"bias": torch.randn(8).half()}, "bias is torch.float16, x is torch.float32"),
        ({"lengths": torch.ones(3, dtype=torch.long)}, r"lengths must be \(B,\) = \(2,\)"),
        ({"lengths": torch.ones(2)}, "lengths must be int32 or int64"),
        ({"x": torch.randn(5, 16)}, r"x must be \(B, T, C_in\)"),
    ],
)
def test_bad_inputs_are_named(changes, message):
    with pytest.raises(ValueError, match=message):
        conv1d(**_bad(**changes))


@pytest.mark.parametrize("with_bias", [True, False])
def test_gradient_is_the_references(with_bias):
    """Training (scripts/train_demo.py) backpropagates through the op: the reference's gradients."""
    x = torch.randn(2, 7, 16, device=DEVICE, requires_grad=True)
    weight = torch.randn(3, 8, 16, device=DEVICE, requires_grad=True)
    bias = torch.randn(8, device=DEVICE, requires_grad=True) if with_bias else None
    lengths = torch.tensor([7, 4], device=DEVICE)
    grad = torch.randn(2, 7, 8, device=DEVICE)
    leaves = [t for t in (x, weight, bias) if t is not None]
    got = torch.autograd.grad(conv1d(x, weight, bias, lengths, 1, True), leaves, grad)
    want = torch.autograd.grad(conv1d_reference(x, weight, bias, lengths, 1, True), leaves, grad)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


class _FeedForward(torch.nn.Module):
    """FastSpeech's position-wise feed-forward block on the op: conv(relu, masked) -> conv, residual."""

    def __init__(self, d: int = 24, d_inner: int = 40):
        super().__init__()
        self.w_1 = torch.nn.Conv1d(d, d_inner, 3, padding=1)
        self.w_2 = torch.nn.Conv1d(d_inner, d, 3, padding=1)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        op = torch.ops.fastspeech.conv1d
        h = op(x, self.w_1.weight.permute(2, 0, 1), self.w_1.bias, lengths, 1, True)  # (B, T, d_inner)
        return op(h, self.w_2.weight.permute(2, 0, 1), self.w_2.bias, lengths, 1, False) + x


def test_export_round_trip():
    x, lengths = torch.randn(2, 9, 24, device=DEVICE), torch.tensor([9, 4], device=DEVICE)
    check_export_round_trip(_FeedForward().to(DEVICE), (x, lengths), "fastspeech.conv1d.default")


@pytest.mark.slow
def test_compile_fullgraph():
    x, lengths = torch.randn(2, 9, 24, device=DEVICE), torch.tensor([9, 4], device=DEVICE)
    check_compile_fullgraph(_FeedForward().to(DEVICE), (x, lengths))


# ---------------------------------------------------------------------------------------------
# The real compile (what the interpreter never does): sm_90 code for the FFN's w_1 at B=64, T=1024

_COMPILE = """
import json, torch, triton
from triton.backends.compiler import GPUTarget
from kernels.conv1d import _conv1d_kernel, default_blocks
B, T, C_IN, C_OUT = 64, 1024, 384, 1536
blocks = default_blocks(B, T, C_OUT, C_IN, torch.float16)
pointers = ["x_ptr", "w_ptr", "bias_ptr", "len_ptr", "out_ptr"]
constexprs = dict(  # a contiguous launch; Triton's launcher specializes unit strides the same way
    B=B, T=T, stride_xb=T * C_IN, stride_xt=C_IN, stride_wj=C_OUT * C_IN, stride_wo=C_IN, stride_bias=1,
    stride_ob=T * C_OUT, stride_ot=C_OUT, stride_len=1, C_IN=C_IN, C_OUT=C_OUT, KSIZE=3, PADDING=1,
    HAS_BIAS=True, RELU=True, BLOCK_M=blocks.block_m, BLOCK_N=blocks.block_n, BLOCK_K=blocks.block_k,
    GROUP_M=blocks.group_m, PROGRAMS=132, SUBTILE=blocks.subtile, FP32_DOT=False,
)
signature = {p: "*i64" if p == "len_ptr" else "*fp16" for p in pointers} | {k: "constexpr" for k in constexprs}
aligned = {(_conv1d_kernel.arg_names.index(p),): [["tt.divisibility", 16]] for p in pointers}  # torch's allocations
source = triton.compiler.ASTSource(fn=_conv1d_kernel, signature=signature, constexprs=constexprs, attrs=aligned)
kernel = triton.compile(source, target=GPUTarget("cuda", 90, 32),
                        options={"num_warps": blocks.num_warps, "num_stages": blocks.num_stages})
ptx = kernel.asm["ptx"]
print(json.dumps(dict(wgmma="wgmma.mma_async" in ptx, tma="cp.async.bulk.tensor" in ptx, shared=kernel.metadata.shared,
                      stage_bytes=(blocks.block_m + blocks.block_n) * blocks.block_k * 2, stages=blocks.num_stages)))
"""


@pytest.mark.slow  # a fresh Python without the interpreter: ~10 s, mostly importing torch
def test_kernel_compiles_for_sm90_with_tensor_cores_and_pipelined_loads():
    """wgmma tensor-core dots, and x / weight tiles copied by the copy engine (TMA) into one
    shared-memory buffer per pipeline stage (the shifted rows must not defeat Triton's pipelining)."""
    got = run_without_interpreter(_COMPILE)
    assert got["wgmma"] and got["tma"], got
    assert got["shared"] >= got["stage_bytes"] * (got["stages"] - 1), got


# ---------------------------------------------------------------------------------------------
# On a GPU: FastSpeech's shapes, and Inductor calling the kernel

# (C_in, C_out, relu): the FFN's w_1 and w_2, the duration predictor's two convs; all k=3, padding 1
MODEL_CONVS = [(384, 1536, True), (1536, 384, False), (384, 256, True), (256, 256, True)]


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c_in, c_out, relu", MODEL_CONVS)
@pytest.mark.parametrize("B, T", [(1, 128), (1, 1024), (8, 1024), (64, 1024), (3, 257)])
def test_model_shapes_cuda(B, T, c_in, c_out, relu, dtype):
    torch.manual_seed(0)
    x, weight, bias = random_inputs(B, T, c_in, c_out, 3, dtype)
    lengths = torch.randint(0, T + 1, (B,), device="cuda")
    lengths[0] = T
    check(x, weight, bias, lengths, 1, relu)


@pytest.mark.cuda
@requires_cuda
def test_inductor_calls_the_kernel_cuda():
    from torch._inductor.utils import run_and_get_code

    torch._dynamo.reset()
    model = _FeedForward(384, 1536).cuda().half()
    x, lengths = torch.randn(2, 33, 384, device="cuda").half(), torch.tensor([33, 10], device="cuda")
    compiled = torch.compile(model, fullgraph=True, dynamic=False)
    with torch.no_grad():
        got, code = run_and_get_code(compiled, x, lengths)
        torch.testing.assert_close(got, model(x, lengths), atol=1e-2, rtol=1e-2)
    assert "_conv1d_kernel" in "\n".join(code)
