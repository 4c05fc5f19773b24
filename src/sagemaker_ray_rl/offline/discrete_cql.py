"""``DiscreteCQL``: an RLlib new-stack Algorithm that learns a discrete-action Q policy from a fixed dataset.

Built on RLlib's DQN (`DQNConfig`, its default RLModule, its torch Learner with the CQL term of
`sagemaker_ray_rl.offline.learner.DiscreteCQLTorchLearner`): ``algo.save_to_path()`` writes an
ordinary RLlib Algorithm checkpoint (``rllib_checkpoint.json``,
``learner_group/learner/rl_module/default_policy``) that ``RLModule.from_checkpoint`` and our
server load unchanged.

Why the data path is our own (`InMemoryTransitions` as ``offline_data_class``): RLlib's
`OfflineData` streams the dataset through ``ray.data`` and `OfflinePreLearner`; on 2 cores its
default ``map_batches`` concurrency starved the read task and ``train()`` hung for minutes, and
its column reader hands the Learner 1-step episodes. A Q-learner
needs only uniformly sampled transitions, and seed-sized datasets (10^4-10^6 rows) fit in memory,
so the dataset is read once with pyarrow and minibatches are sampled with NumPy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from ray.rllib.algorithms.dqn.dqn import DQN, DQNConfig
from ray.rllib.core import DEFAULT_MODULE_ID
from ray.rllib.offline.offline_data import OfflineData
from ray.rllib.policy.sample_batch import MultiAgentBatch, SampleBatch
from ray.rllib.utils.metrics import LEARNER_RESULTS, NUM_ENV_STEPS_SAMPLED_LIFETIME

from sagemaker_ray_rl.offline.dataset import DatasetError, read_dataset
from sagemaker_ray_rl.offline.learner import DiscreteCQLTorchLearner

#: Result key: gradient updates done so far.
NUM_UPDATES_LIFETIME = "num_offline_updates_lifetime"


class InMemoryTransitions(OfflineData):
    """The dataset of ``config.input_`` held in memory (RLlib's ``offline_data_class`` hook; RLlib
    requires an `OfflineData` subclass, but none of its ``ray.data`` machinery is used, so
    ``OfflineData.__init__`` is not called).

    Algorithm.setup sets ``learner_handles``, ``module_spec``, ``spaces``, ``locality_hints`` on it;
    they are not needed here.
    """

    def __init__(self, config: DQNConfig):  # noqa: D107 -- OfflineData.__init__ deliberately skipped
        paths = config.input_ if isinstance(config.input_, (list, tuple)) else [config.input_]
        if len(paths) != 1:
            raise DatasetError(f"DiscreteCQL reads one dataset directory, got {paths}")
        self.data = read_dataset(str(paths[0]).removeprefix("local://"))
        self.rng = np.random.default_rng(config.seed)

    def sample(self, num_rows: int) -> dict[str, np.ndarray]:
        """``num_rows`` transitions drawn uniformly with replacement, as DQN Learner columns."""
        d = self.data
        idx = self.rng.integers(0, len(d), size=num_rows)
        return {
            "obs": d.obs[idx],
            "actions": d.actions[idx],
            "rewards": d.rewards[idx],
            "new_obs": d.next_obs[idx],
            "terminateds": d.terminateds[idx].astype(np.float32),
            "truncateds": d.truncateds[idx].astype(np.float32),
            "n_step": np.ones(num_rows, dtype=np.float32),
            "weights": np.ones(num_rows, dtype=np.float32),
        }


class UpdatesPerIterationConfig:
    """Mixin for an RLlib config class (listed before it): ``training(num_updates_per_iteration=N)``
    sets the Learner updates per ``train()`` call; every other keyword goes to the RLlib class."""

    def training(self, *, num_updates_per_iteration: int | None = None, **kwargs: Any):
        super().training(**kwargs)
        if num_updates_per_iteration is not None:
            self.num_updates_per_iteration = num_updates_per_iteration
        return self


class DiscreteCQLConfig(DQNConfig):
    """`DQNConfig` plus ``cql_alpha`` and ``num_updates_per_iteration``; offline by default.

    Units: ``target_network_update_freq`` counts *gradient updates* here (DQN counts env steps);
    ``train_batch_size_per_learner`` is the minibatch of one update.

    Example::

        config = (DiscreteCQLConfig()
                  .environment(observation_space=obs_space, action_space=act_space)
                  .offline_data(input_=["/opt/ml/input/data/train"])
                  .training(cql_alpha=1.0, num_updates_per_iteration=1000))
        algo = config.build_algo()
    """

    def __init__(self, algo_class: type | None = None):
        super().__init__(algo_class=algo_class or DiscreteCQL)
        self.cql_alpha = 1.0
        self.num_updates_per_iteration = 1000
        self.lr = 5e-4
        self.train_batch_size_per_learner = 256
        self.target_network_update_freq = 100
        self.tau = 1.0
        self.double_q = True
        self.n_step = 1
        self.offline_data_class = InMemoryTransitions
        self.num_env_runners = 0
        self.evaluation_num_env_runners = 0
        # Offline only (as RLlib's MARWIL sets it): no EnvRunnerGroup, no env needed.
        self._is_online = False
        # One train() call = one training_step(). DQN's minimum env steps per iteration would make
        # Algorithm.train loop forever here: no env steps are ever sampled.
        self.min_sample_timesteps_per_iteration = 0
        self.min_train_timesteps_per_iteration = 0
        self.min_time_s_per_iteration = 0

    def training(
        self, *, cql_alpha: float | None = None, num_updates_per_iteration: int | None = None, **kwargs: Any
    ) -> DiscreteCQLConfig:
        """`DQNConfig.training` plus ``cql_alpha`` (>= 0, the CQL weight α) and
        ``num_updates_per_iteration`` (gradient updates per ``train()`` call)."""
        super().training(**kwargs)
        if cql_alpha is not None:
            self.cql_alpha = cql_alpha
        if num_updates_per_iteration is not None:
            self.num_updates_per_iteration = num_updates_per_iteration
        return self

    def get_default_learner_class(self):
        return DiscreteCQLTorchLearner

    def validate(self) -> None:
        super().validate()
        if self.cql_alpha < 0:
            raise ValueError(f"cql_alpha must be >= 0, got {self.cql_alpha}")
        if self.num_updates_per_iteration <= 0:
            raise ValueError(f"num_updates_per_iteration must be > 0, got {self.num_updates_per_iteration}")
        if self.num_atoms != 1:
            raise ValueError("DiscreteCQL supports num_atoms=1 (expected Q-values, not distributional)")


class DiscreteCQL(DQN):
    """Offline discrete CQL: each ``train()`` runs ``num_updates_per_iteration`` Learner updates on
    minibatches sampled from the in-memory dataset; the target network is copied (``tau=1``) or
    Polyak-averaged every ``target_network_update_freq`` updates. No env is stepped."""

    @classmethod
    def get_default_config(cls) -> DiscreteCQLConfig:
        return DiscreteCQLConfig()

    def training_step(self) -> None:
        config = self.config
        size = config.train_batch_size_per_learner
        remaining = config.num_updates_per_iteration
        done = int(self.metrics.peek(NUM_UPDATES_LIFETIME, default=0))
        while remaining > 0:
            # One LearnerGroup.update per target-network period: DQN's Learner checks the target
            # update once per call, against the "env steps" we pass (here: updates done).
            steps = min(remaining, config.target_network_update_freq - done % config.target_network_update_freq)
            columns = self.offline_data.sample(steps * size)
            batch = MultiAgentBatch({DEFAULT_MODULE_ID: SampleBatch(columns)}, env_steps=steps * size)
            done += steps
            remaining -= steps
            results = self.learner_group.update(
                batch=batch,
                minibatch_size=size,
                num_epochs=1,
                shuffle_batch_per_epoch=False,
                timesteps={NUM_ENV_STEPS_SAMPLED_LIFETIME: done},
            )
            self.metrics.aggregate(results, key=LEARNER_RESULTS)
        self.metrics.log_value(NUM_UPDATES_LIFETIME, config.num_updates_per_iteration, reduce="lifetime_sum")
