"""The README's latency table: the seed's columns, side by side, in one run.

    python -m benchmarks.latency --out results/bench            # all variants, batches, precisions
    python -m benchmarks.latency --variants ours_inductor --batches 1 64 --precisions fp16

Variants (same weights, same 128-token sample text as the seed's perf_infer.py, i128/o1024; `--shape
i32_o256` times another engine shape on the text's first 32 tokens, durations calibrated to ~88% of
its frames, as the default's ~900 of 1024):
  dle_eager       the seed's PyTorch forward (bmm attention, per-item repeat_interleave + pad_sequence)
  compile_plain   torch.compile(mode="reduce-overhead") of a straightforward fixed-shape model
                  (cuDNN Conv1d with transposes, SDPA attention with a mask): today's "just compile it"
  ours_eager      our model in eager PyTorch with the Triton ops
  ours_inductor   our engine: Inductor (default mode and switches, as conf/backend) + one CUDA graph
                  replay per call
  ours_inductor_sdpa    the same engine with SDPA + mask attention instead of the attention op
  ours_inductor_before  the engine before issue 17: SDPA + mask attention, no Inductor switches
  ours_inductor_gemmconv  the convs on the cuBLAS multiply-first path, DLE's plain weight layout
  ours_inductor_noswitch / _pdl / _combo   the attention op with neither Inductor switch / only
                  enable_pdl / only combo_kernels
  ours_inductor_freeze / _autotune   + Inductor's freezing / max-autotune-no-cudagraphs mode
  ours_inductor_coordesc / _aggressive   + Inductor's coordinate_descent_tuning / aggressive_fusion
  ours_inductor_cublaslt  GEMMs through cuBLASLt (preferred_blas_library) when the graph is captured
  ours_inductor_cublasproj  the attention projections on cuBLAS (`nn.Linear`) instead of the `linear` op
                  (these ablations build into their own engine folders, always afresh)
  ours_tensorrt   our engine through Torch-TensorRT (where installed; never run on our machines)

End to end (`--e2e`, batch 1, the first precision asked for): the same sample text through the text
frontend (cleaning and symbol ids), `Engine.__call__` of our Inductor engine (padding, replay, trim,
copy to the host) and Griffin-Lim (librosa, 32 iterations, on the CPU), each stage timed alone.

On our GPU one command may run 10 minutes, so the grid runs one precision per command with
`--append` (rows merge into one latency.json; every ratio is within one command's rows).

Columns as the seed's: average latency, std, 90/95/99% latency (max of the lowest 90/95/99%),
throughput (generated audio samples/s), RTF (audio seconds per second / batch), speed-up vs the
seed's eager at the same batch and precision; plus effective TFLOP/s of the fixed-shape graph.
Weights are random, with the duration head's bias set so the sample text predicts ~900 of the
1024 frames (realistic work for the length regulator and the mel side).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import json
import logging
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.kernels.bench_conv1d import conv1d_time_last
from benchmarks.kernels.common import kernel_totals
from fastspeech import model as model_module
from fastspeech.engine import PRECISIONS, EngineSpec, load_or_build
from fastspeech.model import FastSpeech, FastSpeechConfig
from kernels import attention_reference

SAMPLE_TEXT = (
    "The forms of printed letters should be beautiful, and that their arrangement on the page should be "
    "reasonable and a help to the shapeliness of the letters themselves."
)
HOP, SR = 256, 22050
# Engines measured without part of issue 17's work: (attention swapped for SDPA + mask, Inductor
# switches, convs on the previous cuBLAS GEMM path with DLE's plain weight layout).
OFF = {"enable_pdl": False, "combo_kernels": False}
ABLATIONS = {
    "ours_inductor_sdpa": (True, {}, True),
    "ours_inductor_before": (True, OFF, True),
    "ours_inductor_gemmconv": (False, {}, True),
    "ours_inductor_noswitch": (False, OFF, False),
    "ours_inductor_pdl": (False, {"combo_kernels": False}, False),
    "ours_inductor_combo": (False, {"enable_pdl": False}, False),
    # Inductor's own options on today's model (issue 17: "Inductor's own options first")
    "ours_inductor_freeze": (False, {"freezing": True}, False),
    "ours_inductor_autotune": (False, {"mode": "max-autotune-no-cudagraphs"}, False),
}
# Inductor config keys that are no backend option, patched around the ablation's build (it compiles there)
INDUCTOR_CONFIG = {
    # tunes each pointwise/reduction kernel's launch configuration
    "ours_inductor_coordesc": {"coordinate_descent_tuning": True},
    # fuses nodes that share no reads too
    "ours_inductor_aggressive": {"aggressive_fusion": True},
}
# cuBLAS's other front end for the GEMMs captured in the graph (torch.backends.cuda.preferred_blas_library)
BLAS = {"ours_inductor_cublaslt": "cublaslt"}
# the attention projections as before the `linear` op (issue 17, runs 78-79)
CUBLAS_PROJECTIONS = {"ours_inductor_cublasproj"}
ABLATIONS.update({name: (False, {}, False) for name in (*INDUCTOR_CONFIG, *BLAS, *CUBLAS_PROJECTIONS)})
log = logging.getLogger("benchmarks.latency")


def sample_tokens(max_in: int = 128) -> list[int]:
    """The seed's input: the first 128 characters of SAMPLE_TEXT, 128 tokens (trailing space kept)."""
    from fastspeech.text import text_to_ids

    return text_to_ids(SAMPLE_TEXT)[:max_in]


def calibrated_model(tokens: list[int], target_frames: int, device) -> FastSpeech:
    """Random DLE-size weights whose duration head predicts ~target_frames for the sample text."""
    torch.manual_seed(0)
    model = FastSpeech(FastSpeechConfig()).eval().to(device)
    calibrate_durations(model, torch.tensor([tokens], device=device), target_frames)
    return model


def calibrate_durations(model: FastSpeech, tokens: torch.Tensor, target_frames: float) -> int:
    """Move the duration head's bias until `model` predicts ~target_frames in all for `tokens`
    (B, T), zero-padded (random weights alone predict almost none) -> the last predicted total."""
    bias = model.length_regulator.duration_predictor.linear_layer.bias
    with torch.no_grad():
        for _ in range(6):  # frames ~ exp(bias): move the bias by the log of the ratio
            # durations are the untruncated predictions: max_out=1 skips the mel side
            total = int(model(tokens, 1.0, max_out=1).durations.sum())
            bias.add_(float(np.log(target_frames / max(total, 1))))
    return total


def graph_flops(cfg: FastSpeechConfig, batch: int, max_in: int, max_out: int) -> float:
    """Matmul FLOPs of the fixed-shape graph (2 per multiply-add); what 'effective TFLOP/s' divides."""

    def side(T, n_layer, n_head, d_inner):
        d, dk, k = cfg.d_model, cfg.d_k, cfg.fft_conv1d_kernel
        per_layer = 2 * T * d * n_head * 3 * dk + 4 * T * T * dk * n_head + 2 * T * n_head * dk * d
        per_layer += 2 * 2 * T * d * d_inner * k
        return n_layer * per_layer

    f, k = cfg.duration_predictor_filter_size, cfg.duration_predictor_kernel_size
    total = side(max_in, cfg.phoneme_side_n_layer, cfg.phoneme_side_head, cfg.phoneme_side_conv1d_filter_size)
    total += 2 * max_in * (cfg.d_model * f * k + f * f * k + f)
    total += side(max_out, cfg.mel_side_n_layer, cfg.mel_side_head, cfg.mel_side_conv1d_filter_size)
    total += 2 * max_out * cfg.d_model * cfg.num_mels
    return batch * total


def plain_conv(x: torch.Tensor, conv: torch.nn.Conv1d, lengths: torch.Tensor, relu: bool) -> torch.Tensor:
    """What a straightforward port does: transpose to (B, C, T), cuDNN Conv1d, transpose back (then
    the relu and row mask the model's `conv1d` applies)."""
    out = conv(x.transpose(1, 2)).transpose(1, 2)
    return _relu_mask(out, lengths) if relu else out


def cublas_linear(x: torch.Tensor, layer: torch.nn.Linear) -> torch.Tensor:
    """The attention projections before the `linear` op: `nn.Linear`, cuBLAS at every size."""
    return layer(x)


def gemm_conv(x: torch.Tensor, conv: torch.nn.Conv1d, lengths: torch.Tensor, relu: bool) -> torch.Tensor:
    """The model's conv before the `conv1d` op: unfold/taps + one cuBLAS GEMM (`conv1d_time_last`),
    then relu * row mask as a separate pointwise step."""
    out = conv1d_time_last(x, conv)
    return _relu_mask(out, lengths) if relu else out


def _relu_mask(out: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
    valid = torch.arange(out.shape[1], device=out.device)[None, :, None] < lengths[:, None, None]
    return torch.relu(out) * valid.to(out.dtype)


def plain_weights(model: FastSpeech) -> FastSpeech:
    """A copy of `model` with DLE's own contiguous conv weights (the layout before `tap_major`)."""
    copy_ = copy.deepcopy(model)
    for m in copy_.modules():
        if isinstance(m, torch.nn.Conv1d):
            m.weight = torch.nn.Parameter(m.weight.detach().contiguous(), requires_grad=False)
    return copy_


def sync() -> None:
    if torch.cuda.is_available():
        torch.cuda.synchronize()


@contextlib.contextmanager
def swapped(swaps: dict[str, Any]):
    """`fastspeech.model`'s module-level functions replaced by `swaps` inside the block."""
    saved = {name: getattr(model_module, name) for name in swaps}
    for name, fn in swaps.items():
        setattr(model_module, name, fn)
    try:
        yield
    finally:
        for name, fn in saved.items():
            setattr(model_module, name, fn)


def prepare(variant, model, tokens, alpha, batch, precision, shape, args, dev):
    """(the call to time, the `fastspeech.model` functions it runs with: swapped around its build,
    its first call, its timing and its profile)."""
    from benchmarks.dle_eager import DLEEager

    max_in, max_out = shape
    if variant == "dle_eager":
        return partial(DLEEager(model), tokens, 1.0), {}
    if variant == "ours_eager":
        return partial(model, tokens, alpha, max_out=max_out), {}
    if variant == "compile_plain":  # conv, attention and projections as a straightforward port has them
        torch._dynamo.reset()
        swaps = {"conv1d": plain_conv, "self_attention": attention_reference, "linear": cublas_linear}
        with swapped(swaps):
            compiled = torch.compile(plain_weights(model), mode="reduce-overhead")
        return partial(compiled, tokens, alpha, max_out), swaps
    if variant in ABLATIONS:  # the fingerprint can't see the swap: own folder, fresh build
        # Dynamo's cache does not key on Inductor's config: without a reset, an engine of the same
        # shape reuses the code compiled for the previous variant's options.
        torch._dynamo.reset()
        sdpa, switches, gemm = ABLATIONS[variant]
        swaps = {"self_attention": attention_reference} if sdpa else {}
        if variant in CUBLAS_PROJECTIONS:
            swaps["linear"] = cublas_linear
        if gemm:
            swaps["conv1d"] = gemm_conv
        built = plain_weights(model) if gemm else model
        spec = EngineSpec(batch, max_in, max_out, precision, "inductor")
        blas = torch.backends.cuda.preferred_blas_library()
        torch.backends.cuda.preferred_blas_library(BLAS.get(variant, blas))
        try:
            with swapped(swaps), torch._inductor.config.patch(INDUCTOR_CONFIG.get(variant, {})):
                engine = load_or_build(
                    built,
                    spec,
                    Path(args.engine_dir) / variant,
                    dev,
                    {"mode": args.mode, **switches},
                    force_build=True,
                )
        finally:  # the graph keeps the kernels it captured
            torch.backends.cuda.preferred_blas_library(blas)
        return partial(engine.runner, tokens, alpha), swaps
    if variant in ("ours_inductor", "ours_tensorrt"):
        torch._dynamo.reset()  # as for the ablations
        backend = variant.removeprefix("ours_")
        options = {"mode": args.mode} if backend == "inductor" else {}
        spec = EngineSpec(batch, max_in, max_out, precision, backend)
        engine = load_or_build(model, spec, args.engine_dir, dev, options)
        return partial(engine.runner, tokens, alpha), {}
    raise SystemExit(f"unknown variant {variant}")


def time_calls(fn, iters: int, warmup: int, max_seconds: float | None = None) -> np.ndarray:
    """Wall-clock seconds per call, synchronized (the seed measured wall clock too).

    With `max_seconds`, fewer runs (at least 20) when `iters` of them would take longer.
    """
    t0 = time.perf_counter()
    for _ in range(warmup):
        fn()
    sync()
    per_call = (time.perf_counter() - t0) / max(warmup, 1)
    if max_seconds is not None and per_call * iters > max_seconds:
        iters = max(20, int(max_seconds / per_call))
    times = np.empty(iters)
    for i in range(iters):
        t0 = time.perf_counter()
        fn()
        sync()
        times[i] = time.perf_counter() - t0
    return times


def row(variant, batch, precision, times, frames, flops, base_ms):
    s = np.sort(times)
    mean = float(times.mean())
    pct = {p: float(s[max(int(len(s) * p / 100) - 1, 0)]) for p in (90, 95, 99)}
    throughput = frames * HOP / mean
    return {
        "variant": variant,
        "batch": batch,
        "precision": precision,
        "iters": len(times),
        "mean_ms": mean * 1e3,
        "std_ms": float(times.std()) * 1e3,
        "p90_ms": pct[90] * 1e3,
        "p95_ms": pct[95] * 1e3,
        "p99_ms": pct[99] * 1e3,
        "throughput_samples_s": throughput,
        "rtf": throughput / (SR * batch),
        "tflops": flops / mean / 1e12 if flops else None,
        "speedup_vs_dle_eager": (base_ms / (mean * 1e3)) if base_ms else None,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument(
        "--variants",
        nargs="+",
        default=None,
        help="default: all four, and ours_tensorrt where TensorRT and Torch-TensorRT are installed",
    )
    p.add_argument("--batches", nargs="+", type=int, default=[1, 4, 8, 32, 64])
    p.add_argument(
        "--shape", default="i128_o1024", help="engine shape i<max_in>_o<max_out> (the seed's: i128_o1024)"
    )
    p.add_argument("--precisions", nargs="+", default=["fp32", "fp16", "bf16"])
    p.add_argument("--iters-b1", type=int, default=1000, help="timed runs at batch 1 (the seed: 1000)")
    p.add_argument("--iters", type=int, default=100, help="timed runs at larger batches")
    p.add_argument(
        "--rounds", type=int, default=5, help="interleaved rounds over the variants (iters split among them)"
    )
    p.add_argument("--max-row-seconds", type=float, default=10.0, help="fewer runs (>= 20) past this, B > 1")
    p.add_argument("--append", action="store_true", help="merge rows into an existing latency.json")
    p.add_argument("--e2e", action="store_true", help="also time text -> engine -> Griffin-Lim at batch 1")
    p.add_argument(
        "--merge", nargs="+", metavar="JSON", help="measure nothing: merge latency.json files into --out"
    )
    p.add_argument("--mode", default="default", help="Inductor mode of ours_inductor (conf/backend's)")
    p.add_argument("--out", default="results/bench", help="folder for latency.json and latency.png")
    p.add_argument("--engine-dir", default="engines/bench")
    p.add_argument("--device", default="cuda", help="cpu only for a smoke test of this script")
    p.add_argument("--profile", action="store_true", help="write the top kernels of ours_inductor* per batch")
    args = p.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(message)s")
    if args.merge:
        return merge(args.merge, Path(args.out))
    if args.variants is None:
        from fastspeech.backends import tensorrt_installed

        args.variants = ["dle_eager", "compile_plain", "ours_eager", "ours_inductor"]
        if tensorrt_installed():
            args.variants.append("ours_tensorrt")
        else:
            log.info("TensorRT / Torch-TensorRT not installed: no ours_tensorrt rows")
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("benchmarks.latency needs a CUDA GPU (the table is for our H100)")
    dev = torch.device(args.device)
    max_in, max_out = (int(n) for n in args.shape.removeprefix("i").split("_o"))
    ids = sample_tokens(max_in)
    base = calibrated_model(ids, target_frames=round(max_out * 900 / 1024), device=dev)
    rows, previous = [], previous_results(args)
    for precision in args.precisions:
        model = base.to(PRECISIONS[precision])
        for batch in args.batches:
            iters = args.iters_b1 if batch == 1 else args.iters
            tokens = torch.tensor([ids] * batch, device=dev)
            alpha = torch.ones(batch, device=dev)
            flops = graph_flops(model.cfg, batch, max_in, max_out)
            with torch.inference_mode():
                frames = int(model(tokens, alpha, max_out=max_out).mel_lens.sum())
            # Every variant is built first, then timed in `--rounds` interleaved rounds of iters / rounds
            # calls each: one engine's batch-1 time drifts by 20-60 µs within a process (with the engines
            # that exist and with host jitter the GPU waits on, runs 83-86), so timing each variant right
            # after its build favoured the first.
            prepared = {}
            for variant in args.variants:
                t0 = time.perf_counter()
                with torch.inference_mode():
                    fn, swaps = prepare(
                        variant, model, tokens, alpha, batch, precision, (max_in, max_out), args, dev
                    )
                    with swapped(swaps):
                        fn()  # compiles where the variant compiles lazily (compile_plain)
                prepared[variant] = (fn, swaps, time.perf_counter() - t0)
            budget = None if batch == 1 else args.max_row_seconds
            times: dict[str, list] = {v: [] for v in prepared}
            for _ in range(args.rounds):
                for variant, (fn, swaps, _) in prepared.items():
                    with torch.inference_mode(), swapped(swaps):
                        times[variant].append(
                            time_calls(fn, max(iters // args.rounds, 1), warmup=10, max_seconds=budget)
                        )
            base_ms = None
            for variant, (fn, swaps, setup_s) in prepared.items():
                flops_or_none = flops if variant != "dle_eager" else None
                r = row(
                    variant, batch, precision, np.concatenate(times[variant]), frames, flops_or_none, base_ms
                )
                r["setup_s"] = setup_s
                if args.profile and variant.startswith("ours_inductor"):
                    ablation = variant.removeprefix("ours_inductor").lstrip("_")  # "", "sdpa", "before", ...
                    name = f"profile_{ablation + '_' if ablation else ''}{precision}_b{batch}.txt"
                    with torch.inference_mode(), swapped(swaps):
                        profile(fn, Path(args.out) / name)
                if variant == "dle_eager":
                    base_ms = r["mean_ms"]
                rows.append(r)
                log.info("%s", json.dumps(r))
                print(table_line(r), flush=True)
                save(rows, args, frames, previous)
            del prepared, times
    e2e = end_to_end(base, ids, args.precisions[0], args, dev) if args.e2e else None
    meta = save(rows, args, frames, previous, e2e)
    all_rows = json.loads((Path(args.out) / "latency.json").read_text())["rows"]
    plot(all_rows, Path(args.out) / "latency.png", args.shape)
    print_table(all_rows, meta)
    if e2e:
        print_e2e(e2e)


def merge(files: list[str], out: Path) -> None:
    """One latency.json, table and plot from the per-precision commands' files (later files win)."""
    rows: dict[tuple, dict] = {}
    doc: dict = {"meta": {}, "rows": []}
    for name in files:
        part = json.loads(Path(name).read_text())
        rows.update({row_key(r): r for r in part["rows"]})
        doc["meta"] = part["meta"] | {"merged_from": [Path(f).name for f in files]}
        doc.update({k: v for k, v in part.items() if k == "end_to_end"})
    order = {"fp32": 0, "fp16": 1, "bf16": 2}
    doc["rows"] = sorted(rows.values(), key=lambda r: (order.get(r["precision"], 3), r["batch"]))
    out.mkdir(parents=True, exist_ok=True)
    (out / "latency.json").write_text(json.dumps(doc, indent=1))
    plot(doc["rows"], out / "latency.png", doc["meta"].get("shape", "i128_o1024"))
    print_table(doc["rows"], doc["meta"])
    if "end_to_end" in doc:
        print_e2e(doc["end_to_end"])


def end_to_end(base: FastSpeech, ids: list[int], precision: str, args, dev) -> dict:
    """Text -> mel -> wav for the sample text at batch 1, each stage timed alone (see the docstring)."""
    from fastspeech.text import text_to_ids
    from fastspeech.vocoder.griffin_lim import librosa_griffin_lim

    model = base.to(PRECISIONS[precision])
    spec = EngineSpec(1, 128, 1024, precision, "inductor")
    engine = load_or_build(model, spec, args.engine_dir, dev, {"mode": args.mode})
    state: dict = {}

    def frontend():
        state["ids"] = text_to_ids(SAMPLE_TEXT)[:128]

    def synthesize():
        out = engine([state["ids"]])
        state["mel"] = out.mel[0, : int(out.mel_lens[0])].cpu().numpy()

    def vocode():
        state["wav"] = librosa_griffin_lim(state["mel"], n_iter=32)

    stages = {}
    for name, fn, iters in (
        ("frontend", frontend, 1000),
        ("engine", synthesize, 1000),
        ("griffin_lim", vocode, 20),
    ):
        times = time_calls(fn, iters, warmup=3)
        stages[name] = {
            "mean_ms": float(times.mean()) * 1e3,
            "std_ms": float(times.std()) * 1e3,
            "iters": len(times),
        }
    total = sum(v["mean_ms"] for v in stages.values())
    audio_s = len(state["wav"]) / SR
    return {
        "precision": precision,
        "batch": 1,
        "frames": len(state["mel"]),
        "audio_s": audio_s,
        "stages": stages,
        "total_ms": total,
        "rtf_total": audio_s / (total / 1e3),
        "vocoder_device": "cpu (librosa)",
        "cpu_threads": torch.get_num_threads(),
    }


def print_e2e(e2e: dict) -> None:
    print(
        f"\nEnd to end, batch 1, {e2e['precision']}, {e2e['frames']} frames = {e2e['audio_s']:.2f} s of audio:"
    )
    print("| stage | avg ms | share |\n|---|---|---|")
    for name, v in e2e["stages"].items():
        print(f"| {name} | {v['mean_ms']:.3f} | {100 * v['mean_ms'] / e2e['total_ms']:.1f}% |")
    print(f"| total | {e2e['total_ms']:.3f} | {e2e['rtf_total']:.0f}x real time |")


def row_key(r: dict) -> tuple:
    return r["variant"], r["batch"], r["precision"]


def previous_results(args) -> dict:
    """What latency.json held before this command (with `--append`), else nothing."""
    path = Path(args.out) / "latency.json"
    return json.loads(path.read_text()) if args.append and path.exists() else {"rows": []}


def save(rows: list[dict], args, frames: int, previous: dict, e2e: dict | None = None) -> dict:
    """Write latency.json after every row, so a run cut short still leaves its numbers.

    With `--append`, rows of other (variant, batch, precision) already in the file are kept.
    """
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "latency.json"
    mine = {row_key(r) for r in rows}
    rows = [r for r in previous["rows"] if row_key(r) not in mine] + rows
    meta = {
        "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "torch": torch.__version__,
        "shape": args.shape,
        "mode": args.mode,
        "frames_per_item_last": frames,
    }
    try:
        import triton

        meta["triton"] = triton.__version__
    except ImportError:
        pass
    doc = {"meta": meta, "rows": rows}
    if e2e or "end_to_end" in previous:
        doc["end_to_end"] = e2e or previous["end_to_end"]
    path.write_text(json.dumps(doc, indent=1))
    return meta


def profile(fn, path: Path, calls: int = 20) -> None:
    """Top CUDA kernels over `calls` calls (kernel time vs wall time shows the launch gaps)."""
    from torch.profiler import ProfilerActivity

    sync()
    with torch.profiler.profile(activities=[ProfilerActivity.CPU, ProfilerActivity.CUDA]) as prof:
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        sync()
        wall = (time.perf_counter() - t0) / calls
    totals = kernel_totals(prof, calls)
    table = prof.key_averages().table(sort_by="cuda_time_total", row_limit=20)
    summary = (
        f"per call: wall {wall * 1e3:.3f} ms, kernel time {totals['kernel_ms']:.3f} ms, "
        f"{totals['kernels']:.0f} kernels"
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(summary + "\n" + table)
    print(path.name, summary)
    print(table[:6000])


def plot(rows: list[dict], path: Path, shape: str) -> None:
    """Latency vs batch, one line per variant, one panel per precision (the README embeds it)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    precisions = [p for p in ("fp32", "fp16", "bf16") if any(r["precision"] == p for r in rows)]
    fig, axes = plt.subplots(
        1, len(precisions), figsize=(4.2 * len(precisions), 4), sharey=True, squeeze=False
    )
    for ax, precision in zip(axes[0], precisions):
        for variant in dict.fromkeys(r["variant"] for r in rows):
            pts = sorted(
                (r["batch"], r["mean_ms"])
                for r in rows
                if (r["variant"], r["precision"]) == (variant, precision)
            )
            if pts:
                ax.plot(*zip(*pts), marker="o", label=variant)
        ax.set(xscale="log", yscale="log", xlabel="batch", title=f"{precision}, {shape}")
        ax.grid(True, which="both", alpha=0.3)
    axes[0][0].set_ylabel("latency per batch (ms)")
    axes[0][-1].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


def print_table(rows: list[dict], meta: dict) -> None:
    print(f"\n{meta}\n")
    print(
        "| variant | batch | precision | avg ms | std ms | p90 ms | p95 ms | p99 ms | samples/s | RTF | "
        "TFLOP/s | speed-up vs DLE eager |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(table_line(r))


def table_line(r: dict) -> str:
    tf = f"{r['tflops']:.0f}" if r["tflops"] else "-"
    sp = f"{r['speedup_vs_dle_eager']:.2f}x" if r["speedup_vs_dle_eager"] else "1.00x"
    return (
        f"| {r['variant']} | {r['batch']} | {r['precision']} | {r['mean_ms']:.3f} | {r['std_ms']:.3f} | "
        f"{r['p90_ms']:.3f} | {r['p95_ms']:.3f} | {r['p99_ms']:.3f} | {r['throughput_samples_s']:,.0f} | "
        f"{r['rtf']:.0f} | {tf} | {sp} |"
    )


if __name__ == "__main__":
    main()
