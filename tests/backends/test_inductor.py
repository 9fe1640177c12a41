"""The Inductor backend's switches: read from conf/backend, applied around the compile only, recorded."""

import inspect
import logging

import pytest
import torch
import torch._inductor.config as inductor_config
from helpers import CONF
from omegaconf import OmegaConf

from fastspeech.backends import inductor
from fastspeech.backends.inductor import InductorBackend, inductor_config_patch, split_payload


def test_conf_backend_options_are_the_backends_defaults():
    """conf/backend/auto.yaml's inductor section names exactly the constructor's options, same defaults."""
    conf = OmegaConf.to_container(OmegaConf.load(f"{CONF}/backend/auto.yaml"))["inductor"]
    params = inspect.signature(InductorBackend).parameters
    assert set(conf) == set(params) - {"pool"}
    assert {k: params[k].default for k in conf} == conf


def test_switches_apply_during_the_compile_and_not_after(monkeypatch):
    seen = {}

    def fake_compile(graph, **kwargs):  # stands in for torch.compile: records the config at the first call
        def run(*args):
            seen["pdl"], seen["combo"] = inductor_config.triton.enable_pdl, inductor_config.combo_kernels
            return args

        return run

    monkeypatch.setattr(torch, "compile", fake_compile)
    before = (inductor_config.triton.enable_pdl, inductor_config.combo_kernels)
    backend = InductorBackend(mode=None, cuda_graphs=False, enable_pdl=True, combo_kernels=True)
    backend._compile(None, (torch.zeros(1),))
    assert seen == {"pdl": True, "combo": True}
    assert (inductor_config.triton.enable_pdl, inductor_config.combo_kernels) == before


def test_a_switch_this_torch_lacks_is_skipped_with_a_warning(monkeypatch, caplog):
    monkeypatch.setitem(inductor.INDUCTOR_SWITCHES, "enable_pdl", "triton.no_such_switch")
    with caplog.at_level(logging.WARNING, logger="fastspeech.backends.inductor"):
        patch = inductor_config_patch({"enable_pdl": True, "combo_kernels": False})
    assert patch == {"combo_kernels": False}
    assert "no Inductor switch triton.no_such_switch" in caplog.text


@pytest.mark.parametrize("artifacts", [b"", b"\x00\nbinary\n"])
def test_payload_records_the_options(monkeypatch, artifacts):
    backend = InductorBackend(mode="default", enable_pdl=False)
    monkeypatch.setattr(backend, "_compile", lambda graph, example: "runner")
    monkeypatch.setattr(
        torch.compiler, "save_cache_artifacts", lambda: (artifacts, None) if artifacts else None
    )
    _, payload = backend.build(None, ())
    options = {"mode": "default", "enable_pdl": False, "combo_kernels": True, "freezing": False}
    assert split_payload(payload) == (options, artifacts)
    assert split_payload(b"older file: artifacts only") == (None, b"older file: artifacts only")
