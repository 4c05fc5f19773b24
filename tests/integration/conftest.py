"""Integration fixtures: real (short) training in this Python environment, shared, and the real
`serve` command (gunicorn) on a loopback port. The tiny policies of each kind (`policy_dirs`) are
in tests/conftest.py, shared with the container tests."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest
from devtools import free_port, wait_for_ping
from helpers import BIN, TrainingRun, job_environ, run_train, write_job

__all__ = ["ServeProcess", "free_port"]  # tests import these from here


@pytest.fixture(scope="session")
def trained_job(tmp_path_factory) -> TrainingRun:
    """PPO on CartPole-v1 for 2 iterations, lr from a seed-style hyperparameter, 3 evaluation
    episodes every 2 iterations, and 4 evaluation episodes of the exported policy at the end."""
    base = write_job(
        tmp_path_factory.mktemp("job"),
        {
            "rl.training.config.lr": "0.0003",
            "stop.training_iteration": "2",
            "num_env_runners": "1",
            "evaluation.evaluation_interval": "2",
            "evaluation.evaluation_duration": "3",
            "evaluation.evaluation_duration_unit": "episodes",
            "evaluation_episodes": "4",
        },
    )
    run = run_train(base)
    assert run.returncode == 0, run.output[-4000:]
    return run


class ServeProcess:
    """The `serve` console script on a free loopback port, serving `model_dir`."""

    def __init__(self, model_dir: Path, tmp: Path, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environ = job_environ(tmp, SM_MODEL_DIR=str(model_dir), SAGEMAKER_BIND_TO_PORT=str(self.port), **env)
        environ.setdefault("SAGEMAKER_MODEL_SERVER_WORKERS", "1")
        self.log = tmp / f"serve-{self.port}.log"
        self._log_file = self.log.open("w")
        self.proc = subprocess.Popen([str(BIN / "serve")], env=environ, stdout=self._log_file, stderr=subprocess.STDOUT)

    def wait_until_healthy(self, timeout: float = 60) -> None:
        def running() -> None:
            assert self.proc.poll() is None, self.log.read_text()[-4000:]

        wait_for_ping(self.url, timeout, check=running)

    def stop(self) -> int:
        self.proc.terminate()
        code = self.proc.wait(timeout=30)
        self._log_file.close()
        return code


@pytest.fixture(scope="module")
def servers(policy_dirs, tmp_path_factory):
    """kind -> a running `serve` for that policy, started on first use, stopped (exit 0 checked)
    at the end of the module."""
    running: dict[str, ServeProcess] = {}

    def get(kind: str) -> ServeProcess:
        if kind not in running:
            server = ServeProcess(policy_dirs[kind], tmp_path_factory.mktemp(f"serve-{kind}"))
            running[kind] = server
            server.wait_until_healthy()
        return running[kind]

    yield get
    codes = {kind: server.stop() for kind, server in running.items()}
    assert all(code == 0 for code in codes.values()), codes
