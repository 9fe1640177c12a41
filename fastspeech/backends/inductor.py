"""Inductor: `torch.compile(fullgraph=True, dynamic=False)` and one CUDA graph replay per call.

The fast path verified on our H100. The engine file stores Inductor's compiled artifacts
(`torch.compiler.save_cache_artifacts`), so a second start re-runs `torch.compile` against a warm
cache instead of autotuning again (AOTInductor packages segfault on load on our GPU image, so
they are not the artifact).
"""

from __future__ import annotations

import contextlib
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
    out. Engines of one set can share a memory `pool` because they never run concurrently.
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
        self.graph.replay()
        return self.outputs


class InductorBackend(Backend):
    name = "inductor"

    def __init__(self, mode: str | None = "default", cuda_graphs: bool = True, pool=None):
        self.mode, self.cuda_graphs, self.pool = mode, cuda_graphs, pool

    def build(self, graph: EngineGraph, example: tuple[torch.Tensor, torch.Tensor]) -> tuple[Runner, bytes]:
        # `save_cache_artifacts` returns everything compiled in this process so far: without a fresh
        # record per build, the 10th engine of a process carried the nine before it in its file.
        with fresh_artifact_record():
            runner = self._compile(graph, example)
            artifacts = torch.compiler.save_cache_artifacts()
        return runner, artifacts[0] if artifacts else b""

    def load(self, graph: EngineGraph, example: tuple[torch.Tensor, torch.Tensor], payload: bytes) -> Runner:
        if payload:
            torch.compiler.load_cache_artifacts(payload)
        return self._compile(graph, example)

    def _compile(self, graph: EngineGraph, example: tuple[torch.Tensor, torch.Tensor]) -> Runner:
        # Every engine compiles the same forward code for another shape; Dynamo's default of 8
        # compiled variants per code object would refuse the 9th engine of a process.
        torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, 64)
        compiled = torch.compile(graph, fullgraph=True, dynamic=False, mode=self.mode)
        log.info("compiling with Inductor (mode=%s); the first call compiles", self.mode)
        with torch.inference_mode():
            compiled(*example)
        if self.cuda_graphs and example[0].is_cuda:
            return CudaGraphRunner(compiled, example, self.pool)
        return torch.inference_mode()(compiled)  # a call with grad enabled would recompile
