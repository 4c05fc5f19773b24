"""A user script's Tune run that saves no model, exported by the image (`training.user_checkpoints`):
a real ``tune.Tuner`` run with the variables the image sets for the script (``RAY_STORAGE``,
``RAY_TUNE_CALLBACKS``) and no checkpoint settings of its own, then the finder and the export."""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import textwrap
from pathlib import Path

import pytest
from devtools import write_job

from sagemaker_ray_rl.checkpoint import METADATA_FILE, find_checkpoint
from sagemaker_ray_rl.contract.environment import Environment
from sagemaker_ray_rl.training.user_checkpoints import (
    _extract_plain,
    _newest_as_tar,
    export_newest_checkpoint,
    newest_checkpoint,
    script_environment,
    storage_roots,
    tune_checkpoints,
)

#: A script as users write them: Tune with the default RunConfig (no storage_path, no CheckpointConfig).
TUNE_SCRIPT = """
import ray
from ray import tune
from ray.rllib.algorithms.ppo import PPOConfig

ray.init(address="local", num_cpus=2, include_dashboard=False)
config = (
    PPOConfig()
    .environment("CartPole-v1", env_config={"max_episode_steps": 50})
    .env_runners(num_env_runners=0)
    .training(train_batch_size_per_learner=200, minibatch_size=100, num_epochs=1)
)
tune.Tuner("PPO", param_space=config, run_config=tune.RunConfig(stop={"training_iteration": 2}, verbose=0)).fit()
"""


def contract_for(base: Path) -> Environment:
    return Environment.from_environ({"SAGEMAKER_BASE_DIR": str(base)})


@pytest.fixture(scope="module")
def tune_run(tmp_path_factory) -> Path:
    """The job base dir after the script ran with the image's variables (checkpoint dir filled)."""
    base = write_job(tmp_path_factory.mktemp("user_tune_job"), {"stop-iters": 2})
    environment = contract_for(base)
    script = base / "entry.py"
    script.write_text(textwrap.dedent(TUNE_SCRIPT))
    env = {**os.environ, **script_environment(environment, environ={}), "RAY_USAGE_STATS_ENABLED": "0"}
    env.pop("RAY_ADDRESS", None)
    env["RAY_AUTH_MODE"] = "disabled"
    env["HOME"] = str(base / "home")  # Tune's default ~/ray_results must stay unused
    log = base / "script.log"
    with log.open("w") as sink:
        proc = subprocess.run(
            [sys.executable, str(script)], env=env, stdout=sink, stderr=subprocess.STDOUT, timeout=600
        )
    assert proc.returncode == 0, log.read_text()[-4000:]
    assert not (base / "home" / "ray_results").exists()
    return base


def test_the_scripts_tune_run_checkpoints_its_trial_at_the_end_in_the_checkpoint_dir(tune_run: Path):
    (checkpoint,) = tune_checkpoints([tune_run / "checkpoints"])
    assert checkpoint.path.name == "checkpoint_000000"
    assert checkpoint.algorithm == "PPO"
    assert checkpoint.last_result()["training_iteration"] == 2


def test_the_newest_checkpoint_is_exported_with_metadata(tune_run: Path, tmp_path: Path):
    base = tmp_path / "job"
    shutil.copytree(tune_run, base, symlinks=True)
    environment = contract_for(base)
    (found,) = tune_checkpoints([base / "checkpoints"])
    older = found.trial_dir.parent / "PPO_older_trial" / "checkpoint_000004"
    shutil.copytree(found.path, older)
    os.utime(older / "rllib_checkpoint.json", (1, 1))

    assert newest_checkpoint(storage_roots(environment, environ={})).path == found.path
    assert export_newest_checkpoint(environment, [base / "checkpoints"]) == found.path
    assert find_checkpoint(environment.model_dir) == environment.model_dir
    metadata = json.loads((environment.model_dir / METADATA_FILE).read_text())
    assert metadata["algorithm"] == "PPO" and metadata["env"] == "CartPole-v1"
    assert metadata["env_config"] == {"max_episode_steps": 50}
    assert metadata["module_ids"] == ["default_policy"]
    assert metadata["metrics"]["training_iteration"] == 2
    assert metadata["hyperparameters"] == {"stop-iters": 2}
    # A model dir that already holds a checkpoint is left as it is.
    assert export_newest_checkpoint(environment, [base / "checkpoints"]) is None


def test_no_checkpoint_anywhere_leaves_the_model_dir_empty_with_a_warning(tmp_path: Path, caplog):
    environment = contract_for(write_job(tmp_path / "job", {}))
    with caplog.at_level(logging.WARNING):
        assert export_newest_checkpoint(environment, [tmp_path / "job" / "checkpoints", tmp_path / "none"]) is None
    assert not environment.model_dir.exists() or not any(environment.model_dir.iterdir())
    (record,) = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert f"The model dir {environment.model_dir} is empty" in record.getMessage()
    assert str(tmp_path / "none") in record.getMessage()


def test_a_worker_hosts_checkpoint_travels_as_an_archive_to_the_same_path(tune_run: Path, tmp_path: Path):
    (found,) = tune_checkpoints([tune_run / "checkpoints"])
    written_at, path, data = _newest_as_tar([str(tune_run / "checkpoints")])
    assert (written_at, path) == (found.written_at, str(found.path))
    target = tmp_path / found.trial_dir.name
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        _extract_plain(tar, target)
    (copied,) = tune_checkpoints([tmp_path])
    assert copied.path == target / found.path.name
    assert copied.last_result()["training_iteration"] == 2 and copied.params()["env"] == "CartPole-v1"


def test_an_archive_member_outside_the_trial_dir_is_refused(tmp_path: Path):
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        member = tarfile.TarInfo("../escaped.txt")
        member.size = 1
        tar.addfile(member, io.BytesIO(b"x"))
    buffer.seek(0)
    with tarfile.open(fileobj=buffer) as tar, pytest.raises(ValueError, match="unexpected member '../escaped.txt'"):
        _extract_plain(tar, tmp_path / "trial")
    assert not (tmp_path / "escaped.txt").exists()
