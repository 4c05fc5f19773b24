"""The exit status the training toolkit gives a failed job must never be 0."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from helpers import job_environ, write_job

SCRIPT = """
import sagemaker_ray_rl.training.builtin as builtin

def boom(contract):
    raise ConnectionError("Failed to connect to Ray cluster at 10.0.0.1:6379")

builtin.prepare = boom
from sagemaker_training import trainer
trainer.train()
"""


def test_an_oserror_without_errno_fails_the_job(tmp_path: Path):
    # ConnectionError has errno None: the toolkit alone would exit 0 and report nothing wrong.
    base = write_job(tmp_path / "opt_ml", {"stop.training_iteration": 1})
    subprocess.run([sys.executable, "-m", "sagemaker_ray_rl.contract.standalone"], env=job_environ(base), check=True)
    run = subprocess.run(
        [sys.executable, "-c", SCRIPT], env=job_environ(base), capture_output=True, text=True, timeout=120
    )
    assert run.returncode == 1, run.stderr[-3000:]
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith("Unexpected ConnectionError in sagemaker_ray_rl training: Failed to connect")
