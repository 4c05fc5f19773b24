"""Off-policy estimators against known answers (no Ray)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from devtools import rollout

from sagemaker_ray_rl.offline.collect import collect
from sagemaker_ray_rl.offline.dataset import Transitions, read_dataset
from sagemaker_ray_rl.offline.ope import (
    DynamicsModel,
    FQESettings,
    ModelSettings,
    evaluate_policy,
    greedy_probabilities,
    importance_estimates,
    model_estimates,
)

ENV_CONFIG = {"max_episode_steps": 200}


def _constant_policy(p_left: float):
    def policy(obs: np.ndarray) -> np.ndarray:
        return np.tile([p_left, 1.0 - p_left], (obs.shape[0], 1))

    return policy


def _true_value(p_left: float, episodes: int, seed: int) -> float:
    """Monte-Carlo mean undiscounted return of the state-independent policy, on-policy in the env."""
    rng = np.random.default_rng(seed)
    returns = rollout(gym.make("CartPole-v1", **ENV_CONFIG), lambda _: int(rng.random() >= p_left), episodes, seed)
    return float(np.mean(returns))


@pytest.fixture(scope="module")
def random_data(tmp_path_factory) -> Transitions:
    path = tmp_path_factory.mktemp("random")
    collect(path, env="CartPole-v1", env_config=ENV_CONFIG, num_episodes=1000, num_envs=50, seed=1)
    return read_dataset(path)


def test_behaviour_policy_evaluated_on_its_own_data_gives_the_logged_mean_return(random_data):
    estimates = importance_estimates(random_data, _constant_policy(0.5)(random_data.obs), gamma=1.0)
    logged = random_data.episode_returns().mean()
    assert estimates == pytest.approx({"is": logged, "wis": logged, "pdis": logged}, rel=1e-9)
    # and the logged mean is the random policy's true value (22-23 on this task), within 5%
    assert logged == pytest.approx(_true_value(0.5, 1000, seed=10_000), rel=0.05)


def test_estimators_recover_another_policys_true_value(random_data):
    """Target π(left)=0.7 from uniform-random data: every estimator within a stated tolerance of the
    Monte-Carlo value (IS 15%, the others 10%)."""
    truth = _true_value(0.7, 2000, seed=20_000)
    est = evaluate_policy(random_data, _constant_policy(0.7), gamma=1.0, fqe=FQESettings(updates=2000))
    assert est["is"] == pytest.approx(truth, rel=0.15)
    for name in ("wis", "pdis", "dm", "dr"):
        assert est[name] == pytest.approx(truth, rel=0.10), (name, est, truth)
    # a clearly different policy is told apart: π(left)=0.95 ends episodes much sooner
    assert evaluate_policy(random_data, _constant_policy(0.95), gamma=1.0, fqe=None)["wis"] < 0.75 * truth


def _balancing_policy(obs: np.ndarray) -> np.ndarray:
    """Push towards the side the pole falls to: survives CartPole's 200 steps most of the time."""
    return greedy_probabilities((obs[:, 2] + 0.5 * obs[:, 3] > 0).astype(np.int64), 2)


def _greedy_true_value(policy, episodes: int, seed: int, gamma: float) -> float:
    def act(obs: np.ndarray) -> int:
        return int(policy(np.asarray(obs, np.float32)[None]).argmax(1)[0])

    return float(np.mean(rollout(gym.make("CartPole-v1", **ENV_CONFIG), act, episodes, seed, gamma=gamma)))


def test_model_based_estimate_sees_past_the_logged_episodes(random_data):
    """From 22-step random episodes, the mb estimate of a greedy policy that balances for ~200
    steps is within 15% of its true discounted value, and within 15% for the random policy too;
    a policy that always pushes left scores far lower."""
    model = DynamicsModel(random_data, 2, ModelSettings(updates=3000, horizon=200))
    gamma = 0.99
    balancing = model.estimate(random_data, _balancing_policy, gamma)
    assert balancing == pytest.approx(_greedy_true_value(_balancing_policy, 50, 30_000, gamma), rel=0.15)
    uniform = model.estimate(random_data, _constant_policy(0.5), gamma)
    assert uniform == pytest.approx(random_data.episode_returns(gamma).mean(), rel=0.15)
    assert model.estimate(random_data, _constant_policy(1.0), gamma) < 0.5 * uniform


def test_model_based_estimate_never_exceeds_the_best_return_the_rewards_allow():
    """A walk on a line: action 1 moves x up 0.1, action 0 down 0.1, the reward is x. Logged
    episodes are 10 random steps from x in [0, 1] (rewards in about [-1, 2]); the target policy
    always moves up for 80 steps, far past the data, where a regression of the reward on x keeps
    climbing. Clipped to the logged rewards' range, no rollout is worth more than
    ``Σ_{t<80} γ^t max(reward)``."""
    rng = np.random.default_rng(0)
    episodes, steps, gamma = 200, 10, 0.99
    x0 = rng.uniform(0.0, 1.0, episodes)
    actions = rng.integers(0, 2, (episodes, steps))
    x = x0[:, None] + np.concatenate([np.zeros((episodes, 1)), np.cumsum(0.2 * actions - 0.1, 1)], 1)
    n = episodes * steps
    data = Transitions(
        obs=x[:, :-1].reshape(n, 1).astype(np.float32),
        actions=actions.reshape(n),
        rewards=x[:, :-1].reshape(n).astype(np.float32),
        next_obs=x[:, 1:].reshape(n, 1).astype(np.float32),
        terminateds=np.zeros(n, bool),
        truncateds=np.tile(np.arange(steps) == steps - 1, episodes),
        action_prob=np.full(n, 0.5, np.float32),
        episode_starts=np.arange(0, n + 1, steps),
        eps_ids=tuple(map(str, range(episodes))),
    )
    model = DynamicsModel(data, 2, ModelSettings(updates=1000, horizon=80, hidden=(32, 32)))
    values = model.episode_values(data, _constant_policy(0.0), gamma)
    best = float(data.rewards.max()) * sum(gamma**t for t in range(80))
    assert values.max() <= best * (1 + 1e-12), (values.max(), best)
    assert values.min() > 0.8 * best  # up past the data, the rollout earns the most the data shows


def test_doubly_robust_is_exact_with_the_true_q_function():
    """A one-step bandit, rewards r(0)=1, r(1)=3, behaviour (0.8, 0.2), target (0.3, 0.7):
    true value 0.3*1 + 0.7*3 = 2.4. With Q̂ = true Q every episode's DR term is exactly 2.4."""
    actions = np.array([0, 0, 0, 1, 0])
    rewards = np.where(actions == 0, 1.0, 3.0).astype(np.float32)
    n = len(actions)
    data = Transitions(
        obs=np.zeros((n, 1), np.float32),
        actions=actions,
        rewards=rewards,
        next_obs=np.zeros((n, 1), np.float32),
        terminateds=np.ones(n, bool),
        truncateds=np.zeros(n, bool),
        action_prob=np.where(actions == 0, 0.8, 0.2).astype(np.float32),
        episode_starts=np.arange(n + 1),
        eps_ids=tuple(map(str, range(n))),
    )
    target = np.tile([0.3, 0.7], (n, 1))
    q = np.tile([1.0, 3.0], (n, 1))
    assert model_estimates(data, target, q, gamma=1.0) == pytest.approx({"dm": 2.4, "dr": 2.4})
    # hand-computed IS: weights 0.375 (a=0) and 3.5 (a=1)
    est = importance_estimates(data, target, gamma=1.0)
    assert est["is"] == pytest.approx((4 * 0.375 * 1 + 3.5 * 3) / 5)
    assert est["wis"] == pytest.approx((4 * 0.375 * 1 + 3.5 * 3) / (4 * 0.375 + 3.5))


def test_greedy_target_weights_stop_at_the_first_mismatch():
    """Two 3-step episodes; the greedy target agrees with the first one everywhere and with the
    second only at step 0: PDIS keeps step 0 of the second, IS/WIS drop it."""
    actions = np.array([1, 1, 0, 1, 0, 0])
    greedy = np.array([1, 1, 0, 1, 1, 1])
    data = Transitions(
        obs=np.zeros((6, 1), np.float32),
        actions=actions,
        rewards=np.ones(6, np.float32),
        next_obs=np.zeros((6, 1), np.float32),
        terminateds=np.array([0, 0, 1, 0, 0, 1], bool),
        truncateds=np.zeros(6, bool),
        action_prob=np.full(6, 0.5, np.float32),
        episode_starts=np.array([0, 3, 6]),
        eps_ids=("a", "b"),
    )
    est = importance_estimates(data, greedy_probabilities(greedy, 2), gamma=1.0)
    assert est["is"] == pytest.approx((8 * 3 + 0) / 2)
    assert est["wis"] == pytest.approx(3.0)
    assert est["pdis"] == pytest.approx(((2 + 4 + 8) + 2) / 2)
