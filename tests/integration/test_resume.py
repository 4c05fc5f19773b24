"""Spot and stop: SIGTERM checkpoints the running iteration and stops; a restart on the same
/opt/ml/checkpoints continues at the next iteration with its step counter intact."""

from __future__ import annotations

import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from helpers import BIN, job_environ, run_train, write_job

BATCH = 500


def iterations(output: str) -> list[tuple[int, int]]:
    """(training_iteration, timesteps_total) per metric block, in order."""
    its = [int(v) for v in re.findall(r"^training_iteration: (\d+)$", output, re.M)]
    steps = [int(v) for v in re.findall(r"^timesteps_total: (\d+)$", output, re.M)]
    return list(zip(its, steps))


def test_sigterm_checkpoints_and_a_restart_resumes(tmp_path: Path):
    base = write_job(
        tmp_path / "job",
        {
            "stop.training_iteration": "6",
            "checkpoint_frequency": "1",
            "num_env_runners": "1",
            "training.train_batch_size_per_learner": str(BATCH),
            "training.minibatch_size": "250",
        },
    )
    env = job_environ(base)
    subprocess.run([sys.executable, "-m", "sagemaker_ray_rl.contract.standalone"], env=env, check=True)
    proc = subprocess.Popen([str(BIN / "train")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines: list[str] = []
    sent = None
    watchdog = threading.Timer(300, proc.kill)
    watchdog.start()
    assert proc.stdout is not None
    for line in proc.stdout:  # one reader for the whole output: nothing buffered is lost
        lines.append(line)
        if sent is None and line.strip() == "training_iteration: 2":
            proc.send_signal(signal.SIGTERM)
            sent = time.monotonic()
    proc.wait()
    watchdog.cancel()
    assert sent is not None, "".join(lines)[-4000:]
    took = time.monotonic() - sent
    first = "".join(lines)
    assert proc.returncode == 0, first[-4000:]
    assert took < 120, f"stopping took {took:.0f} s (SageMaker kills at 120 s)"
    assert "Stopped by SIGTERM" in first, first[-4000:]
    assert not (base / "model" / "metadata.json").exists(), "a stopped job must not export a model"
    before = iterations(first)
    last_iteration, last_steps = before[-1]
    assert last_iteration >= 2 and last_steps == last_iteration * BATCH, first[-6000:]

    second = run_train(base)
    assert second.returncode == 0, second.output[-4000:]
    assert "Resuming the experiment" in second.output
    after = iterations(second.output)
    assert after[0] == (last_iteration + 1, last_steps + BATCH), (before, after)
    assert after[-1][0] == 6
    assert (base / "model" / "metadata.json").exists()
