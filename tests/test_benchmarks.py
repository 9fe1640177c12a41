"""The benchmarks' own logic (their figures need the GPU): the router's text mix, the table merge, the
Griffin-Lim ablation's method swap."""

import json
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from benchmarks import bench_griffin_lim, bench_router, latency
from fastspeech.text import clean_text, text_to_ids


def test_router_sentences_follow_the_read_speech_length_mix():
    texts = bench_router.sentences(300, seed=3)
    lengths = np.array([len(clean_text(t)) for t in texts])
    assert len(texts) == 300
    assert lengths.min() >= 10 and lengths.max() <= 180
    assert 85 <= lengths.mean() <= 110  # 10 + 170 * Beta(2.2, 2.0) has mean ~99
    assert all(text_to_ids(t) for t in texts)  # every sentence encodes (no unknown characters)
    assert texts == bench_router.sentences(300, seed=3)  # seeded: the same mix on every machine


def _rows(precision, ms):
    return [
        {"variant": v, "batch": b, "precision": precision, "mean_ms": ms * b}
        for v in ("dle_eager", "ours_inductor")
        for b in (1, 4)
    ]


def test_merge_keeps_every_command_and_lets_the_later_file_win(tmp_path, monkeypatch):
    monkeypatch.setattr(latency, "print_table", lambda rows, meta: None)
    first, second = tmp_path / "fp32.json", tmp_path / "fp16.json"
    first.write_text(json.dumps({"meta": {"gpu": "x"}, "rows": _rows("fp32", 2.0)}))
    redo = _rows("fp16", 1.0) + [{"variant": "dle_eager", "batch": 1, "precision": "fp32", "mean_ms": 9.0}]
    second.write_text(json.dumps({"meta": {"gpu": "x"}, "rows": redo, "end_to_end": {"total_ms": 1.0}}))
    monkeypatch.setattr(latency, "print_e2e", lambda e2e: None)
    latency.merge([str(first), str(second)], tmp_path / "out")
    merged = json.loads((tmp_path / "out" / "latency.json").read_text())
    keys = [(r["variant"], r["batch"], r["precision"]) for r in merged["rows"]]
    assert len(keys) == len(set(keys)) == 8
    assert [r["precision"] for r in merged["rows"]] == ["fp32"] * 4 + ["fp16"] * 4  # table order
    redone = next(
        r for r in merged["rows"] if (r["variant"], r["batch"], r["precision"]) == ("dle_eager", 1, "fp32")
    )
    assert redone["mean_ms"] == 9.0
    assert merged["end_to_end"] == {"total_ms": 1.0}
    assert (tmp_path / "out" / "latency.png").stat().st_size > 1000


@pytest.mark.parametrize("per_call, iters, expected", [(0.001, 100, 100), (1.0, 100, 20), (0.2, 100, 50)])
def test_timed_runs_shrink_to_the_time_budget_but_not_below_twenty(monkeypatch, per_call, iters, expected):
    clock = SimpleNamespace(t=0.0)
    monkeypatch.setattr(latency.time, "perf_counter", lambda: clock.t)
    monkeypatch.setattr(latency, "sync", lambda: None)

    def call():
        clock.t += per_call

    times = latency.time_calls(call, iters, warmup=2, max_seconds=10.0)
    assert len(times) == expected
    assert np.allclose(times, per_call)


def test_kernel_report_writes_every_row_and_judges_the_goal_shape_only(tmp_path, monkeypatch, capsys):
    from benchmarks.kernels import common

    monkeypatch.setattr(common, "environment", lambda: {"device": "test"})
    row = {
        "B": 64,
        "Ti": 128,
        "To": 1024,
        "dtype": "fp16",
        "kernel_us": 2.0,
        "dle_ref_us": 1.0,
        "correct": True,
    }
    rows = [row | {"pct_of_peak_copy": 73.0}, row | {"B": 8, "pct_of_peak_copy": 10.0, "kernel_us": 0.5}]
    path = tmp_path / "k.json"
    common.report(
        str(path), 2965.0, rows, [("B", "B"), ("pct_of_peak_copy", "%")], [], [], "", lambda r: f"B={r['B']}"
    )
    out = capsys.readouterr().out
    assert json.loads(path.read_text())["rows"] == rows
    assert "goal B=64: 73.0% of copy -> MISSED" in out and "goal B=8" not in out
    assert "rows slower than the DLE reference: 1; all correct: True" in out
    assert "| 8 | 10 |" in out


def test_griffin_lim_bench_swaps_the_transforms_back_and_reports_every_row(tmp_path, monkeypatch, capsys):
    """The CPU smoke run: three rows (mel only, the torch.stft path, ours); the torch.stft row really
    ran torch.stft / torch.istft and ours did not; an unknown variant is one line."""

    seen = []
    for name in ("stft", "istft"):
        real = getattr(torch, name)
        monkeypatch.setattr(
            torch, name, lambda *a, real=real, name=name, **k: seen.append(name) or real(*a, **k)
        )
    from fastspeech.vocoder import griffin_lim

    reframes = []
    for name in ("overlap_add_frames", "overlap_add_frames_reference"):
        real = getattr(griffin_lim, name)
        monkeypatch.setattr(
            griffin_lim, name, lambda *a, real=real, name=name: reframes.append(name) or real(*a)
        )
    out = tmp_path / "gl.json"
    argv = ["bench_griffin_lim", "--smoke", "--shapes", "i16_o24", "--batches", "1", "--out", str(out)]
    monkeypatch.setattr("sys.argv", argv)
    bench_griffin_lim.main()
    rows = json.loads(out.read_text())["rows"]
    assert [r["variant"] for r in rows] == ["mel_only", "gl_torch_stft", "gl_stored_signal", "gl"]
    assert all(r["ms"] > 0 for r in rows)
    assert set(seen) == {"stft", "istft"}, "the gl_torch_stft row did not run torch.stft / torch.istft"
    seen.clear()
    for variant, want in (("gl", "overlap_add_frames"), ("gl_stored_signal", "overlap_add_frames_reference")):
        reframes.clear()
        monkeypatch.setattr("sys.argv", argv + ["--variants", variant])
        bench_griffin_lim.main()
        assert not seen, f"the {variant} row ran torch.stft"
        assert reframes and set(reframes) == {want}, f"the {variant} row ran {set(reframes)}"
    monkeypatch.setattr("sys.argv", argv + ["--variants", "gl,nope"])
    with pytest.raises(
        SystemExit, match="--variants: unknown nope; choose from mel_only,gl_torch_stft,gl_stored_signal,gl"
    ):
        bench_griffin_lim.main()
    assert "| i16_o24 | 1 | gl |" in capsys.readouterr().out


def test_engines_taking_turns_are_timed_round_robin_each_on_its_own_inputs(monkeypatch):
    """bench_engine_call's taking-turns row: each round replays every engine once, in order, on the
    inputs that engine padded; the medians come back per engine (fake engines, no GPU)."""
    from benchmarks import bench_engine_call

    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    order = []

    class Fake:
        def __init__(self, name):
            self.name = name

        def pad(self, ids, alpha):
            return (self.name, len(ids[0]))

        def run(self, tag, n):
            order.append((self.name, tag, n))

    engines = {"a": (Fake("a"), [[1, 2, 3]]), "b": (Fake("b"), [[4]])}
    ms = bench_engine_call.taking_turns(engines, calls=3)
    assert set(ms) == {"a", "b"} and all(v >= 0 for v in ms.values())
    assert order == [("a", "a", 3), ("b", "b", 1)] * 23  # 20 warm-up rounds + 3 timed


def test_after_switch_times_each_engine_right_after_another(monkeypatch):
    """bench_engine_call's after-switch rows: per engine, rounds of one replay of the next engine then 4
    of its own; per position, the median wall and event time (fake engines and events, no GPU)."""
    from benchmarks import bench_engine_call

    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    order = []

    class Event:
        def __init__(self, enable_timing):
            assert enable_timing

        def record(self):
            self.at = len(order)

        def elapsed_time(self, end):
            return float(end.at - self.at)  # 1 "ms" per replay between the events

    class Fake:
        def __init__(self, name):
            self.name = name

        def pad(self, ids, alpha):
            return (self.name,)

        def run(self, tag):
            order.append(tag)

    monkeypatch.setattr(torch.cuda, "Event", Event)
    engines = {"a": (Fake("a"), [[1, 2]]), "b": (Fake("b"), [[3]]), "c": (Fake("c"), [[4]])}
    out = bench_engine_call.after_switch(engines, calls=2)
    assert [out[n]["after"] for n in "abc"] == ["b", "c", "a"]
    assert all(out[n]["device_ms"] == [1.0] * 4 and len(out[n]["wall_ms"]) == 4 for n in "abc")
    rounds = 2 + 5  # timed + warm-up
    assert (
        order
        == ["b", "a", "a", "a", "a"] * rounds
        + ["c", "b", "b", "b", "b"] * rounds
        + ["a", "c", "c", "c", "c"] * rounds
    )


def test_router_host_bench_routes_every_text_through_instant_engines(capsys):
    """bench_router_host: every text routed (split ones too) on both sets, a per-call figure each."""
    from benchmarks import bench_router_host

    rows = bench_router_host.main(["--n", "40", "--repeat", "1"])
    assert [r["set"] for r in rows] == ["single", "default"]
    assert all(r["calls"] >= 40 and r["ms_per_call"] > 0 for r in rows)
    assert "| default |" in capsys.readouterr().out


def test_interleaved_rounds_run_each_variant_once_in_a_shuffled_order(monkeypatch):
    """bench_engine_call's timing loop: every round runs every variant exactly once; with `order`
    the order changes from round to round (what runs before a call shifts its time), without it
    it stays the dict's (fake variants, no GPU)."""
    import random

    from benchmarks import bench_engine_call

    monkeypatch.setattr(torch.cuda, "synchronize", lambda: None)
    names = ["replay", "call", "call_again", "unstaged"]
    for order in (None, random.Random(0)):
        seen = []
        fns = {n: lambda n=n, seen=seen: seen.append(n) for n in names}
        times = bench_engine_call.interleaved(fns, 30, order)
        rounds = [seen[i : i + 4] for i in range(0, len(seen), 4)]
        assert len(rounds) == 50 and all(sorted(r) == sorted(names) for r in rounds)
        assert {n: len(t) for n, t in times.items()} == dict.fromkeys(names, 30)  # 20 warm-up rounds dropped
        distinct = {tuple(r) for r in rounds}
        assert distinct == {tuple(names)} if order is None else len(distinct) > 10


def test_bench_host_io_times_two_checkouts_side_by_side(capsys, tmp_path):
    """bench_host_io on the CPU: this tree against a checkout (here: a copy of this tree's engine.py),
    both engines' calls returning host results of the engine's shapes; a missing checkout is one
    clear line."""
    import shutil

    from benchmarks import bench_host_io

    (tmp_path / "fastspeech").mkdir()
    shutil.copy(bench_host_io.this_engine.__file__, tmp_path / "fastspeech" / "engine.py")
    rows = bench_host_io.main(
        ["--shapes", "i8_o16,i5_o7", "--batch", "3", "--calls", "20", "--against", str(tmp_path)]
    )
    assert [r["shape"] for r in rows] == ["i8_o16", "i5_o7"]
    for r in rows:
        assert 0 < r["this tree"]["median_us"] <= r["this tree"]["p90_us"] and r["against"]["median_us"] > 0
    out = capsys.readouterr().out
    assert "| i5_o7 |" in out and "against - this tree" in out
    with pytest.raises(SystemExit, match="--against /nowhere: no fastspeech/engine.py there"):
        bench_host_io.main(["--against", "/nowhere"])


@pytest.mark.slow  # ~25 s: a server process starts (torch, the text frontend) for 2 s of load
def test_serve_host_bench_answers_every_request_of_its_hand_written_clients():
    """bench_serve_host: the real app on instant engines in a child process, hand-written HTTP/1.1
    clients (chunked pcm streams read to their end): every request answered, its audio counted."""
    pytest.importorskip("fastapi", reason='needs the serve extra: pip install -e ".[serve]"')
    from benchmarks import bench_serve_host

    out = bench_serve_host.main(["--clients", "3", "--duration", "1.5", "--warmup", "0.5"])
    (r,) = out["results"]["this"]
    assert r["ok"] == r["requests"] > 3 and not r["errors"]
    assert r["audio_s"] > 0 and r["latency_ms"]["p50"] > 0 and r["ttfb_ms"]["p50"] <= r["latency_ms"]["p50"]


@pytest.mark.slow  # ~20 s: one FFT block's six phases under the Triton interpreter
def test_fft_stack_probe_matches_the_models_blocks_with_ragged_lengths():
    """The persistent-kernel probe (runs 74-77) computes what the model's FFT blocks compute: its
    timings in docs/kernels_history.md are of a correct kernel. Two items, the second shorter, T not a
    multiple of the 16-row tile, scratch poisoned with NaN (each phase must write what it reads)."""
    from benchmarks.kernels import probe_fft_stack as probe

    cfg, layers, x, lengths = probe.make_side(20, 2, "cpu", seed=3)
    assert int(lengths[1]) < 20
    W = probe.stack_weights(layers[:1])
    stack = probe.FFTStack(W, 2, 20, cfg.phoneme_side_head, cfg.d_k, 1e-5)
    for buf in (stack.qkv, stack.fc, stack.y, stack.hid, stack.w2acc):
        buf.fill_(float("nan"))
    with torch.no_grad():
        want = probe.reference(layers[:1], x, lengths)
        got = stack.run(x.half(), lengths).float()
    assert torch.isfinite(got).all()
    assert (got[1, int(lengths[1]) :] == 0).all()  # padding rows exactly zero
    torch.testing.assert_close(got, want, atol=8e-3, rtol=0)


def test_triton_fft_probe_equals_torch_fft():
    """The Triton FFT probe (run 118) computes the FFT its timings in docs/kernels_history.md are of: a frame
    count that is not a multiple of the frames per program, the output poisoned with NaN first, two
    splits of M = 512 and M = 256; bad shapes are refused by name."""
    from benchmarks.kernels.probe_triton_fft import triton_fft

    gen = torch.Generator().manual_seed(5)
    for M, r1 in ((512, 16), (512, 32), (256, 16)):
        x = torch.randn(1, 7, M, 2, generator=gen)
        out = torch.full_like(x, float("nan"))
        got = triton_fft(x, out, frames_per_program=4, precision="ieee", r1=r1)
        want = torch.view_as_real(torch.fft.fft(torch.view_as_complex(x.double()), dim=-1))
        torch.testing.assert_close(got.double(), want, atol=2e-4 * want.abs().max().item(), rtol=0)
    with pytest.raises(ValueError, match="triton_fft"):
        triton_fft(torch.randn(3, 100, 2))


def test_engine_memory_probe_finds_the_peak_inside_the_graph_pool():
    """`probe_engine_memory.pool_trace` on a made-up snapshot: allocations outside the pool's
    segments, or at their addresses before the pool took them, are ignored; frees lower the live
    total; the blocks live at the peak come back largest first with the first frame of our code."""
    from benchmarks.probe_engine_memory import MiB, pool_trace

    ours = [
        {"filename": "/x/torch/nn.py", "line": 1, "name": "f"},
        {"filename": "/r/fastspeech/model.py", "line": 7, "name": "ffn"},
    ]
    segments = [
        {"segment_pool_id": (0, 0), "address": 0, "total_size": 100 * MiB, "blocks": []},
        {
            "segment_pool_id": (0, 3),
            "address": 1000 * MiB,
            "total_size": 20 * MiB,
            "blocks": [
                {"size": 2 * MiB, "state": "active_allocated"},
                {"size": 18 * MiB, "state": "inactive"},
            ],
        },
    ]
    events = [
        {"action": "alloc", "addr": 5 * MiB, "size": 50 * MiB, "frames": ours},  # outside the pool
        {
            "action": "alloc",
            "addr": 1000 * MiB,
            "size": 60 * MiB,
            "frames": ours,
        },  # before the pool's segment
        {"action": "free_completed", "addr": 1000 * MiB, "size": 60 * MiB},
        {"action": "segment_alloc", "addr": 1000 * MiB, "size": 20 * MiB},
        {"action": "alloc", "addr": 1000 * MiB, "size": 2 * MiB, "frames": ours},
        {"action": "alloc", "addr": 1002 * MiB, "size": 8 * MiB, "frames": []},
        {"action": "alloc", "addr": 1010 * MiB, "size": 4 * MiB, "frames": ours},
        {"action": "free_completed", "addr": 1002 * MiB, "size": 8 * MiB},
        {"action": "alloc", "addr": 1002 * MiB, "size": 1 * MiB, "frames": ours},
    ]
    reserved, end, peak, at_peak, largest = pool_trace({"segments": segments, "device_traces": [events]})
    assert (reserved, end, peak) == (20, 2, 14)
    assert [size // MiB for size, _ in at_peak] == [8, 4, 2]
    assert at_peak[1][1] == "model.py:7 ffn" and at_peak[0][1] == "?" and largest == []
