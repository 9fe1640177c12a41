"""The graph an engine compiles, and the runner type backends return.

Its own module so that `engine.py` (which picks a backend) and `backends/` (which compile this graph)
both import it and neither imports the other.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fastspeech.model import FastSpeech

Runner = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]]


class EngineGraph(nn.Module):
    """The graph an engine compiles: fixed To, float32 mel out, durations summed in the graph.

    Outputs: mel, mel_lens, frames, durations; with `debug`, then every named activation the model
    records (`activation_names`, forward order, each in the model's dtype) as extra outputs: no
    backend can dump its layers (TensorRT has no per-layer dump), so the verify mode reads them here.
    """

    def __init__(self, model: FastSpeech, max_out: int, debug: bool = False):
        super().__init__()
        self.model, self.max_out = model, max_out
        self.activation_names = activation_names(model) if debug else ()

    def forward(self, tokens: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor, ...]:
        acts: dict[str, torch.Tensor] | None = {} if self.activation_names else None
        mel, mel_lens, durations = self.model(tokens, alpha, self.max_out, acts)
        extra = tuple(acts[name] for name in self.activation_names) if acts is not None else ()
        return (mel.float(), mel_lens, durations.sum(1), durations) + extra


def activation_names(model: FastSpeech) -> tuple[str, ...]:
    """The names `model.forward` records, in forward order (read from a 1-token eager run)."""
    device = next(model.parameters()).device
    acts: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        model(torch.ones(1, 1, dtype=torch.long, device=device), 1.0, 1, acts)
    return tuple(acts)
