"""`fastspeech.TTS` from Python on a CUDA GPU: the time to have engines ready, then one call (text ->
16-bit wav on the host) and one call with a list of 12 texts. The demo voice (a small model) on
engine i64_o512 in fp16.

    python -m benchmarks.bench_tts --out results/tts      # also writes hello.wav there
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import torch

import fastspeech

TEXT = "Hello, world! Don't stop."
TEXTS = ["One line.", "Another, with a comma.", "A third sentence, a little longer than the others."] * 4


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--calls", type=int, default=200)
    p.add_argument("--engine-dir", default="engines")
    p.add_argument("--out", default="results/tts")
    args = p.parse_args(argv)
    t0 = time.perf_counter()
    tts = fastspeech.TTS(engine="i64_o512", precision="fp16", engine_dir=args.engine_dir)
    print(f"TTS(engine=i64_o512, precision=fp16) ready in {time.perf_counter() - t0:.1f} s", end=" ")
    print(f"on {torch.cuda.get_device_name()}, torch {torch.__version__}")
    Path(args.out).mkdir(parents=True, exist_ok=True)
    tts(TEXT).save(f"{args.out}/hello.wav")
    for _ in range(20):
        tts(TEXT)
    times = []
    for _ in range(args.calls):
        t = time.perf_counter()
        speech = tts(TEXT)
        times.append(1e3 * (time.perf_counter() - t))
    print(
        f"tts({TEXT!r}): {speech.seconds:.2f} s of audio; per call median {np.median(times):.2f} ms, "
        f"p90 {np.percentile(times, 90):.2f} ms ({args.calls} calls)"
    )
    for _ in range(3):
        tts(TEXTS)
    t = time.perf_counter()
    out = tts(TEXTS)
    print(
        f"tts(12 texts): {1e3 * (time.perf_counter() - t):.1f} ms, {sum(s.seconds for s in out):.1f} s of audio"
    )


if __name__ == "__main__":
    main()
