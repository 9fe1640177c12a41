"""Bad `vocoder.*` settings on the command line: one error line before any work.

In-process through Hydra's compose API and `run.dispatch` (as tests/test_cli.py); one case runs
`run.py` in a subprocess for the exit code and the `error:` line.
"""

import os
import subprocess
import sys

import pytest
from helpers import CONF, ROOT

from fastspeech.errors import FastSpeechError

pytest.importorskip("hydra", reason="run.py needs hydra-core (carry its wheel to the GPU image)")
sys.path.insert(0, ROOT)
import run as run_py  # run.py lives at the repository root


def dispatch(tmp_path, *overrides):
    from hydra import compose, initialize_config_dir

    with initialize_config_dir(config_dir=CONF, version_base="1.3"):
        cfg = compose(config_name="config", overrides=[
            "text=hi", "model=tiny", "checkpoint=random", "plot=false", f"results_dir={tmp_path / 'results'}",
            f"engine_dir={tmp_path / 'engines'}", *overrides,
        ])  # fmt: skip
    return run_py.dispatch(cfg)


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["vocoder=hifigan"], "vocoder=hifigan needs vocoder.checkpoint=PATH"),
        (
            ["vocoder=waveglow", "vocoder.checkpoint=/no/such/wg.pt"],
            "vocoder.checkpoint=/no/such/wg.pt: no such file",
        ),
        (["vocoder=waveglow", f"vocoder.checkpoint={__file__}", "vocoder.sigma=-0.5"], "vocoder.sigma=-0.5"),
        (["vocoder.n_iter=0"], "vocoder.n_iter=0"),
        (  # a checkpoint without the vocoder it is for had been dropped in silence
            ["vocoder.checkpoint=/some/generator.pt"],
            "vocoder.checkpoint=/some/generator.pt is given but vocoder=griffin_lim takes none; add vocoder=hifigan",
        ),
        (["mode=verify", "vocoder.momentum=2"], "vocoder.momentum=2"),
    ],
)
def test_bad_vocoder_setting_is_one_line_before_any_work(tmp_path, overrides, message):
    with pytest.raises(FastSpeechError, match=message) as info:
        dispatch(tmp_path, *overrides)
    assert "\n" not in str(info.value)
    assert not (tmp_path / "engines").exists()  # refused before any engine was built


def test_exit_code_and_one_error_line(tmp_path):
    cmd = [sys.executable, os.path.join(ROOT, "run.py"), "text=hi", "vocoder=hifigan",
           f"hydra.run.dir={tmp_path / 'hydra'}", f"engine_dir={tmp_path / 'engines'}"]  # fmt: skip
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd=tmp_path, timeout=300, check=False,
                          env={**os.environ, "PYTHONPATH": ROOT})  # fmt: skip
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error: ")]
    assert proc.returncode == 1 and len(errors) == 1, proc.stderr[-2000:]
    assert "vocoder.checkpoint=PATH" in errors[0] and "Traceback" not in proc.stderr
