"""`checkpoint.build_metadata` / `export_model`: metadata.json never carries a secret's value."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import pytest

from sagemaker_ray_rl.checkpoint import (
    REDACTED,
    RL_MODULE_SUBDIR,
    build_metadata,
    export_model,
    is_secret_key,
    redact_secrets,
)


@pytest.mark.parametrize(
    "key",
    [
        "db_password",
        "DB_PASSWORD",
        "dbPassword",
        "passwd",
        "rl.training.config.hf_token",
        "api_key",
        "apiKey",
        "aws-access-key-id",
        "AWS_SECRET_ACCESS_KEY",
        "client_secret",
        "credentials",
        "ssh_private_key",
        "auth",
        "wandb.api_key",
        "key",
    ],
)
def test_secret_looking_keys(key):
    assert is_secret_key(key)


@pytest.mark.parametrize(
    "key",
    [
        "algorithm",
        "env",
        "rl.training.config.lr",
        "stop.episode_return_mean",
        "monkey",
        "keyboard_env",
        "sagemaker_program",
    ],
)
def test_ordinary_keys(key):
    assert not is_secret_key(key)


def test_nested_values_are_redacted_and_the_rest_kept():
    given = {
        "lr": 0.001,
        "db_password": "hunter2",
        "env_config": {"size": 3, "api_key": "sk-123", "nested": [{"token": "t"}, {"x": 1}]},
    }
    assert redact_secrets(given) == {
        "lr": 0.001,
        "db_password": REDACTED,
        "env_config": {"size": 3, "api_key": REDACTED, "nested": [{"token": REDACTED}, {"x": 1}]},
    }
    assert given["db_password"] == "hunter2"  # a copy


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory) -> Path:
    """A checkpoint directory holding one real (untrained) PPO RLModule for CartPole's spaces."""
    from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule

    env = gym.make("CartPole-v1")
    module = DefaultPPOTorchRLModule(
        observation_space=env.observation_space, action_space=env.action_space, model_config={}
    )
    root = tmp_path_factory.mktemp("checkpoint")
    module.save_to_path(str(root / RL_MODULE_SUBDIR / "default_policy"))
    (root / "rllib_checkpoint.json").write_text("{}")
    return root


def test_metadata_json_holds_no_secret_value(checkpoint, tmp_path):
    hyperparameters = {"lr": 0.0003, "db_password": "hunter2", "sagemaker_program": "train.py"}
    metadata = build_metadata(
        checkpoint,
        algorithm="PPO",
        env="CartPole-v1",
        env_config={"api_key": "sk-live-123", "size": 3},
        metrics={},
        hyperparameters=hyperparameters,
    )
    assert metadata["hyperparameters"] == {"lr": 0.0003, "db_password": REDACTED, "sagemaker_program": "train.py"}
    assert metadata["env_config"] == {"api_key": REDACTED, "size": 3}
    written = export_model(checkpoint, tmp_path / "model", metadata)
    text = written.read_text()
    assert "hunter2" not in text and "sk-live-123" not in text
    assert json.loads(text)["modules"]["default_policy"]["action_space"] == "Discrete(2)"


def test_export_model_redacts_metadata_it_did_not_build(checkpoint, tmp_path):
    written = export_model(checkpoint, tmp_path / "model", {"hyperparameters": {"github_token": "ghp_x", "lr": 1}})
    assert json.loads(written.read_text())["hyperparameters"] == {"github_token": REDACTED, "lr": 1}
