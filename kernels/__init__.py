"""Our custom ops (`torch.ops.fastspeech.*`): the two TensorRT lacks, length-aware attention, the
feed-forward block's time convolution with its epilogue fused, the attention projections launched
to overlap the kernel before them, and Griffin-Lim's magnitude step and overlap-add + framing.

Importing this package registers them; one file per op holds its Triton kernel, launcher, op and
plain PyTorch reference.
"""

from kernels.add_pos_enc import add_pos_enc, add_pos_enc_reference, sinusoid_table
from kernels.attention import attention, attention_reference
from kernels.conv1d import conv1d, conv1d_reference
from kernels.griffin_lim_step import griffin_lim_step, griffin_lim_step_reference
from kernels.linear import linear, linear_reference
from kernels.overlap_add_frames import overlap_add_frames, overlap_add_frames_reference
from kernels.regulate_length import regulate_length, regulate_length_reference

__all__ = [
    "add_pos_enc",
    "add_pos_enc_reference",
    "attention",
    "attention_reference",
    "conv1d",
    "conv1d_reference",
    "griffin_lim_step",
    "griffin_lim_step_reference",
    "linear",
    "linear_reference",
    "overlap_add_frames",
    "overlap_add_frames_reference",
    "regulate_length",
    "regulate_length_reference",
    "sinusoid_table",
]
