"""fft_layer: the persistent Triton kernel (real on CUDA, interpreted on CPU) against the contract in float64.

Contract (kernels/fft_layer.py): one FFT block, attention then feed-forward, post-LN, padding rows
zero after each. The float64 side below is written out from the contract with plain torch (softmax
over the valid keys, explicit shifted sums for the convs), independent of the op's PyTorch
reference; the reference is checked against it too. Outputs start NaN-poisoned, and so does every
scratch buffer the phases hand over (the op allocates them with torch.empty, so a phase that reads
an element nobody wrote sees garbage, not zeros). The CPU runs use small widths (the interpreter is
slow) and one phase per launch; the `cuda` tests run FastSpeech's sizes, the persistent launch
(grid barriers) and the split launch against each other.
"""

from __future__ import annotations

import importlib
import re

import pytest
import torch
import torch.nn.functional as F
from helpers import DEVICE, check_compile_fullgraph, check_export_round_trip, requires_cuda

from fastspeech.model import FastSpeech, FastSpeechConfig, set_fused_layers
from kernels import fft_layer, fft_layer_reference

kernel_module = importlib.import_module("kernels.fft_layer")  # `kernels.fft_layer` is also the op
launch_fft_layer, Blocks, default_blocks = (
    kernel_module.launch_fft_layer,
    kernel_module.Blocks,
    kernel_module.default_blocks,
)

DTYPES = [torch.float32, torch.float16, torch.bfloat16]
TOL = {  # vs float64 on the same (rounded) inputs: three GEMMs and two LayerNorms, fp32 sums
    torch.float32: {"atol": 1e-4, "rtol": 1e-4},
    torch.float16: {"atol": 3e-2, "rtol": 3e-2},
    torch.bfloat16: {"atol": 8e-2, "rtol": 8e-2},
}
EPS = 1e-5


def random_weights(H, n_head, d, d_inner, k, dtype, device=DEVICE):
    """Weights at nn.Linear/Conv1d's initial scale, LayerNorm affines near (1, 0): outputs of order 1."""

    def lin(n_out, n_in):
        return torch.randn(n_out, n_in) / n_in**0.5

    w = [
        lin(n_head * 3 * d, H), 0.1 * torch.randn(n_head * 3 * d), lin(H, n_head * d), 0.1 * torch.randn(H),
        1 + 0.1 * torch.randn(H), 0.1 * torch.randn(H),
        torch.randn(k, d_inner, H) / (k * H) ** 0.5, 0.1 * torch.randn(d_inner),
        torch.randn(k, H, d_inner) / (k * d_inner) ** 0.5, 0.1 * torch.randn(H),
        1 + 0.1 * torch.randn(H), 0.1 * torch.randn(H),
    ]  # fmt: skip
    return tuple(t.to(device, dtype) for t in w)


def exact(x, lengths, weights, n_head, padding):
    """The contract in float64, written out."""
    w_qkv, b_qkv, w_fc, b_fc, g1, be1, w_1, b_1, w_2, b_2, g2, be2 = (w.double() for w in weights)
    x = x.double()
    B, T, _ = x.shape
    d = w_qkv.shape[0] // (3 * n_head)
    valid = (torch.arange(T, device=x.device)[None, :] < lengths.to(x.device)[:, None])[..., None]

    def ln(v, g, be):
        mean = v.mean(-1, keepdim=True)
        var = ((v - mean) ** 2).mean(-1, keepdim=True)
        return (v - mean) / torch.sqrt(var + EPS) * g + be

    def conv(v, w, b):  # w (k, C_out, C_in): out[t] = b + sum_j w[j] @ v[t + j - padding]
        k = w.shape[0]
        padded = F.pad(v, (0, 0, padding, k - 1 - padding))
        return b + sum(padded[:, j : j + T] @ w[j].T for j in range(k))

    qkv = (x @ w_qkv.T + b_qkv).view(B, T, n_head, 3 * d)
    att = torch.zeros(B, T, n_head * d, dtype=torch.float64, device=x.device)
    for b in range(B):
        L = max(0, min(int(lengths[b]), T))
        for h in range(n_head):
            q, kk, v = qkv[b, :L, h, :d], qkv[b, :L, h, d : 2 * d], qkv[b, :L, h, 2 * d :]
            att[b, :L, h * d : (h + 1) * d] = torch.softmax(q @ kk.T / d**0.5, -1) @ v
    y = ln(att @ w_fc.T + b_fc + x, g1, be1) * valid
    hid = torch.relu(conv(y, w_1, b_1)) * valid
    return ln(conv(hid, w_2, b_2) + y, g2, be2) * valid


def run_kernel(x, lengths, weights, n_head, padding, **kwargs):
    """Launch into a NaN-poisoned output with NaN-poisoned scratch (torch.empty filled with NaN)."""
    out = torch.full_like(x, float("nan"))
    empty = torch.empty

    def poisoned(*args, **kw):
        t = empty(*args, **kw)
        return t.fill_(float("nan")) if t.is_floating_point() else t

    torch.empty = poisoned
    try:
        return launch_fft_layer(x, lengths, weights, n_head, padding, EPS, out, **kwargs)
    finally:
        torch.empty = empty


def inputs(B, T, H, dtype, lengths):
    x = torch.randn(B, T, H).to(DEVICE, dtype)
    return x, torch.tensor(lengths, device=DEVICE)


# H 40 (not a power of 2: masked columns in the whole-row phases), 2 heads of d 8, D_inner 56, k 3.
SMALL = {"H": 40, "n_head": 2, "d": 8, "d_inner": 56, "k": 3}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "B, T, lengths",
    [(1, 1, [1]), (2, 13, [13, 5]), (3, 7, [7, 0, 3]), (1, 40, [40]), (2, 9, [20, 1])],
)
def test_kernel_matches_float64(dtype, B, T, lengths):
    w = random_weights(SMALL["H"], SMALL["n_head"], SMALL["d"], SMALL["d_inner"], SMALL["k"], dtype)
    x, lens = inputs(B, T, SMALL["H"], dtype, lengths)
    got = run_kernel(x, lens, w, SMALL["n_head"], 1)
    assert not got.isnan().any()
    torch.testing.assert_close(got.double(), exact(x, lens, w, SMALL["n_head"], 1), **TOL[dtype])
    padding_rows = torch.arange(T, device=DEVICE)[None, :] >= lens.clamp(0, T)[:, None]
    assert (got[padding_rows] == 0).all()


@pytest.mark.parametrize("k, padding", [(1, 0), (3, 0), (3, 2), (5, 2)])
def test_other_taps_and_paddings(k, padding):
    w = random_weights(24, 1, 16, 32, k, torch.float32)
    x, lens = inputs(2, 11, 24, torch.float32, [11, 6])
    got = run_kernel(x, lens, w, 1, padding)
    torch.testing.assert_close(got.double(), exact(x, lens, w, 1, padding), **TOL[torch.float32])


@pytest.mark.parametrize(
    "blocks, programs",
    [
        (Blocks(16, 16, 16, 16, 16, 1, 4, 2), 1),  # one program walks every tile of every phase
        (Blocks(16, 32, 16, 16, 16, 7, 4, 2), 3),  # split-K with uneven slices (K steps 3 x 4 = 12)
        (Blocks(32, 64, 32, 32, 32, 12, 4, 2), 5),  # one K step per slice
    ],
)
def test_tiles_programs_and_split_k(blocks, programs):
    w = random_weights(SMALL["H"], SMALL["n_head"], SMALL["d"], SMALL["d_inner"], SMALL["k"], torch.float32)
    x, lens = inputs(3, 10, SMALL["H"], torch.float32, [10, 4, 7])
    got = run_kernel(x, lens, w, SMALL["n_head"], 1, blocks=blocks, programs=programs)
    torch.testing.assert_close(got.double(), exact(x, lens, w, SMALL["n_head"], 1), **TOL[torch.float32])


def test_reference_matches_float64():
    w = random_weights(SMALL["H"], SMALL["n_head"], SMALL["d"], SMALL["d_inner"], SMALL["k"], torch.float32)
    x, lens = inputs(3, 9, SMALL["H"], torch.float32, [9, 2, 0])
    got = fft_layer_reference(x, lens, w, SMALL["n_head"], 1, EPS)
    torch.testing.assert_close(got.double(), exact(x, lens, w, SMALL["n_head"], 1), atol=1e-5, rtol=1e-5)


def test_default_blocks_fill_the_gpu_with_split_k():
    """B=1, T=1024 (DLE sizes): 64-row tiles, 96 tiles for the w_2 conv, not split; T=128: 32-row
    tiles, the w_2 conv split until 132 programs have work; fp32 keeps 32-wide K steps."""
    b = default_blocks(1024, 384, 1536, 3, 132, torch.float16)
    assert (b.block_m, b.split_k) == (64, 1)  # 96 tiles: 132 // 96 = 1
    b = default_blocks(128, 384, 1536, 3, 132, torch.float16)
    assert (b.block_m, b.split_k) == (32, 5)  # 24 tiles: 132 // 24 = 5
    b = default_blocks(8, 384, 1536, 3, 132, torch.float32)
    assert (b.block_m, b.block_k, b.split_k, b.num_stages) == (16, 32, 22, 2)  # 6 tiles: 132 // 6


def test_op_on_this_device_matches_the_reference():
    w = random_weights(SMALL["H"], SMALL["n_head"], SMALL["d"], SMALL["d_inner"], SMALL["k"], torch.float32)
    x, lens = inputs(2, 6, SMALL["H"], torch.float32, [6, 3])
    got = fft_layer(x, lens, list(w), SMALL["n_head"], 1, EPS)
    torch.testing.assert_close(
        got, fft_layer_reference(x, lens, w, SMALL["n_head"], 1, EPS), atol=1e-4, rtol=1e-4
    )


@pytest.mark.parametrize(
    "change, message",
    [
        (lambda x, lens, w: (x[0], lens, w), "x must be (B, T, H)"),
        (lambda x, lens, w: (x.long(), lens, w), "x must be float32"),
        (lambda x, lens, w: (x, lens.float(), w), "lengths must be int32 or int64"),
        (lambda x, lens, w: (x, lens[:1], w), "lengths must be (B,)"),
        (lambda x, lens, w: (x, lens, w[:11]), "weights must be the 12 tensors"),
        (lambda x, lens, w: (x, lens, (w[0][:-1], *w[1:])), "w_qkv must be"),
        (lambda x, lens, w: (x, lens, (*w[:6], w[6][0], *w[7:])), "w_1 must be tap-major"),
        (lambda x, lens, w: (x, lens, (*w[:9], w[9].half(), *w[10:])), "b_2 is torch.float16"),
    ],
)
def test_bad_inputs_raise_one_line(change, message):
    w = random_weights(SMALL["H"], SMALL["n_head"], SMALL["d"], SMALL["d_inner"], SMALL["k"], torch.float32)
    x, lens = inputs(2, 5, SMALL["H"], torch.float32, [5, 2])
    x, lens, w = change(x, lens, w)
    with pytest.raises(ValueError, match=re.escape(message)) as err:
        fft_layer(x, lens, list(w), SMALL["n_head"], 1, EPS)
    assert "\n" not in str(err.value)


def test_bad_padding_raises():
    w = random_weights(SMALL["H"], SMALL["n_head"], SMALL["d"], SMALL["d_inner"], SMALL["k"], torch.float32)
    x, lens = inputs(1, 5, SMALL["H"], torch.float32, [5])
    with pytest.raises(ValueError, match=r"padding must be in \[0, k - 1\]"):
        fft_layer(x, lens, list(w), SMALL["n_head"], 3, EPS)


def _tiny_model(**overrides):
    cfg = FastSpeechConfig(d_model=40, phoneme_side_n_layer=2, mel_side_n_layer=2, phoneme_side_head=2,
                           mel_side_head=2, d_k=8, phoneme_side_conv1d_filter_size=56,
                           mel_side_conv1d_filter_size=56, duration_predictor_filter_size=24, **overrides)  # fmt: skip
    torch.manual_seed(0)
    return FastSpeech(cfg).eval()


def test_fused_model_equals_the_sublayers():
    """The model's FFT blocks as one op (its reference on the CPU, the kernel on CUDA) give the same
    mel as the sublayers, and the fused path records the block outputs for verify."""
    model = _tiny_model().to(DEVICE)
    tokens = torch.randint(1, 40, (2, 11), device=DEVICE)
    tokens[1, 6:] = 0
    with torch.no_grad():
        acts: dict = {}
        fused = model(tokens, 1.0, 60, acts)
        set_fused_layers(model, False)
        plain_acts: dict = {}
        plain = model(tokens, 1.0, 60, plain_acts)
    torch.testing.assert_close(fused.mel, plain.mel, atol=1e-4, rtol=1e-4)
    assert "phoneme_side.layer_stack.1" in acts and "phoneme_side.layer_stack.1.slf_attn.ln" not in acts
    assert "phoneme_side.layer_stack.1.slf_attn.ln" in plain_acts


class _Layer(torch.nn.Module):
    def __init__(self, weights):
        super().__init__()
        for i, w in enumerate(weights):
            self.register_buffer(f"w{i}", w)

    def forward(self, x, lengths):
        return torch.ops.fastspeech.fft_layer(
            x, lengths, [getattr(self, f"w{i}") for i in range(12)], 2, 1, EPS
        )


def test_compile_and_export_keep_the_op():
    w = random_weights(SMALL["H"], SMALL["n_head"], SMALL["d"], SMALL["d_inner"], SMALL["k"], torch.float32)
    args = inputs(2, 6, SMALL["H"], torch.float32, [6, 4])
    check_compile_fullgraph(_Layer(w), args)
    check_export_round_trip(_Layer(w), args, "fastspeech.fft_layer.default")


# ---------------------------------------------------------------------------------------------
# CUDA: FastSpeech's sizes, the persistent launch with its grid barriers
# ---------------------------------------------------------------------------------------------
@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize(
    "B, T, lengths",
    [
        (1, 1024, [901]),
        (1, 128, [128]),
        (1, 32, [29]),
        (3, 257, [257, 100, 0]),
        (8, 128, [128, 1, 64, 127, 128, 5, 90, 33]),
    ],
)
def test_cuda_persistent_launch_at_model_sizes(dtype, B, T, lengths):
    w = random_weights(384, 2, 64, 1536, 3, dtype)
    x, lens = inputs(B, T, 384, dtype, lengths)
    got = run_kernel(x, lens, w, 2, 1)
    assert not got.isnan().any()
    torch.testing.assert_close(got.double(), exact(x, lens, w, 2, 1), **TOL[dtype])
    # the same kernel one phase per launch (no barrier) gives the same numbers, bit for bit
    split = run_kernel(x, lens, w, 2, 1, phases=tuple((p, p) for p in range(6)))
    assert torch.equal(got, split)


@requires_cuda
@pytest.mark.cuda
def test_cuda_repeated_launches_in_a_cuda_graph():
    """Replays of a captured persistent launch (its barrier counter zeroed in the graph) stay correct."""
    w = random_weights(384, 2, 64, 1536, 3, torch.float16)
    x, lens = inputs(1, 1024, 384, torch.float16, [777])
    out = torch.empty_like(x)
    launch_fft_layer(x, lens, w, 2, 1, EPS, out)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        launch_fft_layer(x, lens, w, 2, 1, EPS, out)
    want = exact(x, lens, w, 2, 1)
    for _ in range(20):
        out.fill_(float("nan"))
        graph.replay()
    torch.cuda.synchronize()
    torch.testing.assert_close(out.double(), want, **TOL[torch.float16])
