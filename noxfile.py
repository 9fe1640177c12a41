"""nox sessions: `nox -s tests` (CPU, what CI runs), `nox -s lint`, `nox -s bench` (GPU)."""

import nox

nox.options.sessions = ["tests"]
nox.options.reuse_existing_virtualenvs = True

# Pinned: 2.13.0 is the CPU build on our machines; any other torch pulls several GB of CUDA wheels.
TORCH = "torch==2.13.0"


@nox.session
def tests(session: nox.Session) -> None:
    """CPU tests; Triton kernels run under the interpreter. CUDA/TensorRT tests skip with a reason."""
    session.install(TORCH, "-e", ".[dev]")
    session.run("pytest", *session.posargs, env={"TRITON_INTERPRET": "1"})


@nox.session
def lint(session: nox.Session) -> None:
    session.install("ruff")
    session.run("ruff", "check", "fastspeech", "kernels", "converters", "tests", "benchmarks", "run.py", "noxfile.py")


@nox.session
def bench(session: nox.Session) -> None:
    """The performance tables (README): needs a CUDA GPU; uses the torch already installed there."""
    session.install("-e", ".")
    session.run("python", "-m", "benchmarks.latency", *session.posargs)
