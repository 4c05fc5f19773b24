"""`api.train_and_export`, the examples' one call after their config: `run_experiment` as the job
asks, then `build_metadata` and `export_model`; nothing exported after SIGTERM. Tune is replaced by a
stand-in that returns a real (untrained) checkpoint, so no training runs here."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import pytest
from helpers import write_job
from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
from ray.tune.registry import register_env

from sagemaker_ray_rl import train_and_export as public_train_and_export
from sagemaker_ray_rl.checkpoint import REDACTED, RL_MODULE_SUBDIR
from sagemaker_ray_rl.contract.environment import Environment
from sagemaker_ray_rl.training import api
from sagemaker_ray_rl.training.api import build_experiment, train_and_export
from sagemaker_ray_rl.training.experiment import ExperimentResult

JOB_HYPERPARAMETERS = {"rl.training.config.lr": 0.0005, "db_password": "hunter2", "stop.training_iteration": 7}
#: The script's own hyperparameters (not RLlib settings).
OWN = ["db_password"]
#: A script's registered env, built from its env_config.
SIZED_ENV = "sized-cartpole"
register_env(SIZED_ENV, lambda env_config: gym.make("CartPole-v1"))


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """An algorithm checkpoint holding one real, untrained PPO RLModule for CartPole's spaces."""
    env = gym.make("CartPole-v1")
    module = DefaultPPOTorchRLModule(
        observation_space=env.observation_space, action_space=env.action_space, model_config={}
    )
    root = tmp_path_factory.mktemp("checkpoint")
    module.save_to_path(str(root / RL_MODULE_SUBDIR / "default_policy"))
    (root / "rllib_checkpoint.json").write_text("{}")
    return root


@pytest.fixture
def environment(tmp_path: Path) -> Environment:
    base = write_job(tmp_path / "opt_ml", JOB_HYPERPARAMETERS)
    return Environment.from_environ({"SAGEMAKER_BASE_DIR": str(base)})


def tune_stand_in(checkpoint: Path, calls: list, *, stopped: bool = False):
    def run_experiment(config, **kwargs):
        calls.append((config, kwargs))
        metrics = {"episode_return_mean": 21.5, "training_iteration": 7}
        return ExperimentResult(checkpoint, checkpoint.parent, metrics, stopped=stopped)

    return run_experiment


def test_the_job_experiment_is_trained_and_exported_with_its_metadata(checkpoint, environment, monkeypatch, capsys):
    calls: list = []
    monkeypatch.setattr(api, "run_experiment", tune_stand_in(checkpoint, calls))
    experiment = build_experiment(
        {"env_config": {"size": 3}},
        hyperparameters=environment.hyperparameters,
        env=SIZED_ENV,
        num_cpus=2,
        ignore=OWN,
    )
    config = experiment.config.training(gamma=0.9)  # what a script changes before training
    result = train_and_export(experiment, config, environment=environment)

    [(trained, options)] = calls
    assert trained is config
    assert options["stop"] == {"training_iteration": 7}
    assert options["storage_dir"] == environment.checkpoint_dir
    assert options["checkpoint_frequency"] == experiment.checkpoint_frequency
    assert not result.stopped and result.checkpoint_dir == checkpoint
    metadata = json.loads((environment.model_dir / "metadata.json").read_text())
    assert metadata["algorithm"] == "PPO" and metadata["env"] == SIZED_ENV
    assert metadata["env_config"] == {"size": 3}
    assert metadata["metrics"] == {"episode_return_mean": 21.5, "training_iteration": 7}
    assert metadata["hyperparameters"]["rl.training.config.lr"] == 0.0005
    assert metadata["hyperparameters"]["db_password"] == REDACTED
    assert metadata["action_postprocessing"] == {"normalize_actions": True, "clip_actions": False}
    assert (environment.model_dir / RL_MODULE_SUBDIR / "default_policy").is_dir()
    assert f"to {environment.model_dir} (metadata.json written): episode_return_mean 21.5" in capsys.readouterr().out


def test_without_a_config_the_experiments_own_is_trained(checkpoint, environment, monkeypatch):
    calls: list = []
    monkeypatch.setattr(api, "run_experiment", tune_stand_in(checkpoint, calls))
    experiment = build_experiment(
        hyperparameters=environment.hyperparameters, env="CartPole-v1", num_cpus=2, ignore=OWN
    )
    train_and_export(experiment, environment=environment)
    assert calls[0][0] is experiment.config
    assert json.loads((environment.model_dir / "metadata.json").read_text())["env_config"] == {}


def test_after_sigterm_nothing_is_exported(checkpoint, environment, monkeypatch, capsys):
    monkeypatch.setattr(api, "run_experiment", tune_stand_in(checkpoint, [], stopped=True))
    experiment = build_experiment(
        hyperparameters=environment.hyperparameters, env="CartPole-v1", num_cpus=2, ignore=OWN
    )
    result = train_and_export(experiment, environment=environment)
    assert result.stopped
    assert not environment.model_dir.exists()
    assert "Stopped by SIGTERM" in capsys.readouterr().out


def test_an_env_class_is_named_by_its_import_path():
    assert api._env_name(gym.envs.classic_control.CartPoleEnv) == "gymnasium.envs.classic_control.cartpole.CartPoleEnv"
    assert api._env_name("my-env") == "my-env"


def test_it_is_public_api():
    assert public_train_and_export is train_and_export
