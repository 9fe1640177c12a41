"""The "fastspeech::regulate_length" TensorRT plugin: what can be checked without TensorRT, and with it.

Everywhere: the shape rule (against the op's fake kernel), the op-argument -> plugin mapping (against
the op's schema), the AOT specialization and launch grid (against what the eager launcher launches),
and the PTX's kernel ABI. On a GPU without TensorRT: the AOT kernel launched the way TensorRT launches
it, and the JIT impl's tensor views. With TensorRT (`requires_tensorrt`; never run so far): the plugin
inside a Torch-TensorRT engine against the reference.
"""

import importlib
from types import SimpleNamespace

import pytest
import torch
from helpers import ShapeExpr, needs_tensorrt, requires_cuda, run_without_interpreter, tensorrt_engine
from torch._subclasses.fake_tensor import FakeTensorMode

import converters
from converters import regulate_length as plugin
from kernels import regulate_length_reference

kernel_module = importlib.import_module("kernels.regulate_length")  # `kernels.regulate_length` is also the op


TOL = {torch.float32: {"atol": 1e-5, "rtol": 1e-5}, torch.float16: {"atol": 1e-2, "rtol": 1e-2}}
SHAPES = [(1, 1, 1, 1), (2, 32, 64, 256), (3, 7, 257, 33), (5, 130, 384, 1000)]  # (B, Ti, H, max_out)


@pytest.mark.parametrize("B, Ti, H, max_out", SHAPES)
def test_output_shape_is_the_ops_fake_shape(B, Ti, H, max_out):
    with FakeTensorMode():
        out = torch.ops.fastspeech.regulate_length(
            torch.empty(B, Ti, H), torch.empty(B, Ti, dtype=torch.long), max_out
        )
    assert plugin.output_shape((B, Ti, H), max_out) == tuple(out.shape) == (B, max_out, H)


def test_output_shape_rejects_wrong_rank():
    with pytest.raises(ValueError, match=r"x must be \(B, Ti, H\)"):
        plugin.output_shape((2, 3), 5)


def test_plugin_inputs_and_attributes_follow_the_op_schema():
    # generate_plugin_converter passes args[:n_tensors] as plugin inputs and matches the rest to plugin
    # attributes by schema name, so both lists must be the schema's, tensors first.
    args = torch.ops.fastspeech.regulate_length.default._schema.arguments
    assert tuple(a.name for a in args) == plugin.TENSOR_INPUTS + tuple(plugin.ATTRIBUTES)
    assert all(str(a.type) == "Tensor" for a in args[: len(plugin.TENSOR_INPUTS)])
    assert [str(a.type) for a in args[len(plugin.TENSOR_INPUTS) :]] == ["int"]


@pytest.mark.parametrize("int_dtype, ptr", [(torch.int32, "*i32"), (torch.int64, "*i64")])
def test_durations_go_in_uncast_in_either_width(int_dtype, ptr):
    config = plugin.kernel_config((2, 8, 16), 40, torch.float16, int_dtype)
    assert dict(config.pointers) == {"x_ptr": "*fp16", "dur_ptr": ptr, "out_ptr": "*fp16"}


def test_wrong_dtypes_are_named():
    with pytest.raises(ValueError, match="durations must be int32 or int64"):
        plugin.kernel_config((2, 8, 16), 40, torch.float32, torch.float32)
    with pytest.raises(ValueError, match="x must be float32, float16 or bfloat16"):
        plugin.kernel_config((2, 8, 16), 40, torch.int32, torch.int64)


def test_empty_shapes_are_refused_for_the_aot_kernel():
    with pytest.raises(ValueError, match="non-empty"):
        plugin.kernel_config((1, 4, 8), 0, torch.float32, torch.int64)


def _launcher_call(monkeypatch, x, durations, out):
    """What `launch_regulate_length` hands Triton: grid and every kernel argument by name."""
    calls = []

    class Recorder:
        def __init__(self, kernel):
            self.kernel = kernel

        def __getitem__(self, grid):
            return lambda *args, **kwargs: calls.append((grid, args, kwargs))

    monkeypatch.setattr(kernel_module, "wrap_triton", Recorder)
    kernel_module.launch_regulate_length(x, durations, out)
    ((grid, args, kwargs),) = calls
    num_warps = kwargs.pop("num_warps")
    return grid, num_warps, {**dict(zip(kernel_module._regulate_length_kernel.arg_names, args)), **kwargs}


@pytest.mark.parametrize("B, Ti, H, max_out", SHAPES + [(1, 16, 1, 2**31 // 17 + 1)])
def test_aot_specialization_is_what_the_eager_launcher_launches(monkeypatch, B, Ti, H, max_out):
    # The last shape needs the int64 duration scan (max_out * (BLOCK_TI + 1) >= 2^31); its output is
    # a stride-0 view so nothing that large is allocated.
    x, durations = torch.randn(B, Ti, H), torch.ones(B, Ti, dtype=torch.long)
    out = torch.empty(B, max_out, H) if max_out < 10**6 else torch.empty(1, 1, 1).expand(B, max_out, H)
    grid, num_warps, launched = _launcher_call(monkeypatch, x, durations, out)
    config = plugin.kernel_config((B, Ti, H), max_out, x.dtype, durations.dtype)

    assert config.grid == grid and config.num_warps == num_warps
    assert {k: launched[k] for k in config.pointers} == {"x_ptr": x, "dur_ptr": durations, "out_ptr": out}
    scalars = {k: v for k, v in launched.items() if k not in config.pointers}
    if max_out >= 10**6:  # the stride-0 stand-in's strides are not the dense ones TensorRT hands the plugin
        scalars.update({k: config.constexprs[k] for k in ("stride_ob", "stride_ot", "stride_oh")})
    assert scalars == dict(config.constexprs)


@pytest.mark.parametrize("B, Ti, H, max_out", SHAPES)
def test_launch_grid_works_on_shape_expressions(B, Ti, H, max_out):
    config = plugin.kernel_config((B, Ti, H), max_out, torch.float32, torch.int64)
    grid = plugin.launch_grid(ShapeExpr(B), ShapeExpr(H), ShapeExpr(max_out), config.constexprs)
    assert tuple(g.value for g in grid) == config.grid


_COMPILE = """
import json, sys, torch
from triton.backends.compiler import GPUTarget
from converters import compile_ptx, ptx_parameters, regulate_length as p
out = []
for x_dtype, d_dtype in [(torch.float16, torch.int64), (torch.float32, torch.int32)]:
    k = compile_ptx(p._regulate_length_kernel, p.kernel_config((2, 32, 64), 256, x_dtype, d_dtype), GPUTarget("cuda", 90, 32))
    out.append(dict(name=k.name, block=k.block, params=ptx_parameters(k.ptx, k.name)))
print(json.dumps(out))
"""


def test_aot_kernel_compiles_to_ptx_with_the_abi_tensorrt_launches():
    for kernel in run_without_interpreter(_COMPILE):
        assert kernel["name"] == "_regulate_length_kernel" and kernel["block"] == 128
        # x, durations, out; then only Triton's scratch pointers (TensorRT passes null); no scalars.
        assert kernel["params"][:3] == ["ptr"] * 3 and set(kernel["params"]) == {"ptr"}


# ---------------------------------------------------------------------------------------------
# On a GPU without TensorRT


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize("x_dtype", [torch.float32, torch.float16, torch.bfloat16])
@pytest.mark.parametrize("int_dtype", [torch.int32, torch.int64])
@pytest.mark.parametrize("B, Ti, H, max_out", [(1, 1, 1, 1), (3, 7, 257, 33), (4, 130, 384, 700)])
def test_aot_kernel_launched_like_tensorrt_matches_reference(x_dtype, int_dtype, B, Ti, H, max_out):
    torch.manual_seed(0)
    x = torch.randn(B, Ti, H, device="cuda").to(x_dtype)
    durations = torch.randint(0, 6, (B, Ti), device="cuda", dtype=int_dtype)
    durations[0] = 0
    durations[0, 0] = max_out  # row 0 ends exactly at max_out; the others end before or are cropped
    out = torch.full((B, max_out, H), float("nan"), device="cuda", dtype=x_dtype)  # poisoned
    config = plugin.kernel_config((B, Ti, H), max_out, x_dtype, int_dtype)
    converters.launch_aot_kernel(
        converters.compile_ptx(kernel_module._regulate_length_kernel, config),
        config.grid,
        [x, durations, out],
    )
    assert torch.equal(out, regulate_length_reference(x, durations, max_out))  # a copy: exact


@pytest.mark.cuda
@requires_cuda
@pytest.mark.parametrize(
    "dtype, name", [(torch.float16, "HALF"), (torch.bfloat16, "BF16"), (torch.int64, "INT64")]
)
def test_jit_impl_views_tensorrt_tensors_without_copy(dtype, name):
    base = torch.arange(24, device="cuda").to(dtype).reshape(2, 3, 4)
    view = base[:, 1:]  # strided
    trt_tensor = SimpleNamespace(
        dtype=SimpleNamespace(name=name),
        shape=tuple(view.shape),
        strides=view.stride(),
        data_ptr=view.data_ptr(),
    )
    t = converters.as_torch(trt_tensor)
    assert t.dtype == dtype and t.data_ptr() == view.data_ptr() and torch.equal(t, view)


# ---------------------------------------------------------------------------------------------
# With TensorRT


class _OneOp(torch.nn.Module):
    def __init__(self, max_out: int):
        super().__init__()
        self.max_out = max_out

    def forward(self, x: torch.Tensor, durations: torch.Tensor) -> torch.Tensor:
        return torch.ops.fastspeech.regulate_length(x, durations, self.max_out)


@pytest.mark.requires_tensorrt
@needs_tensorrt
def test_plugin_is_registered_with_the_ops_inputs_and_attributes():
    from tensorrt.plugin._lib import QDP_REGISTRY

    converters.register_all()
    definition = QDP_REGISTRY[plugin.OP]
    assert list(definition.input_tensor_names) == list(plugin.TENSOR_INPUTS)
    assert dict(definition.input_attrs) == plugin.ATTRIBUTES
    assert definition.aot_impl_func is not None and definition.impl_func is not None


@pytest.mark.requires_tensorrt
@needs_tensorrt
@pytest.mark.parametrize("x_dtype", [torch.float32, torch.float16])
def test_plugin_in_a_tensorrt_engine_matches_reference(x_dtype):
    torch.manual_seed(0)
    B, Ti, H, max_out = 2, 32, 64, 256
    x = torch.randn(B, Ti, H, device="cuda").to(x_dtype)
    durations = torch.randint(0, 12, (B, Ti), device="cuda")
    durations[0, 0] = max_out + 5  # crops
    engine = tensorrt_engine(_OneOp(max_out).cuda(), [x, durations])
    torch.testing.assert_close(
        engine(x, durations), regulate_length_reference(x, durations, max_out), **TOL[x_dtype]
    )
