"""`q_module`: the offline DQN RLModule that standardizes observations with frozen dataset statistics."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from ray.rllib.algorithms.dqn.torch.default_dqn_torch_rl_module import DefaultDQNTorchRLModule
from ray.rllib.core.rl_module.rl_module import RLModule, RLModuleSpec

from sagemaker_ray_rl.offline.discrete_cql import DiscreteCQLConfig
from sagemaker_ray_rl.offline.q_module import (
    MIN_STD,
    OBS_MEAN,
    OBS_STD,
    StandardizedDQNTorchRLModule,
    observation_statistics,
)
from sagemaker_ray_rl.offline.settings import OfflineSettings

OBS_SPACE = gym.spaces.Box(-np.inf, np.inf, (4,), np.float32)
MODEL = {"fcnet_hiddens": [16, 16], "head_fcnet_hiddens": [16]}


def _module(cls, **extra) -> RLModule:
    """The module as `DiscreteCQLConfig` builds it (the config adds DQN's model_config keys)."""
    config = (
        DiscreteCQLConfig()
        .environment(observation_space=OBS_SPACE, action_space=gym.spaces.Discrete(2))
        .rl_module(model_config={**MODEL, **extra}, rl_module_spec=RLModuleSpec(module_class=cls))
    )
    return config.get_rl_module_spec().build()


def test_statistics_are_the_per_feature_mean_and_std_with_constant_features_left_unscaled():
    obs = np.array([[0.0, 1.0, 5.0], [2.0, 3.0, 5.0], [4.0, 5.0, 5.0]], dtype=np.float32)
    stats = observation_statistics(obs)
    assert stats[OBS_MEAN] == pytest.approx([2.0, 3.0, 5.0])
    assert stats[OBS_STD] == pytest.approx([np.sqrt(8 / 3), np.sqrt(8 / 3), 1.0])
    assert MIN_STD < 1e-3


@pytest.mark.parametrize("obs", [np.zeros((0, 4)), np.zeros(4), np.zeros((2, 2, 2))])
def test_statistics_refuse_what_is_not_a_batch_of_flat_observations(obs):
    with pytest.raises(ValueError, match=r"non-empty \(n, obs_dim\)"):
        observation_statistics(obs)


def test_q_values_are_the_plain_module_s_on_standardized_observations():
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    data = rng.normal([0.0, 0.0, 0.0, 0.0], [0.5, 0.6, 0.09, 0.8], size=(500, 4)).astype(np.float32)
    stats = observation_statistics(data)
    standardized = _module(StandardizedDQNTorchRLModule, **stats)
    plain = _module(DefaultDQNTorchRLModule)
    plain.load_state_dict(standardized.state_dict())  # same weights; the statistics are not state
    x = torch.as_tensor(rng.normal(size=(64, 4)).astype(np.float32))
    z = (x - torch.tensor(stats[OBS_MEAN], dtype=torch.float32)) / torch.tensor(stats[OBS_STD], dtype=torch.float32)
    with torch.no_grad():
        q = standardized.compute_q_values({"obs": x})["qf_preds"]
        assert torch.allclose(q, plain.compute_q_values({"obs": z})["qf_preds"], atol=1e-6)
        assert not torch.allclose(q, plain.compute_q_values({"obs": x})["qf_preds"], atol=1e-3)
        standardized.make_target_networks()  # what the Learner does: copies of the encoder and heads
        target = standardized.forward_target({"obs": x})["qf_preds"]
        actions = standardized.forward_inference({"obs": x})["actions"]
    assert torch.allclose(target, q, atol=1e-6)  # the target network standardizes too
    assert torch.equal(actions, q.argmax(-1))


def test_a_saved_module_restores_its_statistics(tmp_path):
    stats = {OBS_MEAN: [1.0, -1.0, 0.0, 0.5], OBS_STD: [2.0, 0.5, 0.1, 1.0]}
    module = _module(StandardizedDQNTorchRLModule, **stats)
    module.save_to_path(tmp_path / "m")
    restored = RLModule.from_checkpoint(tmp_path / "m")
    assert type(restored) is StandardizedDQNTorchRLModule
    x = torch.randn(8, 4)
    with torch.no_grad():
        assert torch.equal(
            restored.compute_q_values({"obs": x})["qf_preds"], module.compute_q_values({"obs": x})["qf_preds"]
        )
    assert torch.equal(restored.obs_std, torch.tensor(stats[OBS_STD]))


def test_without_statistics_the_module_does_not_standardize():
    torch.manual_seed(1)
    bare = _module(StandardizedDQNTorchRLModule)
    plain = _module(DefaultDQNTorchRLModule)
    plain.load_state_dict(bare.state_dict())
    x = torch.randn(8, 4) * 3
    with torch.no_grad():
        assert torch.equal(
            bare.compute_q_values({"obs": x})["qf_preds"], plain.compute_q_values({"obs": x})["qf_preds"]
        )


def test_standardize_is_on_by_default_and_can_be_turned_off():
    assert OfflineSettings.from_hyperparameters({"mode": "offline"}).standardize is True
    assert OfflineSettings.from_hyperparameters({"mode": "offline", "offline.standardize": False}).standardize is False
