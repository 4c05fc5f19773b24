"""Container fixtures: the real image, built once per test session.

`scripts/test.sh` builds the image and passes its tag in SAGEMAKER_RAY_RL_IMAGE; run alone, the
fixture builds it with scripts/build.sh. Without a Docker engine the container tests are skipped,
except under CI (CI=true), where that is a failure.
"""

from __future__ import annotations

import os
import shutil
import subprocess

import pytest
from devtools import REPO, docker, docker_cli, write_job

__all__ = ["REPO", "docker", "docker_cli"]  # the tests import these from here, too


@pytest.fixture(scope="session")
def image() -> str:
    engine_up = shutil.which(docker_cli()) is not None and docker("info", timeout=60).returncode == 0
    if not engine_up:
        if os.environ.get("CI") == "true":
            pytest.fail(
                "no Docker engine answers: container tests must run in CI (scripts/ensure-docker.sh starts one)"
            )
        pytest.skip("no Docker engine answers (start one with scripts/ensure-docker.sh)")
    tag = os.environ.get("SAGEMAKER_RAY_RL_IMAGE")
    if not tag:
        build = subprocess.run(
            [str(REPO / "scripts" / "build.sh")], capture_output=True, text=True, timeout=3000, cwd=REPO
        )
        assert build.returncode == 0, build.stderr[-4000:]
        tag = build.stdout.strip().splitlines()[-1]
    assert docker("image", "inspect", tag).returncode == 0, f"image {tag} does not exist"
    return tag


@pytest.fixture(scope="module")
def container_job(image: str, tmp_path_factory):
    """`docker run -v JOB:/opt/ml IMAGE train` with the README's acceptance hyperparameters."""
    base = write_job(
        tmp_path_factory.mktemp("container_job"),
        {"rl.training.config.lr": "0.0003", "stop.training_iteration": "3"},
    )
    run = docker("run", "--rm", "-v", f"{base}:/opt/ml", image, "train", timeout=900)
    return base, run
