"""TensorRT plugin "fastspeech::regulate_length" (the length regulator) and its Torch-TensorRT converter.

Follows Torch-TensorRT `examples/dynamo/aot_plugin.py` (hand-written `@trtp.register` + `@trtp.aot_impl`
compiling a Triton kernel with `triton.compile(ASTSource(...))`, then `generate_plugin_converter`) and
`examples/dynamo/auto_generate_plugins.py` (the JIT impl: torch tensors on TensorRT's stream); API
per https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/tensorrt.plugin/ .

Plugin contract (the op's, `kernels/regulate_length.py`): inputs x (B, Ti, H) fp32/fp16/bf16 and
durations (B, Ti) int32/int64; attribute max_out (int); output (B, max_out, H) of x's dtype. The op's
schema `(Tensor x, Tensor durations, int max_out)` already lists tensors first, so the generated
converter maps it one to one: `args[:2]` -> plugin inputs, `max_out` -> the plugin attribute of the
same name (the converter matches attributes to schema arguments by name). durations go in as the graph
has them (int64 from `model.py`): no cast layer; the kernel widens either width to int64 on load.

The AOT kernel is `_regulate_length_kernel` itself, specialized: its runtime parameters are
(x_ptr, dur_ptr, out_ptr), every scalar a constexpr (see `converters/__init__.py` for why).
"""

# No `from __future__ import annotations` here: tensorrt.plugin inspects the annotations of the decorated
# functions when they are registered and needs real classes, not strings.

from collections.abc import Sequence
from typing import Any

import torch
import triton

from converters import KernelConfig, as_torch, cdiv, check_dtypes, compile_ptx, element_type, static_shape
from kernels.regulate_length import _regulate_length_kernel, launch_regulate_length
from kernels.utils import check_int32_offsets

OP = "fastspeech::regulate_length"
TENSOR_INPUTS = ("x", "durations")  # plugin inputs, in the op schema's order
ATTRIBUTES = {"max_out": int}  # plugin attributes: the op's non-tensor arguments, same names and order


def output_shape(x_shape: Sequence[Any], max_out: Any) -> tuple[Any, Any, Any]:
    """(B, Ti, H) -> (B, max_out, H): shapes and `max_out` only, never the durations' values.

    Works on ints and on `trtp.ShapeExpr`s (the plugin's shape descriptor calls it with those).
    """
    if len(x_shape) != 3:
        raise ValueError(f"regulate_length: x must be (B, Ti, H), got {len(x_shape)} dims")
    B, _, H = x_shape
    return (B, max_out, H)


def launch_grid(B: Any, H: Any, max_out: Any, constexprs: dict) -> tuple[Any, Any, Any]:
    """Programs: (output-frame tiles, batch rows, channel tiles); ints or shape expressions."""
    return (cdiv(max_out, constexprs["BLOCK_TO"]), B, cdiv(H, constexprs["BLOCK_H"]))


def kernel_config(x_shape: Sequence[int], max_out: int, x_dtype: Any, durations_dtype: Any) -> KernelConfig:
    """The AOT specialization for one static shape: the eager launcher's defaults, dense strides.

    Block sizes and warps are those `launch_regulate_length` picks (a test pins the two equal).
    """
    check_dtypes(OP, ("x", x_dtype), ("durations", durations_dtype))
    B, Ti, H = (int(d) for d in x_shape)
    max_out = int(max_out)
    if min(B, Ti, H, max_out) < 1:
        raise ValueError(
            f"regulate_length: the AOT kernel needs non-empty shapes, got x {(B, Ti, H)}, max_out {max_out}"
        )
    check_int32_offsets(OP, *(torch.empty(s, device="meta") for s in ((B, Ti, H), (B, Ti), (B, max_out, H))))
    block_ti = min(128, max(16, triton.next_power_of_2(Ti)))
    constexprs = {
        "Ti": Ti,
        "H": H,
        "max_out": max_out,
        "stride_xb": Ti * H,
        "stride_xt": H,
        "stride_xh": 1,
        "stride_db": Ti,
        "stride_dt": 1,
        "stride_ob": max_out * H,
        "stride_ot": H,
        "stride_oh": 1,
        "BLOCK_TO": 16,
        "BLOCK_TI": block_ti,
        "BLOCK_H": min(512, max(16, triton.next_power_of_2(H))),
        "WIDE_SCAN": max_out * (block_ti + 1) >= 2**31,  # int64 duration scan only when int32 could overflow
    }
    x_type, d_type = element_type(x_dtype), element_type(durations_dtype)
    pointers = {"x_ptr": f"*{x_type}", "dur_ptr": f"*{d_type}", "out_ptr": f"*{x_type}"}
    return KernelConfig(pointers, constexprs, num_warps=4, grid=launch_grid(B, H, max_out, constexprs))


def register() -> None:
    """Register the plugin (descriptor, AOT and JIT impls) with TensorRT and generate its converter."""
    import tensorrt.plugin as trtp
    from torch_tensorrt.dynamo.conversion.plugins import generate_plugin_converter

    @trtp.register(OP)
    def _descriptor(x: trtp.TensorDesc, durations: trtp.TensorDesc, max_out: int) -> tuple[trtp.TensorDesc]:
        check_dtypes(OP, ("x", x.dtype), ("durations", durations.dtype))
        return (trtp.from_shape_expr(output_shape(tuple(x.shape_expr), max_out), dtype=x.dtype),)

    @trtp.aot_impl(OP)
    def _aot_impl(
        x: trtp.TensorDesc,
        durations: trtp.TensorDesc,
        max_out: int,
        outputs: tuple[trtp.TensorDesc],
        tactic: int,
    ) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymIntExprs]:
        config = kernel_config(static_shape(x), max_out, x.dtype, durations.dtype)
        kernel = compile_ptx(_regulate_length_kernel, config)
        params = trtp.KernelLaunchParams()
        params.grid_x, params.grid_y, params.grid_z = launch_grid(
            x.shape_expr[0], x.shape_expr[2], outputs[0].shape_expr[1], config.constexprs
        )
        params.block_x = kernel.block
        params.shared_mem = kernel.shared
        # No extra (scalar) args: every scalar is a constexpr of this static shape.
        return kernel.name, kernel.ptx, params, trtp.SymIntExprs(0)

    @trtp.impl(OP)
    def _jit_impl(x: trtp.Tensor, durations: trtp.Tensor, outputs: tuple[trtp.Tensor], stream: int) -> None:
        # JIT fallback (Python at run time): our launcher writes straight into TensorRT's output buffer.
        with torch.cuda.stream(torch.cuda.ExternalStream(stream)):
            launch_regulate_length(as_torch(x), as_torch(durations), as_torch(outputs[0]))

    generate_plugin_converter(
        OP, supports_dynamic_shapes=False, requires_output_allocator=False, use_aot_if_available=True
    )
