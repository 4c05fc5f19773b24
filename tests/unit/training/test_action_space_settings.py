"""Model settings of another action space's distribution (``free_log_std`` on CartPole, as AWS's
notebooks set it) are dropped with a warning instead of failing the job."""

from __future__ import annotations

import logging

import gymnasium as gym
import pytest
from gymnasium import spaces

from sagemaker_ray_rl.training.algorithm_config import (
    BOX_ONLY_MODEL_SETTINGS,
    build_algorithm_config,
    drop_settings_of_other_action_spaces,
)
from sagemaker_ray_rl.training.hyperparameters import parse_hyperparameters

LOGGER = "sagemaker_ray_rl.training.algorithm_config"


def config_for(hps: dict):
    return build_algorithm_config(parse_hyperparameters(hps, num_cpus=2), num_gpus=0)


@pytest.mark.parametrize(
    "hps",
    [
        {"rl.training.config.model": {"free_log_std": True, "fcnet_hiddens": [32]}},
        {"rl.training.config.model.free_log_std": True, "rl.training.config.model.fcnet_hiddens": [32]},
        {"rl_module.model_config": {"free_log_std": True, "fcnet_hiddens": [32]}},
    ],
)
def test_free_log_std_on_a_discrete_env_is_dropped_with_one_warning(hps, caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        config = config_for(hps)
    assert "free_log_std" not in config._model_config
    assert config.model_config["fcnet_hiddens"] == [32]
    warnings = [r.getMessage() for r in caplog.records if r.name == LOGGER]
    assert len(warnings) == 1, warnings
    assert warnings[0].startswith("model setting free_log_std=True dropped:")
    assert "only continuous (Box) action spaces" in warnings[0] and "Discrete(2)" in warnings[0]
    # The RLModule builds: RLlib's PPO catalog refuses free_log_std=True on a Categorical distribution.
    config.get_rl_module_spec(env=gym.make("CartPole-v1")).build()


def test_free_log_std_on_a_box_env_is_kept(caplog):
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        config = config_for({"env": "Pendulum-v1", "rl.training.config.model": {"free_log_std": True}})
    assert config.model_config["free_log_std"] is True
    assert not [r for r in caplog.records if r.name == LOGGER]


@pytest.mark.parametrize(
    "space, dropped",
    [
        (spaces.Discrete(3), ["free_log_std", "log_std_clip_param"]),
        (spaces.MultiDiscrete([2, 3]), ["free_log_std", "log_std_clip_param"]),
        (
            spaces.Dict({"a": spaces.Discrete(2), "b": spaces.Tuple([spaces.Discrete(2)])}),
            ["free_log_std", "log_std_clip_param"],
        ),
        (spaces.Box(-1.0, 1.0, (2,)), []),
        (spaces.Tuple([spaces.Discrete(2), spaces.Box(-1.0, 1.0, (1,))]), []),
    ],
)
def test_box_only_settings_are_dropped_when_no_box_is_in_the_action_space(space, dropped, caplog):
    from ray.rllib.algorithms.ppo import PPOConfig

    config = PPOConfig().rl_module(
        model_config={"free_log_std": False, "log_std_clip_param": 5.0, "vf_share_layers": False}
    )
    with caplog.at_level(logging.WARNING, logger=LOGGER):
        assert drop_settings_of_other_action_spaces(config, space) == dropped
    assert [r.getMessage().split("=", 1)[0] for r in caplog.records if r.name == LOGGER] == [
        f"model setting {key}" for key in dropped
    ]
    assert set(config._model_config) == {"free_log_std", "log_std_clip_param", "vf_share_layers"} - set(dropped)


def test_the_box_only_settings_are_rllibs_continuous_action_settings():
    from ray.rllib.core.rl_module.default_model_config import DefaultModelConfig

    assert set(BOX_ONLY_MODEL_SETTINGS) <= set(DefaultModelConfig.__dataclass_fields__)
