"""Drop-in compilation: `fastspeech.compile(model)` and `torch.compile(model, backend="fastspeech")`
are called like the eager model and return its outputs (fp32 ~1e-5, fp16 ~1e-2)."""

import math

import pytest
import torch
from helpers import random_model, requires_cuda

import fastspeech
from fastspeech.compile import CompiledFastSpeech, round_up
from fastspeech.engine import EngineSpec
from fastspeech.errors import ConfigError, EngineError
from fastspeech.model import ModelOutput

G = torch.Generator().manual_seed(0)


def padded_tokens(lengths, Ti=None):
    """(B, Ti) ids in 1..147, zero-padded at the end (Ti defaults to the longest)."""
    Ti = Ti or max(lengths)
    tokens = torch.zeros(len(lengths), Ti, dtype=torch.long)
    for b, n in enumerate(lengths):
        tokens[b, :n] = torch.randint(1, 148, (n,), generator=G)
    return tokens


def assert_same(got: ModelOutput, ref: ModelOutput, atol=1e-5, rtol=1e-5):
    assert isinstance(got, ModelOutput)
    assert got.mel.shape == ref.mel.shape and got.mel.dtype == ref.mel.dtype
    assert torch.equal(got.mel_lens, ref.mel_lens) and got.mel_lens.dtype == ref.mel_lens.dtype
    assert torch.equal(got.durations, ref.durations) and got.durations.dtype == ref.durations.dtype
    torch.testing.assert_close(got.mel, ref.mel, atol=atol, rtol=rtol)


def steady_durations(model):
    """Durations of ~3 frames, far from any rounding boundary, so fp16 cannot flip one."""
    with torch.no_grad():
        head = model.length_regulator.duration_predictor.linear_layer
        head.weight.mul_(0.05)
        head.bias.fill_(math.log(4.0))
    return model


@pytest.mark.parametrize(
    "lengths, Ti, kwargs",
    [
        ([9, 3, 14], None, {}),  # To = longest predicted length (data-dependent in eager)
        ([1], None, {}),  # a single token
        ([5, 12], 40, {}),  # more padding than needed: a smaller engine gives the same result
        ([7, 7], None, {"max_out": 10}),  # speech cropped at max_out
        ([6, 2], None, {"max_out": 300}),  # room to spare
        ([8, 4], None, {"alpha": torch.tensor([0.7, 1.9])}),  # per-item speed
        ([10, 0], None, {"alpha": 1.3}),  # an empty item in the batch
    ],
)
def test_drop_in_equals_eager_on_cpu(tmp_path, lengths, Ti, kwargs):
    model = random_model(seed=1)
    fast = fastspeech.compile(model, engine_dir=tmp_path)
    assert isinstance(fast, CompiledFastSpeech) and fast.backend == "eager"
    tokens = padded_tokens(lengths, Ti)
    with torch.no_grad():
        assert_same(fast(tokens, **kwargs), model(tokens, **kwargs))


def test_long_speech_takes_a_second_larger_engine(tmp_path):
    model = random_model(seed=2, duration_bias=3.0)  # ~20 frames per token: more than 8 x max_in
    fast = fastspeech.compile(model, engine_dir=tmp_path)
    tokens = padded_tokens([20])
    with torch.no_grad():
        ref = model(tokens)
        assert ref.mel.shape[1] > 8 * 32
        assert_same(fast(tokens), ref)
    assert [spec.max_out for spec in fast._engines] == [256, round_up(ref.mel.shape[1], 256)]


def test_any_hparams(tmp_path):
    model = random_model(
        seed=3, d_model=48, phoneme_side_n_layer=1, mel_side_n_layer=3, phoneme_side_head=3, num_mels=40
    )
    fast = fastspeech.compile(model, engine_dir=tmp_path)
    tokens = padded_tokens([11, 5])
    with torch.no_grad():
        assert_same(fast(tokens), model(tokens))


def test_pinned_engine_splits_the_batch_and_refuses_what_it_cannot_reproduce(tmp_path):
    model = random_model(seed=4)
    fast = fastspeech.compile(model, engine=EngineSpec(batch=2, max_in=16, max_out=128), engine_dir=tmp_path)
    tokens = padded_tokens([9, 3, 14])  # three items through a batch-2 engine
    with torch.no_grad():
        assert_same(fast(tokens), model(tokens))
        assert_same(fast(tokens, max_out=200), model(tokens, max_out=200))  # all speech fits in 128
    assert list(fast._engines) == [EngineSpec(batch=2, max_in=16, max_out=128)]
    with pytest.raises(EngineError, match="longer than the pinned engine's max_in=16"):
        fast(padded_tokens([17]))
    with pytest.raises(EngineError, match="needs an engine with max_out=10"):
        fast(tokens, max_out=10)  # cropping at 10 frames changes what the mel side sees
    named = fastspeech.compile(model, engine="i32_o256", engine_dir=tmp_path)
    with torch.no_grad():
        assert_same(named(tokens), model(tokens))
    long = fastspeech.compile(random_model(seed=2, duration_bias=3.0), engine="i32_o256", engine_dir=tmp_path)
    with pytest.raises(EngineError, match="pin engine max_out"):
        long(padded_tokens([20]))


def test_acts_run_the_eager_model(tmp_path):
    model = random_model(seed=5)
    fast = fastspeech.compile(model, engine_dir=tmp_path)
    acts = {}
    tokens = padded_tokens([6])
    with torch.no_grad():
        assert_same(fast(tokens, acts=acts), model(tokens))
    assert "phoneme_side.layer_stack.1.pos_ffn.conv2" in acts and "out.seq" in acts


def test_backend_is_registered_on_import():
    assert "fastspeech" in torch._dynamo.list_backends()


@pytest.mark.slow
def test_torch_compile_backend_equals_eager_on_cpu():
    torch._dynamo.reset()
    model = random_model(seed=6)
    compiled = torch.compile(model, backend="fastspeech")
    tokens = padded_tokens([9, 4])
    got = compiled(tokens, max_out=48)  # no torch.no_grad() needed: the backend is inference-only
    with torch.no_grad():
        assert_same(got, model(tokens, max_out=48), atol=1e-4, rtol=1e-4)


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_drop_in_on_cuda(tmp_path, precision):
    model = steady_durations(random_model(seed=7)).cuda()
    fast = fastspeech.compile(
        model, backend="inductor", precision=precision, engine_dir=tmp_path, options={"mode": None}
    )
    atol, rtol = (1e-4, 1e-4) if precision == "fp32" else (5e-2, 2e-2)
    for lengths, kwargs in [([9, 3, 14], {}), ([12, 5, 7], {"max_out": 64}), ([4, 4, 11], {"alpha": 1.4})]:
        tokens = padded_tokens(lengths).cuda()
        with torch.no_grad():
            ref = model(tokens, **kwargs)
        assert_same(fast(tokens, **kwargs), ref, atol=atol, rtol=rtol)  # mel in the model's dtype (fp32)


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_torch_compile_backend_on_cuda(precision):
    torch._dynamo.reset()
    dtype = {"fp32": torch.float32, "fp16": torch.float16}[precision]
    model = steady_durations(random_model(seed=8)).to("cuda", dtype)
    compiled = torch.compile(model, backend="fastspeech")
    atol, rtol = (1e-4, 1e-4) if precision == "fp32" else (5e-2, 2e-2)
    for lengths, max_out in [([9, 3, 14], 96), ([5, 11, 2], 96), ([9, 3, 14], None)]:
        tokens = padded_tokens(lengths).cuda()
        got = compiled(tokens, max_out=max_out)
        got = ModelOutput(*(t.clone() for t in got))  # CUDA graph outputs are reused by the next call
        with torch.no_grad():
            assert_same(got, model(tokens, max_out=max_out), atol=atol, rtol=rtol)


@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (
            {"backend": "nope"},
            ConfigError,
            "unknown backend=nope; use one of auto, eager, inductor, tensorrt",
        ),
        ({"precision": "fp17"}, ConfigError, "precision='fp17': use one of fp32, fp16, bf16"),
        ({"precision": torch.float16}, ConfigError, "precision=torch.float16: use one of fp32, fp16, bf16"),
        ({"device": "gpu"}, ConfigError, "device='gpu': use 'cpu', 'cuda', 'cuda:N' or 'auto'"),
        ({"device": "mps"}, ConfigError, "device='mps': use 'cpu', 'cuda', 'cuda:N' or 'auto'"),
        ({"device": "cuda:99"}, ConfigError, "device=cuda:99"),  # no GPU, or not 100 of them
        (
            {"engine": "i0_o0"},
            ConfigError,
            "engine='i0_o0': batch, max_in and max_out must be whole numbers >= 1",
        ),
        ({"engine": {"max_in": 16, "max_out": 64, "batch": 0}}, ConfigError, "must be whole numbers >= 1"),
        ({"engine": {"max_in": "abc", "max_out": 64}}, ConfigError, "must be whole numbers >= 1"),
        ({"engine": {"max_in": 16.5, "max_out": 64}}, ConfigError, "must be whole numbers >= 1"),
        ({"options": 5}, TypeError, "options=5: give a dict of the backend's settings"),
        ({"backend": "tensorrt", "device": "cpu"}, ConfigError, "backend=tensorrt needs "),  # GPU or TensorRT
    ],
)
def test_bad_compile_arguments_are_one_line_before_anything_is_built(tmp_path, kwargs, error, message):
    with pytest.raises(error) as info:
        fastspeech.compile(random_model(seed=1), engine_dir=tmp_path, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not any(tmp_path.iterdir())  # no engine built


@pytest.mark.parametrize("model", [torch.nn.Linear(2, 2), torch.nn.Identity(), "model.pt"])
def test_compile_refuses_what_is_not_a_fastspeech(tmp_path, model):
    with pytest.raises(
        TypeError, match=r"^fastspeech.compile takes a fastspeech.FastSpeech module, got \w+; "
    ):
        fastspeech.compile(model, engine_dir=tmp_path)


@pytest.mark.parametrize(
    "tokens, kwargs, error, message",
    [
        (
            torch.tensor([1, 2, 3]),
            {},
            TypeError,
            "a (B, Ti) tensor of token ids, got (3,); one text of Ti ids is tokens[None]",
        ),
        ([[1, 2, 3]], {}, TypeError, "a (B, Ti) tensor of token ids, got list"),
        (
            torch.tensor([[1.0, 2.0]]),
            {},
            TypeError,
            "integer ids (torch.long), got torch.float32; use tokens.long()",
        ),
        (torch.tensor([[True, True]]), {}, TypeError, "integer ids (torch.long), got torch.bool"),
        (
            torch.zeros(0, 4, dtype=torch.long),
            {},
            ValueError,
            "tokens has no rows (shape (0, 4)); pass at least one text",
        ),
        (
            torch.tensor([[1, -3, 4]]),
            {},
            ValueError,
            "token id -3 is outside the model's 0..148; take ids from",
        ),
        (torch.tensor([[1, 149, 4]]), {}, ValueError, "token id 149 is outside the model's 0..148"),
        # The engines take each row up to its token count: the 5 after the gap would be dropped.
        (
            torch.tensor([[3, 4, 0, 0], [1, 0, 4, 5]]),
            {},
            ValueError,
            "tokens row 1 has padding (0) at position 1, before real tokens; pad only at the end",
        ),
        (
            torch.tensor([[1, 2]]),
            {"max_out": 0},
            ValueError,
            "max_out=0: give a number of frames >= 1, or None",
        ),
        (torch.tensor([[1, 2]]), {"max_out": 1.5}, ValueError, "max_out=1.5: give a number of frames >= 1"),
        (torch.tensor([[1, 2]]), {"alpha": -1.0}, ValueError, "alpha=-1.0: give finite values >= 0"),
        (torch.tensor([[1, 2]]), {"alpha": float("nan")}, ValueError, "alpha=nan: give finite values >= 0"),
        (
            torch.tensor([[1, 2]] * 2),
            {"alpha": torch.ones(3)},
            ValueError,
            "alpha has 3 values for 2 rows; give one, or one per row",
        ),
        (
            torch.tensor([[1, 2]]),
            {"alpha": "fast"},
            TypeError,
            "alpha='fast': give a number or one per row, a (1,) tensor",
        ),
    ],
)
def test_bad_call_arguments_are_one_line_before_any_engine_runs(tmp_path, tokens, kwargs, error, message):
    fast = fastspeech.compile(random_model(seed=1), engine_dir=tmp_path)
    with pytest.raises(error) as info:
        fast(tokens, **kwargs)
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not fast._engines


def test_the_checks_pass_int32_tokens_and_an_alpha_per_row(tmp_path):
    model = random_model(seed=1)
    fast = fastspeech.compile(model, engine_dir=tmp_path, engine={"max_in": 16, "max_out": 128, "batch": 2})
    tokens = padded_tokens([9, 3])
    alpha = torch.tensor([0.8, 1.3])
    with torch.no_grad():
        assert_same(fast(tokens.int(), alpha=alpha), model(tokens, alpha=alpha))
