"""`train.choose_job`: which job a host of a training job runs, decided in one place."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write_job

from sagemaker_ray_rl.contract.environment import Environment
from sagemaker_ray_rl.contract.errors import HyperparameterError
from sagemaker_ray_rl.train import _RUNNERS, Job, choose_job

TWO_HOSTS = {"current_host": "algo-1", "hosts": ["algo-1", "algo-2"]}


def job_of(base: Path, hyperparameters: dict, current_host: str = "algo-1") -> Job:
    write_job(base, hyperparameters, resourceconfig={**TWO_HOSTS, "current_host": current_host})
    return choose_job(Environment.from_environ({"SAGEMAKER_BASE_DIR": str(base)}))


@pytest.mark.parametrize(
    ("hyperparameters", "current_host", "job"),
    [
        ({}, "algo-1", Job.BUILTIN),
        ({"mode": "train"}, "algo-1", Job.BUILTIN),
        ({"mode": "offline"}, "algo-1", Job.OFFLINE),
        ({"mode": "collect"}, "algo-1", Job.OFFLINE),
        ({"sagemaker_program": "train.py"}, "algo-1", Job.USER_SCRIPT),
        # A user entry point wins over mode, which it may use for its own purpose.
        ({"sagemaker_program": "train.py", "mode": "anything"}, "algo-1", Job.USER_SCRIPT),
        # A worker host only joins the cluster, whatever the job; it checks nothing.
        ({"sagemaker_program": "train.py"}, "algo-2", Job.WORKER_HOST),
        ({"mode": "not-a-mode"}, "algo-2", Job.WORKER_HOST),
    ],
)
def test_each_host_runs_one_job(tmp_path: Path, hyperparameters: dict, current_host: str, job: Job):
    assert job_of(tmp_path, hyperparameters, current_host) is job


def test_a_mode_that_is_no_job_fails_on_the_master(tmp_path: Path):
    with pytest.raises(HyperparameterError, match="mode"):
        job_of(tmp_path, {"mode": "not-a-mode"})


def test_every_job_has_a_runner():
    assert set(_RUNNERS) == set(Job)
