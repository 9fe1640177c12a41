"""Shared test set-up: Triton's interpreter on machines without a GPU, small random models."""

import os

import pytest
import torch

if not torch.cuda.is_available():
    # Must be set before any @triton.jit decorates: kernels then run on the CPU under the interpreter.
    os.environ.setdefault("TRITON_INTERPRET", "1")

requires_cuda = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (run on the H100)")


def tiny_config(**overrides):
    """conf/model/tiny.yaml as a FastSpeechConfig (read from the YAML so the two never drift)."""
    from omegaconf import OmegaConf

    from fastspeech.model import FastSpeechConfig

    root = os.path.join(os.path.dirname(__file__), "..", "conf", "model")
    merged = OmegaConf.merge(OmegaConf.load(f"{root}/dle.yaml"), OmegaConf.load(f"{root}/tiny.yaml"))
    values = {k: v for k, v in OmegaConf.to_container(merged).items() if k != "defaults"}
    return FastSpeechConfig.from_dict({**values, **overrides})


def random_model(seed: int = 0, duration_bias: float = 1.5, **overrides):
    """A tiny FastSpeech with random weights whose durations are mostly 2-5 frames per token.

    Random weights alone predict ~0 frames; the bias on the duration head makes the length
    regulator do real work in tests.
    """
    from fastspeech.model import FastSpeech

    torch.manual_seed(seed)
    model = FastSpeech(tiny_config(**overrides)).eval()
    with torch.no_grad():
        model.length_regulator.duration_predictor.linear_layer.bias.fill_(duration_bias)
    return model


@pytest.fixture
def tiny_model():
    return random_model()
