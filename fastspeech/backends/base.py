"""The small interface every backend implements: compile an `EngineGraph`, save it, load it."""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch

from fastspeech.graph import EngineGraph, Runner


class Backend(ABC):
    """Turns an `EngineGraph` (fixed shapes, on its device and dtype) into a fast callable.

    `build` returns the runner and the bytes to store in the engine file; `load` turns those bytes
    back into a runner for the same graph. Padding, trimming, fingerprints and files are the
    engine's job (`fastspeech.engine`), not the backend's. A runner may also expose `inputs` (its
    static input buffers, shaped like `example`) and `replay()` (run on what they hold): the engine
    then copies a call's inputs from its pinned host buffers straight into them (`HostIO`).
    """

    name: str

    def check_available(self, device: torch.device) -> None:
        """Raise `ConfigError` (one line: what is missing, how to get it) when unusable here."""

    @abstractmethod
    def build(
        self, graph: EngineGraph, example: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[Runner, bytes]: ...

    @abstractmethod
    def load(
        self, graph: EngineGraph, example: tuple[torch.Tensor, torch.Tensor], payload: bytes
    ) -> Runner: ...
