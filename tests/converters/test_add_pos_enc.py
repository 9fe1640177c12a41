"""The "fastspeech::add_pos_enc" TensorRT plugin: what can be checked without TensorRT, and with it.

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
from converters import add_pos_enc as plugin
from kernels import add_pos_enc_reference

kernel_module = importlib.import_module("kernels.add_pos_enc")  # `kernels.add_pos_enc` is also the op


TOL = {  # vs add_pos_enc_reference, as tests/kernels/test_add_pos_enc.py
    torch.float32: {"atol": 1e-5, "rtol": 1e-5},
    torch.float16: {"atol": 1e-2, "rtol": 1e-2},
    torch.bfloat16: {"atol": 1e-2, "rtol": 1e-2},
}
SHAPES = [(1, 1, 1), (3, 33, 257), (64, 128, 384), (3000, 8, 16)]  # (B, T, H); the last: 3 rows per program


@pytest.mark.parametrize("B, T, H", SHAPES)
def test_output_shape_is_the_ops_fake_shape(B, T, H):
    with FakeTensorMode():
        out = torch.ops.fastspeech.add_pos_enc(torch.empty(B, T, H), torch.empty(B, dtype=torch.long))
    assert plugin.output_shape((B, T, H)) == tuple(out.shape) == (B, T, H)


def test_output_shape_rejects_wrong_rank():
    with pytest.raises(ValueError, match=r"x must be \(B, T, H\)"):
        plugin.output_shape((2, 3))


def test_plugin_inputs_follow_the_op_schema():
    args = torch.ops.fastspeech.add_pos_enc.default._schema.arguments
    assert tuple(a.name for a in args) == plugin.TENSOR_INPUTS and not plugin.ATTRIBUTES
    assert all(str(a.type) == "Tensor" for a in args)


@pytest.mark.parametrize("int_dtype, ptr", [(torch.int32, "*i32"), (torch.int64, "*i64")])
def test_lengths_go_in_uncast_in_either_width(int_dtype, ptr):
    config = plugin.kernel_config((2, 8, 16), torch.bfloat16, int_dtype)
    assert dict(config.pointers) == {"x_ptr": "*bf16", "len_ptr": ptr, "out_ptr": "*bf16"}


def test_wrong_dtypes_are_named():
    with pytest.raises(ValueError, match="lengths must be int32 or int64"):
        plugin.kernel_config((2, 8, 16), torch.float32, torch.float16)
    with pytest.raises(ValueError, match="x must be float32, float16 or bfloat16"):
        plugin.kernel_config((2, 8, 16), torch.int64, torch.int64)


@pytest.mark.parametrize("B, T, H", SHAPES)
def test_aot_specialization_is_what_the_eager_launcher_launches(monkeypatch, B, T, H):
    calls = []

    class Recorder:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            return lambda *args, **kwargs: calls.append((grid, args, kwargs))

    monkeypatch.setattr(kernel_module, "wrap_triton", Recorder)
    x, lengths, out = torch.randn(B, T, H), torch.ones(B, dtype=torch.long), torch.empty(B, T, H)
    kernel_module.launch_add_pos_enc(x, lengths, out)
    ((grid, args, kwargs),) = calls
    num_warps = kwargs.pop("num_warps")
    launched = {**dict(zip(kernel_module._add_pos_enc_kernel.arg_names, args)), **kwargs}
    config = plugin.kernel_config((B, T, H), x.dtype, lengths.dtype)

    assert config.grid == grid and config.num_warps == num_warps
    assert {k: launched[k] for k in config.pointers} == {"x_ptr": x, "len_ptr": lengths, "out_ptr": out}
    assert {k: v for k, v in launched.items() if k not in config.pointers} == dict(config.constexprs)


@pytest.mark.parametrize("B, T, H", SHAPES)
def test_launch_grid_works_on_shape_expressions(B, T, H):
    config = plugin.kernel_config((B, T, H), torch.float32, torch.int64)
    grid = plugin.launch_grid(ShapeExpr(B), ShapeExpr(T), ShapeExpr(H), config.constexprs)
    assert tuple(g.value for g in grid) == config.grid


_COMPILE = """
import json, torch
from triton.backends.compiler import GPUTarget
from converters import compile_ptx, ptx_parameters, add_pos_enc as p
out = []
for x_dtype, l_dtype in [(torch.float16, torch.int64), (torch.float32, torch.int32)]:
    k = compile_ptx(p._add_pos_enc_kernel, p.kernel_config((1, 256, 384), x_dtype, l_dtype), GPUTarget("cuda", 90, 32))
    out.append(dict(name=k.name, block=k.block, params=ptx_parameters(k.ptx, k.name)))
print(json.dumps(out))
"""


def test_aot_kernel_compiles_to_ptx_with_the_abi_tensorrt_launches():
    for kernel in run_without_interpreter(_COMPILE):
        assert kernel["name"] == "_add_pos_enc_kernel" and kernel["block"] == 128
        # x, lengths, out; then only Triton's scratch pointers (TensorRT passes null); no scalars.
        assert kernel["params"][:3] == ["ptr"] * 3 and set(kernel["params"]) == {"ptr"}


# ---------------------------------------------------------------------------------------------
# On a GPU without TensorRT


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("x_dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("int_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("B, T, H", [(1, 1, 1), (3, 33, 257), (2, 1024, 384), (3000, 8, 16)])
def test_aot_kernel_launched_like_tensorrt_matches_reference(x_dtype, int_dtype, B, T, H):
    torch.manual_seed(0)
    x = torch.randn(B, T, H, device="cuda").to(x_dtype)
    lengths = torch.randint(0, T + 2, (B,), device="cuda", dtype=int_dtype)
    lengths[0] = T  # one full row; the others have padding (or none when length >= T)
    out = torch.full_like(x, float("nan"))  # poisoned
    config = plugin.kernel_config((B, T, H), x_dtype, int_dtype)
    converters.launch_aot_kernel(
        converters.compile_ptx(kernel_module._add_pos_enc_kernel, config), config.grid, [x, lengths, out]
    )
    torch.testing.assert_close(out, add_pos_enc_reference(x, lengths), **TOL[x_dtype])
    padding = torch.arange(T, device="cuda")[None, :] >= lengths[:, None]
    assert torch.equal(out[padding], x[padding])  # padding rows pass through bit for bit


# ---------------------------------------------------------------------------------------------
# With TensorRT


class _OneOp(torch.nn.Module):
    def forward(self, x: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        return torch.ops.fastspeech.add_pos_enc(x, lengths)


@pytest.mark.requires_tensorrt
@needs_tensorrt
@pytest.mark.parametrize("x_dtype", [torch.float32, torch.float16])
def test_plugin_in_a_tensorrt_engine_matches_reference(x_dtype):
    torch.manual_seed(0)
    x = torch.randn(2, 256, 384, device="cuda").to(x_dtype)
    lengths = torch.tensor([256, 100], device="cuda")
    engine = tensorrt_engine(_OneOp().cuda(), [x, lengths])
    torch.testing.assert_close(engine(x, lengths), add_pos_enc_reference(x, lengths), **TOL[x_dtype])
