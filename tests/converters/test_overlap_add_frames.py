"""overlap_add_frames' TensorRT path: its reference as a decomposition, checked without TensorRT.

After `run_decompositions` (the step Torch-TensorRT runs) no custom op is left and the numbers are
the op's (`register()` is checked in test_decompositions.py). Which of the remaining
ATen ops TensorRT converts (the strided framing) has not been checked against a TensorRT build.
"""

import torch

from converters import overlap_add_frames as converter
from kernels.overlap_add_frames import overlap_add_frames_reference


class _Frames(torch.nn.Module):
    def forward(self, frames, window):
        return torch.ops.fastspeech.overlap_add_frames(frames, window, 8, 32)


def test_overlap_add_frames_decomposes_to_aten_with_the_ops_numbers():
    frames, window = torch.randn(2, 5, 32), torch.hann_window(32)
    program = torch.export.export(_Frames(), (frames, window))
    assert "fastspeech.overlap_add_frames.default" in {str(n.target) for n in program.graph.nodes}
    table = torch.export.default_decompositions()
    table.update(converter.decomposition_table())
    decomposed = program.run_decompositions(table)
    assert not any("fastspeech" in t for t in {str(n.target) for n in decomposed.graph.nodes})
    want = overlap_add_frames_reference(frames, window, 8, 32)
    torch.testing.assert_close(decomposed.module()(frames, window), want)
