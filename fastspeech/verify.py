"""Verify an engine activation by activation against eager PyTorch (the seed's `verify_trt.py`).

    python run.py mode=verify engine=i64_o512 precision=fp16 text="It just works."

The optimized side is a debug build of the same engine (`EngineSpec(debug=True)`, file name ending
in `.debug.engine`): the backend compiles the same graph with every named activation the model
records as an extra output, since no backend can dump its layers (TensorRT has no per-layer dump).
The reference side is eager PyTorch in float32 on the same weights and the same padded input
(engine batch x max_in, To = max_out; every batch row holds a text, the texts repeated to fill it).

With a vocoder in the engine (the product path: `mode=verify` builds the configured one), its
stages follow the model's (`vocoder.magnitude` for Griffin-Lim, `vocoder.conv_pre`/`vocoder.ups.N`
for HiFi-GAN, `vocoder.spect`/`vocoder.flow.N` for WaveGlow) and end with `vocoder.wav`. The vocoder
is checked as a stage: the reference runs a float32 copy of it on the *engine's* mel, as durations
are pinned below. Fed the reference mel instead, Griffin-Lim's 32 phase-retrieval iterations turn an
fp16 mel difference of 1e-3 into other phases, and samples 0.36 apart (measured on an H200), although
both wavs have the same spectrum: a sample-wise comparison would then say nothing about the engine.

What is compared, per activation in forward order (`emb` ... `out.seq`, then `vocoder.*`):
- Whole tensors, padding rows included: both sides see the same padded input, so padding rows must
  agree too (the model zeroes them where it matters; inside attention they are finite leftovers).
- Float activations: threshold tau = atol + rtol * max|ref| (`conf/precision/*.yaml`); an element
  mismatches when |opt - ref| > tau (NaN always mismatches); the activation diverges when any
  element mismatches, i.e. when max|opt - ref| > tau. Also reported: ||opt - ref|| / ||ref||.
- `length_regulator.dur` (integer frames per token): exact. One exception, because rounding is a
  step: a duration that differs by one frame where the reference's unrounded value lies within
  atol * (frames + alpha) of the rounding boundary (the error in frames that an error of atol in the
  predicted log-duration makes) is a legitimate flip, counted apart and not a divergence; the
  reference is then re-run with its durations pinned to the engine's, so that the mel side is
  compared on the same frames. Any other difference diverges.
Rows follow the forward order, except that `length_regulator.dur` comes before the expanded
`length_regulator.seq` (it is computed first). The first diverging row is the one named; everything
after it usually diverges too.

The same path serves every backend (eager with our Triton ops, Inductor, TensorRT where installed).
`verify.perturb=PARAM` adds noise to one weight in the engine's copy only (before it is built, so
TensorRT bakes it in): verify must then fail at the first activation that weight feeds. It exists
to test verify itself.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch

from fastspeech.engine import Engine, EngineSpec, load_or_build, model_on
from fastspeech.errors import ConfigError, FastSpeechError
from fastspeech.model import FastSpeech
from fastspeech.vocoder.base import Vocoder

log = logging.getLogger(__name__)

DURATIONS = "length_regulator.dur"
EXPANDED = "length_regulator.seq"


class VerifyError(FastSpeechError):
    """An engine whose activations diverge from eager PyTorch beyond the precision's tolerance."""


@dataclass(frozen=True)
class Tolerance:
    """An activation diverges when max |opt - ref| > atol + rtol * max |ref|."""

    atol: float
    rtol: float


@dataclass(frozen=True)
class ActivationDiff:
    """One row of the report: how far the engine's activation is from the reference's."""

    name: str
    shape: tuple[int, ...]
    max_abs: float  # max |opt - ref| (inf for a NaN, or for mismatched shapes)
    rel: float  # ||opt - ref|| / ||ref||
    mismatches: int  # elements over the threshold (durations: frames that differ, flips excluded)
    total: int
    threshold: float  # tau = atol + rtol * max|ref| (0 for durations)
    note: str = ""

    @property
    def diverged(self) -> bool:
        return self.mismatches > 0


@dataclass
class VerifyReport:
    """All rows in forward order, and the verdict."""

    engine: str
    tol: Tolerance
    rows: list[ActivationDiff] = field(default_factory=list)

    @property
    def first_divergence(self) -> ActivationDiff | None:
        return next((row for row in self.rows if row.diverged), None)

    @property
    def passed(self) -> bool:
        return self.first_divergence is None

    def table(self) -> str:
        width = max(len("activation"), *(len(r.name) for r in self.rows))
        lines = [f"{'activation':<{width}}  {'shape':<16} {'max abs err':>11} {'rel err':>9}  mismatches"]
        for r in self.rows:
            shape = "x".join(map(str, r.shape))
            flag = "  DIVERGED" if r.diverged else ""
            note = f"  ({r.note})" if r.note else ""
            lines.append(
                f"{r.name:<{width}}  {shape:<16} {r.max_abs:>11.3e} {r.rel:>9.2e}  "
                f"{r.mismatches}/{r.total}{flag}{note}"
            )
        return "\n".join(lines)

    def summary(self) -> str:
        bad = self.first_divergence
        if bad is None:
            return (
                f"verify: PASS ({len(self.rows)} activations of engine {self.engine} within "
                f"atol={self.tol.atol:g} + rtol={self.tol.rtol:g} * max|ref| of eager fp32)"
            )
        n_bad = sum(r.diverged for r in self.rows)
        return (
            f"verify: FAIL (first divergence: {bad.name}): max abs err {bad.max_abs:.3e} > {bad.threshold:.3e} "
            f"allowed, {bad.mismatches}/{bad.total} elements; {n_bad} of {len(self.rows)} activations diverge "
            f"(engine {self.engine} vs eager fp32)"
        )


# ---------------------------------------------------------------------------------------------
# Comparing


def compare(name: str, opt: torch.Tensor, ref: torch.Tensor, tol: Tolerance) -> ActivationDiff:
    """One float activation: opt (engine, any dtype) against ref (eager float32), whole tensors."""
    shape = tuple(ref.shape)
    if tuple(opt.shape) != shape:
        return ActivationDiff(
            name, shape, math.inf, math.inf, ref.numel(), ref.numel(), 0.0, f"engine shape {tuple(opt.shape)}"
        )
    a, b = opt.detach().float(), ref.detach().float().to(opt.device)
    err = (a - b).abs()
    threshold = tol.atol + tol.rtol * float(b.abs().max()) if b.numel() else tol.atol
    mismatches = int((~(err <= threshold)).sum())  # NaN compares False: a mismatch
    max_abs = float(err.max()) if err.numel() else 0.0
    if math.isnan(max_abs) or not bool(torch.isfinite(a).all()):
        max_abs = math.inf
    ref_norm = float(b.norm())
    diff_norm = float((a - b).norm())
    rel = diff_norm / ref_norm if ref_norm > 0 else (0.0 if diff_norm == 0 else math.inf)
    return ActivationDiff(name, shape, max_abs, rel, mismatches, b.numel(), threshold)


def compare_durations(
    opt: torch.Tensor, ref: torch.Tensor, ref_frames: torch.Tensor, alphas: torch.Tensor, tol: Tolerance
) -> tuple[ActivationDiff, torch.Tensor]:
    """Integer durations: exact, except legitimate one-frame flips at a rounding boundary.

    -> (the row, a bool mask of the flips). ref_frames (B, Ti) is the reference's unrounded value.
    """
    a, b = opt.long().to(ref.device), ref.long()
    differ = a != b
    boundary = torch.minimum(a, b).double() + 0.5
    margin = tol.atol * (ref_frames.double() + alphas.double()[:, None])
    flips = differ & ((a - b).abs() == 1) & ((ref_frames.double() - boundary).abs() <= margin)
    mismatches = int((differ & ~flips).sum())
    n_flips = int(flips.sum())
    err = (a - b).abs().double()
    ref_norm = float(b.double().norm())
    rel = float(err.norm()) / ref_norm if ref_norm > 0 else (0.0 if not differ.any() else math.inf)
    note = f"{n_flips} one-frame flip(s) at a rounding boundary: allowed, reference pinned" if n_flips else ""
    row = ActivationDiff(
        DURATIONS,
        tuple(b.shape),
        float(err.max()) if err.numel() else 0.0,
        rel,
        mismatches,
        b.numel(),
        0.0,
        note,
    )
    return row, flips


# ---------------------------------------------------------------------------------------------
# The two sides


def reference_activations(
    model: FastSpeech,
    tokens: torch.Tensor,
    alphas: torch.Tensor,
    max_out: int,
    pinned: torch.Tensor | None = None,
) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
    """Eager forward of `model` with every activation recorded ->
    (acts, unrounded frames (B, Ti)).

    `pinned` (B, Ti) integer durations replace the predicted ones: the duration predictor's output
    is overridden with log(d / alpha + 1), which `LengthRegulator` rounds back to exactly d.
    """
    captured: dict[str, torch.Tensor] = {}

    def hook(module, inputs, log_dur):
        # As LengthRegulator.forward: frames = clamp(exp(log_dur) - 1, 0) * alpha, before rounding.
        captured["frames"] = torch.clamp_min(torch.exp(log_dur.float()) - 1, 0) * alphas.float()[:, None]
        if pinned is not None:
            safe = torch.where(alphas > 0, alphas.float(), torch.ones_like(alphas.float()))[:, None]
            return torch.log(pinned.float() / safe + 1)

    handle = model.length_regulator.duration_predictor.register_forward_hook(hook)
    acts: dict[str, torch.Tensor] = {}
    try:
        with torch.no_grad():
            model(tokens, alphas, max_out, acts)
    finally:
        handle.remove()
    return acts, captured["frames"]


def verify_engine(
    engine: Engine,
    reference: FastSpeech,
    token_ids: Sequence[Sequence[int]],
    alpha: float,
    tol: Tolerance,
    vocoder: Vocoder | None = None,
) -> VerifyReport:
    """Run a debug engine and `reference` (eager, float32, on the engine's device; then `vocoder`,
    float32, when the engine has one) on the same padded input; compare every activation the engine
    returns."""
    if not engine.activation_names:
        raise ConfigError(
            f"engine {engine.spec.name} is not a debug build; build it with EngineSpec(debug=True)"
        )
    tokens, alphas = engine.pad(token_ids, alpha)
    outputs = engine.run(tokens, alphas)
    opt = dict(zip(engine.activation_names, outputs[5:]))
    ref, frames = reference_activations(reference, tokens, alphas, engine.spec.max_out)
    dur_row, flips = None, None
    if DURATIONS in opt:
        dur_row, flips = compare_durations(opt[DURATIONS], ref[DURATIONS], frames, alphas, tol)
        if flips.any():
            log.info(
                "%d duration flip(s) at a rounding boundary; re-running the reference with the engine's "
                "durations",
                int(flips.sum()),
            )
            ref, _ = reference_activations(
                reference,
                tokens,
                alphas,
                engine.spec.max_out,
                pinned=torch.where(flips, opt[DURATIONS].long(), ref[DURATIONS]),
            )
    if vocoder is not None:  # a stage of its own, on the engine's mel (see the module docstring)
        with torch.no_grad():
            vocoder(outputs[0].float(), outputs[1], ref)
    report = VerifyReport(engine.spec.name, tol)
    order = list(engine.activation_names)
    if DURATIONS in order and EXPANDED in order:  # recorded after the expansion, computed before it
        order.remove(DURATIONS)
        order.insert(order.index(EXPANDED), DURATIONS)
    for name in order:
        if name == DURATIONS:
            report.rows.append(dur_row)
        elif name not in ref:
            report.rows.append(
                ActivationDiff(
                    name,
                    tuple(opt[name].shape),
                    math.inf,
                    math.inf,
                    1,
                    1,
                    0.0,
                    "the eager model records no such activation",
                )
            )
        else:
            report.rows.append(compare(name, opt[name], ref[name], tol))
    return report


def perturb_weight(model: FastSpeech, name: str, scale: float = 1.0, seed: int = 0) -> None:
    """Add Gaussian noise of `scale` x the parameter's RMS to one parameter of `model`, in place."""
    params = dict(model.named_parameters())
    if name not in params:
        raise ConfigError(
            f"verify.perturb={name}: the model has no such parameter; "
            "name one from its state dict, e.g. phoneme_side.layer_stack.0.pos_ffn.w_2.weight"
        )
    weight = params[name]
    noise = torch.randn(weight.shape, generator=torch.Generator().manual_seed(seed))
    rms = float(weight.detach().float().pow(2).mean().sqrt()) or 1.0
    with torch.no_grad():
        weight.add_((noise * scale * rms).to(weight))
    log.warning("verify.perturb: added noise (%.3g x RMS) to %s in the engine's copy only", scale, name)


def verify(
    model: FastSpeech,
    spec: EngineSpec,
    token_ids: Sequence[Sequence[int]],
    tol: Tolerance,
    engine_dir,
    device: torch.device | str,
    alpha: float = 1.0,
    backend_options: dict | None = None,
    force_build: bool = False,
    perturb: str | None = None,
    vocoder: Vocoder | None = None,
) -> VerifyReport:
    """Build (or load) the debug engine of `spec` from a copy of `model` (and `vocoder`, when given),
    and compare it with `model` (then `vocoder`) run eagerly in float32. Neither is modified."""
    device = torch.device(device)
    spec = dataclasses.replace(spec, debug=True)
    engine_model = copy.deepcopy(model).to(device=device, dtype=spec.dtype)  # the engine's own weights
    if perturb:
        perturb_weight(engine_model, perturb)
    engine = load_or_build(
        engine_model, spec, engine_dir, device, backend_options, force_build=force_build, vocoder=vocoder
    )
    reference = model_on(model, device, torch.float32)
    ref_vocoder = vocoder.on(device, torch.float32).eval() if vocoder is not None else None
    return verify_engine(engine, reference.eval(), token_ids, alpha, tol, ref_vocoder)


# ---------------------------------------------------------------------------------------------
# mode=verify


def verify_backend(name: str, device: torch.device) -> tuple[str, str]:
    """The backend verify checks. The eager engine on the CPU is the reference's own code (our ops
    run their PyTorch reference there): comparing it would always pass, so `auto` verifies the
    Inductor CPU engine instead, and an explicit `backend=eager` on the CPU is refused with why."""
    from fastspeech.backends import resolve_backend

    backend, why = resolve_backend(name, device)
    if backend == "eager" and device.type == "cpu":
        if name == "auto":
            return (
                "inductor",
                "on the CPU the eager engine runs the reference's own code; verifying Inductor's",
            )
        raise ConfigError(
            "backend=eager on the CPU runs the same PyTorch code as verify's reference, so there is nothing "
            "to compare; use backend=inductor (the Inductor CPU engine) or run on a CUDA GPU"
        )
    return backend, why


def run(cfg) -> VerifyReport:
    """`python run.py mode=verify ...`: print the table and the verdict; VerifyError when it fails."""
    from omegaconf import OmegaConf

    from fastspeech import pipeline

    alpha = pipeline.check_alpha(cfg.alpha)
    vocoder = pipeline.open_vocoder(cfg)  # settings checked before any work
    device = pipeline.pick_device(cfg.device)
    model = pipeline.load_model(cfg)
    utterances = pipeline.encode_all(pipeline.read_texts(cfg), cfg.on_unknown, int(cfg.engine.max_in))
    backend, why = verify_backend(cfg.backend.name, device)
    log.info("backend=%s (%s)", backend, why)
    spec = EngineSpec(
        batch=int(cfg.batch_size),
        max_in=int(cfg.engine.max_in),
        max_out=int(cfg.engine.max_out),
        precision=pipeline.resolve_precision(cfg.precision.name, device),
        backend=backend,
        debug=True,
    )
    precision_cfg = cfg.precision
    if spec.precision != cfg.precision.name:  # the CPU fallback to fp32: hold it to fp32's tolerance
        precision_cfg = OmegaConf.load(
            Path(__file__).resolve().parents[1] / "conf" / "precision" / f"{spec.precision}.yaml"
        )
    if len(utterances) > spec.batch:
        log.warning("verify runs one engine call: the first %d of %d texts", spec.batch, len(utterances))
    token_ids = [utterances[i % len(utterances)].ids for i in range(spec.batch)]
    options = cfg.backend.get(backend)
    options = OmegaConf.to_container(options, resolve=True) if options is not None else {}
    tol = Tolerance(float(precision_cfg.atol), float(precision_cfg.rtol))
    report = verify(
        model,
        spec,
        token_ids,
        tol,
        cfg.engine_dir,
        device,
        alpha,
        options,
        force_build=bool(cfg.force_build),
        perturb=OmegaConf.select(cfg, "verify.perturb", default=None),
        vocoder=vocoder,
    )
    print(report.table())
    print(report.summary())
    log.debug("verify table:\n%s", report.table())
    if not report.passed:
        raise VerifyError(report.summary())
    log.info("%s", report.summary())
    return report
