"""The ops that go to TensorRT as decompositions (no plugin): `register()` hands Torch-TensorRT's
decomposition registry the op's replacement, once, however often it is called. Checked against
stand-ins of the two Torch-TensorRT modules it uses (no TensorRT here). Each op's own test file checks
what the replacement computes and which layers it leaves."""

import importlib

import pytest
import torch
from helpers import fake_trt_decomposition_registry

from kernels.conv1d import conv1d_layers
from kernels.griffin_lim_step import griffin_lim_step_reference
from kernels.linear import linear_layers
from kernels.overlap_add_frames import overlap_add_frames_reference


@pytest.mark.parametrize(
    "name, replacement",
    [
        ("conv1d", conv1d_layers),
        ("linear", linear_layers),
        ("griffin_lim_step", griffin_lim_step_reference),
        ("overlap_add_frames", overlap_add_frames_reference),
    ],
)
def test_register_hands_the_replacement_to_the_registry_once(monkeypatch, name, replacement):
    converter = importlib.import_module(f"converters.{name}")
    registry = fake_trt_decomposition_registry(monkeypatch)
    converter.register()
    converter.register()  # idempotent
    assert registry == {getattr(torch.ops.fastspeech, name).default: replacement}
