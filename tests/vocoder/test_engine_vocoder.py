"""The vocoder inside the engine: token ids -> mel -> wav in one graph.

The engine's wav equals the eager model + the same vocoder on the same fixed To, an item's wav does
not depend on the other items of its batch, the wav is zero past mel_lens * 256, the spec's file
name and the fingerprint see the vocoder, engines share the caller's vocoder, verify covers it.
Engines return 16-bit PCM (int16): a wav is compared with the float reference as samples / 32767,
within the tolerance plus half a step of the 16-bit rounding (`pcm_err`). Tolerances: fp32 1e-4
absolute on the wav (CPU: the same eager code, batched FFTs round apart); fp16/bf16 as conf/precision
(atol + rtol * max|ref|).
"""

import json
import logging

import pytest
import torch
from helpers import random_model, requires_cuda

from fastspeech.backends.inductor import InductorBackend
from fastspeech.engine import EngineSpec, load_or_build, read_engine_file
from fastspeech.errors import EngineError
from fastspeech.verify import Tolerance, verify
from fastspeech.vocoder import GriffinLim, to_pcm16
from fastspeech.vocoder.hifigan import HiFiGAN, HiFiGANConfig
from fastspeech.vocoder.waveglow import WaveGlow, WaveGlowConfig

IDS = [[20, 31, 5, 47, 11, 60, 38, 9, 52], [14, 3, 70], [7, 7, 8, 90, 21]]
HOP = 256
TOL = {"fp32": Tolerance(1e-3, 1e-3), "fp16": Tolerance(5e-2, 2e-2), "bf16": Tolerance(2e-1, 5e-2)}


def tiny_hifigan(seed=0):
    torch.manual_seed(seed)
    cfg = HiFiGANConfig(
        resblock="2",
        upsample_rates=(16, 16),
        upsample_kernel_sizes=(32, 32),
        upsample_initial_channel=16,
        resblock_kernel_sizes=(3,),
        resblock_dilation_sizes=((1, 2),),
    )
    return HiFiGAN(cfg).eval()


VOCODERS = {"griffin_lim": lambda: GriffinLim(n_iter=3), "hifigan": tiny_hifigan}
STEP = 0.5 / 32767  # the most 16-bit rounding moves a sample


def pcm_err(got: torch.Tensor, want: torch.Tensor) -> float:
    """Largest difference between int16 samples and float (or int16) ones, in float units."""
    assert got.dtype == torch.int16
    want = want.float() / 32767 if want.dtype == torch.int16 else want.float().clamp(-1, 1)
    return float((got.float() / 32767 - want.cpu()).abs().max())


def eager_wav(model, vocoder, ids, max_out, device="cpu"):
    """Each text alone through the eager model and the vocoder at the engine's To."""
    with torch.no_grad():
        out = model(torch.tensor([ids], device=device), 1.0, max_out=max_out)
        return out, vocoder(out.mel, out.mel_lens)[0]


@pytest.mark.parametrize("kind", list(VOCODERS))
def test_engine_wav_equals_eager_model_plus_vocoder(tmp_path, kind):
    model, voc = random_model(seed=1), VOCODERS[kind]()
    engine = load_or_build(model, EngineSpec(batch=4, max_in=16, max_out=64), tmp_path, "cpu", vocoder=voc)
    assert engine.spec.vocoder == kind and engine.spec.name == f"fastspeech.fp32.b4.i16.o64.{kind}.eager"
    out = engine(IDS)
    assert out.wav.shape == (3, 64 * HOP) and out.wav.dtype == torch.int16
    alone = engine(IDS[1:2])  # the same text with no neighbours and two empty rows
    for i, ids in enumerate(IDS):
        ref, wav = eager_wav(model, voc, ids, 64)
        n = int(ref.mel_lens[0])
        assert int(out.mel_lens[i]) == n > 0
        assert pcm_err(out.wav[i], wav) <= 1e-4 + STEP
        assert out.wav[i, n * HOP :].abs().max() == 0  # no padded tail
        assert out.wav[i, : n * HOP].abs().max() > 0
    assert pcm_err(alone.wav[0], out.wav[1]) <= 1e-4 + 2 * STEP


def test_file_name_and_fingerprint_see_the_vocoder(tmp_path, caplog):
    caplog.set_level(logging.INFO, logger="fastspeech.engine")
    model = random_model(seed=2)
    spec = EngineSpec(batch=1, max_in=8, max_out=32)
    load_or_build(model, spec, tmp_path, "cpu", vocoder=GriffinLim(n_iter=2))
    load_or_build(model, spec, tmp_path, "cpu", vocoder=tiny_hifigan())
    plain = load_or_build(model, spec, tmp_path, "cpu")  # mel only: the model-only benchmark's engine
    assert plain([[5, 6]]).wav is None and plain.spec.name == "fastspeech.fp32.b1.i8.o32.eager"
    names = sorted(p.name for p in tmp_path.glob("*.engine"))
    assert names == [
        "fastspeech.fp32.b1.i8.o32.eager.engine",
        "fastspeech.fp32.b1.i8.o32.griffin_lim.eager.engine",
        "fastspeech.fp32.b1.i8.o32.hifigan.eager.engine",
    ]  # three vocoders, three files: none overwrites another
    caplog.clear()
    load_or_build(model, spec, tmp_path, "cpu", vocoder=GriffinLim(n_iter=2))
    assert "loaded" in caplog.text and "building" not in caplog.text
    caplog.clear()
    load_or_build(model, spec, tmp_path, "cpu", vocoder=GriffinLim(n_iter=3))  # a setting
    assert "fingerprint changed (vocoder)" in caplog.text
    caplog.clear()
    other = tiny_hifigan(seed=1)  # other weights
    load_or_build(model, spec, tmp_path, "cpu", vocoder=other)
    assert "fingerprint changed (vocoder)" in caplog.text
    with pytest.raises(EngineError, match="names vocoder waveglow, but load_or_build got griffin_lim"):
        load_or_build(model, EngineSpec(1, 8, 32, vocoder="waveglow"), tmp_path, "cpu", vocoder=GriffinLim())


def test_engines_share_the_callers_vocoder(tmp_path):
    model, voc = random_model(seed=3), tiny_hifigan()
    a = load_or_build(model, EngineSpec(batch=1, max_in=8, max_out=32), tmp_path, "cpu", vocoder=voc)
    b = load_or_build(model, EngineSpec(batch=2, max_in=16, max_out=48), tmp_path, "cpu", vocoder=voc)
    assert a.runner.vocoder is voc and b.runner.vocoder is voc and a.runner.model is model  # eager: the graph
    gl = GriffinLim(n_iter=2)  # float32 always: shared by engines of any precision
    assert gl.on("cpu", torch.bfloat16) is gl
    assert voc.on("cpu", torch.float16) is not voc and voc.conv_pre.weight.dtype == torch.float32


def test_verify_covers_the_vocoder(tmp_path):
    model = random_model(seed=4)
    spec = EngineSpec(batch=2, max_in=16, max_out=48)
    report = verify(model, spec, IDS[:2], TOL["fp32"], tmp_path, "cpu", vocoder=GriffinLim(n_iter=2))
    assert report.passed, report.table()
    names = [r.name for r in report.rows]
    assert names[-2:] == ["vocoder.magnitude", "vocoder.wav"] and "out.seq" in names
    hifi = verify(model, spec, IDS[:2], TOL["fp32"], tmp_path, "cpu", vocoder=tiny_hifigan())
    assert hifi.passed, hifi.table()
    assert [r.name for r in hifi.rows][-4:] == [
        "vocoder.conv_pre",
        "vocoder.ups.0",
        "vocoder.ups.1",
        "vocoder.wav",
    ]


@pytest.mark.slow  # ~45 s of C++ compiling (Griffin-Lim's unrolled loop takes ~8 min on 2 cores: GPU only)
def test_inductor_engine_with_hifigan_on_cpu_equals_eager(tmp_path):
    model, voc = random_model(seed=7), tiny_hifigan()
    spec = EngineSpec(batch=2, max_in=16, max_out=32, backend="inductor")
    engine = load_or_build(model, spec, tmp_path, "cpu", {"mode": None, "cuda_graphs": False}, vocoder=voc)
    eager = load_or_build(model, EngineSpec(batch=2, max_in=16, max_out=32), tmp_path, "cpu", vocoder=voc)
    out, ref = engine(IDS[:2]), eager(IDS[:2])
    assert pcm_err(out.wav, ref.wav) <= 1e-5 + 2 * STEP
    torch.testing.assert_close(out.mel, ref.mel, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind, combo", [("waveglow", False), ("griffin_lim", True), ("hifigan", True)])
def test_a_vocoder_s_inductor_switches_reach_the_compile_and_the_fingerprint(
    tmp_path, monkeypatch, kind, combo
):
    """WaveGlow turns Inductor's combo kernels off over the conf's value (they kept all 96
    conditioning outputs alive, `WaveGlow.inductor_switches`); the other vocoders keep it. The
    engine file records what the compile used, so a changed switch rebuilds the engine."""
    seen = {}

    def fake_build(self, graph, example):  # stands in for Inductor's compile: records its switches
        seen.update(self.switches)
        return (lambda *args: None), b"compiled"

    monkeypatch.setattr(InductorBackend, "build", fake_build)
    small = WaveGlowConfig(n_flows=2, wn_layers=2, wn_channels=8)
    voc = WaveGlow(small) if kind == "waveglow" else VOCODERS[kind]()
    spec = EngineSpec(batch=1, max_in=8, max_out=16, backend="inductor")
    options = {"mode": None, "cuda_graphs": False, "combo_kernels": True}
    load_or_build(random_model(), spec, tmp_path, "cpu", options, vocoder=voc)
    assert seen["combo_kernels"] is combo and seen["enable_pdl"] is True
    parts, _ = read_engine_file(tmp_path / f"fastspeech.fp32.b1.i8.o16.{kind}.inductor.engine")
    assert json.loads(parts["backend_options"])["combo_kernels"] is combo
    assert options["combo_kernels"] is True  # the caller's options are left as they were


# ---------------------------------------------------------------------------------------------
# CUDA (run on the H100): every precision, eager and Inductor (one CUDA graph replay per call)


def waveglow_build_peak(tmp_path, switches: dict | None = None) -> tuple[int, int, int]:
    """(bytes the eager vocoder peaks at, bytes an fp16 Inductor engine's build peaks at, bytes of all
    96 conditioning outputs) for the 256-channel WaveGlow (12 flows x 8 WN layers), batch 2 x 1024
    frames; `switches` replaces `WaveGlow.inductor_switches` (the GPU run shows the contrast)."""
    B, frames, C = 2, 1024, 256
    torch._dynamo.reset()  # Dynamo's cache does not key on Inductor's switches: compile afresh
    voc = WaveGlow(WaveGlowConfig(wn_channels=C)).finish_loading().eval()
    if switches is not None:
        voc.inductor_switches = switches
    mel = torch.randn(B, frames, 80, device="cuda") - 5
    cuda_voc = voc.on("cuda", torch.float16)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    with torch.inference_mode():
        cuda_voc(mel)
    eager = torch.cuda.max_memory_allocated() - base
    del mel
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    spec = EngineSpec(batch=B, max_in=16, max_out=frames, precision="fp16", backend="inductor")
    engine = load_or_build(random_model(seed=1), spec, tmp_path, "cuda", {"mode": None}, vocoder=voc)
    built = torch.cuda.max_memory_allocated() - base
    del engine
    cond = 96 * B * (2 * C) * (frames * 256 // 8) * 2  # per layer (B, 2C, samples / n_group), fp16
    return eager, built, cond


@requires_cuda
@pytest.mark.cuda
def test_cuda_waveglow_engine_does_not_keep_every_conditioning_output(tmp_path):
    """Run 125 (H100): with combo kernels the WaveGlow engine's build peaked at 21.1 GiB at batch 8
    (eager 2.0) and batch 32 ran out of memory; without them 3.6 GiB at the same speed. At this
    test's size (run 128): 1,182 MiB without them, 5,562 MiB with, of 6,144 MiB of conditioning
    outputs. (At 32 channels the compile's own workspace outweighed them: no contrast, run 126.)"""
    eager, built, cond = waveglow_build_peak(tmp_path)
    assert built < eager + cond / 2, (eager, built, cond)


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("backend", ["eager", "inductor"])
@pytest.mark.parametrize("precision", ["fp32", "fp16", "bf16"])
@pytest.mark.parametrize("kind", list(VOCODERS))
def test_cuda_engine_wav_equals_eager(tmp_path, backend, precision, kind):
    model, voc = random_model(seed=5), VOCODERS[kind]()
    spec = EngineSpec(batch=4, max_in=16, max_out=96, precision=precision, backend=backend)
    options = {"mode": None, "cuda_graphs": True} if backend == "inductor" else None
    engine = load_or_build(model, spec, tmp_path, "cuda", options, vocoder=voc)
    cuda_model = model.to("cuda", spec.dtype)
    cuda_voc = voc.on("cuda", spec.dtype)
    tol = TOL[precision]
    for step in range(5):  # new inputs every replay
        ids = IDS[: 1 + step % 3]
        out = engine(ids, to_host=True)
        assert out.wav.shape == (len(ids), 96 * HOP) and out.wav.device.type == "cpu"
        for i, one in enumerate(ids):
            ref, wav = eager_wav(cuda_model, cuda_voc, one, 96, "cuda")
            if not torch.equal(out.durations[i, : len(one)], ref.durations[0].cpu()):
                continue  # a one-frame duration flip in fp16/bf16: no like-for-like wav (see test_engine)
            n = int(ref.mel_lens[0])
            assert out.wav[i, n * HOP :].abs().max() == 0
            err = pcm_err(out.wav[i], wav)
            assert err <= tol.atol + tol.rtol * float(wav.abs().max()) + STEP, (step, i, err)


@requires_cuda
@pytest.mark.cuda
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_cuda_verify_with_vocoder_passes(tmp_path, precision):
    model = random_model(seed=6, duration_bias=1.2)
    spec = EngineSpec(batch=2, max_in=16, max_out=96, precision=precision, backend="inductor")
    report = verify(
        model, spec, IDS[:2], TOL[precision], tmp_path, "cuda", backend_options={"mode": None, "cuda_graphs": True},
        vocoder=GriffinLim(n_iter=32),
    )  # fmt: skip
    assert report.passed, report.table()
    assert report.rows[-1].name == "vocoder.wav"


def test_eager_engine_vocodes_only_the_frames_that_exist_with_the_same_samples(tmp_path):
    """The eager engine runs Griffin-Lim on the batch's longest mel plus `context_frames` of silence,
    not on all of max_out (12x less work for a 1 s sentence in a 1024-frame engine on the CPU); the
    samples equal the full-length run's, bit for bit."""
    model, voc = random_model(seed=3), GriffinLim(n_iter=4)
    engine = load_or_build(model, EngineSpec(batch=2, max_in=16, max_out=512), tmp_path, "cpu", vocoder=voc)
    assert engine.runner.trim
    out = engine(IDS[:2])
    assert int(out.mel_lens.max()) + voc.context_frames < 512  # trimming really happened
    with torch.no_grad():
        full = to_pcm16(voc(out.mel, out.mel_lens))  # the whole 512 frames, as a compiled engine runs it
    assert torch.equal(out.wav, full)
