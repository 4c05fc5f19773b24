"""Seed 004's batch-RL loop in the real image, with short settings: a collect job, an offline job
reading it as channel ``train``, the exported model served, and the next dataset collected through
``/invocations``."""

from __future__ import annotations

import csv
import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import REPO, docker
from helpers import write_job
from test_image import Server

from sagemaker_ray_rl.offline.dataset import read_dataset

pytestmark = pytest.mark.container

ENV = {"env": "CartPole-v1", "env_config": {"max_episode_steps": 200}}


@pytest.fixture(scope="module")
def offline_jobs(image: str, tmp_path_factory):
    collect = write_job(
        tmp_path_factory.mktemp("collect"),
        {
            "mode": "collect",
            **ENV,
            "offline.num_episodes": 100,
            "offline.num_envs": 20,
        },
    )
    run = docker("run", "--rm", "-v", f"{collect}:/opt/ml", image, "train", timeout=600)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    offline = write_job(
        tmp_path_factory.mktemp("offline"),
        {
            "mode": "offline",
            **ENV,
            "offline.num_updates": 400,
            "offline.evaluate_every": 200,
            "offline.num_runs": 1,
            "offline.fqe_updates": 200,
            "offline.model_updates": 300,
            "offline.eval_episodes": 2,
        },
        inputdataconfig={"train": {}},
    )
    shutil.copytree(collect / "output" / "data" / "dataset", offline / "input" / "data" / "train")
    run = docker("run", "--rm", "-v", f"{offline}:/opt/ml", image, "train", timeout=900)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    return collect, offline, run.stdout + run.stderr


def test_collect_then_offline_train_in_the_image(offline_jobs):
    collect, offline, output = offline_jobs
    assert read_dataset(collect / "output" / "data" / "dataset").num_episodes == 100
    assert output.count("\nope_dr: ") == 2 and output.count("\nope_mb: ") == 2
    assert output.count("\neval_return_mean: ") == 2
    with open(offline / "output" / "data" / "ope.csv") as f:
        assert [int(r["offline_updates"]) for r in csv.DictReader(f)] == [200, 400]
    metadata = json.loads((offline / "model" / "metadata.json").read_text())
    assert metadata["algorithm"] == "DiscreteCQL" and metadata["offline"]["select"] == "mb"  # the default


def test_the_exported_model_serves_and_collects_the_next_dataset(image: str, offline_jobs, tmp_path: Path):
    _, offline, _ = offline_jobs
    server = Server(image, offline / "model")
    try:
        server.wait_until_healthy()
        run = subprocess.run(
            [
                sys.executable,
                str(REPO / "scripts" / "collect_http.py"),
                "--url",
                server.url,
                "--out",
                str(tmp_path / "next"),
                "--episodes",
                "10",
                "--num-envs",
                "5",
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert run.returncode == 0, run.stderr[-4000:]
    finally:
        assert server.stop() == 0, server.logs()
    data = read_dataset(tmp_path / "next")
    assert data.num_episodes == 10
    # epsilon 0.1 over 2 actions: 0.95 for the served greedy action, 0.05 for the other
    assert np.all(np.isclose(data.action_prob, 0.95) | np.isclose(data.action_prob, 0.05))
