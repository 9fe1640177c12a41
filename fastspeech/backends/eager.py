"""Eager PyTorch with our custom ops: the reference every other backend is checked against."""

from __future__ import annotations

import torch

from fastspeech.backends.base import Backend
from fastspeech.graph import EngineGraph, Runner


class EagerBackend(Backend):
    name = "eager"

    def build(self, graph: EngineGraph, example: tuple[torch.Tensor, torch.Tensor]) -> tuple[Runner, bytes]:
        return graph, b""  # nothing is compiled, so nothing needs storing

    def load(self, graph: EngineGraph, example: tuple[torch.Tensor, torch.Tensor], payload: bytes) -> Runner:
        return graph
