"""linear: the Triton kernel (real on CUDA, interpreted on CPU) and the op vs the contract in float64.

Contract: out = x @ weight^T + bias over x's last dimension, every output element written (outputs
start NaN-poisoned), one rounding to x's dtype. The CPU runs use small sizes; the `cuda` tests run
FastSpeech's projections, and a chain of dependent calls captured in a CUDA graph: on Hopper each
call starts before the previous one ends (dependent launch), so a wait in the wrong place shows
there as wrong numbers.
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

from kernels import linear, linear_reference

kernel_module = importlib.import_module("kernels.linear")  # `kernels.linear` is also the op
launch_linear = kernel_module.launch_linear

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TOL = {  # vs float64 on the same (rounded) inputs: fp32 accumulation, one final rounding
    torch.float32: {"atol": 1e-4, "rtol": 1e-4},
    torch.float16: {"atol": 1e-2, "rtol": 1e-2},
    torch.bfloat16: {"atol": 2e-2, "rtol": 2e-2},
}


def exact(x, weight, bias) -> torch.Tensor:
    out = x.double() @ weight.double().T
    return out if bias is None else out + bias.double()


def random_inputs(M, K, N, dtype, bias=True):
    """x ~ N(0, 1), weight and bias at nn.Linear's initial scale (outputs of order 1)."""
    layer = torch.nn.Linear(K, N, bias=bias)
    x = torch.randn(M, K).to(DEVICE, dtype)
    weight = layer.weight.detach().to(DEVICE, dtype)
    return x, weight, None if layer.bias is None else layer.bias.detach().to(DEVICE, dtype)


def check(x, weight, bias) -> torch.Tensor:
    """Launch into a NaN-poisoned buffer: any element the kernel skips stays NaN and fails the test."""
    out = torch.full((x.shape[0], weight.shape[0]), float("nan"), dtype=x.dtype, device=x.device)
    got = launch_linear(x, weight, bias, out)
    assert not got.isnan().any(), "kernel left output elements unwritten"
    torch.testing.assert_close(got.double(), exact(x, weight, bias), **TOL[x.dtype])
    return got


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "M, K, N, bias",
    [
        (1, 16, 16, True),  # one row, one tile
        (7, 40, 33, True),  # odd K and N: masked K steps and columns
        (70, 130, 130, False),  # M past a 32/64-row tile, three K steps (the last partial), no bias
        (33, 384, 72, True),  # the projections' K; N not a multiple of 64
        (5, 1, 3, True),  # K = 1
    ],
)
def test_random(M, K, N, bias, dtype):
    x, weight, b = random_inputs(M, K, N, dtype, bias)
    check(x, weight, b)


def test_large_rows_take_the_wider_tile():
    """From 512 rows the launcher's row tile is 64 (below, 32): both cover every row."""
    for M in (511, 600):
        x, weight, bias = random_inputs(M, 24, 20, torch.float32)
        check(x, weight, bias)


def test_op_reshapes_leading_dimensions_and_reads_strided_views():
    """(B, T, K) in, (B, T, N) out; a transposed (non-contiguous) x and weight give the same numbers."""
    x = torch.randn(3, 9, 40, device=DEVICE).transpose(0, 1)  # (9, 3, 40), not contiguous
    weight = torch.randn(40, 24, device=DEVICE).T / 6  # (24, 40), a transposed view
    bias = torch.randn(24, device=DEVICE)
    got = linear(x, weight, bias)
    assert got.shape == (9, 3, 24)
    torch.testing.assert_close(got.double(), exact(x, weight, bias), **TOL[torch.float32])


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_op_and_reference_follow_the_contract(dtype):
    x, weight, bias = random_inputs(12, 16, 24, dtype)
    x = x.view(3, 4, 16)
    for got in (linear(x, weight, bias), linear_reference(x, weight, bias)):
        assert got.shape == (3, 4, 24) and got.dtype == dtype
        torch.testing.assert_close(got.double(), exact(x, weight, bias), **TOL[dtype])


def test_empty_inputs():
    """No rows: an empty output. K = 0: the bias in every row (an empty sum)."""
    assert linear(torch.randn(0, 8, device=DEVICE), torch.randn(4, 8, device=DEVICE), None).shape == (0, 4)
    bias = torch.randn(4, device=DEVICE)
    got = linear(torch.randn(3, 0, device=DEVICE), torch.randn(4, 0, device=DEVICE), bias)
    torch.testing.assert_close(got, bias.expand(3, 4))


def _bad(**changes):
    args = {"x": torch.randn(2, 5, 16), "weight": torch.randn(8, 16), "bias": torch.randn(8)}
    args.update(changes)
    return {k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v for k, v in args.items()}


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"weight": torch.randn(16, 8)}, r"weight must be \(N, K\) with K = x's last dim 16"),
        ({"weight": torch.randn(8, 16, 1)}, r"weight must be \(N, K\)"),
        ({"bias": torch.randn(9)}, r"bias must be \(N,\) = \(8,\)"),
        ({"bias": torch.randn(8).half()}, "bias is torch.float16, x is torch.float32"),
        ({"x": torch.ones(2, 5, 16, dtype=torch.long)}, "x must be float32, float16 or bfloat16"),
        ({"x": torch.tensor(1.0)}, "x must have a last dimension"),
    ],
)
def test_bad_inputs_are_named(changes, message):
    with pytest.raises(ValueError, match=message):
        linear(**_bad(**changes))


@pytest.mark.parametrize("with_bias", [True, False])
def test_gradient_is_the_references(with_bias):
    """Training (scripts/train_demo.py) backpropagates through the op: the reference's gradients."""
    x = torch.randn(2, 7, 16, device=DEVICE, requires_grad=True)
    weight = torch.randn(8, 16, device=DEVICE, requires_grad=True)
    bias = torch.randn(8, device=DEVICE, requires_grad=True) if with_bias else None
    grad = torch.randn(2, 7, 8, device=DEVICE)
    leaves = [t for t in (x, weight, bias) if t is not None]
    got = torch.autograd.grad(linear(x, weight, bias), leaves, grad)
    want = torch.autograd.grad(F.linear(x, weight, bias), leaves, grad)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w)


class _Projections(torch.nn.Module):
    """The attention sublayer's two projections around a stand-in for the attention, residual."""

    def __init__(self, d: int = 24):
        super().__init__()
        self.qkv = torch.nn.Linear(d, 3 * d)
        self.fc = torch.nn.Linear(d, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        op = torch.ops.fastspeech.linear
        q, k, v = op(x, self.qkv.weight, self.qkv.bias).chunk(3, dim=-1)
        return op(torch.tanh(q) * k + v, self.fc.weight, self.fc.bias) + x


def test_export_round_trip():
    x = torch.randn(2, 9, 24, device=DEVICE)
    check_export_round_trip(_Projections().to(DEVICE), (x,), "fastspeech.linear.default")


@pytest.mark.slow
def test_compile_fullgraph():
    check_compile_fullgraph(_Projections().to(DEVICE), (torch.randn(2, 9, 24, device=DEVICE),))


# ---------------------------------------------------------------------------------------------
# The real compile (what the interpreter never does): sm_90 code for the qkv projection at batch 1

_COMPILE = """
import json, torch, triton
from triton.backends.compiler import GPUTarget
from kernels.linear import _linear_kernel
M, K, N = 128, 384, 384
constexprs = dict(M=M, N=N, K=K, stride_xm=K, stride_wn=K, stride_om=N, HAS_BIAS=True, BLOCK_M=32,
                  BLOCK_N=64, BLOCK_K=64, PDL=True, LINES=8, FP32_DOT=False)
signature = {p: "*fp16" for p in ("x_ptr", "w_ptr", "b_ptr", "out_ptr")} | {k: "constexpr" for k in constexprs}
source = triton.compiler.ASTSource(fn=_linear_kernel, signature=signature, constexprs=constexprs)
kernel = triton.compile(source, target=GPUTarget("cuda", 90, 32), options={"num_warps": 4, "num_stages": 3})
ptx = kernel.asm["ptx"]
wait, launch = ptx.find("griddepcontrol.wait"), ptx.find("griddepcontrol.launch_dependents")
print(json.dumps(dict(wait=wait, launch=launch, prefetch=ptx.find("prefetch.global.L2"),
                      first_load=ptx.find("ld.global"), mma="mma" in ptx)))
"""


@pytest.mark.slow  # a fresh Python without the interpreter: ~10 s, mostly importing torch
def test_kernel_compiles_for_sm90_with_its_dependent_launch_steps_in_order():
    """Prefetch, then wait for the previous kernel, then let the next launch; x read only after the
    wait (the PTX's first global load comes after `griddepcontrol.wait`)."""
    got = run_without_interpreter(_COMPILE)
    assert got["mma"], got
    assert 0 <= got["prefetch"] < got["wait"] < got["launch"], got
    assert got["first_load"] > got["wait"], got


# ---------------------------------------------------------------------------------------------
# On a GPU: FastSpeech's projections, and chains of dependent launches in a CUDA graph


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("K, N", [(384, 384), (128, 384), (384, 80)])  # qkv, fc, mel_linear's shape
@pytest.mark.parametrize("M", [32, 128, 1024, 2048, 2049])
def test_model_shapes_cuda(M, K, N, dtype):
    torch.manual_seed(0)
    check(*random_inputs(M, K, N, dtype))


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("M", [32, 1024])
def test_dependent_chain_in_a_cuda_graph_cuda(M):
    """24 projections, each reading the previous one's output, captured in one CUDA graph and
    replayed 20 times with fresh inputs: every replay equals the chain computed in fp32 step by step
    (rounded like the kernel), so no call read its input before the previous call had written it."""
    torch.manual_seed(0)
    layers = [torch.nn.Linear(384, 384).cuda().half() for _ in range(24)]
    x = torch.empty(M, 384, device="cuda", dtype=torch.float16)

    def chain():
        h = x
        for layer in layers:
            h = torch.tanh(linear(h, layer.weight, layer.bias))
        return h

    x.normal_()
    chain()  # compile and warm up outside the capture
    torch.cuda.synchronize()
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        out = chain()
    for _ in range(20):
        x.normal_()
        graph.replay()
        h = x
        for layer in layers:
            h = torch.tanh(linear_reference(h, layer.weight, layer.bias))
        torch.testing.assert_close(out, h, atol=2e-3, rtol=2e-3)
