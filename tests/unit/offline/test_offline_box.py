"""Box actions in batch RL without Ray: the uniform behaviour policy's log-density, a collected
Pendulum dataset read back, action normalisation for RLlib's CQL/IQL, and the algorithm/space check."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

from sagemaker_ray_rl.contract.errors import HyperparameterError
from sagemaker_ray_rl.offline.collect import box_log_density, collect
from sagemaker_ray_rl.offline.dataset import DatasetError, episode_rows, read_dataset
from sagemaker_ray_rl.offline.settings import OfflineSettings, check_action_space


def test_uniform_box_log_density_is_minus_the_log_volume():
    space = gym.spaces.Box(low=np.array([-2.0, 0.0, -0.1]), high=np.array([2.0, 0.5, 0.1]), dtype=np.float32)
    expected = -(np.log(4.0) + np.log(0.5) + np.log(0.2))
    assert box_log_density(space) == pytest.approx(expected, rel=1e-6)
    # the density integrates to 1: the mean of exp(logp) * volume over the box
    assert np.exp(box_log_density(space)) * 4.0 * 0.5 * 0.2 == pytest.approx(1.0, rel=1e-6)
    with pytest.raises(DatasetError, match="bounded Box"):
        box_log_density(gym.spaces.Box(low=-np.inf, high=np.inf, shape=(2,)))


def test_collect_on_pendulum_writes_float_actions_with_the_uniform_density(tmp_path):
    result = collect(
        tmp_path, env="Pendulum-v1", env_config={"max_episode_steps": 30}, num_episodes=5, num_envs=2, seed=1
    )
    data = read_dataset(tmp_path)
    assert (result.num_episodes, result.num_transitions, data.num_episodes) == (5, 150, 5)
    assert data.continuous and data.actions.shape == (150, 1) and data.actions.dtype == np.float32
    assert np.all(np.abs(data.actions) <= 2.0)
    # uniform on [-2, 2]: mean 0, variance 16/12
    assert abs(float(data.actions.mean())) < 0.4 and data.actions.var() == pytest.approx(4 / 3, rel=0.3)
    np.testing.assert_allclose(data.action_prob, 0.25, rtol=1e-6)
    import pyarrow.parquet as pq

    logp = pq.read_table(next(tmp_path.glob("*.parquet"))).column("action_logp").to_numpy()
    np.testing.assert_allclose(logp, -np.log(4.0), rtol=1e-6)
    assert data.truncateds.sum() == 5 and not data.terminateds.any()


def test_epsilon_greedy_on_a_box_env_is_refused(tmp_path):
    with pytest.raises(DatasetError, match="collected with 'random'"):
        collect(tmp_path, env="Pendulum-v1", num_episodes=1, behaviour="epsilon_greedy", model_dir=tmp_path)


def test_a_box_density_above_one_is_kept_but_not_a_discrete_probability():
    rows = episode_rows("x", [[0.0]], [[0.01]], [1.0], [[0.0]], True, False, [5.0], continuous=True)
    assert rows[0]["actions"] == [pytest.approx(0.01)] and rows[0]["action_logp"] == pytest.approx(np.log(5.0))
    with pytest.raises(DatasetError, match=r"in \(0, 1\]"):
        episode_rows("x", [[0.0]], [0], [1.0], [[0.0]], True, False, [5.0])


def test_actions_are_normalised_to_the_squashed_range():
    from sagemaker_ray_rl.offline.continuous import normalise_actions

    space = gym.spaces.Box(low=np.array([-2.0, 0.0]), high=np.array([2.0, 1.0]), dtype=np.float32)
    actions = np.array([[-2.0, 0.0], [0.0, 0.25], [2.0, 1.0]], dtype=np.float32)
    out = normalise_actions(actions, space)
    np.testing.assert_allclose(out, [[-1 + 1e-6, -1 + 1e-6], [0.0, -0.5], [1 - 1e-6, 1 - 1e-6]], atol=1e-7)
    with pytest.raises(DatasetError, match=r"needs \(n, 2\)"):
        normalise_actions(actions[:, :1], space)


@pytest.mark.parametrize(
    "algorithm, select, space, needle",
    [
        ("iql", "mb", gym.spaces.Discrete(2), "does not fit the Discrete action space"),
        ("marwil", "mb", gym.spaces.Box(-1, 1, (1,)), "does not fit the Box action space"),
        ("cql", "wis", gym.spaces.Box(-1, 1, (1,)), "offline.select=wis is not estimated on Box actions"),
    ],
)
def test_algorithms_and_selections_that_do_not_fit_the_action_space_are_refused(algorithm, select, space, needle):
    settings = OfflineSettings.from_hyperparameters(
        {"mode": "offline", "offline.algorithm": algorithm, "offline.select": select}
    )
    with pytest.raises(HyperparameterError, match=needle):
        check_action_space(settings, space)


@pytest.mark.parametrize(
    "algorithm, space",
    [
        ("cql", gym.spaces.Discrete(2)),
        ("bc", gym.spaces.Discrete(2)),
        ("cql", gym.spaces.Box(-1, 1, (1,))),
        ("iql", gym.spaces.Box(-1, 1, (1,))),
    ],
)
def test_fitting_pairs_pass(algorithm, space):
    check_action_space(OfflineSettings.from_hyperparameters({"mode": "offline", "offline.algorithm": algorithm}), space)
