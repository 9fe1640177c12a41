"""fastspeech-trt entry point (Hydra): text in, wav out; build engines; verify them.

    python run.py text="It just works."                      # synthesize (backend=auto)
    python run.py input=phrases.txt batch_size=8             # one utterance a line
    python run.py engine=i64_o512 precision=fp16 mode=build  # only build the engine
    python run.py -m engine=i32_o256,i64_o512 mode=build     # one Hydra job per engine
    python run.py mode=verify engine=i64_o512 precision=fp16 text="It just works."  # engine vs eager

Errors the user can fix are printed as one line (exit code 1), never as a traceback.
"""

from __future__ import annotations

import logging
import sys

import hydra
from omegaconf import DictConfig

from fastspeech.errors import FastSpeechError

log = logging.getLogger("fastspeech")


def dispatch(cfg: DictConfig) -> None:
    from fastspeech import pipeline

    if cfg.mode == "synthesize":
        pipeline.synthesize(cfg)
    elif cfg.mode == "build":
        pipeline.build(cfg)
    elif cfg.mode == "verify":
        from fastspeech import verify

        verify.run(cfg)
    else:
        raise FastSpeechError(f"unknown mode={cfg.mode}; use synthesize, build or verify")


@hydra.main(version_base="1.3", config_path="conf", config_name="config")
def main(cfg: DictConfig) -> None:
    try:
        dispatch(cfg)
    except FastSpeechError as exc:
        log.error("%s", exc)
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
