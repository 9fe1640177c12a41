"""nox sessions: `nox -s tests` (CPU, what CI runs, < 10 min on 2 cores), `nox -s tests_full` (also the
`slow` tests and Ray Serve), `nox -s lint`, `nox -s bench` (GPU)."""

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

# Pinned: 2.13.0 is the CPU build on our machines; any other torch pulls several GB of CUDA wheels.
TORCH = "torch==2.13.0"


@nox.session
def tests(session: nox.Session) -> None:
    """CPU tests without the `slow` marker; Triton kernels run under the interpreter. CUDA/TensorRT
    tests skip with a reason. Two pytest-xdist workers (CI has 2 cores; `-- -n 0` runs in one
    process, `-- -n 8` on more cores)."""
    session.install(TORCH, "-e", ".[dev]")
    session.run("pytest", "-m", "not slow", "-n", "2", *session.posargs, env={"TRITON_INTERPRET": "1"})


@nox.session
def tests_full(session: nox.Session) -> None:
    """Every CPU test, the `slow` ones too (torch.compile on the CPU, every docs command, Ray Serve)."""
    session.install(TORCH, "-e", ".[dev,serve]")
    session.run("pytest", *session.posargs, env={"TRITON_INTERPRET": "1"})


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "fastspeech", "kernels", "converters", "tests", "benchmarks", "run.py", "noxfile.py")


@nox.session(venv_backend="none")
def bench(session: nox.Session) -> None:
    """The README's performance tables on a CUDA GPU, in the current environment (its CUDA torch;
    `pip install -e .` first). Arguments go to `benchmarks.latency`; without any, the whole grid
    (3 precisions x 5 batches x 4 variants, ~16 min on an H100) plus the end-to-end split, then the
    router, text-to-wav, Griffin-Lim and server benchmarks with the demo voice, and an engine call's
    host overhead (on the GPU, then its Python alone), and `fastspeech.TTS` from Python."""
    out = "benchmarks/results/run"
    session.run("python", "-m", "benchmarks.latency", *(session.posargs or ["--e2e", "--profile", "--out", out]))
    if not session.posargs:
        session.run(
            "python", "-m", "benchmarks.bench_router", "--model", "demo",
            "--checkpoint", "fastspeech/assets/demo_voice.pt", "--precision", "fp16", "--backend", "inductor",
            "--batch", "1,8", "--n", "1000", "--out", f"{out}/bench_router_demo.json",
        )  # fmt: skip
        session.run("python", "-m", "benchmarks.e2e", "--out", f"{out}/e2e.json")
        session.run(
            "python", "-m", "benchmarks.bench_griffin_lim", "--profile", "--out", f"{out}/bench_griffin_lim.json"
        )
        session.run("python", "-m", "benchmarks.bench_serve", "--out", f"{out}/bench_serve.json")
        session.run(
            "python", "-m", "benchmarks.bench_engine_call", "--engines", "i32_o256,i128_o1024", "--calls", "600",
            "--out", f"{out}/bench_engine_call.json",
        )  # fmt: skip
        session.run("python", "-m", "benchmarks.bench_host_io")
        session.run("python", "-m", "benchmarks.bench_tts", "--out", f"{out}/tts")
