"""Inductor: `torch.compile(fullgraph=True, dynamic=False)` and one CUDA graph replay per call.

The fast path verified on our H100. The engine file stores Inductor's compiled artifacts
(`torch.compiler.save_cache_artifacts`), so a second start re-runs `torch.compile` against a warm
cache instead of autotuning again (AOTInductor packages segfault on load on our GPU image, so
they are not the artifact).

Inductor switches (`conf/backend/auto.yaml`, `inductor:`) are applied with
`torch._inductor.config.patch` around each compile only, never globally, at build and at load alike,
so a loaded engine always runs with the options asked for. The engine file's payload records them; a
file built with other options still loads (Inductor then recompiles instead of using its cache) and
the log says so.
"""

from __future__ import annotations

import contextlib
import json
import logging

import torch

from fastspeech.backends.base import Backend
from fastspeech.graph import EngineGraph, Runner

log = logging.getLogger(__name__)

_warmup_stream: torch.cuda.Stream | None = None


def fresh_artifact_record() -> contextlib.AbstractContextManager:
    """A context in which `torch.compiler.save_cache_artifacts` sees only what compiles inside it.

    torch has no public call for this; its cache-artifact manager's `with_fresh_cache` does it (torch
    2.7+). Without it an engine file is still correct, only larger.
    """
    try:
        from torch.compiler._cache import CacheArtifactManager

        return CacheArtifactManager.with_fresh_cache()
    except (ImportError, AttributeError):
        return contextlib.nullcontext()


def warmup_stream() -> torch.cuda.Stream:
    """One side stream for every engine's warm-up, created once per process.

    cuBLAS keeps a workspace per stream it has run on (32 MiB on Hopper) for the life of the
    process; a fresh stream per engine cost a 4-engine set ~96 MiB of GPU memory for nothing.
    (Captures already share one stream: `torch.cuda.graph`'s default capture stream.)
    """
    global _warmup_stream
    if _warmup_stream is None:
        _warmup_stream = torch.cuda.Stream()
    return _warmup_stream


class CudaGraphRunner:
    """Static input/output buffers around one captured CUDA graph; a call copies in and replays.

    The outputs are the graph's own buffers, overwritten by the next call: the engine copies them
    out. Engines of one lane of a set share a memory `pool` because their calls run one after another
    (`pipeline.set_lanes`).
    `inputs` are the static input buffers: the engine copies a call's staged host inputs straight
    into them and calls `replay()` (no device-to-device copy); `__call__` is that for device tensors.
    """

    def __init__(self, fn: Runner, example: tuple[torch.Tensor, ...], pool=None):
        self.fn = fn  # keeps the compiled graph and its weights alive: the CUDA graph reads them by address
        self.inputs = tuple(t.clone() for t in example)
        side = warmup_stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.inference_mode(), torch.cuda.stream(side):
            for _ in range(2):  # warm-up outside the capture (allocations, lazy inits)
                fn(*self.inputs)
        torch.cuda.current_stream().wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.inference_mode(), torch.cuda.graph(self.graph, pool=pool):
            self.outputs = fn(*self.inputs)

    @torch.inference_mode()
    def __call__(self, tokens: torch.Tensor, alpha: torch.Tensor) -> tuple[torch.Tensor, ...]:
        self.inputs[0].copy_(tokens)
        self.inputs[1].copy_(alpha)
        return self.replay()

    def replay(self) -> tuple[torch.Tensor, ...]:
        """Run the graph on what `inputs` hold now -> the output buffers."""
        self.graph.replay()
        return self.outputs


# Backend option -> `torch._inductor.config` key. Measured on the project's engine (fp16, B=1, i128/o1024):
# H200 before the attention op (GPU_NOTES.md) 0.675 ms default, 0.612 enable_pdl, 0.638 combo_kernels;
# H100 with it (docs/kernels_history.md) 0.606 neither, 0.661 enable_pdl alone, 0.606 both.
INDUCTOR_SWITCHES = {
    "enable_pdl": "triton.enable_pdl",  # programmatic dependent launch (Hopper): overlaps kernel prologues
    "combo_kernels": "combo_kernels",  # independent small kernels combined into one launch
    # Weights become constants (a CPU engine built with it equals eager). It was meant to fold the FFN's
    # per-call weight permute, which the tap-major weight storage (model.tap_major) now removes at the
    # source. Inductor's FX cache skips frozen graphs: the engine file holds no artifacts and a load
    # compiles afresh. Off; never measured on a GPU.
    "freezing": "freezing",
}
_PAYLOAD_MAGIC = b"FASTSPEECH-INDUCTOR 1\n"


def inductor_config_patch(switches: dict[str, bool]) -> dict[str, bool]:
    """The `torch._inductor.config.patch` mapping for our switches, minus those this torch lacks (logged)."""
    import torch._inductor.config as inductor_config

    patch = {}
    for option, value in switches.items():
        key = INDUCTOR_SWITCHES[option]
        owner = inductor_config
        *parents, leaf = key.split(".")
        for part in parents:
            owner = getattr(owner, part, None)
        if owner is None or not hasattr(owner, leaf):
            log.warning(
                "torch %s has no Inductor switch %s: option %s ignored", torch.__version__, key, option
            )
            continue
        patch[key] = bool(value)
    return patch


class InductorBackend(Backend):
    name = "inductor"

    def __init__(
        self,
        mode: str | None = "default",
        cuda_graphs: bool = True,
        pool=None,
        enable_pdl: bool = True,
        combo_kernels: bool = True,
        freezing: bool = False,
    ):
        self.mode, self.cuda_graphs, self.pool = mode, cuda_graphs, pool
        self.switches = {"enable_pdl": enable_pdl, "combo_kernels": combo_kernels, "freezing": freezing}

    @property
    def options(self) -> dict:
        """What the compiled code depends on besides the graph: recorded in the engine file's payload."""
        return {"mode": self.mode, **self.switches}

    def build(self, graph: EngineGraph, example: tuple[torch.Tensor, torch.Tensor]) -> tuple[Runner, bytes]:
        # `save_cache_artifacts` returns everything compiled in this process so far: without a fresh
        # record per build, the 10th engine of a process carried the nine before it in its file.
        with fresh_artifact_record():
            runner = self._compile(graph, example)
            artifacts = torch.compiler.save_cache_artifacts()
        header = json.dumps(self.options, sort_keys=True).encode()
        return runner, _PAYLOAD_MAGIC + header + b"\n" + (artifacts[0] if artifacts else b"")

    def load(self, graph: EngineGraph, example: tuple[torch.Tensor, torch.Tensor], payload: bytes) -> Runner:
        stored, artifacts = split_payload(payload)
        if stored is not None and stored != json.loads(json.dumps(self.options)):
            log.warning(
                "engine file built with Inductor options %s, loading with %s: Inductor recompiles "
                "(its cached artifacts do not apply); force_build=true stores the new ones",
                stored,
                self.options,
            )
        if artifacts:
            torch.compiler.load_cache_artifacts(artifacts)
        return self._compile(graph, example)

    def _compile(self, graph: EngineGraph, example: tuple[torch.Tensor, torch.Tensor]) -> Runner:
        # Every engine compiles the same forward code for another shape; Dynamo's default of 8
        # compiled variants per code object would refuse the 9th engine of a process.
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        patch = inductor_config_patch(self.switches)
        log.info("compiling with Inductor (mode=%s, %s); the first call compiles", self.mode, patch)
        # torch.compile is lazy: the patch covers the calls that compile (the first, and the warm-ups).
        with torch._inductor.config.patch(patch):
            compiled = torch.compile(graph, fullgraph=True, dynamic=False, mode=self.mode)
            with torch.inference_mode():
                compiled(*example)
            if self.cuda_graphs and example[0].is_cuda:
                return CudaGraphRunner(compiled, example, self.pool)
        return torch.inference_mode()(compiled)  # a call with grad enabled would recompile


def split_payload(payload: bytes) -> tuple[dict | None, bytes]:
    """An engine payload -> (the Inductor options it was built with, or None for older files; artifacts)."""
    if not payload.startswith(_PAYLOAD_MAGIC):
        return None, payload
    header, _, artifacts = payload[len(_PAYLOAD_MAGIC) :].partition(b"\n")
    return json.loads(header), artifacts
