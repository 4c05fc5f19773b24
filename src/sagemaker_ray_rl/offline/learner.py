"""The discrete conservative Q-learning loss, on RLlib's DQN Learner.

Conservative Q-learning (Kumar, Zhou, Tucker and Levine 2020, "Conservative Q-Learning for
Offline Reinforcement Learning", NeurIPS; arXiv:2006.04779), discrete form CQL(H), Eq. 4 there:

    L(θ) = L_TD(θ) + α · E_{(s, a) ~ D} [ log Σ_a' exp Q_θ(s, a') − Q_θ(s, a) ]

L_TD is RLlib's (double) DQN TD loss (`DQNTorchLearner`, Huber by default) on dataset transitions;
the second term pushes Q down on actions the dataset does not support and up on the logged ones,
which keeps the greedy policy close to the data. α = 0 gives plain offline double DQN.

RLlib ships a CQL only for continuous actions (``'Discrete' object has no attribute 'low'``,
in RLlib 2.60), hence this Learner. It reuses DQN's RLModule unchanged, so the
checkpoint is an ordinary DQN-module checkpoint that `sagemaker_ray_rl.inference.policy.Policy` serves.
"""

from __future__ import annotations

from typing import Any

import torch
from ray.rllib.algorithms.dqn.dqn_learner import QF_PREDS
from ray.rllib.algorithms.dqn.torch.dqn_torch_learner import DQNTorchLearner
from ray.rllib.core.columns import Columns

CQL_LOSS_KEY = "cql_loss"
TD_LOSS_KEY = "td_loss"


class DiscreteCQLTorchLearner(DQNTorchLearner):
    """DQN's torch Learner plus the CQL(H) regulariser weighted by ``config.cql_alpha``."""

    def compute_loss_for_module(self, *, module_id: str, config: Any, batch: dict, fwd_out: dict) -> torch.Tensor:
        """TD loss (from `DQNTorchLearner`) + ``cql_alpha`` × mean(logsumexp_a' Q(s, a') − Q(s, a)).

        ``fwd_out[QF_PREDS]``: float32 ``(batch, num_actions)``; ``batch[Columns.ACTIONS]``: int64 ``(batch,)``.
        """
        td_loss = super().compute_loss_for_module(module_id=module_id, config=config, batch=batch, fwd_out=fwd_out)
        q = fwd_out[QF_PREDS]
        q_logged = torch.gather(q, -1, batch[Columns.ACTIONS].long().unsqueeze(-1)).squeeze(-1)
        cql = (torch.logsumexp(q, dim=-1) - q_logged).mean()
        self.metrics.log_dict({CQL_LOSS_KEY: cql, TD_LOSS_KEY: td_loss}, key=module_id, window=1)
        return td_loss + config.cql_alpha * cql
