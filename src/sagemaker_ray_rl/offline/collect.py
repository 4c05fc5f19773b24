"""Collect an offline dataset: run a behaviour policy on parallel envs and record transitions.

The behaviour policy is what a live system runs today: uniform random (seed 004's start; on a
`gym.spaces.Discrete` or a bounded `gym.spaces.Box` action space), or epsilon-greedy around an
exported model (Discrete only) (``/opt/ml/model`` of an earlier job, loaded by
`sagemaker_ray_rl.inference.policy.Policy`). Every transition records the behaviour policy's probability of
the action it took, which importance-sampling off-policy evaluation needs (Precup et al. 2000).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
from ray.rllib.utils.serialization import gym_space_to_dict
from ray.tune.registry import ENV_CREATOR, _global_registry

from sagemaker_ray_rl.inference.policy import Policy
from sagemaker_ray_rl.offline.dataset import DatasetError, Step, episode_steps, write_dataset

RANDOM = "random"
EPSILON_GREEDY = "epsilon_greedy"
BEHAVIOUR_POLICIES = (RANDOM, EPSILON_GREEDY)


@dataclass(frozen=True)
class CollectResult:
    """What `collect` wrote.

    Attributes:
        path: the dataset directory.
        num_episodes: episodes recorded.
        num_transitions: rows written.
        episode_return_mean: mean undiscounted return of the recorded episodes.
    """

    path: Path
    num_episodes: int
    num_transitions: int
    episode_return_mean: float


class BehaviourPolicy:
    """Action probabilities of the behaviour policy for a batch of observations.

    ``random``: uniform over a `gym.spaces.Discrete` space, or over a bounded `gym.spaces.Box`
    (each component independently uniform on ``[low, high]``; density
    ``Π 1 / (high − low)``, see `box_log_density`). ``epsilon_greedy``: the exported model's
    greedy action with probability ``1 - epsilon + epsilon / n``, any other with ``epsilon / n``; the
    greedy actions come from `model_dir` (loaded with `Policy.load`) or from `greedy`, a callable
    mapping float32 observations ``(batch, *obs_shape)`` to int actions ``(batch,)`` (e.g. a client
    of a deployed endpoint: ``scripts/collect_http.py``).

    Raises:
        DatasetError: an action space other than Discrete or bounded Box (Box: ``random`` only), an
            unknown name, or a missing model.
    """

    def __init__(
        self,
        name: str,
        action_space: gym.Space,
        *,
        epsilon: float = 0.1,
        model_dir: Path | None = None,
        greedy: Callable[[np.ndarray], np.ndarray] | None = None,
    ):
        if name not in BEHAVIOUR_POLICIES:
            raise DatasetError(f"behaviour policy must be one of {BEHAVIOUR_POLICIES}, got {name!r}")
        self.box = action_space if isinstance(action_space, gym.spaces.Box) else None
        if self.box is not None:
            if name != RANDOM:
                raise DatasetError(
                    f"behaviour policy {name!r} needs a Discrete action space; a Box space ({action_space}) is collected with 'random'"
                )
            self.name, self.n, self.epsilon, self.policy, self.greedy, self.source = name, 0, 0.0, None, None, None
            self.logp = box_log_density(action_space)
            return
        if not isinstance(action_space, gym.spaces.Discrete):
            raise DatasetError(f"collect records Discrete or bounded Box action spaces; the env has {action_space}")
        if not 0.0 <= epsilon <= 1.0:
            raise DatasetError(f"epsilon must be in [0, 1], got {epsilon}")
        self.name, self.n, self.epsilon = name, int(action_space.n), float(epsilon)
        self.policy = None
        self.greedy = greedy
        self.source = "callable" if greedy is not None else None
        if name == EPSILON_GREEDY and greedy is None:
            if model_dir is None:
                raise DatasetError(
                    "behaviour policy 'epsilon_greedy' needs a model dir (an exported checkpoint) or a greedy callable"
                )
            self.policy = Policy.load(Path(model_dir))
            self.greedy = lambda observations: self.policy.compute(observations)["action"]
            self.source = str(self.policy.checkpoint_dir)

    def probabilities(self, observations: np.ndarray) -> np.ndarray:
        """float64, shape ``(batch, n)``: each row a distribution over the actions."""
        batch = observations.shape[0]
        if self.name == RANDOM:
            return np.full((batch, self.n), 1.0 / self.n)
        greedy = np.asarray(self.greedy(observations.astype(np.float32))).astype(np.int64)
        probs = np.full((batch, self.n), self.epsilon / self.n)
        probs[np.arange(batch), greedy] += 1.0 - self.epsilon
        return probs

    def sample_box(self, batch: int, rng: np.random.Generator) -> tuple[np.ndarray, float]:
        """Box only: uniform actions, the space's dtype, shape ``(batch, *action_shape)``, and their
        log-density (the same for all, `box_log_density`)."""
        box = self.box
        actions = rng.uniform(box.low, box.high, size=(batch, *box.shape)).astype(box.dtype)
        return np.clip(actions, box.low, box.high), self.logp

    def describe(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name}
        if self.name == EPSILON_GREEDY:
            out.update(epsilon=self.epsilon, greedy=self.source)
        return out


def box_log_density(space: gym.spaces.Box) -> float:
    """log-density (nats) of the uniform distribution on a bounded Box: ``−Σ_i log(high_i − low_i)``.

    Raises:
        DatasetError: a component is unbounded or has ``high <= low``.
    """
    width = np.asarray(space.high, dtype=np.float64) - np.asarray(space.low, dtype=np.float64)
    if not np.all(np.isfinite(width)) or np.any(width <= 0):
        raise DatasetError(f"a uniform-random behaviour policy needs a bounded Box with high > low, got {space}")
    return float(-np.log(width).sum())


def make_env(env: str, env_config: Mapping[str, Any]) -> gym.Env:
    """``gymnasium.make(env, **env_config)``; a Tune-registered name is built by its creator."""
    if _global_registry.contains(ENV_CREATOR, env):
        return _global_registry.get(ENV_CREATOR, env)(dict(env_config))
    return gym.make(env, **dict(env_config))


def collect(
    output_dir: Path,
    *,
    env: str,
    env_config: Mapping[str, Any] | None = None,
    num_episodes: int,
    num_envs: int = 1,
    behaviour: str = RANDOM,
    epsilon: float = 0.1,
    model_dir: Path | None = None,
    seed: int | None = None,
    greedy: Callable[[np.ndarray], np.ndarray] | None = None,
) -> CollectResult:
    """Run the behaviour policy on `num_envs` envs, stepped in lockstep with one batched policy call
    per step, until exactly `num_episodes` episodes have finished; write them with `write_dataset`.

    Args:
        output_dir: dataset directory (``/opt/ml/output/data/...`` or the model dir, so it becomes a
            later job's input channel).
        env: Gymnasium id (or Tune-registered name); env_config: its keyword arguments
            (``{"max_episode_steps": 200}`` for seed 004's CartPole).
        num_episodes: episodes to record (> 0).
        num_envs: envs stepped side by side (> 0).
        behaviour: ``random`` or ``epsilon_greedy``.
        epsilon: exploration of ``epsilon_greedy``.
        model_dir: the exported model ``epsilon_greedy`` acts greedily with.
        greedy: instead of `model_dir`, a callable giving the greedy actions (see `BehaviourPolicy`).
        seed: seeds env ``i`` with ``seed + i`` at its first reset and the action sampler with `seed`.

    Raises:
        DatasetError: bad arguments, or an action space `BehaviourPolicy` does not handle.
    """
    if num_episodes <= 0 or num_envs <= 0:
        raise DatasetError(f"num_episodes and num_envs must be > 0, got {num_episodes} and {num_envs}")
    env_config = dict(env_config or {})
    envs = [make_env(env, env_config) for _ in range(min(num_envs, num_episodes))]
    policy = BehaviourPolicy(behaviour, envs[0].action_space, epsilon=epsilon, model_dir=model_dir, greedy=greedy)
    rng = np.random.default_rng(seed)
    obs = [e.reset(seed=None if seed is None else seed + i)[0] for i, e in enumerate(envs)]
    buffers: list[list[Step]] = [[] for _ in envs]
    started = len(envs)
    rows: list[dict[str, Any]] = []
    returns: list[float] = []
    active = list(range(len(envs)))
    while active:
        batch_obs = np.stack([np.asarray(obs[i], dtype=np.float32) for i in active])
        if policy.box is not None:
            box_actions, logp = policy.sample_box(len(active), rng)
        else:
            probs = policy.probabilities(batch_obs)
        for k, i in enumerate(list(active)):
            if policy.box is not None:
                action, prob = box_actions[k], float(np.exp(logp))
            else:
                action = int(rng.choice(policy.n, p=probs[k]))
                prob = float(probs[k, action])
            next_obs, reward, terminated, truncated, _ = envs[i].step(action)
            buffers[i].append(Step(None, None, obs[i], action, float(reward), next_obs, action_prob=prob))
            obs[i] = next_obs
            if terminated or truncated:
                episode = episode_steps(f"{len(returns):06d}", buffers[i], terminated, truncated)
                rows += [step.row(continuous=policy.box is not None) for step in episode]
                returns.append(sum(step.rewards for step in episode))
                buffers[i] = []
                if started < num_episodes:
                    started += 1
                    obs[i] = envs[i].reset()[0]
                else:
                    active.remove(i)
    info = {
        "format": "rllib-columns/parquet",
        "env": env,
        "env_config": env_config,
        "observation_space": gym_space_to_dict(envs[0].observation_space),
        "action_space": gym_space_to_dict(envs[0].action_space),
        "behaviour_policy": policy.describe(),
        "num_episodes": len(returns),
        "num_transitions": len(rows),
        "episode_return_mean": float(np.mean(returns)),
        "seed": seed,
    }
    write_dataset(Path(output_dir), rows, info)
    for e in envs:
        e.close()
    return CollectResult(Path(output_dir), len(returns), len(rows), float(np.mean(returns)))
