"""TensorRT plugin "fastspeech::add_pos_enc" (DLE's sinusoidal positions) and its Torch-TensorRT converter.

Follows Torch-TensorRT `examples/dynamo/aot_plugin.py` (hand-written `@trtp.register` + `@trtp.aot_impl`
compiling a Triton kernel with `triton.compile(ASTSource(...))`, then `generate_plugin_converter`) and
`examples/dynamo/auto_generate_plugins.py` (the JIT impl: torch tensors on TensorRT's stream); API
per https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/tensorrt.plugin/ .

Plugin contract (the op's, `kernels/add_pos_enc.py`): inputs x (B, T, H) fp32/fp16/bf16 and lengths
(B,) int32/int64; no attributes; output like x. The op's schema `(Tensor x, Tensor lengths)` maps one
to one onto the plugin's inputs. lengths go in as the graph has them (int64 from `model.py`): no cast
layer; the kernel compares either width against the row index.

The AOT kernel is `_add_pos_enc_kernel` itself, specialized: its runtime parameters are
(x_ptr, len_ptr, out_ptr), every scalar a constexpr, the fp32 halves of 10000^(-2/H) included (extra
AOT args can only be integers; see `converters/__init__.py` for the rest).
"""

# No `from __future__ import annotations` here: tensorrt.plugin inspects the annotations of the decorated
# functions when they are registered and needs real classes, not strings.

from collections.abc import Sequence
from typing import Any

import torch
import triton

from converters import KernelConfig, as_torch, cdiv, check_dtypes, compile_ptx, element_type, static_shape
from kernels.add_pos_enc import _add_pos_enc_kernel, _ratio_split, launch_add_pos_enc
from kernels.utils import check_int32_offsets

OP = "fastspeech::add_pos_enc"
TENSOR_INPUTS = ("x", "lengths")  # plugin inputs, in the op schema's order
ATTRIBUTES: dict = {}  # the op has no non-tensor arguments


def output_shape(x_shape: Sequence[Any]) -> tuple[Any, ...]:
    """(B, T, H) -> (B, T, H): the output is like x (ints or `trtp.ShapeExpr`s)."""
    if len(x_shape) != 3:
        raise ValueError(f"add_pos_enc: x must be (B, T, H), got {len(x_shape)} dims")
    return tuple(x_shape)


def launch_grid(B: Any, T: Any, H: Any, constexprs: dict) -> tuple[Any, Any, Any]:
    """Programs: (time tiles, channel tiles, groups of b_per_prog batch rows); ints or shape expressions."""
    return (cdiv(T, constexprs["BLOCK_T"]), cdiv(H, constexprs["BLOCK_H"]), cdiv(B, constexprs["b_per_prog"]))


def kernel_config(x_shape: Sequence[int], x_dtype: Any, lengths_dtype: Any) -> KernelConfig:
    """The AOT specialization for one static shape: the eager launcher's defaults, dense strides.

    Block sizes, rows per program and warps are those `launch_add_pos_enc` picks (a test pins the two
    equal); the ratio 10000^(-2/H) is split into fp32 halves by the kernel module's own `_ratio_split`.
    """
    check_dtypes(OP, ("x", x_dtype), ("lengths", lengths_dtype))
    B, T, H = (int(d) for d in x_shape)
    if min(B, T, H) < 1:
        raise ValueError(f"add_pos_enc: the AOT kernel needs a non-empty x, got {(B, T, H)}")
    check_int32_offsets(OP, torch.empty((B, T, H), device="meta"))
    block_h = min(128, max(16, triton.next_power_of_2(H)))
    block_t = min(16, max(8, triton.next_power_of_2(T)))
    tiles = triton.cdiv(T, block_t) * triton.cdiv(H, block_h)
    groups = min(B, max(1, triton.cdiv(1024, tiles)))  # enough programs to fill the GPU
    ratio_hi, ratio_lo = _ratio_split(H)
    constexprs = {
        "B": B,
        "T": T,
        "H": H,
        "b_per_prog": triton.cdiv(B, groups),
        "ratio_hi": ratio_hi,
        "ratio_lo": ratio_lo,
        "stride_xb": T * H,
        "stride_xt": H,
        "stride_xh": 1,
        "stride_ob": T * H,
        "stride_ot": H,
        "stride_oh": 1,
        "stride_len": 1,
        "BLOCK_T": block_t,
        "BLOCK_H": block_h,
        "N_BITS": max(1, ((H - 1) // 2).bit_length()),
    }
    x_type = element_type(x_dtype)
    pointers = {"x_ptr": f"*{x_type}", "len_ptr": f"*{element_type(lengths_dtype)}", "out_ptr": f"*{x_type}"}
    return KernelConfig(pointers, constexprs, num_warps=4, grid=launch_grid(B, T, H, constexprs))


def register() -> None:
    """Register the plugin (descriptor, AOT and JIT impls) with TensorRT and generate its converter."""
    import tensorrt.plugin as trtp
    from torch_tensorrt.dynamo.conversion.plugins import generate_plugin_converter

    @trtp.register(OP)
    def _descriptor(x: trtp.TensorDesc, lengths: trtp.TensorDesc) -> tuple[trtp.TensorDesc]:
        check_dtypes(OP, ("x", x.dtype), ("lengths", lengths.dtype))
        output_shape(tuple(x.shape_expr))  # checks the rank
        return (x.like(),)

    @trtp.aot_impl(OP)
    def _aot_impl(
        x: trtp.TensorDesc, lengths: trtp.TensorDesc, outputs: tuple[trtp.TensorDesc], tactic: int
    ) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymIntExprs]:
        config = kernel_config(static_shape(x), x.dtype, lengths.dtype)
        kernel = compile_ptx(_add_pos_enc_kernel, config)
        B, T, H = x.shape_expr
        params = trtp.KernelLaunchParams()
        params.grid_x, params.grid_y, params.grid_z = launch_grid(B, T, H, config.constexprs)
        params.block_x = kernel.block
        params.shared_mem = kernel.shared
        # No extra (scalar) args: every scalar is a constexpr of this static shape.
        return kernel.name, kernel.ptx, params, trtp.SymIntExprs(0)

    @trtp.impl(OP)
    def _jit_impl(x: trtp.Tensor, lengths: trtp.Tensor, outputs: tuple[trtp.Tensor], stream: int) -> None:
        # JIT fallback (Python at run time): our launcher writes straight into TensorRT's output buffer.
        with torch.cuda.stream(torch.cuda.ExternalStream(stream)):
            launch_add_pos_enc(as_torch(x), as_torch(lengths), as_torch(outputs[0]))

    generate_plugin_converter(
        OP, supports_dynamic_shapes=False, requires_output_allocator=False, use_aot_if_available=True
    )
