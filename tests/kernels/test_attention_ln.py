"""attention_ln: the Triton kernel (real on CUDA, interpreted on CPU) and the op vs the contract in float64.

Contract: with L = clamp(lengths[b], 0, T), a = the `attention` op's masked softmax attention per head,
rows t < L hold LayerNorm(y), y = a @ fc_weight^T + fc_bias + x, and rows t >= L are exactly 0; a and
y are rounded to the dtype where the kernel rounds them (as the unfused path does); every output
element is written (outputs start NaN-poisoned). The CPU runs use small shapes (the interpreter is
slow); the `cuda` tests run FastSpeech's own shapes.
"""

from __future__ import annotations

import importlib

import pytest
import torch
import torch.nn.functional as F
from helpers import check_compile_fullgraph, check_export_round_trip, requires_cuda

from kernels import attention, attention_ln, attention_ln_reference

kernel_module = importlib.import_module("kernels.attention_ln")  # `kernels.attention_ln` is also the op
launch_attention_ln, attention_ln_layers = (
    kernel_module.launch_attention_ln,
    kernel_module.attention_ln_layers,
)

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"  # CPU: the kernel runs under TRITON_INTERPRET=1
DTYPES = [torch.float32, torch.float16, torch.bfloat16]
EPS = 1e-5
TOL = {  # vs float64 on the same (rounded) inputs: the attention and y are rounded to the dtype (where
    # fp32 and float64 may round a value one ulp apart), the LayerNorm output once at the end
    torch.float32: {"atol": 2e-5, "rtol": 2e-5},
    torch.float16: {"atol": 1e-2, "rtol": 1e-2},
    torch.bfloat16: {"atol": 3e-2, "rtol": 2e-2},
}
ARGS = ("qkv", "x", "lengths", "n_head", "fc_weight", "fc_bias", "ln_weight", "ln_bias", "eps")


def exact(qkv, x, lengths, n_head, fc_weight, fc_bias, ln_weight, ln_bias, eps) -> torch.Tensor:
    """The contract in float64, written out: masked softmax per head, rounded to the dtype, then fc +
    bias + residual, rounded to the dtype, LayerNorm over H, rows t >= lengths[b] zero."""
    B, T, C = qkv.shape
    d = C // (3 * n_head)
    q, k, v = qkv.double().view(B, T, n_head, 3 * d).transpose(1, 2).split(d, dim=-1)  # (B, n_head, T, d)
    valid = torch.arange(T, device=qkv.device)[None, :] < lengths.to(qkv.device)[:, None]  # (B, T)
    scores = (q @ k.transpose(-1, -2)) / d**0.5
    scores = scores.masked_fill(~valid[:, None, None, :], float("-inf"))
    a = (torch.softmax(scores, -1).nan_to_num(0.0) @ v).transpose(1, 2).reshape(B, T, n_head * d)
    a = (a * valid[..., None]).to(qkv.dtype).double()  # the kernel's one rounding before fc
    y = (a @ fc_weight.double().T + fc_bias.double() + x.double()).to(qkv.dtype).double()  # (B, T, H)
    mean = y.mean(-1, keepdim=True)
    var = ((y - mean) ** 2).mean(-1, keepdim=True)
    out = (y - mean) / torch.sqrt(var + eps) * ln_weight.double() + ln_bias.double()
    return out * valid[..., None]


def random_inputs(B, T, n_head, d, H, lengths, dtype) -> dict:
    """qkv, x ~ N(0, 1); fc at nn.Linear's initial scale; LayerNorm's affine away from (1, 0) so a
    swapped or ignored weight shows."""
    fc = torch.nn.Linear(n_head * d, H)
    ln_weight, ln_bias = torch.rand(H) + 0.5, torch.rand(H) - 0.5
    tensors = {
        "qkv": torch.randn(B, T, n_head * 3 * d),
        "x": torch.randn(B, T, H),
        "fc_weight": fc.weight.detach(),
        "fc_bias": fc.bias.detach(),
        "ln_weight": ln_weight,
        "ln_bias": ln_bias,
    }
    args = {k: v.to(DEVICE, dtype) for k, v in tensors.items()}
    lengths = torch.tensor(lengths, device=DEVICE, dtype=torch.long)
    return args | {"lengths": lengths, "n_head": n_head, "eps": EPS}


def ordered(args: dict) -> list:
    return [args[k] for k in ARGS]


def run_kernel(args: dict, **blocks) -> torch.Tensor:
    """Launch into a NaN-poisoned buffer: any element the kernel skips stays NaN and fails the test."""
    out = torch.full(args["x"].shape, float("nan"), dtype=args["x"].dtype, device=args["x"].device)
    return launch_attention_ln(*ordered(args), out, **blocks)


def padding_rows(args: dict) -> torch.Tensor:
    T = args["x"].shape[1]
    return torch.arange(T, device=args["x"].device)[None, :] >= args["lengths"][:, None]  # (B, T)


def check(args: dict, **blocks) -> torch.Tensor:
    got = run_kernel(args, **blocks)
    assert not got.isnan().any(), "kernel left output elements unwritten"
    assert got.dtype == args["qkv"].dtype
    torch.testing.assert_close(got.double(), exact(*ordered(args)), **TOL[args["qkv"].dtype])
    assert (got[padding_rows(args)] == 0).all(), "rows at or past the length must be exactly 0"
    return got


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "B, T, n_head, d, H, lengths",
    [
        (1, 1, 2, 64, 384, [1]),  # T=1 at the model's H (BLOCK_H 512: 128 masked channels)
        (3, 37, 2, 64, 48, [37, 1, 0]),  # full, one key, empty
        (2, 130, 1, 16, 32, [130, 65]),  # > one key block, a partial last one; 16 query tiles
        (1, 7, 3, 24, 40, [250]),  # 3 heads (one masked padding head), d and H not powers of 2; L > T
        (2, 37, 3, 16, 48, [-3, 36]),  # negative length: all rows zero; one padding row
        (2, 19, 2, 16, 200, [19, 12]),  # H > 128: two channel steps of the epilogue, the last partial
    ],
)
def test_random(B, T, n_head, d, H, lengths, dtype):
    check(random_inputs(B, T, n_head, d, H, lengths, dtype))


@pytest.mark.parametrize("B, T", [(0, 5), (2, 0)])
def test_empty_inputs_give_empty_outputs(B, T):
    args = random_inputs(B, T, 2, 16, 32, [3] * B, torch.float32)
    assert run_kernel(args).shape == (B, T, 32)
    assert attention_ln(*ordered(args)).shape == (B, T, 32)


@pytest.mark.parametrize("len_dtype", [torch.int32, torch.int64])
def test_lengths_in_either_width(len_dtype):
    args = random_inputs(2, 20, 2, 16, 32, [20, 7], torch.float16)
    check(args | {"lengths": args["lengths"].to(len_dtype)})


@pytest.mark.parametrize(
    "block_m, block_n, num_warps",
    [(16, 16, 1), (16, 64, 4), (16, 128, 4), (32, 16, 2), (32, 64, 4), (32, 128, 8), (64, 64, 8)],
)
def test_tile_sizes(block_m, block_n, num_warps):
    """Query tiles wholly valid, partly valid and wholly padding; key loops of 1 to 5 steps."""
    args = random_inputs(2, 75, 2, 24, 40, [75, 33], torch.float32)
    check(args, block_m=block_m, block_n=block_n, num_warps=num_warps)


def test_strided_views_in_and_out():
    """qkv, x, fc's weight and bias read through their strides; out written through its strides and
    nothing outside it touched."""
    args = random_inputs(3, 21, 2, 16, 40, [21, 4, 13], torch.float32)
    # Basic slicing only (indexing with a list would copy): every other batch row, a column slice;
    # x also every other time row.
    args["qkv"] = torch.randn(6, 21, 96 + 5, device=DEVICE)[::2, :, 3 : 3 + 96]
    args["x"] = torch.randn(3, 42, 40 + 9, device=DEVICE)[:, ::2, 9:]
    args["fc_weight"] = args["fc_weight"].T.contiguous().T  # (H, n_head * d) with strides (1, H)
    args["fc_bias"] = torch.stack([args["fc_bias"], args["fc_bias"] + 1], 1)[:, 0]  # stride 2
    assert not any(args[k].is_contiguous() for k in ("qkv", "x", "fc_weight", "fc_bias"))
    out_wide = torch.full((3, 21, 50), float("nan"), device=DEVICE)
    out = out_wide[:, :, 7 : 7 + 40]
    launch_attention_ln(*ordered(args), out)
    torch.testing.assert_close(out.double(), exact(*ordered(args)), **TOL[torch.float32])
    assert (out[padding_rows(args)] == 0).all()
    assert out_wide[:, :, :7].isnan().all() and out_wide[:, :, 7 + 40 :].isnan().all(), "wrote outside out"


def test_padding_inputs_never_reach_the_output():
    """NaN in qkv and x at rows >= length: valid rows equal the clean run's (keys past the length are
    never used), padding rows are still exactly 0 (also in a partly valid query tile)."""
    args = random_inputs(2, 40, 2, 16, 32, [40, 21], torch.float32)
    clean = run_kernel(args)
    poisoned = dict(args, qkv=args["qkv"].clone(), x=args["x"].clone())
    poisoned["qkv"][1, 21:] = float("nan")
    poisoned["x"][1, 21:] = float("nan")
    got = run_kernel(poisoned, block_m=16)  # rows 16..31: a tile with 5 valid rows
    torch.testing.assert_close(got, clean, atol=0, rtol=0)
    assert (got[1, 21:] == 0).all()


def test_padding_does_not_change_valid_rows():
    """The same item alone and padded inside a longer batch row gives the same valid rows."""
    args = random_inputs(1, 50, 2, 16, 48, [30], torch.float32)
    alone = run_kernel(args | {"qkv": args["qkv"][:, :30].contiguous(), "x": args["x"][:, :30].contiguous()})
    padded = run_kernel(args)
    torch.testing.assert_close(padded[:, :30], alone, atol=1e-6, rtol=1e-6)


def test_equals_the_modules_as_the_model_uses_them():
    """DLE's sublayer: LayerNorm(fc(attention(qkv)) + x) on nn.Linear / nn.LayerNorm, then the row mask."""
    fc, ln = torch.nn.Linear(2 * 16, 48).to(DEVICE), torch.nn.LayerNorm(48).to(DEVICE)
    with torch.no_grad():
        ln.weight.uniform_(0.5, 1.5)
        ln.bias.uniform_(-0.5, 0.5)
    qkv, x = torch.randn(2, 19, 2 * 3 * 16, device=DEVICE), torch.randn(2, 19, 48, device=DEVICE)
    lengths = torch.tensor([19, 8], device=DEVICE)
    valid = (torch.arange(19, device=DEVICE)[None, :] < lengths[:, None])[..., None]
    args = {"qkv": qkv, "x": x, "lengths": lengths, "n_head": 2, "fc_weight": fc.weight, "fc_bias": fc.bias}
    args |= {"ln_weight": ln.weight, "ln_bias": ln.bias, "eps": ln.eps}
    with torch.no_grad():
        want = ln(fc(attention(qkv, lengths, 2)) + x) * valid
        for got in (run_kernel(args), attention_ln(*ordered(args))):
            torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)


# ---------------------------------------------------------------------------------------------
# The op: dispatch, reference, layers, checks, gradient, compile and export


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_op_reference_and_layers_follow_the_contract(dtype):
    args = random_inputs(3, 24, 2, 16, 40, [24, 9, 0], dtype)
    want = exact(*ordered(args))
    for fn in (attention_ln, attention_ln_reference, attention_ln_layers):
        got = fn(*ordered(args))
        assert got.shape == (3, 24, 40) and got.dtype == dtype, fn
        torch.testing.assert_close(got.double(), want, **TOL[dtype])
        assert (got[2] == 0).all() and (got[1, 9:] == 0).all(), fn


def _bad(**changes) -> list:
    args = random_inputs(2, 5, 2, 16, 48, [5, 3], torch.float32) | changes
    return ordered({k: v.to(DEVICE) if isinstance(v, torch.Tensor) else v for k, v in args.items()})


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"qkv": torch.randn(5, 96)}, r"qkv \(B, T, n_head \* 3 \* d\) and x \(B, T, H\) must share B and T"),
        ({"x": torch.randn(2, 6, 48)}, r"must share B and T, got \(2, 5, 96\) and \(2, 6, 48\)"),
        ({"qkv": torch.ones(2, 5, 96, dtype=torch.int32)}, "qkv must be float32, float16 or bfloat16"),
        ({"n_head": 5}, r"not n_head \* 3 \* d for n_head=5"),
        ({"fc_weight": torch.randn(48, 64)}, r"fc_weight must be \(48, 32\), got \(48, 64\)"),
        ({"fc_weight": torch.randn(32, 48)}, r"fc_weight must be \(48, 32\), got \(32, 48\)"),
        ({"fc_bias": torch.randn(47)}, r"fc_bias must be \(48,\), got \(47,\)"),
        ({"ln_weight": torch.randn(48, 1)}, r"ln_weight must be \(48,\)"),
        ({"x": torch.randn(2, 5, 48).half()}, "x is torch.float16, qkv is torch.float32; cast them"),
        ({"ln_bias": torch.randn(48).bfloat16()}, "ln_bias is torch.bfloat16, qkv is torch.float32"),
        ({"lengths": torch.ones(3, dtype=torch.long)}, r"lengths must be \(B,\) = \(2,\), got \(3,\)"),
        ({"lengths": torch.ones(2)}, "lengths must be int32 or int64, got torch.float32"),
    ],
)
def test_bad_inputs_are_named_in_one_line(changes, message):
    with pytest.raises(ValueError, match=message) as error:
        attention_ln(*_bad(**changes))
    assert "\n" not in str(error.value)


@pytest.mark.parametrize("wanted", [ARGS[:2] + ARGS[4:8], ("qkv",), ("x", "ln_weight")])
def test_gradient_is_the_layers(wanted):
    """Training (scripts/train_demo.py) backpropagates through the op: `attention_ln_layers`' gradients,
    for whichever inputs ask for one."""
    args = random_inputs(2, 11, 2, 16, 24, [11, 6], torch.float32)
    leaves = [args[k].requires_grad_() for k in wanted]
    grad = torch.randn(2, 11, 24, device=DEVICE)
    got = torch.autograd.grad(attention_ln(*ordered(args)), leaves, grad)
    want = torch.autograd.grad(attention_ln_layers(*ordered(args)), leaves, grad)
    for name, g, w in zip(wanted, got, want):
        assert g.abs().sum() > 0, name
        torch.testing.assert_close(g, w, msg=name)


class _Sublayer(torch.nn.Module):
    """Projection -> attention_ln, as `MultiHeadAttention` uses the op (DLE's parameter names)."""

    def __init__(self, H: int = 48, n_head: int = 2, d: int = 16):
        super().__init__()
        self.n_head = n_head
        self.linear, self.fc = torch.nn.Linear(H, n_head * 3 * d), torch.nn.Linear(n_head * d, H)
        self.layer_norm = torch.nn.LayerNorm(H)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        ln = self.layer_norm
        return torch.ops.fastspeech.attention_ln(
            self.linear(x), x, lengths, self.n_head, self.fc.weight, self.fc.bias, ln.weight, ln.bias, ln.eps
        )


def test_export_round_trip():
    x, lengths = torch.randn(2, 9, 48, device=DEVICE), torch.tensor([9, 4], device=DEVICE)
    check_export_round_trip(_Sublayer().to(DEVICE), (x, lengths), "fastspeech.attention_ln.default")


@pytest.mark.slow
def test_compile_fullgraph():
    x, lengths = torch.randn(2, 9, 48, device=DEVICE), torch.tensor([9, 4], device=DEVICE)
    check_compile_fullgraph(_Sublayer().to(DEVICE), (x, lengths))


# ---------------------------------------------------------------------------------------------
# On a GPU: FastSpeech's shapes (H 384, 2 heads, d 64), the unfused path, Inductor calling the kernel


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("B, T", [(1, 128), (1, 1024), (8, 128), (8, 1024), (64, 128), (64, 1024)])
def test_model_shapes_cuda(B, T, dtype):
    torch.manual_seed(0)
    lengths = torch.randint(0, T + 1, (B,)).tolist()
    lengths[0] = T
    check(random_inputs(B, T, 2, 64, 384, lengths, dtype))


def unfused(qkv, x, lengths, n_head, fc_weight, fc_bias, ln_weight, ln_bias, eps) -> torch.Tensor:
    """What the model ran before the op: the `attention` op -> F.linear -> + x -> F.layer_norm -> row mask."""
    out = F.linear(attention(qkv, lengths, n_head), fc_weight, fc_bias) + x
    out = F.layer_norm(out, (x.shape[-1],), ln_weight, ln_bias, eps)
    valid = torch.arange(x.shape[1], device=x.device)[None, :] < lengths[:, None]
    return out * valid[..., None]


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("T, length", [(128, 113), (1024, 900), (1024, 1024)])
def test_batch_one_equals_the_unfused_ops_cuda(T, length):
    torch.manual_seed(0)
    args = random_inputs(1, T, 2, 64, 384, [length], torch.float16)
    got = attention_ln(*ordered(args))
    torch.testing.assert_close(got, unfused(*ordered(args)), **TOL[torch.float16])
    assert (got[0, length:] == 0).all()


@pytest.mark.cuda
@requires_cuda
def test_inductor_calls_the_kernel_cuda():
    from torch._inductor.utils import run_and_get_code

    torch._dynamo.reset()
    model = _Sublayer(384, 2, 64).cuda().half()
    x, lengths = torch.randn(2, 33, 384, device="cuda").half(), torch.tensor([33, 10], device="cuda")
    compiled = torch.compile(model, fullgraph=True, dynamic=False)
    with torch.no_grad():
        got, code = run_and_get_code(compiled, x, lengths)
        torch.testing.assert_close(got, model(x, lengths), atol=1e-2, rtol=1e-2)
    assert "_attention_ln_kernel" in "\n".join(code)
