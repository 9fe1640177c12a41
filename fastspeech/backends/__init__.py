"""Backends behind one small interface (`base.Backend`): eager, inductor, tensorrt.

`resolve_backend("auto", device)` picks TensorRT where it is installed and a GPU is present, else
Inductor on CUDA, else eager on the CPU, and says why.
"""

from __future__ import annotations

import importlib.util

import torch

from fastspeech.backends.base import Backend
from fastspeech.errors import ConfigError

NAMES = ("eager", "inductor", "tensorrt")


def tensorrt_installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("tensorrt", "torch_tensorrt"))


def resolve_backend(name: str, device: torch.device) -> tuple[str, str]:
    """-> (backend name, why it was chosen)."""
    if name != "auto":
        if name not in NAMES:
            raise ConfigError(f"unknown backend={name}; use one of auto, {', '.join(NAMES)}")
        return name, "asked for"
    if device.type == "cuda" and tensorrt_installed():
        return "tensorrt", "TensorRT is installed and a CUDA GPU is present"
    if device.type == "cuda":
        return (
            "inductor",
            "CUDA GPU present, TensorRT not installed (pip install -e '.[trt]' in this checkout)",
        )
    return "eager", "no CUDA GPU: eager PyTorch on the CPU"


def get_backend(name: str, **options) -> Backend:
    """Instantiate a backend by name; options come from `conf/backend/<name>.yaml`."""
    if name == "eager":
        from fastspeech.backends.eager import EagerBackend

        return EagerBackend()
    if name == "inductor":
        from fastspeech.backends.inductor import InductorBackend

        return InductorBackend(**options)
    if name == "tensorrt":
        if not tensorrt_installed():
            raise ConfigError(
                "backend=tensorrt needs TensorRT and Torch-TensorRT, which are not installed: "
                "pip install -e '.[trt]' in this checkout on a CUDA machine, or use backend=auto"
            )
        from fastspeech.backends.tensorrt import TensorRTBackend

        return TensorRTBackend(**options)
    raise ConfigError(f"unknown backend={name}; use one of auto, {', '.join(NAMES)}")
