"""Our ops inside one module: torch.compile(fullgraph=True, dynamic=False) and a torch.export round trip.

fullgraph=True turns any graph break into an error, so compiling at all proves there is none. On CPU
Inductor traces the ops' PyTorch path; on CUDA the generated code must call our Triton kernels.
"""

from __future__ import annotations

import io

import pytest
import torch
from helpers import requires_cuda

import kernels  # noqa: F401  (registers torch.ops.fastspeech.*)

MAX_OUT = 48
H = 257


class Regulated(torch.nn.Module):
    """Encoder PE -> a feed-forward conv -> length regulator -> decoder PE, the order FastSpeech uses the ops."""

    def __init__(self):
        super().__init__()
        # Inference only (add_pos_enc and regulate_length have no autograd formula): no gradients.
        self.conv = torch.nn.Conv1d(H, H, 3, padding=1).requires_grad_(False)

    def forward(self, x: torch.Tensor, lengths: torch.Tensor, durations: torch.Tensor) -> torch.Tensor:
        h = torch.ops.fastspeech.add_pos_enc(x, lengths) * 2.0
        weight = self.conv.weight.permute(2, 0, 1)  # (k, C_out, C_in): the op's tap-major layout
        h = torch.ops.fastspeech.conv1d(h, weight, self.conv.bias, lengths, 1, True)
        mel = torch.ops.fastspeech.regulate_length(h, durations, MAX_OUT)
        mel_lengths = durations.clamp_min(0).sum(1).clamp_max(MAX_OUT)
        return torch.ops.fastspeech.add_pos_enc(mel, mel_lengths)


def inputs(device: str, dtype: torch.dtype = torch.float32):
    x = torch.randn(3, 11, H, device=device).to(dtype)
    lengths = torch.tensor([11, 6, 1], device=device)
    durations = torch.randint(0, 6, (3, 11), device=device) * (
        torch.arange(11, device=device) < lengths[:, None]
    )
    return x, lengths, durations


def check_compile(device: str) -> None:
    torch._dynamo.reset()
    model = Regulated().to(device)
    compiled = torch.compile(model, fullgraph=True, dynamic=False)
    args = inputs(device)
    torch.testing.assert_close(compiled(*args), model(*args), atol=1e-5, rtol=1e-5)
    x, lengths, durations = inputs(device)  # fresh data, same shapes: no recompile needed
    durations[0, 0] = -3  # compiled graphs treat negative durations as 0 (eager would raise)
    eager = model(x, lengths, durations.clamp_min(0))
    torch.testing.assert_close(compiled(x, lengths, durations), eager, atol=1e-5, rtol=1e-5)


def check_export(device: str) -> None:
    model = Regulated().to(device)
    args = inputs(device)
    program = torch.export.export(model, args)
    targets = {str(node.target) for node in program.graph.nodes if node.op == "call_function"}
    assert {
        "fastspeech.add_pos_enc.default",
        "fastspeech.conv1d.default",
        "fastspeech.regulate_length.default",
    } <= targets
    buffer = io.BytesIO()
    torch.export.save(program, buffer)
    buffer.seek(0)
    loaded = torch.export.load(buffer).module()
    fresh = inputs(device)
    torch.testing.assert_close(loaded(*fresh), model(*fresh), atol=1e-5, rtol=1e-5)


def test_compile_fullgraph_cpu():
    check_compile("cpu")


def test_export_round_trip_cpu():
    check_export("cpu")


@pytest.mark.cuda
@requires_cuda
def test_compile_fullgraph_cuda_runs_triton_kernels():
    from torch._inductor.utils import run_and_get_code

    check_compile("cuda")
    torch._dynamo.reset()
    compiled = torch.compile(Regulated().cuda().half(), fullgraph=True, dynamic=False)
    _, code = run_and_get_code(compiled, *inputs("cuda", torch.float16))
    source = "\n".join(code)
    assert all(f"_{op}_kernel" in source for op in ("add_pos_enc", "conv1d", "regulate_length"))


@pytest.mark.cuda
@requires_cuda
def test_export_round_trip_cuda():
    check_export("cuda")
