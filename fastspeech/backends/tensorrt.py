"""TensorRT through Torch-TensorRT: the whole `EngineGraph` as one TensorRT engine, our two ops as plugins.

Follows the Torch-TensorRT docs: `torch_tensorrt.compile(..., ir="dynamo")`
(https://docs.pytorch.org/TensorRT/py_api/torch_tensorrt.html) and saving/loading compiled programs
(https://docs.pytorch.org/TensorRT/user_guide/saving_models.html: `torch_tensorrt.save(...,
output_format="exported_program", arg_inputs=...)`, `torch_tensorrt.load(path).module()`); the plugins
and converters are `converters/` (Torch-TensorRT `examples/dynamo/aot_plugin.py`).

Not run anywhere yet: TensorRT is not installable on our machines (see README, "TensorRT"). Targets
Torch-TensorRT 2.13 (torch 2.13, TensorRT 11). Static shapes only: one engine per `EngineSpec`, like
the seed's. Precision comes from the graph's dtype (the engine casts the model before building;
Torch-TensorRT 2.13 ignores `enabled_precisions`). The engine file stores the bytes of the saved
ExportedProgram; our plugins are AOT (PTX inside the engine), so loading needs no Python kernels, but
`load` registers them anyway so a JIT-plugin engine would load too. TensorRT has no int16 tensors:
the engine outputs the wav as float32 and the runner makes it 16-bit PCM after it (`pcm16_outputs`),
so callers see the same outputs as from the other backends.
"""

from __future__ import annotations

import logging
import tempfile
from pathlib import Path

import torch

from fastspeech.backends.base import Backend
from fastspeech.errors import ConfigError
from fastspeech.graph import EngineGraph, Runner, pcm16_outputs

log = logging.getLogger(__name__)


class TensorRTBackend(Backend):
    name = "tensorrt"

    def __init__(self, workspace_size_gb: float = 8, **_):
        self.workspace_size = int(workspace_size_gb * 2**30)

    def check_available(self, device: torch.device) -> None:
        from fastspeech.backends import tensorrt_installed

        if torch.device(device).type != "cuda":
            raise ConfigError(
                f"backend=tensorrt needs a CUDA GPU, got device={device}; use backend=auto or eager"
            )
        if not tensorrt_installed():
            raise ConfigError(
                "backend=tensorrt needs TensorRT and Torch-TensorRT, which are not installed: "
                "pip install -e '.[trt]' in this checkout on a CUDA machine, or use backend=auto"
            )

    def build(self, graph: EngineGraph, example: tuple[torch.Tensor, torch.Tensor]) -> tuple[Runner, bytes]:
        import torch_tensorrt

        import converters

        converters.register_all()
        log.info(
            "building a TensorRT engine (workspace %.1f GiB); this takes minutes", self.workspace_size / 2**30
        )
        graph.pcm16 = False  # no int16 in TensorRT: the wav's cast runs after the engine
        with torch.cuda.device(example[0].device):
            module = torch_tensorrt.compile(
                graph,
                ir="dynamo",
                inputs=[torch_tensorrt.Input(shape=tuple(t.shape), dtype=t.dtype) for t in example],
                min_block_size=1,
                require_full_compilation=True,
                workspace_size=self.workspace_size,
            )
            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "engine.ep"
                torch_tensorrt.save(
                    module, str(path), output_format="exported_program", arg_inputs=list(example)
                )
                payload = path.read_bytes()
        return pcm16_outputs(module), payload

    def load(self, graph: EngineGraph, example: tuple[torch.Tensor, torch.Tensor], payload: bytes) -> Runner:
        import torch_tensorrt

        import converters

        converters.register_all()
        with tempfile.TemporaryDirectory() as tmp, torch.cuda.device(example[0].device):
            path = Path(tmp) / "engine.ep"
            path.write_bytes(payload)
            return pcm16_outputs(torch_tensorrt.load(str(path)).module())
