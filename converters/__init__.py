"""TensorRT plugins for our custom ops, and the Torch-TensorRT converters that insert them.

Follows:
- Torch-TensorRT `examples/dynamo/aot_plugin.py` and `auto_generate_converters.py` (pytorch/TensorRT):
  a hand-written `@trtp.register` descriptor plus `@trtp.aot_impl`, then
  `torch_tensorrt.dynamo.conversion.plugins.generate_plugin_converter(...)`
  (signature read in `py/torch_tensorrt/dynamo/conversion/plugins/_generate_plugin_converter.py`).
- TensorRT's `tensorrt.plugin` API docs (`trt_plugin_aot_impl`, `register`, `impl`, `KernelLaunchParams`,
  `SymIntExprs`): https://docs.nvidia.com/deeplearning/tensorrt/latest/_static/python-api/infer/tensorrt.plugin/
  and its source (NVIDIA/TensorRT `python/packaging/bindings_wheel/tensorrt/plugin/`).

One file per op (`converters/add_pos_enc.py`, `converters/regulate_length.py`, `converters/attention.py`,
`converters/conv1d.py`, `converters/linear.py`, `converters/griffin_lim_step.py`,
`converters/overlap_add_frames.py`; the last four are the exceptions: decompositions into ATen ops for
TensorRT's own layers, no plugin).
Importing this package needs no TensorRT: `register_all()` imports `tensorrt` and registers every
plugin and converter; the TensorRT backend calls it. What needs no TensorRT lives here and in each op file as plain Python, so it
is tested everywhere: shape rules, the op-argument -> plugin mapping, the AOT kernel's specialization
and launch grid, and the compile of our Triton kernels to PTX.

The AOT kernel ABI. TensorRT launches an AOT plugin's kernel with (input pointers, extra scalar args,
output pointers) and fills any further kernel parameter (Triton's trailing `global_scratch` /
`profile_scratch` pointers) with null. Our kernels take (inputs, output, then scalars), so we pass **no
extra args**: every scalar (shapes, strides, block sizes) is a `constexpr` baked into the PTX. Engines
have static shapes, so nothing is lost, and the kernel's runtime parameters are then exactly
(inputs..., output), the same under every argument order the Torch-TensorRT examples have used.
"""

from __future__ import annotations

import ctypes
import functools
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch

# Element types by torch dtype and by TensorRT `DataType` name (what `trtp.TensorDesc.dtype.name` gives).
_ELEMENT_TYPES: dict[Any, str] = {
    torch.float32: "fp32",
    torch.float16: "fp16",
    torch.bfloat16: "bf16",
    torch.int32: "i32",
    torch.int64: "i64",
    "FLOAT": "fp32",
    "HALF": "fp16",
    "BF16": "bf16",
    "INT32": "i32",
    "INT64": "i64",
}
TORCH_DTYPES = {
    "fp32": torch.float32,
    "fp16": torch.float16,
    "bf16": torch.bfloat16,
    "i32": torch.int32,
    "i64": torch.int64,
}
FLOAT_TYPES = ("fp32", "fp16", "bf16")
INT_TYPES = ("i32", "i64")


def element_type(dtype: Any) -> str:
    """Triton element type ("fp16", "i64", ...) of a torch dtype or a TensorRT DataType."""
    key = dtype if isinstance(dtype, torch.dtype) else getattr(dtype, "name", str(dtype).rsplit(".", 1)[-1])
    if key not in _ELEMENT_TYPES:
        raise ValueError(
            f"dtype {dtype} is not supported by our plugins; use float32/16, bfloat16, int32 or int64"
        )
    return _ELEMENT_TYPES[key]


def check_dtypes(op: str, float_input: tuple[str, Any], int_input: tuple[str, Any]) -> None:
    """The plugins take one float tensor (fp32/fp16/bf16) and one integer tensor (int32 or int64).

    Integer inputs reach the plugin in the graph's dtype (int64 from `model.py`): no cast layer is
    inserted; both kernels load either width and widen to int64 in registers.
    """
    (fname, fdtype), (iname, idtype) = float_input, int_input
    if element_type(fdtype) not in FLOAT_TYPES:
        raise ValueError(f"{op}: {fname} must be float32, float16 or bfloat16, got {fdtype}")
    if element_type(idtype) not in INT_TYPES:
        raise ValueError(f"{op}: {iname} must be int32 or int64, got {idtype}")


def cdiv(a: Any, b: int) -> Any:
    """Ceiling division for ints and for `trtp.ShapeExpr`s alike (both have `+` and `//` with an int)."""
    return (a + (b - 1)) // b


def static_shape(desc: Any) -> tuple[int, ...]:
    """Concrete dims of a `trtp.TensorDesc` at engine build time; our engines have static shapes only."""
    dims = (
        tuple(desc.shape)
        if desc.has_shape
        else tuple(-1 if e.is_fake or not e.is_constant else e.constant_value() for e in desc.shape_expr)
    )
    if any(int(d) < 1 for d in dims):
        raise ValueError(
            f"our plugins need static, non-empty shapes (engines are built per shape), got {dims}"
        )
    return tuple(int(d) for d in dims)


@dataclass(frozen=True)
class KernelConfig:
    """One AOT specialization of a Triton kernel.

    pointers: the kernel's runtime (pointer) parameters in declaration order -> Triton type ("*fp16");
    constexprs: every other kernel parameter -> its compile-time value (static engine shapes);
    grid: (x, y, z) programs, ints here; the aot_impl computes the same from TensorRT shape expressions.
    """

    pointers: Mapping[str, str]
    constexprs: Mapping[str, int | float]
    num_warps: int
    grid: tuple[int, int, int]


@dataclass(frozen=True)
class AotKernel:
    """What an `@trtp.aot_impl` hands TensorRT: entry name, PTX, threads per block, shared memory."""

    name: str
    ptx: str
    block: int
    shared: int


# ---------------------------------------------------------------------------------------------
# Triton -> PTX (plain Triton; no TensorRT, no GPU needed when a target is given)


def compile_ptx(kernel: Any, config: KernelConfig, target: Any = None) -> AotKernel:
    """Compile `kernel` for `config` to PTX with `triton.compile(ASTSource(...))`.

    target: a `triton.backends.compiler.GPUTarget`; None means the current GPU (at engine build time),
    and then the PTX ISA is capped at what the installed driver can JIT (TensorRT embeds PTX, and a
    Triton whose bundled ptxas is newer than the driver emits PTX the driver rejects at run time).
    Raises if the PTX does not have the ABI TensorRT launches: the pointer parameters first, no scalars.
    """
    key = (
        kernel,
        tuple(config.pointers.items()),
        tuple(sorted(config.constexprs.items())),
        config.num_warps,
        None if target is None else (target.backend, target.arch, target.warp_size),
    )
    return _compile_ptx(key, target)


@functools.lru_cache(maxsize=64)
def _compile_ptx(key: tuple, target: Any) -> AotKernel:
    import triton

    kernel, pointers, constexprs, num_warps, _ = key
    fn = _jit_function(kernel)
    pointers, constexprs = dict(pointers), dict(constexprs)
    if set(fn.arg_names) != set(pointers) | set(constexprs) or set(pointers) & set(constexprs):
        raise ValueError(
            f"{fn.__name__}: the specialization names {sorted(pointers)} + {sorted(constexprs)}, "
            f"the kernel declares {fn.arg_names}; update converters/ to the kernel's arguments"
        )
    # Every parameter in declaration order; the specialized ones typed "constexpr".
    signature = {name: pointers.get(name, "constexpr") for name in fn.arg_names}
    options: dict[str, Any] = {"num_warps": num_warps}
    if target is None:
        target = triton.runtime.driver.active.get_current_target()
        limit = _driver_ptx_version()
        if limit is not None:
            options["ptx_version"] = limit
    source = triton.compiler.ASTSource(fn=fn, signature=signature, constexprs=constexprs)
    compiled = triton.compile(source, target=target, options=options)
    md = compiled.metadata
    if getattr(md, "global_scratch_size", 0) or getattr(md, "profile_scratch_size", 0):
        raise RuntimeError(
            f"{fn.__name__} needs Triton scratch memory, which TensorRT's AOT launch does not provide"
        )
    ptx = compiled.asm["ptx"]
    params = ptx_parameters(ptx, md.name)
    n = len(pointers)
    if params[:n] != ["ptr"] * n or any(p != "ptr" for p in params[n:]):
        raise RuntimeError(
            f"{fn.__name__}: PTX parameters {params}; expected {n} pointers then only Triton's scratch pointers"
        )
    return AotKernel(md.name, ptx, md.num_warps * 32, md.shared)


def _jit_function(kernel: Any) -> Any:
    """The kernel as a `JITFunction`; under TRITON_INTERPRET=1 (CPU tests) Triton cannot compile for a GPU."""
    from triton.runtime.jit import JITFunction

    if not isinstance(kernel, JITFunction):
        raise TypeError(
            f"{getattr(kernel, '__name__', kernel)} is not a compilable Triton kernel (TRITON_INTERPRET=1?); "
            "compile AOT kernels in a process without TRITON_INTERPRET"
        )
    return kernel


def _driver_ptx_version() -> int | None:
    """Highest PTX ISA the CUDA driver can JIT, in Triton's `ptx_version` form (None when unknown)."""
    try:
        from triton.backends.nvidia.compiler import get_ptxas, ptx_get_version

        version = ctypes.c_int()
        if _libcuda().cuDriverGetVersion(ctypes.byref(version)) != 0:
            return None
        driver = ptx_get_version(f"{version.value // 1000}.{(version.value % 1000) // 10}")
        major, minor = torch.cuda.get_device_capability()
        try:  # never ask for more than Triton's own ptxas assembles
            ptxas = get_ptxas(major * 10 + minor)
        except TypeError:  # older Triton: get_ptxas() takes no arch
            ptxas = get_ptxas()
        return min(driver, ptx_get_version(ptxas.version))
    except Exception:  # noqa: BLE001 - a best-effort cap; Triton's default applies
        return None


def ptx_parameters(ptx: str, name: str) -> list[str]:
    """Kinds of the `.entry name(...)` parameters in PTX: "ptr" for `.u64 .ptr`, else the PTX type."""
    match = re.search(rf"\.entry\s+{re.escape(name)}\s*\((.*?)\)", ptx, re.DOTALL)
    if match is None:
        raise ValueError(f"no .entry {name} in the PTX")
    params = [p.split() for p in match.group(1).split(",") if p.strip()]  # [".param", ".u64", ".ptr", ...]
    return ["ptr" if ".ptr" in p else p[1].lstrip(".") for p in params]


# ---------------------------------------------------------------------------------------------
# Run-time helpers


class _CudaArray:
    def __init__(self, interface: dict):
        self.__cuda_array_interface__ = interface


_TYPESTR = {
    torch.float32: "<f4",
    torch.float16: "<f2",
    torch.int16: "<i2",
    torch.int32: "<i4",
    torch.int64: "<i8",
}


def as_torch(t: Any) -> torch.Tensor:
    """A torch view (no copy) of a TensorRT plugin tensor (`trtp.Tensor`) on the current CUDA device.

    Built from the tensor's pointer, shape and element strides, not from its `__cuda_array_interface__`,
    which TensorRT refuses for bfloat16 (viewed here through int16).
    """
    dtype = TORCH_DTYPES[element_type(t.dtype)]
    carrier = torch.int16 if dtype == torch.bfloat16 else dtype
    interface = {
        "shape": tuple(int(s) for s in t.shape),
        "typestr": _TYPESTR[carrier],
        "data": (int(t.data_ptr), False),
        "strides": tuple(int(s) * carrier.itemsize for s in t.strides),
        "version": 3,
    }
    tensor = torch.as_tensor(_CudaArray(interface), device="cuda")
    return tensor.view(dtype) if carrier is not dtype else tensor


@functools.cache
def _libcuda() -> ctypes.CDLL:
    lib = ctypes.CDLL("libcuda.so.1")
    lib.cuLaunchKernel.argtypes = [ctypes.c_void_p] + [ctypes.c_uint] * 7 + [ctypes.c_void_p] * 3
    return lib


def launch_aot_kernel(kernel: AotKernel, grid: Sequence[int], tensors: Sequence[torch.Tensor]) -> None:
    """Launch an AOT kernel the way TensorRT's AOT plugin path does, on torch's current stream.

    The driver JIT-compiles the PTX, the entry is found by name, block = `kernel.block` threads and
    `kernel.shared` bytes of dynamic shared memory, and the parameters are the tensors' pointers
    (inputs, then outputs) followed by nulls for the rest. This checks the artifact TensorRT would
    embed on a GPU that has no TensorRT (tests/converters); the engine never calls it.
    """
    lib = _libcuda()
    torch.cuda.current_stream().synchronize()  # also makes torch's context current on this thread
    module, function = ctypes.c_void_p(), ctypes.c_void_p()
    _check(
        lib.cuModuleLoadData(ctypes.byref(module), ctypes.c_char_p(kernel.ptx.encode() + b"\0")),
        "cuModuleLoadData",
    )
    try:
        _check(
            lib.cuModuleGetFunction(ctypes.byref(function), module, kernel.name.encode()),
            "cuModuleGetFunction",
        )
        if kernel.shared > 48 * 1024:  # CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES
            _check(lib.cuFuncSetAttribute(function, 8, kernel.shared), "cuFuncSetAttribute")
        n_params = len(ptx_parameters(kernel.ptx, kernel.name))
        values = [ctypes.c_void_p(t.data_ptr()) for t in tensors]
        values += [ctypes.c_void_p(0) for _ in range(n_params - len(values))]
        params = (ctypes.c_void_p * n_params)(*[ctypes.addressof(v) for v in values])
        gx, gy, gz = (int(g) for g in grid)
        stream = torch.cuda.current_stream().cuda_stream
        _check(
            lib.cuLaunchKernel(function, gx, gy, gz, kernel.block, 1, 1, kernel.shared, stream, params, None),
            "cuLaunchKernel",
        )
        torch.cuda.current_stream().synchronize()
    finally:
        lib.cuModuleUnload(module)


def _check(status: int, what: str) -> None:
    if status != 0:
        raise RuntimeError(f"{what} failed with CUDA driver error {status}")


# ---------------------------------------------------------------------------------------------
# Registration (imports TensorRT)


def register_decomposition(op: torch._ops.OpOverload, fn: Any) -> None:
    """Add `fn` as `op`'s decomposition to Torch-TensorRT's registry (idempotent; imports torch_tensorrt).

    The lowering mechanism Torch-TensorRT documents for "a higher-level op replaced by an equivalent
    subgraph of Core ATen ops" (https://docs.pytorch.org/TensorRT/contributors/lowering.html).
    """
    from torch_tensorrt.dynamo.lowering._decomposition_groups import TORCH_TRT_DECOMPOSITIONS
    from torch_tensorrt.dynamo.lowering._decompositions import register_torch_trt_decomposition

    if op not in TORCH_TRT_DECOMPOSITIONS:  # torch's registry refuses a second registration
        register_torch_trt_decomposition(op, registry=TORCH_TRT_DECOMPOSITIONS)(fn)


@dataclass(frozen=True)
class Decomposition:
    """An op lowered for TensorRT by a plain PyTorch function of ATen ops instead of a plugin
    (conv1d, linear, griffin_lim_step, overlap_add_frames): what each such converter module exposes."""

    name: str  # the op's name in the `fastspeech` namespace
    fn: Any  # its replacement, with the op's signature

    def op_overload(self) -> torch._ops.OpOverload:
        """The overload that appears in exported graphs (`fastspeech.<name>.default`)."""
        return getattr(torch.ops.fastspeech, self.name).default

    def table(self) -> dict[torch._ops.OpOverload, Any]:
        """{op: its replacement}, the form `ExportedProgram.run_decompositions` and Torch-TensorRT take."""
        return {self.op_overload(): self.fn}

    def register(self) -> None:
        """Add the decomposition to Torch-TensorRT's registry (idempotent; imports torch_tensorrt)."""
        register_decomposition(self.op_overload(), self.fn)


@functools.cache
def register_all() -> None:
    """Register every plugin (shape descriptor, AOT and JIT implementations) and its converter, and
    the decompositions of conv1d, linear, griffin_lim_step and overlap_add_frames.

    Imports `tensorrt` and `torch_tensorrt`; idempotent. Called by `fastspeech.backends.tensorrt`
    before compiling and before loading an engine.
    """
    from converters import (
        add_pos_enc,
        attention,
        conv1d,
        griffin_lim_step,
        linear,
        overlap_add_frames,
        regulate_length,
    )

    add_pos_enc.register()
    regulate_length.register()
    attention.register()
    conv1d.register()
    linear.register()
    griffin_lim_step.register()
    overlap_add_frames.register()
