"""RLlib's own BC and MARWIL, fed whole episodes of the offline dataset from memory.

`EpisodeBC` and `EpisodeMARWIL` are RLlib's `BC` and `MARWIL` (their configs, RLModules, Learners,
losses and learner connectors unchanged) with one change, ``training_step``: each update gets
whole episodes drawn uniformly from the dataset, handed to ``LearnerGroup.update(episodes=...)``,
so the Learner's own connector pipeline (MARWIL: `AddOneTsToEpisodesAndTruncate` and
`GeneralAdvantageEstimation`) runs with the *live* module. The checkpoint is an ordinary BC/MARWIL
checkpoint that `sagemaker_ray_rl.inference.policy.Policy` and our server load unchanged.

Why not RLlib's `OfflineData` path: its `OfflinePreLearner` maps
column data to 1-step episodes, so MARWIL's returns-to-go are about 1 instead of about 25 and its
advantage-weighted imitation degenerates to BC (return 9 on seed 004's CartPole data); the
pre-learner's module copy whose value function GAE uses is never synced with the Learner's; and on 2
cores ``ray.data``'s default ``map_batches`` concurrency starved the read task and ``train()`` hung.

MARWIL: Wang et al. 2018, "Exponentially Weighted Imitation Learning for Batched Historical Data",
NeurIPS. BC is MARWIL with β = 0.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.rllib.algorithms.bc import BC, BCConfig
from ray.rllib.algorithms.marwil import MARWIL, MARWILConfig
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.utils.metrics import LEARNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME

from sagemaker_ray_rl.offline.discrete_cql import NUM_UPDATES_LIFETIME, InMemoryTransitions, UpdatesPerIterationConfig


class InMemoryEpisodes(InMemoryTransitions):
    """The dataset of ``config.input_`` in memory, sampled as whole `SingleAgentEpisode` objects."""

    def sample_episodes(self, min_steps: int) -> list[SingleAgentEpisode]:
        """Episodes drawn uniformly with replacement until they hold at least `min_steps` steps;
        fresh objects each call (the learner connector appends a timestep to them)."""
        d = self.data
        starts, episodes, steps = d.episode_starts, [], 0
        while steps < min_steps:
            i = int(self.rng.integers(0, d.num_episodes))
            a, b = int(starts[i]), int(starts[i + 1])
            episodes.append(
                SingleAgentEpisode(
                    observations=[*d.obs[a:b], d.next_obs[b - 1]],
                    actions=list(d.actions[a:b]),
                    rewards=list(d.rewards[a:b].astype(np.float64)),
                    terminated=bool(d.terminateds[b - 1]),
                    truncated=bool(d.truncateds[b - 1]),
                    len_lookback_buffer=0,
                )
            )
            steps += b - a
        return episodes


class _EpisodeTraining:
    """``training_step``: ``num_updates_per_iteration`` Learner updates, each on whole episodes of
    at least ``train_batch_size_per_learner`` steps. No env is stepped."""

    def training_step(self) -> None:
        config = self.config
        done = int(self.metrics.peek(NUM_UPDATES_LIFETIME, default=0))
        for _ in range(config.num_updates_per_iteration):
            episodes = self.offline_data.sample_episodes(config.train_batch_size_per_learner)
            done += 1
            results = self.learner_group.update(
                episodes=episodes,
                minibatch_size=None,
                num_epochs=1,
                timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: done},
            )
            self.metrics.aggregate(results, key=LEARNER_RESULTS)
        self.metrics.log_value(NUM_UPDATES_LIFETIME, config.num_updates_per_iteration, reduce="lifetime_sum")


def _offline_defaults(config: Any) -> None:
    config.offline_data_class = InMemoryEpisodes
    config.dataset_num_iters_per_learner = 1  # MARWIL.validate asks for it; our training_step does not read it
    config.num_updates_per_iteration = 100
    config.num_env_runners = 0
    config.evaluation_num_env_runners = 0
    config.min_sample_timesteps_per_iteration = 0
    config.min_train_timesteps_per_iteration = 0
    config.min_time_s_per_iteration = 0


class EpisodeMARWILConfig(UpdatesPerIterationConfig, MARWILConfig):
    """`MARWILConfig` with whole-episode in-memory data and ``num_updates_per_iteration``
    (Learner updates per ``train()``)."""

    def __init__(self, algo_class: type | None = None):
        super().__init__(algo_class=algo_class or EpisodeMARWIL)
        _offline_defaults(self)


class EpisodeBCConfig(UpdatesPerIterationConfig, BCConfig):
    """`BCConfig` with whole-episode in-memory data and ``num_updates_per_iteration``."""

    def __init__(self, algo_class: type | None = None):
        super().__init__(algo_class=algo_class or EpisodeBC)
        _offline_defaults(self)


class EpisodeMARWIL(_EpisodeTraining, MARWIL):
    """RLlib's MARWIL trained on whole dataset episodes (see the module docstring)."""

    @classmethod
    def get_default_config(cls) -> EpisodeMARWILConfig:
        return EpisodeMARWILConfig()


class EpisodeBC(_EpisodeTraining, BC):
    """RLlib's BC trained on whole dataset episodes (see the module docstring)."""

    @classmethod
    def get_default_config(cls) -> EpisodeBCConfig:
        return EpisodeBCConfig()
