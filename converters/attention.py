"""TensorRT plugin "fastspeech::attention" (length-aware self-attention) and its Torch-TensorRT converter.

Follows Torch-TensorRT `examples/dynamo/aot_plugin.py` (hand-written `@trtp.register` + `@trtp.aot_impl`
compiling a Triton kernel with `triton.compile(ASTSource(...))`, then `generate_plugin_converter`) and
`examples/dynamo/auto_generate_plugins.py` (the JIT impl: torch tensors on TensorRT's stream); API
per https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/tensorrt.plugin/ .

Plugin contract (the op's, `kernels/attention.py`): inputs qkv (B, T, n_head * 3 * d) fp32/fp16/bf16
and lengths (B,) int32/int64; attribute n_head (int); output (B, T, n_head * d) of qkv's dtype. The
op's schema `(Tensor qkv, Tensor lengths, int n_head)` lists tensors first, so the generated converter
maps it one to one: `args[:2]` -> plugin inputs, `n_head` -> the plugin attribute of the same name.

Why a plugin and not a decomposition into TensorRT's own layers: TensorRT's attention fusion needs a
mask tensor (B, 1, 1, T) and a split/permute of q, k, v, which is exactly what the op removes; the
plugin keeps the engine's attention the same kernel as Inductor's. The AOT kernel is
`_attention_kernel` itself, specialized: runtime parameters (qkv_ptr, len_ptr, out_ptr), every scalar
a constexpr (see `converters/__init__.py` for why).
"""

# No `from __future__ import annotations` here: tensorrt.plugin inspects the annotations of the decorated
# functions when they are registered and needs real classes, not strings.

from collections.abc import Sequence
from typing import Any

import torch

from converters import (
    TORCH_DTYPES,
    KernelConfig,
    as_torch,
    cdiv,
    check_dtypes,
    compile_ptx,
    element_type,
    static_shape,
)
from kernels.attention import (
    _attention_kernel,
    block_d,
    default_blocks,
    fp32_dot,
    head_dim,
    launch_attention,
    qk_scale,
    split_tail,
)
from kernels.utils import check_int32_offsets

OP = "fastspeech::attention"
TENSOR_INPUTS = ("qkv", "lengths")  # plugin inputs, in the op schema's order
ATTRIBUTES = {"n_head": int}  # plugin attributes: the op's non-tensor arguments, same names and order


def output_shape(qkv_shape: Sequence[Any]) -> tuple[Any, Any, Any]:
    """(B, T, n_head * 3 * d) -> (B, T, n_head * d): ints or `trtp.ShapeExpr`s (only `//` is used)."""
    if len(qkv_shape) != 3:
        raise ValueError(f"attention: qkv must be (B, T, n_head * 3 * d), got {len(qkv_shape)} dims")
    B, T, C = qkv_shape
    return (B, T, C // 3)


def launch_grid(B: Any, T: Any, n_head: int, constexprs: dict) -> tuple[Any, Any, Any]:
    """Programs: (query tiles, heads, batch rows); ints or shape expressions."""
    return (cdiv(T, constexprs["BLOCK_M"]), n_head, B)


def kernel_config(qkv_shape: Sequence[int], n_head: int, qkv_dtype: Any, lengths_dtype: Any) -> KernelConfig:
    """The AOT specialization for one static shape: the eager launcher's defaults, dense strides.

    Tiles and warps are `default_blocks`, as `launch_attention` picks them (a test pins the two equal).
    """
    check_dtypes(OP, ("qkv", qkv_dtype), ("lengths", lengths_dtype))
    B, T, C = (int(s) for s in qkv_shape)
    n_head = int(n_head)
    if min(B, T) < 1:
        raise ValueError(f"attention: the AOT kernel needs a non-empty qkv, got {(B, T, C)}")
    d = head_dim((B, T, C), n_head)
    check_int32_offsets(OP, torch.empty((B, T, C), device="meta"))
    blocks = default_blocks(B, T, n_head, TORCH_DTYPES[element_type(qkv_dtype)])
    constexprs = {
        "T": T,
        "stride_qb": T * C,
        "stride_qt": C,
        "stride_qc": 1,
        "stride_ob": T * n_head * d,
        "stride_ot": n_head * d,
        "stride_oc": 1,
        "stride_len": 1,
        "QK_SCALE": qk_scale(d),
        "HEAD_DIM": d,
        "BLOCK_D": block_d(d),
        "BLOCK_M": blocks.block_m,
        "BLOCK_N": blocks.block_n,
        "FP32_DOT": fp32_dot(TORCH_DTYPES[element_type(qkv_dtype)]),
        "SPLIT_TAIL": split_tail(blocks.block_m),
    }
    q_type = element_type(qkv_dtype)
    pointers = {
        "qkv_ptr": f"*{q_type}",
        "len_ptr": f"*{element_type(lengths_dtype)}",
        "out_ptr": f"*{q_type}",
    }
    return KernelConfig(
        pointers, constexprs, num_warps=blocks.num_warps, grid=launch_grid(B, T, n_head, constexprs)
    )


def register() -> None:
    """Register the plugin (descriptor, AOT and JIT impls) with TensorRT and generate its converter."""
    import tensorrt.plugin as trtp
    from torch_tensorrt.dynamo.conversion.plugins import generate_plugin_converter

    @trtp.register(OP)
    def _descriptor(qkv: trtp.TensorDesc, lengths: trtp.TensorDesc, n_head: int) -> tuple[trtp.TensorDesc]:
        check_dtypes(OP, ("qkv", qkv.dtype), ("lengths", lengths.dtype))
        return (trtp.from_shape_expr(output_shape(tuple(qkv.shape_expr)), dtype=qkv.dtype),)

    @trtp.aot_impl(OP)
    def _aot_impl(
        qkv: trtp.TensorDesc,
        lengths: trtp.TensorDesc,
        n_head: int,
        outputs: tuple[trtp.TensorDesc],
        tactic: int,
    ) -> tuple[str | bytes, str | bytes, trtp.KernelLaunchParams, trtp.SymIntExprs]:
        config = kernel_config(static_shape(qkv), n_head, qkv.dtype, lengths.dtype)
        kernel = compile_ptx(_attention_kernel, config)
        params = trtp.KernelLaunchParams()
        params.grid_x, params.grid_y, params.grid_z = launch_grid(
            qkv.shape_expr[0], qkv.shape_expr[1], n_head, config.constexprs
        )
        params.block_x = kernel.block
        params.shared_mem = kernel.shared
        # No extra (scalar) args: every scalar is a constexpr of this static shape.
        return kernel.name, kernel.ptx, params, trtp.SymIntExprs(0)

    @trtp.impl(OP)
    def _jit_impl(
        qkv: trtp.Tensor, lengths: trtp.Tensor, n_head: int, outputs: tuple[trtp.Tensor], stream: int
    ) -> None:
        # JIT fallback (Python at run time): our launcher writes straight into TensorRT's output buffer.
        with torch.cuda.stream(torch.cuda.ExternalStream(stream)):
            launch_attention(as_torch(qkv), as_torch(lengths), n_head, as_torch(outputs[0]))

    generate_plugin_converter(
        OP, supports_dynamic_shapes=False, requires_output_allocator=False, use_aot_if_available=True
    )
