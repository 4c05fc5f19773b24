"""RLlib's own CQL and IQL (new API stack, Box actions), fed transitions of the offline dataset from memory.

`BoxCQL` and `BoxIQL` are RLlib's `CQL` and `IQL` (their configs, RLModules, Learners, losses and
learner connectors unchanged) with one change, ``training_step``: each update gets a minibatch of
transitions drawn uniformly from the in-memory dataset (`InMemoryBoxTransitions`), handed to
``LearnerGroup.update(batch=...)``, one call per update, so the learners' target networks follow
their own schedule (SAC/CQL: Polyak averaging with ``tau`` after every update; IQL: its
``target_network_update_freq``/``tau``), which RLlib runs once per ``update`` call. The checkpoint is
an ordinary CQL/IQL checkpoint that `sagemaker_ray_rl.inference.policy.Policy` and our server load unchanged.

Why not RLlib's `OfflineData` path: on 2 cores ``ray.data``'s default ``map_batches`` concurrency
starved the read task and ``train()`` hung, and the dataset of a
collect job (10^4-10^6 rows) fits in memory; `sagemaker_ray_rl.offline.discrete_cql` explains the same
choice for `DiscreteCQL`.

Actions: RLlib's SAC-family modules act in ``[-1, 1]`` (squashed Gaussian) and its env runners
rescale to ``[low, high]`` (``normalize_actions=True``, RLlib's default); recorded RLlib episodes
hold the normalised actions. Our datasets hold the actions as sent to the env, so they are
normalised here, ``2 (a − low) / (high − low) − 1``, clipped to ``±(1 − 1e-6)`` (the squashed
Gaussian's log-density is infinite at ±1); the server's pipeline rescales the module's actions back.

CQL: Kumar, Zhou, Tucker and Levine 2020, "Conservative Q-Learning for Offline Reinforcement
Learning", NeurIPS. IQL: Kostrikov, Nair and Levine 2022, "Offline Reinforcement Learning with
Implicit Q-Learning", ICLR.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from ray.rllib.algorithms.cql import CQL, CQLConfig
from ray.rllib.algorithms.iql import IQL, IQLConfig
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.metrics import LEARNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME

from sagemaker_ray_rl.offline.dataset import DatasetError
from sagemaker_ray_rl.offline.discrete_cql import NUM_UPDATES_LIFETIME, InMemoryTransitions, UpdatesPerIterationConfig

#: Normalised actions are clipped to ``±(1 − ACTION_EPS)``.
ACTION_EPS = 1e-6


def normalise_actions(actions: np.ndarray, space: gym.spaces.Box) -> np.ndarray:
    """float32 ``(n, act_dim)`` env actions -> float32 ``(n, *space.shape)`` in ``[-1 + ε, 1 − ε]``.

    Raises:
        DatasetError: the actions do not fit the space's shape, or the space is unbounded.
    """
    low = np.asarray(space.low, dtype=np.float64).ravel()
    high = np.asarray(space.high, dtype=np.float64).ravel()
    if not np.all(np.isfinite(high - low)):
        raise DatasetError(f"CQL/IQL need a bounded Box action space, got {space}")
    if actions.ndim != 2 or actions.shape[1] != low.size:
        raise DatasetError(
            f"dataset actions have shape {actions.shape}; the action space {space} needs (n, {low.size})"
        )
    scaled = 2.0 * (actions.astype(np.float64) - low) / (high - low) - 1.0
    clipped = np.clip(scaled, -1.0 + ACTION_EPS, 1.0 - ACTION_EPS).astype(np.float32)
    return clipped.reshape(len(actions), *space.shape)


class InMemoryBoxTransitions(InMemoryTransitions):
    """The Box-action dataset of ``config.input_`` in memory; minibatches as SAC/IQL Learner columns
    with normalised actions (module docstring).

    Raises:
        DatasetError: the dataset's actions are not Box vectors of the config's action space.
    """

    def __init__(self, config: Any):  # noqa: D107
        super().__init__(config)
        if not self.data.continuous or not isinstance(config.action_space, gym.spaces.Box):
            raise DatasetError(f"CQL/IQL here train on Box-action datasets; the action space is {config.action_space}")
        self.actions = normalise_actions(self.data.actions, config.action_space)

    def sample(self, num_rows: int) -> dict[str, np.ndarray]:
        """``num_rows`` transitions drawn uniformly with replacement."""
        d = self.data
        idx = self.rng.integers(0, len(d), size=num_rows)
        return {
            "obs": d.obs[idx],
            "actions": self.actions[idx],
            "rewards": d.rewards[idx],
            "new_obs": d.next_obs[idx],
            "terminateds": d.terminateds[idx],
            "truncateds": d.truncateds[idx],
        }


class _TransitionTraining:
    """``training_step``: ``num_updates_per_iteration`` Learner updates, each on
    ``train_batch_size_per_learner`` transitions, one ``LearnerGroup.update`` call each (the learners
    update their target networks once per call). No env is stepped."""

    def training_step(self) -> None:
        config = self.config
        size = config.train_batch_size_per_learner
        done = int(self.metrics.peek(NUM_UPDATES_LIFETIME, default=0))
        for _ in range(config.num_updates_per_iteration):
            batch = MultiAgentBatch({DEFAULT_MODULE_ID: SampleBatch(self.offline_data.sample(size))}, env_steps=size)
            done += 1
            results = self.learner_group.update(
                batch=batch,
                minibatch_size=size,
                num_epochs=1,
                shuffle_batch_per_epoch=False,
                timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: done},
            )
            self.metrics.aggregate(results, key=LEARNER_RESULTS)
        self.metrics.log_value(NUM_UPDATES_LIFETIME, config.num_updates_per_iteration, reduce="lifetime_sum")


def _offline_defaults(config: Any) -> None:
    config.offline_data_class = InMemoryBoxTransitions
    config.num_updates_per_iteration = 100
    config.train_batch_size_per_learner = 256
    config.dataset_num_iters_per_learner = 1  # MARWIL/IQL.validate ask for it; our training_step does not read it
    config.num_env_runners = 0
    config.evaluation_num_env_runners = 0
    config._is_online = False
    config.min_sample_timesteps_per_iteration = 0
    config.min_train_timesteps_per_iteration = 0
    config.min_time_s_per_iteration = 0


class BoxCQLConfig(UpdatesPerIterationConfig, CQLConfig):
    """`CQLConfig` with in-memory transitions and ``num_updates_per_iteration`` (Learner updates per
    ``train()``). ``bc_iters`` (RLlib's default 20000 behaviour-cloning updates first) is 0: cloning
    a random behaviour policy teaches nothing, and RLlib counts it in updates here. ``lr`` is None:
    the new stack uses ``actor_lr``, ``critic_lr`` and ``alpha_lr``."""

    def __init__(self, algo_class: type | None = None):
        super().__init__(algo_class=algo_class or BoxCQL)
        _offline_defaults(self)
        self.bc_iters = 0
        self.lr = None  # CQLConfig sets lr=3e-4, which SACConfig.validate refuses on the new stack


class BoxIQLConfig(UpdatesPerIterationConfig, IQLConfig):
    """`IQLConfig` with in-memory transitions and ``num_updates_per_iteration``; the target
    Q-network Polyak-averaged with ``tau=0.005`` after every update (the paper's setting; RLlib's
    default copies it, ``tau=1``, after every update)."""

    def __init__(self, algo_class: type | None = None):
        super().__init__(algo_class=algo_class or BoxIQL)
        _offline_defaults(self)
        self.tau = 0.005


class BoxCQL(_TransitionTraining, CQL):
    """RLlib's CQL trained on in-memory transitions (module docstring)."""

    @classmethod
    def get_default_config(cls) -> BoxCQLConfig:
        return BoxCQLConfig()


class BoxIQL(_TransitionTraining, IQL):
    """RLlib's IQL trained on in-memory transitions (module docstring)."""

    @classmethod
    def get_default_config(cls) -> BoxIQLConfig:
        return BoxIQLConfig()
