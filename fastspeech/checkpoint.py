"""Load and save FastSpeech checkpoints: DLE's format, bare state dicts and our own.

DLE's trainer writes `{'step', 'model', 'optim'}` with every key prefixed `module.` (it trained
under `nn.DataParallel`). We accept that, a bare state dict (prefixed or not) and our own format
(`{'format': 'fastspeech-trt', 'hparams', 'model'}`), and load strictly: any missing, unexpected or
misshaped tensor is a `CheckpointError` that lists them and says which hparams the file looks like.
"""

from __future__ import annotations

import logging
import os
import re
from pathlib import Path
from typing import Any

import torch

import kernels
from fastspeech.errors import CheckpointError
from fastspeech.model import FastSpeech

log = logging.getLogger(__name__)

OUR_FORMAT = "fastspeech-trt"
_LIST_AT_MOST = 6  # tensor names listed per category in an error message


def read_state_dict(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read a checkpoint file -> (state dict without `module.` prefixes, metadata such as step)."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}; pass checkpoint=PATH to an existing file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - pickle, zip and torch errors all mean the same here
        raise CheckpointError(
            f"cannot read checkpoint {path} ({type(exc).__name__}); is it a torch.save file?"
        ) from None
    if not isinstance(obj, dict):
        raise CheckpointError(f"checkpoint {path} holds a {type(obj).__name__}, not a state dict")
    meta = {k: v for k, v in obj.items() if k in ("step", "format", "hparams")}
    state = obj.get("model", obj)
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"checkpoint {path} has no tensors under 'model' (DLE format) or at top level")
    return {re.sub(r"^module\.", "", k): v for k, v in state.items()}, meta


def hparams_from_state_dict(state: dict[str, torch.Tensor]) -> dict[str, int]:
    """Infer the model hparams a DLE state dict was trained with, from its tensor shapes.

    Everything is recoverable because DLE fixes d_k = d_v = 64: heads = linear rows / (3 * 64).
    """

    def layers(side: str) -> int:
        found = {int(m.group(1)) for k in state if (m := re.match(rf"{side}\.layer_stack\.(\d+)\.", k))}
        return len(found)

    def side_hparams(side: str) -> dict[str, int]:
        first = f"{side}.layer_stack.0"
        return {
            f"{side}_n_layer": layers(side),
            f"{side}_head": state[f"{first}.slf_attn.linear.weight"].shape[0] // (3 * 64),
            f"{side}_conv1d_filter_size": state[f"{first}.pos_ffn.w_1.weight"].shape[0],
        }

    try:
        dp = "length_regulator.duration_predictor"
        return {
            "n_symbols": state["word_emb.weight"].shape[0],
            "d_model": state["word_emb.weight"].shape[1],
            "max_seq_len": state["phoneme_side.position.weight"].shape[0] - 1,
            **side_hparams("phoneme_side"),
            **side_hparams("mel_side"),
            "fft_conv1d_kernel": state["phoneme_side.layer_stack.0.pos_ffn.w_1.weight"].shape[2],
            "duration_predictor_filter_size": state[f"{dp}.conv1d_1.weight"].shape[0],
            "duration_predictor_kernel_size": state[f"{dp}.conv1d_1.weight"].shape[2],
            "num_mels": state["mel_linear.weight"].shape[0],
        }
    except (KeyError, IndexError):
        return {}


def check_state_dict(model: FastSpeech, state: dict[str, torch.Tensor], source: str) -> None:
    """Raise `CheckpointError` listing every missing, unexpected and misshaped tensor."""
    expected = model.state_dict()
    missing = [k for k in expected if k not in state]
    unexpected = [k for k in state if k not in expected]
    misshaped = [
        f"{k} {tuple(state[k].shape)} vs {tuple(v.shape)}"
        for k, v in expected.items()
        if k in state and state[k].shape != v.shape
    ]
    if not (missing or unexpected or misshaped):
        return
    parts = []
    for label, names in (("missing", missing), ("unexpected", unexpected), ("misshaped", misshaped)):
        if names:
            shown = ", ".join(names[:_LIST_AT_MOST]) + (", ..." if len(names) > _LIST_AT_MOST else "")
            parts.append(f"{len(names)} {label} ({shown})")
    inferred = hparams_from_state_dict(state)
    differ = {k: v for k, v in inferred.items() if getattr(model.cfg, k) != v}
    fix = (
        "it looks trained with " + ", ".join(f"model.{k}={v}" for k, v in differ.items())
        if differ
        else "is it a FastSpeech checkpoint?"
    )
    raise CheckpointError(f"checkpoint {source} does not match the model: {'; '.join(parts)}; {fix}")


def load_checkpoint(model: FastSpeech, path: str | os.PathLike) -> dict[str, Any]:
    """Strictly load a checkpoint file into `model`; returns its metadata (step, format)."""
    state, meta = read_state_dict(path)
    check_state_dict(model, state, str(path))
    model.load_state_dict(state, strict=True)
    _warn_if_positions_differ(model, str(path))
    log.info(
        "loaded checkpoint %s (%s, step %s)", path, meta.get("format", "DLE/state dict"), meta.get("step")
    )
    return meta


def save_checkpoint(model: FastSpeech, path: str | os.PathLike, fmt: str = "dle", step: int = 0) -> None:
    """Save as DLE does (`{'step','model','optim'}`, `module.` prefix) or in our format (with hparams)."""
    state = {k: v.detach().cpu() for k, v in model.state_dict().items()}
    if fmt == "dle":
        obj: dict[str, Any] = {
            "step": step,
            "model": {f"module.{k}": v for k, v in state.items()},
            "optim": {},
        }
    elif fmt == "ours":
        hparams = {k: getattr(model.cfg, k) for k in model.cfg.__dataclass_fields__}
        obj = {"format": OUR_FORMAT, "step": step, "hparams": hparams, "model": state}
    else:
        raise ValueError(f"unknown checkpoint format {fmt!r}; use 'dle' or 'ours'")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(f"{path}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _warn_if_positions_differ(model: FastSpeech, source: str) -> None:
    """Our add_pos_enc op computes DLE's sinusoid on the fly; say so if a checkpoint's table differs."""
    for side in (model.phoneme_side, model.mel_side):
        table = side.position.weight
        expected = kernels.sinusoid_table(table.shape[0], table.shape[1]).to(table)
        if not torch.allclose(table, expected, atol=1e-4):
            log.warning(
                "checkpoint %s has a position table that is not DLE's sinusoid; the engines compute "
                "the sinusoid and ignore the stored table",
                source,
            )
            return
