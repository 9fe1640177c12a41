"""What the kernel benchmarks share: timing, copy bandwidth, the markdown table and the JSON file.

Timing: the median over 100 calls of CUDA-event time around each call, with the L2 flushed before
every call by zeroing 512 MiB (so small shapes are measured cold, as they run inside a model). That
flush also keeps the GPU busy for ~0.2 ms while the host queues the call, so host-side launch overhead
(Python, op dispatch) stays out of the GPU time unless it exceeds that; `triton.testing.do_bench`
flushes 256 MiB, and on the lent H100 host jitter then leaked into some small-shape timings.
Bandwidth counts the fewest bytes the op must move: each input read once plus the output written
once; a copy moves 2x its size by the same count.
"""

from __future__ import annotations

import argparse
import functools
import json
import platform
import statistics
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
import triton

SIZES_B = (1, 8, 64)
SIZES_TI_TO = ((32, 256), (128, 1024))
HIDDEN = 384
DTYPES = {"fp16": torch.float16, "fp32": torch.float32}
GOAL_FRACTION_OF_COPY = 0.80


def parse_args(
    description: str,
    default_results: str,
    add_arguments: Callable[[argparse.ArgumentParser], None] | None = None,
) -> argparse.Namespace:
    """The kernel benchmarks' common arguments, plus a benchmark's own from `add_arguments`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--results", default=default_results, help="JSON file for the full numbers")
    parser.add_argument("--dtypes", default="fp16,fp32", help="comma-separated subset of fp16,fp32")
    parser.add_argument(
        "--sweep", action="store_true", help="also time block-size variants at the goal shape"
    )
    if add_arguments:
        add_arguments(parser)
    return parser.parse_args()


def direct_launch(fn: Callable[[], Any]) -> Callable[[], Any]:
    """`fn` with wrap_triton's tracing dispatch off: the kernel launches straight away, as it does inside
    the ops' eager path (triton_op turns it off there). Called outside an op, wrap_triton otherwise goes
    through a higher-order-op dispatch that costs ~1 ms of CPU per launch and would swamp the timing."""
    try:
        from torch._library.triton import set_wrap_triton_enabled
    except ImportError:  # older torch: wrap_triton launches directly anyway
        return fn

    def run() -> Any:
        with set_wrap_triton_enabled(False):
            return fn()

    return run


@functools.cache
def _flush_buffer() -> torch.Tensor:
    return torch.empty(512 << 20, dtype=torch.uint8, device="cuda")


def time_us(fn: Callable[[], Any], reps: int = 100, warmup: int = 5) -> float:
    """Median GPU time of one call, in microseconds, cold L2 (see the module docstring)."""
    flush = _flush_buffer()
    for _ in range(warmup):
        fn()
    starts = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    ends = [torch.cuda.Event(enable_timing=True) for _ in range(reps)]
    torch.cuda.synchronize()
    for start, end in zip(starts, ends):
        flush.zero_()
        start.record()
        fn()
        end.record()
    torch.cuda.synchronize()
    return 1e3 * statistics.median(s.elapsed_time(e) for s, e in zip(starts, ends))


def graph_of(fn: Callable[[], Any]) -> torch.cuda.CUDAGraph:
    """`fn` captured in a CUDA graph, after two warm-up calls on a side stream (compiles, lazy
    allocations); replay it to time the captured kernels with no host launches in between."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    return graph


def kernel_profile(fn: Callable[[], Any], calls: int = 20) -> dict[str, Any]:
    """Kernels per call, kernel ms per call and the largest kernels, under torch.profiler (fn warm)."""
    from torch.profiler import ProfilerActivity

    torch.cuda.synchronize()
    with torch.profiler.profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(calls):
            fn()
        torch.cuda.synchronize()
    return kernel_totals(prof, calls)


def kernel_totals(prof: Any, calls: int) -> dict[str, Any]:
    """A finished torch.profiler run of `calls` calls -> kernels per call, kernel ms per call and
    the largest kernels."""
    events = [e for e in prof.key_averages() if e.device_type.name == "CUDA"]
    top = sorted(events, key=lambda e: -e.device_time_total)[:12]
    return {
        "kernels": sum(e.count for e in events) / calls,
        "kernel_ms": sum(e.device_time_total for e in events) / calls / 1e3,
        # the largest kernels: [name, launches per call, µs per call]
        "top": [[e.key[:90], e.count / calls, e.device_time_total / calls] for e in top],
    }


def copy_gbps(nbytes: int) -> float:
    """Device-to-device copy bandwidth moving `nbytes` in total (nbytes / 2 read, nbytes / 2 written)."""
    src = torch.empty(max(1, nbytes // 2), dtype=torch.uint8, device="cuda").random_(0, 255)
    dst = torch.empty_like(src)
    return 2 * src.numel() / time_us(lambda: dst.copy_(src)) / 1e3


def peak_copy_gbps() -> float:
    """The machine's copy ceiling: a 2 x 512 MiB device-to-device copy, far larger than the L2."""
    return copy_gbps(1 << 30)


def environment() -> dict[str, Any]:
    props = torch.cuda.get_device_properties(0)
    return {
        "device": props.name,
        "sms": props.multi_processor_count,
        "torch": torch.__version__,
        "triton": triton.__version__,
        "python": platform.python_version(),
    }


def markdown_table(rows: list[dict[str, Any]], columns: list[tuple[str, str]]) -> str:
    """columns: (key, header); floats print with 3 significant digits."""

    def fmt(v: Any) -> str:
        if isinstance(v, float):
            return f"{v:.3g}" if abs(v) < 1000 else f"{v:.0f}"
        return str(v)

    lines = ["| " + " | ".join(h for _, h in columns) + " |", "|" + "---|" * len(columns)]
    lines += ["| " + " | ".join(fmt(r[k]) for k, _ in columns) + " |" for r in rows]
    return "\n".join(lines)


def write_json(path: str, payload: dict[str, Any]) -> None:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(payload, indent=2))
    print(f"wrote {out}")


def run_rows(
    doc: str,
    default_results: str,
    measure: Callable[[Any, Any, float], dict[str, Any]],
    shapes: list[tuple[Any, Any]],
    columns: list[tuple[str, str]],
) -> None:
    """A benchmark's main: its arguments, the copy ceiling, `measure(*shape, peak)` per shape, then
    the JSON, the environment line with whether every row was correct, and the table."""
    args = parse_args(doc.splitlines()[0], default_results)
    torch.manual_seed(0)
    peak = peak_copy_gbps()
    rows = [measure(*shape, peak) for shape in shapes]
    write_json(args.results, {"env": environment(), "peak_copy_gbps": peak, "rows": rows})
    print(
        f"\n{environment()}  peak device-to-device copy: {peak:.0f} GB/s; all correct: {all(r['correct'] for r in rows)}\n"
    )
    print(markdown_table(rows, columns))


def report(
    results: str,
    peak: float,
    rows: list[dict[str, Any]],
    columns: list[tuple[str, str]],
    sweep_rows: list[dict[str, Any]],
    sweep_columns: list[tuple[str, str]],
    sweep_title: str,
    goal_label: Callable[[dict[str, Any]], str],
) -> None:
    """What both kernel benchmarks write and print: the JSON, the sweep, the 80% goal at the goal
    shape (B=64, Ti=128, To=1024), the rows slower than DLE's reference, then the table."""
    write_json(results, {"env": environment(), "peak_copy_gbps": peak, "rows": rows, "sweep": sweep_rows})
    if sweep_rows:
        print(f"\nBlock-size sweep at {sweep_title}:\n")
        print(markdown_table(sweep_rows, sweep_columns))
    print(f"\n{environment()}  peak device-to-device copy: {peak:.0f} GB/s")
    for r in rows:
        if (r["B"], r["Ti"], r["To"]) == (64, 128, 1024):
            met = r["pct_of_peak_copy"] >= 100 * GOAL_FRACTION_OF_COPY
            print(
                f"goal {goal_label(r)}: {r['pct_of_peak_copy']:.1f}% of copy -> {'met' if met else 'MISSED'}"
            )
    slower = [r for r in rows if r["kernel_us"] > r["dle_ref_us"]]
    print(
        f"rows slower than the DLE reference: {len(slower)}; all correct: {all(r['correct'] for r in rows)}\n"
    )
    print(markdown_table(rows, columns))
