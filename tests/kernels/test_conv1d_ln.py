"""conv1d_ln: the Triton kernel (real on CUDA, interpreted on CPU) and the op vs the contract in float64.

Contract: y = act(bias + sum_j weight[j] @ x[b, t + j - padding]) (+ residual); out = LayerNorm(y) over
C_out (biased variance, eps, optional affine) on rows t < lengths[b]; rows t >= lengths[b] exactly 0;
every output element is written (outputs start NaN-poisoned). CPU runs use small channel counts;
the `cuda` tests run FastSpeech's own shapes.
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

from kernels import conv1d_ln, conv1d_ln_reference

kernel_module = importlib.import_module("kernels.conv1d_ln")  # `kernels.conv1d_ln` is also the op
launch_conv1d_ln, Blocks, pieces = kernel_module.launch_conv1d_ln, kernel_module.Blocks, kernel_module.pieces

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TOL = {  # vs float64: LayerNorm outputs are O(1) (times ln_weight); one final rounding
    torch.float32: {"atol": 2e-4, "rtol": 2e-4},
    torch.float16: {"atol": 2e-2, "rtol": 1e-2},
    torch.bfloat16: {"atol": 5e-2, "rtol": 2e-2},
}
EPS = 1e-5


def exact(x, weight, bias, lengths, padding, relu, residual, ln_weight, ln_bias, eps=EPS) -> torch.Tensor:
    """The contract in float64, written out: shifted rows times weight[j], residual, mean/var per row."""
    k, T = weight.shape[0], x.shape[1]
    padded = F.pad(x.double(), (0, 0, padding, k - 1 - padding))
    y = sum(padded[:, j : j + T] @ weight[j].double().T for j in range(k))
    if bias is not None:
        y = y + bias.double()
    if relu:
        y = y.clamp_min(0)
    if residual is not None:
        y = y + residual.double()
    mean = y.mean(-1, keepdim=True)
    var = ((y - mean) ** 2).mean(-1, keepdim=True)
    out = (y - mean) / torch.sqrt(var + eps)
    if ln_weight is not None:
        out = out * ln_weight.double()
    if ln_bias is not None:
        out = out + ln_bias.double()
    valid = torch.arange(T, device=x.device)[None, :] < lengths.to(x.device)[:, None]
    return torch.where(valid[..., None], out, torch.zeros((), dtype=out.dtype, device=out.device))


def random_inputs(B, T, c_in, c_out, k, dtype, bias=True, residual=True, affine=True):
    """x ~ N(0, 1), weights at nn.Conv1d's initial scale, residual ~ N(0, 1), affine around (1, 0)."""
    conv = torch.nn.Conv1d(c_in, c_out, k, bias=bias)
    x = torch.randn(B, T, c_in).to(DEVICE, dtype)
    weight = conv.weight.detach().permute(2, 0, 1).contiguous().to(DEVICE, dtype)
    b = None if conv.bias is None else conv.bias.detach().to(DEVICE, dtype)
    res = torch.randn(B, T, c_out).to(DEVICE, dtype) if residual else None
    g = (1 + 0.5 * torch.randn(c_out)).to(DEVICE, dtype) if affine else None
    beta = (0.5 * torch.randn(c_out)).to(DEVICE, dtype) if affine else None
    return x, weight, b, res, g, beta


def run_kernel(x, weight, bias, lengths, padding, relu, residual, g, beta, **kwargs) -> torch.Tensor:
    """Launch into a NaN-poisoned buffer: any element the kernel skips stays NaN and fails the test."""
    out = torch.full((*x.shape[:2], weight.shape[1]), float("nan"), dtype=x.dtype, device=x.device)
    return launch_conv1d_ln(x, weight, bias, lengths, padding, relu, residual, g, beta, EPS, out, **kwargs)


def check(x, weight, bias, lengths, padding, relu, residual, g, beta, **kwargs) -> torch.Tensor:
    got = run_kernel(x, weight, bias, lengths, padding, relu, residual, g, beta, **kwargs)
    assert not got.isnan().any(), "kernel left output elements unwritten"
    want = exact(x, weight, bias, lengths, padding, relu, residual, g, beta)
    torch.testing.assert_close(got.double(), want, **TOL[x.dtype])
    padding_rows = torch.arange(x.shape[1], device=x.device)[None, :] >= lengths[:, None]
    assert (got[padding_rows] == 0).all(), "rows at or past the length must be exactly 0"
    return got


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "B, T, c_in, c_out, k, padding, lengths, relu, options",
    [
        (1, 1, 16, 16, 3, 1, [1], False, {}),  # T=1: both outer taps read the zero padding
        (3, 7, 40, 33, 3, 1, [7, 1, 0], True, {}),  # odd channels (3 pieces of 16); full, one row, empty
        (2, 19, 32, 48, 5, 2, [25, 12], False, {"residual": False}),  # k=5; length beyond T acts as T
        (2, 12, 24, 20, 1, 0, [12, 5], False, {"bias": False, "affine": False}),  # k=1 (fc), bare LayerNorm
        (2, 10, 16, 400, 3, 1, [10, 6], False, {}),  # 2 pieces of 256, the last one part padding
        (1, 6, 16, 1000, 3, 0, [6], True, {}),  # 4 pieces of 256 (the widest); uneven padding
        (2, 9, 8, 1, 3, 1, [9, 3], False, {}),  # one channel: y - mean = 0, out = ln_bias
    ],
)
def test_random(B, T, c_in, c_out, k, padding, lengths, relu, options, dtype):
    torch.manual_seed(0)
    x, weight, bias, res, g, beta = random_inputs(B, T, c_in, c_out, k, dtype, **options)
    check(x, weight, bias, torch.tensor(lengths, device=DEVICE), padding, relu, res, g, beta)


@pytest.mark.parametrize("c_out, want", [(384, (3, 128)), (256, (1, 256)), (80, (3, 32)), (400, (2, 256)),
                                         (1000, (4, 256)), (1, (1, 16)), (17, (1, 32))])  # fmt: skip
def test_pieces_cover_c_out_with_the_fewest_padded_columns(c_out, want):
    assert pieces(c_out) == want
    n, width = want
    assert n * width >= c_out and (n - 1) * width < c_out


@pytest.mark.parametrize(
    "blocks",
    [
        Blocks(16, 16, 16, 1, 2, programs=1),  # one program walks every tile; 3 pieces of 16 for 40 columns
        Blocks(32, 64, 16, 4, 3, programs=3),  # uneven tiles per program; 1 piece of 64
        Blocks(64, 16, 32, 4, 2),  # one tile covers a whole item and rows past T
        Blocks(16, 32, 16, 2, 3, programs=2),  # 2 pieces of 32
    ],
)
def test_tile_sizes(blocks):
    torch.manual_seed(1)
    x, weight, bias, res, g, beta = random_inputs(3, 13, 40, 40, 3, torch.float32)
    check(x, weight, bias, torch.tensor([13, 7, 0], device=DEVICE), 1, True, res, g, beta, blocks=blocks)


def test_padding_rows_ignore_poisoned_residual_and_skipped_tiles_store_zeros():
    """NaN residual rows past the length, and whole row tiles past it (their K steps skipped), give
    exact zeros; the valid rows are unaffected. The last valid row still reads x past the length."""
    torch.manual_seed(2)
    x, weight, bias, res, g, beta = random_inputs(4, 50, 16, 24, 3, torch.float32)
    lengths = torch.tensor([50, 17, 3, 0], device=DEVICE)
    for b, n in enumerate(lengths.tolist()):
        res[b, n:] = float("nan")
    blocks = Blocks(16, 32, 16, 1, 2, programs=5)
    got = run_kernel(x, weight, bias, lengths, 1, False, res, g, beta, blocks=blocks)
    clean = torch.nan_to_num(res)
    torch.testing.assert_close(
        got.double(), exact(x, weight, bias, lengths, 1, False, clean, g, beta), **TOL[torch.float32]
    )
    x[1, 17:] += 100.0  # input past the length reaches output row 16 through the right tap
    assert not torch.allclose(got[1, 16], run_kernel(x, weight, bias, lengths, 1, False, res, g, beta)[1, 16])


def test_rows_normalize_alone():
    """Each row's statistics are its own: a row alone, and inside a batch with far larger
    neighbours (in time and in the batch), normalizes to the same values."""
    torch.manual_seed(3)
    x, weight, bias, res, g, beta = random_inputs(3, 6, 16, 24, 1, torch.float32)
    res[0] += 1e3
    res[2] *= 1e3
    res[1, :3] *= 50
    lengths = torch.tensor([6, 6, 6], device=DEVICE)
    batched = run_kernel(x, weight, bias, lengths, 0, False, res, g, beta, blocks=Blocks(32, 16, 16, 4, 2))
    alone = run_kernel(
        x[1:2].contiguous(), weight, bias, lengths[:1], 0, False, res[1:2].contiguous(), g, beta
    )
    torch.testing.assert_close(batched[1:2], alone, atol=1e-5, rtol=1e-5)


def test_strided_and_unaligned_views_in_and_out():
    """x, residual and out as views a tensor descriptor cannot address (strided, or starting off a
    16-byte address): the launcher goes through aligned copies; nothing outside `out` is touched."""
    torch.manual_seed(4)
    x = torch.randn(10, 3, 50, device=DEVICE).transpose(0, 1)[:, :, 5:37]  # (3, 10, 32), strided, offset 5
    storage = torch.randn(1 + 3 * 10 * 24, device=DEVICE)
    res = storage[1:].view(3, 10, 24)  # contiguous, 4 bytes off
    conv, norm = torch.nn.Conv1d(32, 24, 3).to(DEVICE), torch.nn.LayerNorm(24).to(DEVICE)
    weight = conv.weight.detach().permute(2, 0, 1)  # a view: not contiguous
    g, beta = (norm.weight.detach() + 0.3).contiguous(), norm.bias.detach() - 0.2
    lengths = torch.tensor([10, 3, 8], device=DEVICE)
    out_wide = torch.full((3, 10, 30), float("nan"), device=DEVICE)
    out = out_wide[:, :, 4:28]
    launch_conv1d_ln(x, weight, conv.bias.detach(), lengths, 1, True, res, g, beta, EPS, out)
    want = exact(x, weight, conv.bias.detach(), lengths, 1, True, res, g, beta)
    torch.testing.assert_close(out.double(), want, **TOL[torch.float32])
    assert out_wide[:, :, :4].isnan().all() and out_wide[:, :, 28:].isnan().all(), "wrote outside out"


def test_equals_the_sublayer_ends_as_the_model_runs_them():
    """The attention's fc (nn.Linear as a k=1 conv) and the FFN's w_2 (nn.Conv1d), each + residual,
    nn.LayerNorm and the row mask, against the modules themselves."""
    torch.manual_seed(5)
    fc, w_2 = torch.nn.Linear(16, 24).to(DEVICE), torch.nn.Conv1d(40, 24, 3, padding=1).to(DEVICE)
    norm = torch.nn.LayerNorm(24).to(DEVICE)
    lengths = torch.tensor([17, 9], device=DEVICE)
    valid = (torch.arange(17, device=DEVICE)[None, :] < lengths[:, None])[..., None]
    heads, hidden, x = (torch.randn(2, 17, c, device=DEVICE) for c in (16, 40, 24))
    with torch.no_grad():
        want_fc = norm(fc(heads) + x) * valid
        want_w2 = norm(w_2(hidden.transpose(1, 2)).transpose(1, 2) + x) * valid
        ln = (norm.weight, norm.bias)
        got_fc = run_kernel(heads, fc.weight[None], fc.bias, lengths, 0, False, x, *ln)
        got_w2 = run_kernel(hidden, w_2.weight.permute(2, 0, 1), w_2.bias, lengths, 1, False, x, *ln)
    torch.testing.assert_close(got_fc, want_fc, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(got_w2, want_w2, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# The op: dispatch, reference, checks, gradient, compile and export


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_op_and_reference_follow_the_contract(dtype):
    torch.manual_seed(6)
    x, weight, bias, res, g, beta = random_inputs(3, 12, 16, 24, 3, dtype)
    lengths = torch.tensor([12, 5, 0], device=DEVICE)
    for got in (
        conv1d_ln(x, weight, bias, lengths, 1, True, res, g, beta, EPS),
        conv1d_ln_reference(x, weight, bias, lengths, 1, True, res, g, beta, EPS),
    ):
        assert got.shape == (3, 12, 24) and got.dtype == dtype
        want = exact(x, weight, bias, lengths, 1, True, res, g, beta)
        torch.testing.assert_close(got.double(), want, **TOL[dtype])
        assert (got[2] == 0).all() and (got[1, 5:] == 0).all()


def _bad(**changes):
    args = {
        "x": torch.randn(2, 5, 16),
        "weight": torch.randn(3, 8, 16),
        "bias": torch.randn(8),
        "lengths": torch.ones(2, dtype=torch.long),
        "padding": 1,
        "relu": False,
        "residual": torch.randn(2, 5, 8),
        "ln_weight": torch.randn(8),
        "ln_bias": torch.randn(8),
        "eps": EPS,
    }
    args.update(changes)
    return {k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v for k, v in args.items()}


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"weight": torch.randn(3, 8, 12)}, r"conv1d_ln: weight \(3, 8, 12\) is not \(k, C_out, C_in\)"),
        ({"padding": 3}, r"conv1d_ln: padding must be in \[0, k - 1\] = \[0, 2\], got 3"),
        ({"bias": torch.randn(9)}, r"bias must be \(C_out,\) = \(8,\)"),
        ({"lengths": torch.ones(2)}, "lengths must be int32 or int64"),
        (
            {"residual": torch.randn(2, 5, 9)},
            r"residual must be \(B, T, C_out\) = \(2, 5, 8\), got \(2, 5, 9\)",
        ),
        ({"residual": torch.randn(2, 5, 8).half()}, "residual is torch.float16, x is torch.float32"),
        ({"ln_weight": torch.randn(9)}, r"ln_weight must be \(C_out,\) = \(8,\)"),
        ({"ln_bias": torch.randn(8).double()}, "ln_bias is torch.float64"),
        ({"eps": 0.0}, "eps must be > 0"),
        (
            {
                "weight": torch.randn(1, 1100, 16),
                "padding": 0,
                "bias": None,
                "residual": None,
                "ln_weight": None,
                "ln_bias": None,
            },
            r"C_out must be 1..1024 \(whole rows per tile\), got 1100",
        ),
    ],
)
def test_bad_inputs_are_named(changes, message):
    with pytest.raises(ValueError, match=message):
        conv1d_ln(**_bad(**changes))


def test_gradient_is_the_references():
    """Training backpropagates through the op: the reference's gradients, for every float input."""
    torch.manual_seed(7)
    leaves = [t.requires_grad_() for t in random_inputs(2, 7, 16, 8, 3, torch.float32)]
    x, weight, bias, res, g, beta = leaves
    lengths = torch.tensor([7, 4], device=DEVICE)
    grad = torch.randn(2, 7, 8, device=DEVICE)
    got = torch.autograd.grad(conv1d_ln(x, weight, bias, lengths, 1, True, res, g, beta, EPS), leaves, grad)
    ref = conv1d_ln_reference(x, weight, bias, lengths, 1, True, res, g, beta, EPS)
    for a, b in zip(got, torch.autograd.grad(ref, leaves, grad)):
        torch.testing.assert_close(a, b)


class _Sublayer(torch.nn.Module):
    """The FFN's end on the op: w_2 + residual + LayerNorm + mask."""

    def __init__(self, d: int = 24, d_inner: int = 40):
        super().__init__()
        self.w_2, self.norm = torch.nn.Conv1d(d_inner, d, 3, padding=1), torch.nn.LayerNorm(d)

    def forward(self, h, x, lengths):
        n = self.norm
        w = self.w_2.weight.permute(2, 0, 1)
        return torch.ops.fastspeech.conv1d_ln(
            h, w, self.w_2.bias, lengths, 1, False, x, n.weight, n.bias, n.eps
        )


def _sublayer_inputs():
    return (
        torch.randn(2, 9, 40, device=DEVICE),
        torch.randn(2, 9, 24, device=DEVICE),
        torch.tensor([9, 4], device=DEVICE),
    )


def test_export_round_trip():
    check_export_round_trip(_Sublayer().to(DEVICE), _sublayer_inputs(), "fastspeech.conv1d_ln.default")


@pytest.mark.slow
def test_compile_fullgraph():
    check_compile_fullgraph(_Sublayer().to(DEVICE), _sublayer_inputs())


# ---------------------------------------------------------------------------------------------
# The real compile: sm_90 code for the FFN's w_2 + LayerNorm at B=64, T=1024

_COMPILE = """
import json, torch, triton
from triton.backends.compiler import GPUTarget
from kernels.conv1d_ln import _conv1d_ln_kernel, default_blocks, pieces
B, T, C_IN, C_OUT = 64, 1024, 1536, 384
blocks = default_blocks(B, T, C_OUT, C_IN, torch.float16)
n_pieces, _ = pieces(C_OUT)
pointers = ["x_ptr", "w_ptr", "bias_ptr", "len_ptr", "res_ptr", "g_ptr", "beta_ptr", "out_ptr"]
constexprs = dict(
    B=B, T=T, stride_xb=T * C_IN, stride_xt=C_IN, stride_wj=C_OUT * C_IN, stride_wo=C_IN, stride_rb=T * C_OUT,
    stride_rt=C_OUT, stride_ob=T * C_OUT, stride_ot=C_OUT, stride_bias=1, stride_g=1, stride_beta=1, stride_len=1,
    EPS=1e-5, C_IN=C_IN, C_OUT=C_OUT, KSIZE=3, PADDING=1, HAS_BIAS=True, RELU=False, HAS_RESIDUAL=True,
    HAS_LN_WEIGHT=True, HAS_LN_BIAS=True, BLOCK_M=blocks.block_m, BLOCK_N=blocks.block_n, BLOCK_K=blocks.block_k,
    PIECES=n_pieces, PROGRAMS=132, FP32_DOT=False,
)
signature = {p: "*i64" if p == "len_ptr" else "*fp16" for p in pointers} | {k: "constexpr" for k in constexprs}
aligned = {(_conv1d_ln_kernel.arg_names.index(p),): [["tt.divisibility", 16]] for p in pointers}
source = triton.compiler.ASTSource(fn=_conv1d_ln_kernel, signature=signature, constexprs=constexprs, attrs=aligned)
kernel = triton.compile(source, target=GPUTarget("cuda", 90, 32),
                        options={"num_warps": blocks.num_warps, "num_stages": blocks.num_stages})
ptx = kernel.asm["ptx"]
print(json.dumps(dict(wgmma="wgmma.mma_async" in ptx, tma="cp.async.bulk.tensor" in ptx, shared=kernel.metadata.shared,
                      stage_bytes=(blocks.block_m + n_pieces * blocks.block_n) * blocks.block_k * 2,
                      stages=blocks.num_stages)))
"""


@pytest.mark.slow
def test_kernel_compiles_for_sm90_with_tensor_cores_and_pipelined_loads():
    """wgmma dots and TMA copies at FastSpeech's w_2 shape, its pipeline stages in shared memory."""
    got = run_without_interpreter(_COMPILE)
    assert got["wgmma"] and got["tma"], got
    assert got["shared"] >= got["stage_bytes"] * (got["stages"] - 1), got


# ---------------------------------------------------------------------------------------------
# On a GPU: FastSpeech's shapes, and Inductor calling the kernel

# (C_in, C_out, k, padding): the attention's fc (k=1) and the FFN's w_2
MODEL_PROJS = [(128, 384, 1, 0), (1536, 384, 3, 1)]


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("c_in, c_out, k, padding", MODEL_PROJS)
@pytest.mark.parametrize(
    "B, T", [(1, 128), (1, 1024), (4, 1024), (16, 1024), (64, 1024), (3, 257), (64, 128)]
)
def test_model_shapes_cuda(B, T, c_in, c_out, k, padding, dtype):
    torch.manual_seed(0)
    x, weight, bias, res, g, beta = random_inputs(B, T, c_in, c_out, k, dtype)
    lengths = torch.randint(0, T + 1, (B,), device="cuda")
    lengths[0] = T
    check(x, weight, bias, lengths, padding, False, res, g, beta)


@pytest.mark.cuda
@requires_cuda
def test_inductor_calls_the_kernel_cuda():
    from torch._inductor.utils import run_and_get_code

    torch._dynamo.reset()
    model = _Sublayer(384, 1536).cuda().half()
    h, x = torch.randn(2, 33, 1536, device="cuda").half(), torch.randn(2, 33, 384, device="cuda").half()
    lengths = torch.tensor([33, 10], device="cuda")
    compiled = torch.compile(model, fullgraph=True, dynamic=False)
    with torch.no_grad():
        got, code = run_and_get_code(compiled, h, x, lengths)
        torch.testing.assert_close(got, model(h, x, lengths), atol=2e-2, rtol=1e-2)
    assert "_conv1d_ln_kernel" in "\n".join(code)
