"""Fixed-shape engines: equal to eager, cached by fingerprint, rebuilt when stale or corrupt."""

import logging

import pytest
import torch
from helpers import out_of_memory, random_model, requires_cuda

from fastspeech.engine import EngineSpec, load_or_build, read_engine_file
from fastspeech.errors import EngineError

G = torch.Generator().manual_seed(0)


def random_ids(n_items, lo=1, hi=16):
    return [
        torch.randint(1, 148, (int(torch.randint(lo, hi + 1, (1,), generator=G)),), generator=G).tolist()
        for _ in range(n_items)
    ]


def eager_reference(model, ids, max_out, alpha=1.0):
    """Each text alone through the model, unpadded: what the engine must reproduce."""
    outs = []
    with torch.no_grad():
        for one in ids:
            outs.append(model(torch.tensor([one]), alpha, max_out=max_out))
    return outs


def check_equal(out, refs, atol=1e-4):
    for i, ref in enumerate(refs):
        n = int(ref.mel_lens[0])
        assert int(out.mel_lens[i]) == n
        assert int(out.frames[i]) == int(ref.durations.sum())
        torch.testing.assert_close(out.mel[i, :n].cpu(), ref.mel[0, :n].float(), rtol=1e-4, atol=atol)
        assert out.mel[i, n:].abs().sum() == 0


def test_eager_engine_pads_batch_and_trims_back(tmp_path):
    model = random_model(seed=1)
    spec = EngineSpec(batch=4, max_in=16, max_out=96, backend="eager")
    engine = load_or_build(model, spec, tmp_path, "cpu")
    ids = random_ids(3)  # fewer texts than the engine batch, all of different lengths
    out = engine(ids, 1.0)
    assert out.mel.shape == (3, 96, 80) and out.frames.shape == (3,)
    check_equal(out, eager_reference(model, ids, 96))


def test_eager_engine_runs_the_mel_side_on_the_longest_text_only(tmp_path):
    """An eager engine trims the mel side to the batch's longest predicted length (not max_out),
    and its outputs are still those of the full max_out run: the same frames, zeros after them."""
    model = random_model(seed=4)
    spec = EngineSpec(batch=3, max_in=16, max_out=400, backend="eager")
    engine = load_or_build(model, spec, tmp_path, "cpu")
    seen = []
    hook = model.mel_side.register_forward_pre_hook(lambda module, args: seen.append(args[0].shape[1]))
    try:
        ids = random_ids(3)
        out = engine(ids, 1.0)
    finally:
        hook.remove()
    longest = int(out.mel_lens.max())
    assert seen == [longest] and longest < 400  # the mel side saw T = the longest text's frames
    assert out.mel.shape == (3, 400, 80)
    check_equal(out, eager_reference(model, ids, 400))  # each text alone at To = max_out
    with torch.no_grad():  # and the batch at To = max_out, untrimmed
        full = model(
            torch.nn.utils.rnn.pad_sequence([torch.tensor(i) for i in ids], batch_first=True), 1.0, 400
        )
    torch.testing.assert_close(out.mel, full.mel, rtol=1e-4, atol=1e-4)


def test_frames_report_speech_that_did_not_fit(tmp_path):
    model = random_model(seed=2, duration_bias=3.0)  # ~20 frames per token
    engine = load_or_build(model, EngineSpec(batch=1, max_in=16, max_out=32), tmp_path, "cpu")
    out = engine([list(range(20, 36))])
    assert int(out.frames[0]) > 32 and int(out.mel_lens[0]) == 32


def test_too_long_input_is_an_error_naming_engine_and_length(tmp_path):
    engine = load_or_build(random_model(), EngineSpec(batch=2, max_in=8, max_out=32), tmp_path, "cpu")
    with pytest.raises(
        EngineError, match=r"input of 9 tokens is longer than engine fastspeech\.fp32\.b2\.i8\.o32"
    ):
        engine([[5] * 3, [5] * 9])
    with pytest.raises(EngineError, match="1 to 2 texts"):
        engine([[5]] * 3)


def test_engine_file_is_reused_then_rebuilt_when_weights_or_spec_change(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="fastspeech.engine")
    model = random_model(seed=3)
    spec = EngineSpec(batch=1, max_in=8, max_out=32)
    load_or_build(model, spec, tmp_path, "cpu")
    assert "no engine file yet" in caplog.text
    caplog.clear()
    load_or_build(model, spec, tmp_path, "cpu")
    assert "loaded" in caplog.text and "building" not in caplog.text
    caplog.clear()
    with torch.no_grad():
        model.mel_linear.bias.add_(0.5)
    load_or_build(model, spec, tmp_path, "cpu")
    assert "fingerprint changed (weights)" in caplog.text
    caplog.clear()
    load_or_build(model, spec, tmp_path, "cpu", force_build=True)
    assert "forced" in caplog.text
    caplog.clear()
    other = EngineSpec(batch=2, max_in=8, max_out=32)
    load_or_build(model, other, tmp_path, "cpu")
    assert "no engine file yet" in caplog.text  # a different spec is a different file
    assert len(list(tmp_path.glob("*.engine"))) == 2


@pytest.mark.parametrize("damage", ["truncate", "flip", "garbage"])
def test_corrupt_engine_file_is_reported_and_rebuilt(tmp_path, caplog, damage):
    caplog.set_level(logging.INFO, logger="fastspeech.engine")
    model = random_model(seed=4)
    spec = EngineSpec(batch=1, max_in=8, max_out=32)
    load_or_build(model, spec, tmp_path, "cpu")
    path = tmp_path / f"{spec.name}.engine"
    data = bytearray(path.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    elif damage == "flip":
        data[-1] ^= 0xFF
    else:
        data = bytearray(b"\x00" * 64)
    path.write_bytes(bytes(data))
    with pytest.raises(EngineError):
        read_engine_file(path)
    caplog.clear()
    load_or_build(model, spec, tmp_path, "cpu")
    assert "rebuilding" in caplog.text and "corrupt" in caplog.text.lower() or "not an engine" in caplog.text
    read_engine_file(path)  # intact again


def test_building_can_be_refused(tmp_path):
    with pytest.raises(EngineError, match="mode=build"):
        load_or_build(
            random_model(), EngineSpec(batch=1, max_in=8, max_out=32), tmp_path, "cpu", allow_build=False
        )


@pytest.mark.parametrize("step", ["build", "load"])
def test_out_of_memory_while_building_or_loading_is_one_line(tmp_path, monkeypatch, step):
    """An engine too large for the device (run 124: WaveGlow at batch 32 on an 80 GB H100) is a
    one-line error naming the engine and the fix, not the allocator's traceback."""
    from fastspeech.backends.eager import EagerBackend

    model, spec = random_model(), EngineSpec(batch=1, max_in=8, max_out=32)
    if step == "load":
        load_or_build(model, spec, tmp_path, "cpu")  # a file to load

    monkeypatch.setattr(EagerBackend, step, out_of_memory)
    doing = "building" if step == "build" else "loading"
    with pytest.raises(EngineError) as info:
        load_or_build(model, spec, tmp_path, "cpu")
    assert str(info.value) == (
        f"out of memory {doing} engine fastspeech.fp32.b1.i8.o32.eager on cpu: use a smaller batch_size or engine"
    )


@requires_cuda
@pytest.mark.cuda
def test_cuda_out_of_memory_names_the_gpu(tmp_path, monkeypatch):
    from fastspeech.backends.eager import EagerBackend

    monkeypatch.setattr(EagerBackend, "build", out_of_memory)
    pattern = (
        r"^out of GPU memory building engine fastspeech\.fp32\.b1\.i8\.o32\.eager on cuda:\d \(.+, \d+ GiB\): "
        r"use a smaller batch_size or engine, or free the GPU of other processes$"
    )
    with pytest.raises(EngineError, match=pattern):
        load_or_build(random_model(), EngineSpec(batch=1, max_in=8, max_out=32), tmp_path, "cuda")


@pytest.mark.slow
def test_inductor_engine_on_cpu_equals_eager_and_reloads(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="fastspeech.engine")
    model = random_model(seed=5)
    spec = EngineSpec(batch=2, max_in=16, max_out=64, backend="inductor")
    options = {"mode": None, "cuda_graphs": False}
    engine = load_or_build(model, spec, tmp_path, "cpu", options)
    ids = random_ids(2)
    check_equal(engine(ids), eager_reference(model, ids, 64))
    again = load_or_build(model, spec, tmp_path, "cpu", options)
    assert "loaded" in caplog.text
    check_equal(again(ids), eager_reference(model, ids, 64))


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_inductor_cuda_graph_replays_equal_eager(tmp_path, precision):
    model = random_model(seed=6)
    spec = EngineSpec(batch=4, max_in=16, max_out=96, precision=precision, backend="inductor")
    engine = load_or_build(model, spec, tmp_path, "cuda", {"mode": None, "cuda_graphs": True})
    cuda_model = model.to("cuda", spec.dtype)
    for step in range(100):  # changing inputs every replay
        ids = random_ids(1 + step % 4)
        alpha = 0.8 + 0.05 * (step % 9)
        check_rows_equal_eager_alone(engine(ids, alpha), cuda_model, ids, alpha)


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_inductor_engine_with_the_conv_op_equals_eager_alone(tmp_path, precision):
    """At B * max_out >= OP_MIN_ROWS the mel side's FFN convs run the `conv1d` op in fp16 (tensor descriptors,
    Triton's scratch allocator, inside Inductor and a CUDA graph); each text alone in eager runs the
    cuBLAS path instead (few rows): the two must agree row by row. fp32 engines keep cuBLAS at every
    size (the op's fp32 dot products are slow): the same check, one path on both sides."""
    from fastspeech.model import OP_MIN_ROWS

    model = random_model(seed=7)
    spec = EngineSpec(batch=48, max_in=16, max_out=96, precision=precision, backend="inductor")
    assert spec.batch * spec.max_out >= OP_MIN_ROWS > spec.max_out
    engine = load_or_build(model, spec, tmp_path, "cuda", {"mode": None, "cuda_graphs": True})
    cuda_model = model.to("cuda", spec.dtype)
    for step in range(3):
        ids = random_ids(48 - 7 * step)
        check_rows_equal_eager_alone(engine(ids, 1.0), cuda_model, ids, 1.0)


def check_rows_equal_eager_alone(out, cuda_model, ids, alpha):
    """Each text's engine row against the eager CUDA model run on that text alone."""
    fp32 = next(cuda_model.parameters()).dtype == torch.float32
    with torch.no_grad():
        refs = [
            cuda_model(torch.tensor([one], device="cuda"), alpha, max_out=out.mel.shape[1]) for one in ids
        ]
    for i, ref in enumerate(refs):
        if not fp32 and not torch.equal(out.durations[i, : ref.durations.shape[1]], ref.durations[0]):
            # fp16 rounding may move a duration across .5 between two correct implementations:
            # allow a one-frame flip on a few tokens, then there is no mel to compare row by row.
            diff = (out.durations[i, : ref.durations.shape[1]] - ref.durations[0]).abs()
            assert int(diff.max()) == 1 and int(diff.sum()) <= 2, (i, diff)
            continue
        assert int(out.frames[i]) == int(ref.durations.sum()), i
        n = int(ref.mel_lens[0])
        torch.testing.assert_close(
            out.mel[i, :n], ref.mel[0, :n].float(), rtol=2e-2, atol=1e-3 if fp32 else 5e-2
        )


@pytest.mark.slow
def test_inductor_engine_file_holds_only_its_own_artifacts(tmp_path):
    """Inductor records every compile of the process; an engine file must carry only its own."""
    model = random_model(seed=5)
    options = {"mode": None, "cuda_graphs": False}
    sizes = []
    for max_in, max_out in ((12, 40), (10, 36)):
        spec = EngineSpec(batch=1, max_in=max_in, max_out=max_out, backend="inductor")
        load_or_build(model, spec, tmp_path, "cpu", options)
        sizes.append(len(read_engine_file(tmp_path / f"{spec.name}.engine")[1]))
    assert sizes[0] > 0, "the first engine file holds no compiled artifacts"
    assert sizes[1] < 1.5 * sizes[0], f"the second engine file carries the first's artifacts too: {sizes}"


def test_fingerprint_covers_every_op_kernel_and_converter():
    """A change to any op's kernel or converter makes cached engines stale (conv1d once was not listed)."""
    from fastspeech.engine import _ROOT, _SOURCES

    for folder in ("kernels", "converters"):
        files = {f"{folder}/{p.name}" for p in (_ROOT / folder).glob("*.py")}
        assert f"{folder}/conv1d.py" in files and files <= set(_SOURCES)


def test_no_pointwise_value_feeds_several_op_calls(monkeypatch):
    """Inductor computes a pointwise argument of a user Triton kernel into a buffer per call: a
    value that feeds several of our op calls is computed once per call, and the copies live in the
    engine's graph pool (run 111: Griffin-Lim's clamped magnitude, 31 copies of 2 MiB at batch 1).
    The whole engine graph on its CUDA paths (fp16, every op taken, Griffin-Lim packed), traced on
    the CPU: no pointwise value may feed several op calls."""
    import fastspeech.model as model_module
    from fastspeech.graph import EngineGraph
    from fastspeech.vocoder.griffin_lim import GriffinLim

    monkeypatch.setattr(model_module, "OP_MIN_ROWS", 1)
    monkeypatch.setattr(model_module, "OP_MIN_ROWS_NARROWING", 1)
    vocoder = GriffinLim(n_iter=3).eval()
    vocoder.packed = True
    graph = EngineGraph(random_model().half(), 96, vocoder).eval()
    B = 2
    with torch.no_grad():
        program = torch.export.export(graph, (torch.randint(1, 148, (B, 21), generator=G), torch.ones(B)))
    nodes = program.run_decompositions({}).graph.nodes
    ops = {n for n in nodes if getattr(n.target, "namespace", None) == "fastspeech"}
    assert {op.target.name().split("::")[1] for op in ops} >= {"griffin_lim_step", "conv1d", "attention"}
    calls = {
        n: sum(u in ops for u in n.users)
        for n in nodes
        if torch.Tag.pointwise in getattr(n.target, "tags", ())
    }
    shared = {n.name: (tuple(n.meta["val"].shape), c) for n, c in calls.items() if c >= 2}
    assert not shared, f"pointwise values fed to several op calls (name: shape, calls): {shared}"
