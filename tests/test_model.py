"""The model: DLE's parameter names and shapes, and outputs equal to a DLE-style reference."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from helpers import random_model
from torch.nn.utils.rnn import pad_sequence

from fastspeech.model import FastSpeech, FastSpeechConfig

# DLE's state dict at default hparams (reference doc, section 2.1), in order.
_LAYER = [
    ("slf_attn.linear.weight", (384, 384)),
    ("slf_attn.linear.bias", (384,)),
    ("slf_attn.layer_norm.weight", (384,)),
    ("slf_attn.layer_norm.bias", (384,)),
    ("slf_attn.fc.weight", (384, 128)),
    ("slf_attn.fc.bias", (384,)),
    ("pos_ffn.w_1.weight", (1536, 384, 3)),
    ("pos_ffn.w_1.bias", (1536,)),
    ("pos_ffn.w_2.weight", (384, 1536, 3)),
    ("pos_ffn.w_2.bias", (384,)),
    ("pos_ffn.layer_norm.weight", (384,)),
    ("pos_ffn.layer_norm.bias", (384,)),
]
_DP = [
    ("conv1d_1.weight", (256, 384, 3)),
    ("conv1d_1.bias", (256,)),
    ("layer_norm_1.weight", (256,)),
    ("layer_norm_1.bias", (256,)),
    ("conv1d_2.weight", (256, 256, 3)),
    ("conv1d_2.bias", (256,)),
    ("layer_norm_2.weight", (256,)),
    ("layer_norm_2.bias", (256,)),
    ("linear_layer.weight", (1, 256)),
    ("linear_layer.bias", (1,)),
]


def dle_state_dict_layout() -> list[tuple[str, tuple[int, ...]]]:
    def side(name):
        rows = [(f"{name}.position.weight", (2049, 384))]
        for i in range(6):
            rows += [(f"{name}.layer_stack.{i}.{k}", s) for k, s in _LAYER]
        return rows

    return (
        [("word_emb.weight", (149, 384))]
        + side("phoneme_side")
        + [(f"length_regulator.duration_predictor.{k}", s) for k, s in _DP]
        + side("mel_side")
        + [("mel_linear.weight", (80, 384)), ("mel_linear.bias", (80,))]
    )


def test_state_dict_names_and_shapes_are_dles():
    state = FastSpeech(FastSpeechConfig()).state_dict()
    assert [(k, tuple(v.shape)) for k, v in state.items()] == dle_state_dict_layout()
    assert len(state) == 159
    assert sum(v.numel() for v in state.values()) == 47_032_273


# ---------------------------------------------------------------------------------------------
# An independent, straightforward reference: DLE's PyTorch forward, item by item.


def _dle_side(sd, side, n_layer, n_head, x, lengths):
    """DLE FFTBlocks: x + position(pos), then bmm attention (masked_fill -65504) and conv FFN."""
    B, T, H = x.shape
    pos = torch.stack(
        [torch.cat([torch.arange(1, n + 1), torch.zeros(T - n, dtype=torch.long)]) for n in lengths]
    )
    x = x + F.embedding(pos, sd[f"{side}.position.weight"])
    non_pad = (pos != 0).float()[..., None]
    key_pad = (pos == 0)[:, None, :].expand(B, T, T).repeat(n_head, 1, 1)
    for i in range(n_layer):
        p = f"{side}.layer_stack.{i}."
        res = x
        qkv = F.linear(x, sd[p + "slf_attn.linear.weight"], sd[p + "slf_attn.linear.bias"])
        qkv = qkv.view(B, T, n_head, 192).permute(2, 0, 1, 3).reshape(n_head * B, T, 192)
        q, k, v = qkv[..., :64], qkv[..., 64:128], qkv[..., 128:]
        attn = torch.bmm(q, k.transpose(1, 2)) / 8.0
        attn = torch.softmax(attn.masked_fill(key_pad, -65504.0), dim=2)
        out = torch.bmm(attn, v).view(n_head, B, T, 64).permute(1, 2, 0, 3).reshape(B, T, n_head * 64)
        out = F.linear(out, sd[p + "slf_attn.fc.weight"], sd[p + "slf_attn.fc.bias"]) + res
        x = F.layer_norm(out, (H,), sd[p + "slf_attn.layer_norm.weight"], sd[p + "slf_attn.layer_norm.bias"])
        x = x * non_pad
        res = x
        h = F.relu(
            F.conv1d(x.transpose(1, 2), sd[p + "pos_ffn.w_1.weight"], sd[p + "pos_ffn.w_1.bias"], padding=1)
        )
        h = F.conv1d(h, sd[p + "pos_ffn.w_2.weight"], sd[p + "pos_ffn.w_2.bias"], padding=1).transpose(1, 2)
        x = F.layer_norm(
            h + res, (H,), sd[p + "pos_ffn.layer_norm.weight"], sd[p + "pos_ffn.layer_norm.bias"]
        )
        x = x * non_pad
    return x


def dle_reference(model: FastSpeech, tokens: torch.Tensor, alpha: float):
    """DLE's forward on each item alone, unpadded (batch 1, as DLE's PyTorch inference runs).

    -> (list of mels (n_frames, 80), list of integer durations), one per item.
    """
    sd, cfg = model.state_dict(), model.cfg
    dp = "length_regulator.duration_predictor."
    mels, durations = [], []
    for row in tokens:
        ids = row[row != 0][None]  # (1, n): no padding at all
        n = ids.shape[1]
        x = _dle_side(
            sd,
            "phoneme_side",
            cfg.phoneme_side_n_layer,
            cfg.phoneme_side_head,
            sd["word_emb.weight"][ids],
            [n],
        )
        h = F.relu(
            F.conv1d(x.transpose(1, 2), sd[dp + "conv1d_1.weight"], sd[dp + "conv1d_1.bias"], padding=1)
        )
        h = F.layer_norm(
            h.transpose(1, 2), h.shape[1:2], sd[dp + "layer_norm_1.weight"], sd[dp + "layer_norm_1.bias"]
        )
        h = F.relu(
            F.conv1d(h.transpose(1, 2), sd[dp + "conv1d_2.weight"], sd[dp + "conv1d_2.bias"], padding=1)
        )
        h = F.layer_norm(
            h.transpose(1, 2), h.shape[1:2], sd[dp + "layer_norm_2.weight"], sd[dp + "layer_norm_2.bias"]
        )
        log_dur = F.linear(h, sd[dp + "linear_layer.weight"], sd[dp + "linear_layer.bias"])[0, :, 0]
        d = torch.round(torch.clamp_min(torch.exp(log_dur) - 1, 0) * alpha).long()
        seq = torch.repeat_interleave(x[0], d, dim=0)[None]
        y = _dle_side(sd, "mel_side", cfg.mel_side_n_layer, cfg.mel_side_head, seq, [seq.shape[1]])
        mels.append(F.linear(y, sd["mel_linear.weight"], sd["mel_linear.bias"])[0])
        durations.append(d)
    return mels, durations


def random_tokens(lengths, Ti=None, seed=0):
    g = torch.Generator().manual_seed(seed)
    Ti = Ti or max(lengths)
    tokens = torch.zeros(len(lengths), Ti, dtype=torch.long)
    for b, n in enumerate(lengths):
        tokens[b, :n] = torch.randint(1, 148, (n,), generator=g)
    return tokens


@pytest.mark.parametrize("alpha", [1.0, 1.7])
def test_forward_equals_dle_reference(alpha):
    model = random_model(seed=3)
    tokens = random_tokens([13, 7, 1], seed=4)
    with torch.no_grad():
        mel, mel_lens, durations = model(tokens, alpha)
        ref_mels, ref_durations = dle_reference(model, tokens, alpha)
    ref = pad_sequence(ref_mels, batch_first=True)  # (B, longest, 80), zero padded
    torch.testing.assert_close(mel[:, : ref.shape[1]], ref, rtol=1e-4, atol=1e-4)
    for b, (ref_mel, ref_dur) in enumerate(zip(ref_mels, ref_durations)):
        n = len(ref_dur)
        assert torch.equal(durations[b, :n], ref_dur)
        assert int(durations[b, n:].abs().sum()) == 0
        assert int(mel_lens[b]) == len(ref_mel) > 0
        torch.testing.assert_close(mel[b, : len(ref_mel)], ref_mel, rtol=1e-4, atol=1e-4)
        assert mel[b, len(ref_mel) :].abs().sum() == 0


def test_fixed_max_out_crops_and_pads_and_reports_true_length():
    model = random_model(seed=5)
    tokens = random_tokens([20, 4], seed=6)
    with torch.no_grad():
        free = model(tokens)
        total = free.durations.sum(1)
        assert total[0] > total[1] > 0
        max_out = int(total[1]) + 3  # item 1 fits (padded), item 0 does not (cropped)
        fixed = model(tokens, 1.0, max_out=max_out)
    assert fixed.mel.shape == (2, max_out, 80)
    assert torch.equal(fixed.durations, free.durations)
    assert fixed.mel_lens.tolist() == [max_out, int(total[1])]
    assert fixed.mel[1, int(total[1]) :].abs().sum() == 0


def test_alpha_is_an_input_per_item():
    model = random_model(seed=7)
    tokens = random_tokens([9, 9], seed=8)
    tokens[1] = tokens[0]
    with torch.no_grad():
        out = model(tokens, torch.tensor([1.0, 2.0]), max_out=64)
    d1, d2 = out.durations
    assert d2.sum() > d1.sum()
    assert (d2 - 2 * d1).abs().max() <= 1  # round(2x) vs 2 round(x) differ by at most 1


def test_empty_rows_padding_a_batch_give_zero_frames_and_no_nan():
    model = random_model(seed=9)
    tokens = random_tokens([6, 0, 0], Ti=10, seed=10)
    with torch.no_grad():
        out = model(tokens, 1.0, max_out=32)
    assert not torch.isnan(out.mel).any()
    assert out.mel_lens[1:].tolist() == [0, 0]
    assert out.mel[1:].abs().sum() == 0


@pytest.mark.slow
def test_compiles_fullgraph_without_graph_breaks_and_matches_eager():
    model = random_model(seed=11)
    tokens = random_tokens([12, 5], Ti=16, seed=12)
    alpha = torch.tensor([1.0, 1.3])
    explanation = torch._dynamo.explain(model)(tokens, alpha, 48)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    compiled = torch.compile(model, fullgraph=True, dynamic=False)
    with torch.no_grad():
        want = model(tokens, alpha, max_out=48)
        got = compiled(tokens, alpha, max_out=48)
    assert torch.equal(got.durations, want.durations)
    torch.testing.assert_close(got.mel, want.mel, rtol=1e-4, atol=1e-4)
    assert math.isfinite(float(got.mel.abs().sum()))


def _tap_major_convs(model: FastSpeech) -> list[tuple[str, torch.nn.Conv1d]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, torch.nn.Conv1d)]


def test_conv_weights_stay_tap_major_through_load_cast_and_copy():
    """`conv1d` hands the op weight.permute(2, 0, 1); that must stay a view (no per-call copy in
    compiled graphs) after everything the pipeline does to a model, with DLE's shapes and values."""
    import copy

    model = random_model(seed=3)
    convs = _tap_major_convs(model)
    assert {n.rsplit(".", 1)[-1] for n, _ in convs} == {"w_1", "w_2", "conv1d_1", "conv1d_2"}
    # A DLE checkpoint holds ordinary contiguous tensors: loading copies the values in place.
    plain = {k: v.contiguous().clone() for k, v in random_model(seed=4).state_dict().items()}
    model.load_state_dict(plain)
    for stage, m in (
        ("loaded", model),
        ("fp16", copy.deepcopy(model).half()),
        ("deepcopy", copy.deepcopy(model)),
    ):
        for name, conv in _tap_major_convs(m):
            assert conv.weight.permute(2, 0, 1).is_contiguous(), (stage, name)
            assert torch.equal(conv.weight.float(), plain[f"{name}.weight"].to(conv.weight.dtype).float())
    saved = model.state_dict()
    assert all(torch.equal(saved[k], v) for k, v in plain.items())
    assert all(tuple(saved[k].shape) == tuple(v.shape) for k, v in plain.items())


def count_calls(monkeypatch, module, name: str) -> list:
    """Wrap `module.name` so each call appends to the returned list (clear it between cases)."""
    calls, fn = [], getattr(module, name)
    monkeypatch.setattr(module, name, lambda *a: calls.append(1) or fn(*a))
    return calls


def test_conv1d_equals_nn_conv1d_then_relu_and_row_mask(monkeypatch):
    import kernels
    from fastspeech.model import conv1d, tap_major

    op_calls = count_calls(monkeypatch, kernels, "conv1d")
    torch.manual_seed(0)
    # (C_in, C_out, T, takes the op) at B=3: the GEMM path for few rows, the op from OP_MIN_ROWS rows, or
    # from OP_MIN_ROWS_NARROWING for convs that narrow more than 2x (24 -> 8 at T=1400: still the GEMM);
    # fp32 never takes the op (its IEEE fp32 dot products are slow on the GPU)
    cases = [
        (8, 24, 9, False),
        (24, 8, 9, False),
        (12, 8, 9, False),
        (8, 24, 1400, True),
        (12, 8, 1400, True),
        (24, 8, 1400, False),
        (24, 8, 5500, True),
    ]
    for (c_in, c_out, T, takes_op), relu, dtype in itertools.product(
        cases, (True, False), (torch.float32, torch.bfloat16)
    ):
        plain = torch.nn.Conv1d(c_in, c_out, 3, padding=1)
        conv = tap_major(torch.nn.Conv1d(c_in, c_out, 3, padding=1))
        conv.load_state_dict(plain.state_dict())
        x = torch.randn(3, T, c_in).to(dtype)
        lengths = torch.tensor([T, 4, 0])
        want = plain(x.float().transpose(1, 2)).transpose(1, 2)
        want = (want.relu() if relu else want) * (torch.arange(T)[None, :, None] < lengths[:, None, None])
        op_calls.clear()
        with torch.no_grad():
            got = conv1d(x, conv.to(dtype), lengths, relu)
        assert len(op_calls) == (takes_op and dtype != torch.float32), (c_in, c_out, T, dtype)
        tol = 1e-5 if dtype == torch.float32 else 5e-2
        torch.testing.assert_close(got.float(), want, rtol=tol, atol=tol)


def test_projections_take_the_linear_op_for_few_half_precision_rows(monkeypatch):
    """The attention's qkv and fc run the `linear` op in fp16/bf16 up to LINEAR_OP_MAX_ROWS rows (B * T),
    `nn.Linear` (cuBLAS) past it and in fp32; every path equals the layer."""
    import kernels
    from fastspeech import model as model_module

    op_calls = count_calls(monkeypatch, kernels, "linear")
    torch.manual_seed(0)
    layer = torch.nn.Linear(24, 40)
    limit = model_module.LINEAR_OP_MAX_ROWS
    for (B, T), dtype in itertools.product(
        ((1, 7), (2, limit // 2), (1, limit + 1)), (torch.float32, torch.bfloat16)
    ):
        x = torch.randn(B, T, 24).to(dtype)
        op_calls.clear()
        with torch.no_grad():
            got = model_module.linear(x, layer.to(dtype))
            want = torch.nn.functional.linear(x.float(), layer.weight.float(), layer.bias.float())
        assert len(op_calls) == (dtype != torch.float32 and B * T <= limit), (B, T, dtype)
        tol = 1e-5 if dtype == torch.float32 else 5e-2
        torch.testing.assert_close(got.float(), want, rtol=tol, atol=tol)


def test_fp32_attention_takes_sdpa_past_fp32_attention_max_work(monkeypatch):
    """fp32 runs the attention op up to B * T^2 = FP32_ATTENTION_MAX_WORK and the reference (SDPA +
    mask) past it (the op's IEEE fp32 dot products are slower there, run 45); fp16/bf16 always run the
    op. Both give the same rows."""
    import kernels
    from fastspeech import model as model_module

    op_calls = count_calls(monkeypatch, kernels, "attention")
    limit = model_module.FP32_ATTENTION_MAX_WORK
    for B, T, dtype, takes_op in [
        (1, 1024, torch.float32, True),  # B * T^2 = 2^20: the op
        (2, 1024, torch.float32, False),
        (64, 128, torch.float32, True),
        (2, 1024, torch.bfloat16, True),
    ]:
        assert (B * T * T <= limit) == takes_op or dtype != torch.float32
        qkv = torch.randn(B, T, 2 * 3 * 8).to(dtype)
        lengths = torch.randint(0, T + 1, (B,))
        op_calls.clear()
        got = model_module.self_attention(qkv, lengths, 2)
        assert len(op_calls) == takes_op, (B, T, dtype)
        want = kernels.attention_reference(qkv.float(), lengths, 2)
        torch.testing.assert_close(got.float(), want, rtol=2e-2, atol=2e-2)
