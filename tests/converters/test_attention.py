"""The "fastspeech::attention" TensorRT plugin: what can be checked without TensorRT, and with it.

Everywhere: the shape rule (against the op's fake kernel), the op-argument -> plugin mapping, the AOT
specialization and launch grid (against what the eager launcher launches), and the PTX's kernel ABI.
On a GPU without TensorRT: the AOT kernel launched the way TensorRT launches it. With TensorRT
(`requires_tensorrt`; never run so far): the plugin inside a Torch-TensorRT engine against the reference.
"""

import importlib

import pytest
import torch
from helpers import ShapeExpr, needs_tensorrt, requires_cuda, run_without_interpreter, tensorrt_engine
from torch._subclasses.fake_tensor import FakeTensorMode

import converters
from converters import attention as plugin
from kernels import attention_reference

kernel_module = importlib.import_module("kernels.attention")  # `kernels.attention` is also the op

TOL = {  # vs attention_reference
    torch.float32: {"atol": 2e-5, "rtol": 2e-5},
    torch.float16: {"atol": 1e-2, "rtol": 1e-2},
    torch.bfloat16: {"atol": 2e-2, "rtol": 2e-2},
}
# (B, T, n_head, d): batch 1 and 64 at the engine's T, odd sizes, d not a power of 2
SHAPES = [(1, 1024, 2, 64), (64, 1024, 2, 64), (3, 37, 1, 64), (2, 5, 3, 40)]


@pytest.mark.parametrize("B, T, n_head, d", SHAPES)
def test_output_shape_is_the_ops_fake_shape(B, T, n_head, d):
    qkv_shape = (B, T, n_head * 3 * d)
    with FakeTensorMode():
        out = torch.ops.fastspeech.attention(torch.empty(qkv_shape), torch.empty(B, dtype=torch.long), n_head)
    assert plugin.output_shape(qkv_shape) == tuple(out.shape) == (B, T, n_head * d)


def test_output_shape_rejects_wrong_rank():
    with pytest.raises(ValueError, match=r"qkv must be \(B, T, n_head \* 3 \* d\)"):
        plugin.output_shape((2, 3))


def test_plugin_inputs_and_attribute_follow_the_op_schema():
    args = torch.ops.fastspeech.attention.default._schema.arguments
    assert tuple(a.name for a in args[:2]) == plugin.TENSOR_INPUTS
    assert all(str(a.type) == "Tensor" for a in args[:2])
    assert {a.name: str(a.type) for a in args[2:]} == {"n_head": "int"} and list(plugin.ATTRIBUTES) == [
        "n_head"
    ]


@pytest.mark.parametrize("int_dtype, ptr", [(torch.int32, "*i32"), (torch.int64, "*i64")])
def test_lengths_go_in_uncast_in_either_width(int_dtype, ptr):
    config = plugin.kernel_config((2, 8, 384), 2, torch.bfloat16, int_dtype)
    assert dict(config.pointers) == {"qkv_ptr": "*bf16", "len_ptr": ptr, "out_ptr": "*bf16"}


def test_wrong_dtypes_and_sizes_are_named():
    with pytest.raises(ValueError, match="lengths must be int32 or int64"):
        plugin.kernel_config((2, 8, 384), 2, torch.float32, torch.float16)
    with pytest.raises(ValueError, match="qkv must be float32, float16 or bfloat16"):
        plugin.kernel_config((2, 8, 384), 2, torch.int64, torch.int64)
    with pytest.raises(ValueError, match=r"not n_head \* 3 \* d for n_head=5"):
        plugin.kernel_config((2, 8, 384), 5, torch.float16, torch.int64)


@pytest.mark.parametrize("dtype", [torch.float16, torch.float32])
@pytest.mark.parametrize("B, T, n_head, d", SHAPES)
def test_aot_specialization_is_what_the_eager_launcher_launches(monkeypatch, B, T, n_head, d, dtype):
    calls = []

    class Recorder:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            return lambda *args, **kwargs: calls.append((grid, args, kwargs))

    monkeypatch.setattr(kernel_module, "wrap_triton", Recorder)
    qkv = torch.empty(B, T, n_head * 3 * d, dtype=dtype)
    lengths, out = torch.ones(B, dtype=torch.long), torch.empty(B, T, n_head * d, dtype=dtype)
    kernel_module.launch_attention(qkv, lengths, n_head, out)
    ((grid, args, kwargs),) = calls
    num_warps = kwargs.pop("num_warps")
    launched = {**dict(zip(kernel_module._attention_kernel.arg_names, args)), **kwargs}
    config = plugin.kernel_config(qkv.shape, n_head, dtype, lengths.dtype)

    assert config.grid == grid and config.num_warps == num_warps
    assert {k: launched[k] for k in config.pointers} == {"qkv_ptr": qkv, "len_ptr": lengths, "out_ptr": out}
    assert {k: v for k, v in launched.items() if k not in config.pointers} == dict(config.constexprs)


@pytest.mark.parametrize("B, T, n_head, d", SHAPES)
def test_grid_and_output_shape_work_on_shape_expressions(B, T, n_head, d):
    config = plugin.kernel_config((B, T, n_head * 3 * d), n_head, torch.float16, torch.int64)
    grid = plugin.launch_grid(ShapeExpr(B), ShapeExpr(T), n_head, config.constexprs)
    assert tuple(getattr(g, "value", g) for g in grid) == config.grid
    shape = plugin.output_shape((ShapeExpr(B), ShapeExpr(T), ShapeExpr(n_head * 3 * d)))
    assert tuple(s.value for s in shape) == (B, T, n_head * d)


_COMPILE = """
import json, torch
from triton.backends.compiler import GPUTarget
from converters import compile_ptx, ptx_parameters, attention as p
out = []
for shape, q_dtype, l_dtype in [((1, 1024, 384), torch.float16, torch.int64), ((64, 128, 384), torch.float32, torch.int32)]:
    k = compile_ptx(p._attention_kernel, p.kernel_config(shape, 2, q_dtype, l_dtype), GPUTarget("cuda", 90, 32))
    out.append(dict(name=k.name, block=k.block, params=ptx_parameters(k.ptx, k.name)))
print(json.dumps(out))
"""


def test_aot_kernel_compiles_to_ptx_with_the_abi_tensorrt_launches():
    kernels = run_without_interpreter(_COMPILE)
    assert [k["block"] for k in kernels] == [128, 128]  # 4 warps at B=1 (16-row tiles) and at B=64, T=128
    for kernel in kernels:
        assert kernel["name"] == "_attention_kernel"
        # qkv, lengths, out; then only Triton's scratch pointers (TensorRT passes null); no scalars.
        assert kernel["params"][:3] == ["ptr"] * 3 and set(kernel["params"]) == {"ptr"}


# ---------------------------------------------------------------------------------------------
# On a GPU without TensorRT


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("int_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("B, T, n_head, d", SHAPES)
def test_aot_kernel_launched_like_tensorrt_matches_reference(dtype, int_dtype, B, T, n_head, d):
    torch.manual_seed(0)
    qkv = torch.randn(B, T, n_head * 3 * d, device="cuda").to(dtype)
    lengths = torch.randint(0, T + 2, (B,), device="cuda", dtype=int_dtype)
    lengths[0] = T
    out = torch.full((B, T, n_head * d), float("nan"), device="cuda", dtype=dtype)  # poisoned
    config = plugin.kernel_config(qkv.shape, n_head, dtype, int_dtype)
    converters.launch_aot_kernel(
        converters.compile_ptx(kernel_module._attention_kernel, config), config.grid, [qkv, lengths, out]
    )
    torch.testing.assert_close(out, attention_reference(qkv, lengths, n_head), **TOL[dtype])


# ---------------------------------------------------------------------------------------------
# With TensorRT


class _OneOp(torch.nn.Module):
    def forward(self, qkv: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return torch.ops.fastspeech.attention(qkv, lengths, 2)


@pytest.mark.requires_tensorrt
@needs_tensorrt
@pytest.mark.parametrize("dtype", [torch.float32, torch.float16])
def test_plugin_in_a_tensorrt_engine_matches_reference(dtype):
    torch.manual_seed(0)
    qkv = torch.randn(2, 256, 384, device="cuda").to(dtype)
    lengths = torch.tensor([256, 100], device="cuda")
    engine = tensorrt_engine(_OneOp().cuda(), [qkv, lengths])
    torch.testing.assert_close(engine(qkv, lengths), attention_reference(qkv, lengths, 2), **TOL[dtype])
