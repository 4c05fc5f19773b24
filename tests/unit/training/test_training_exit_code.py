"""The exit status the training toolkit gives a failed job must never be 0."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from helpers import BIN, job_environ, write_job

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


def bad_job(base: Path) -> Path:
    """A job that fails before Ray starts (an unknown hyperparameter), its config files in place."""
    base = write_job(base, {"rl.training.config.lrr": 0.1})
    subprocess.run([sys.executable, "-m", "sagemaker_ray_rl.contract.standalone"], env=job_environ(base), check=True)
    return base


def train(base: Path) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "train")], env=job_environ(base), capture_output=True, text=True, timeout=120)


def test_an_unwritable_output_dir_still_fails_the_job_with_the_reason_on_stderr(tmp_path: Path):
    # The toolkit alone: its failure file raises in its error handler, whose `finally` exits 0.
    base = bad_job(tmp_path / "opt_ml")
    shutil.rmtree(base / "output", ignore_errors=True)
    (base / "output").write_text("a file where the output dir should be")
    run = train(base)
    assert run.returncode == 1, run.stderr[-3000:]
    assert "Training failed: HyperparameterError: Unknown hyperparameter 'rl.training.config.lrr'" in run.stderr
    assert "Could not write the failure file" in run.stderr


def test_a_full_output_disk_still_fails_the_job_with_the_reason_on_stderr(tmp_path: Path):
    base = bad_job(tmp_path / "opt_ml")
    output = base / "output"
    output.mkdir(exist_ok=True)
    mounted = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(output)], capture_output=True)
    if mounted.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {mounted.stderr.decode().strip()}")
    try:
        with open(output / "filler", "wb", buffering=0) as filler:
            try:
                while True:
                    filler.write(b"x" * 512)
            except OSError:  # full
                pass
        started = time.monotonic()
        run = train(base)
        assert run.returncode == 1, run.stderr[-3000:]
        assert time.monotonic() - started < 60
        assert "Training failed: HyperparameterError: Unknown hyperparameter" in run.stderr
    finally:
        subprocess.run(["umount", str(output)], check=False)
