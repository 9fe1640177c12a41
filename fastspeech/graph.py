"""The graph an engine compiles, and the runner type backends return.

Its own module so that `engine.py` (which picks a backend) and `backends/` (which compile this graph)
both import it and neither imports the other.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from fastspeech.model import FastSpeech
from fastspeech.vocoder.base import Vocoder, to_pcm16

Runner = Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, ...]]


class EngineGraph(nn.Module):
    """The graph an engine compiles: token ids -> mel -> wav, fixed To, durations summed in the graph.

    Outputs: mel (B, To, num_mels) float32, mel_lens, frames, durations, wav (B, To * hop) int16
    16-bit PCM (`to_pcm16` of the vocoder's float samples; zero from mel_lens * hop on; (B, 0) when
    built without a vocoder, the model-only benchmark's case); with `debug`, then every named
    activation the model records and then the vocoder's (`activation_names`, forward order) as extra
    outputs: no backend can dump its layers (TensorRT has no per-layer dump), so the verify mode
    reads them here. A backend that cannot output int16 sets `pcm16` off and wraps its runner in
    `pcm16_outputs` (TensorRT has no int16 tensors).
    """

    def __init__(
        self,
        model: FastSpeech,
        max_out: int,
        vocoder: Vocoder | None = None,
        debug: bool = False,
        trim: bool = False,
    ):
        super().__init__()
        self.model, self.max_out, self.vocoder = model, max_out, vocoder
        self.activation_names = activation_names(model, vocoder) if debug else ()
        # Eager engines only (data-dependent shapes): the mel side runs on the batch's longest
        # predicted length (padded back to max_out after), and the vocoder on the frames that exist
        # plus its `context_frames` of silence, not all of max_out; the outputs are the same.
        self.trim_model = trim and not debug
        self.trim = self.trim_model and vocoder is not None and vocoder.context_frames is not None
        self.pcm16 = True  # the wav as int16; off: float32 in [-1, 1] (see `pcm16_outputs`)

    def forward(self, tokens: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor, ...]:
        acts: dict[str, torch.Tensor] | None = {} if self.activation_names else None
        mel, mel_lens, durations = self.model(tokens, alpha, self.max_out, acts, trim=self.trim_model)
        if self.trim_model:  # back to the engine's fixed (B, max_out, num_mels), zeros past To
            mel = torch.nn.functional.pad(mel, (0, 0, 0, self.max_out - mel.shape[1]))
        if self.trim:  # a 1 s sentence in a 1024-frame engine: 12x less Griffin-Lim on the CPU
            n = min(self.max_out, int(mel_lens.max()) + self.vocoder.context_frames)
            wav = self.vocoder(mel[:, :n], mel_lens)
            wav = torch.nn.functional.pad(wav, (0, (self.max_out - n) * self.vocoder.audio.hop_length))
        elif self.vocoder is not None:
            wav = self.vocoder(mel, mel_lens, acts)  # (B, To * hop) float32
        else:
            wav = mel.new_zeros(mel.shape[0], 0)
        # int16 on the device: every sink writes 16-bit PCM, and a call's audio then crosses to the host
        # at half the bytes, with no encoding pass there (docs/performance.md, "Host path")
        wav = to_pcm16(wav) if self.pcm16 else wav
        extra = tuple(acts[name] for name in self.activation_names) if acts is not None else ()
        return (mel.float(), mel_lens, durations.sum(1), durations, wav) + extra


def pcm16_outputs(runner: Runner) -> Runner:
    """`runner` of a graph built with `pcm16` off, its wav (output 4) made int16 after it: the same
    outputs as the graph with `pcm16` on (one more kernel launch per call)."""

    def run(tokens: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor, ...]:
        out = runner(tokens, alpha)
        return (*out[:4], to_pcm16(out[4]), *out[5:])

    return run


def activation_names(model: FastSpeech, vocoder: Vocoder | None = None) -> tuple[str, ...]:
    """The names `model.forward` (then the vocoder) records, in forward order (from a 1-token eager
    run, one frame)."""
    device = next(model.parameters()).device
    acts: dict[str, torch.Tensor] = {}
    with torch.no_grad():
        out = model(torch.ones(1, 1, dtype=torch.long, device=device), 1.0, 1, acts)
        if vocoder is not None:
            vocoder(out.mel, out.mel_lens, acts)
    return tuple(acts)
