"""`StandardizedDQNTorchRLModule`: RLlib's DQN RLModule that standardizes its observations with
statistics of the offline dataset, frozen in the module.

Why: a Q-network on raw CartPole observations sees the pole angle (std about 0.09 rad in random
data) at about a sixth of the scale of the cart's velocity (std about 0.55), so its initial and
learned sensitivity favours an input the data gives no reason to use; on data that cannot show the cart limit, the
learned policies then leaned on the cart's velocity, drifted and let the pole fall (episode
returns 150-190 of 200 on some seeds). Standardizing the inputs with the dataset's mean and
standard deviation, the usual preprocessing of offline RL libraries (d3rlpy's
``StandardObservationScaler``), gave checkpoints at 200 on the same seeds (docs/benchmarks.md,
offline RL, run H).

The statistics live in the module (``model_config["obs_mean"]``, ``["obs_std"]``; non-trainable
buffers), so the checkpoint is self-contained: `RLModule.from_checkpoint`, our server, the ONNX
export (the standardization is traced into the graph) and continued training all see raw env
observations and standardize them the same way. It is for flat Box observations (a float tensor
``(batch, obs_dim)``): `runner.build_config` chooses it only for those.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from ray.rllib.algorithms.dqn.torch.default_dqn_torch_rl_module import DefaultDQNTorchRLModule
from ray.rllib.core.columns import Columns

#: ``model_config`` keys of the statistics (JSON lists of ``obs_dim`` floats).
OBS_MEAN, OBS_STD = "obs_mean", "obs_std"
#: Standard deviations below this (a feature constant in the data) are replaced by 1: the feature
#: is centred, not scaled (dividing by ~0 would blow up any value the data never showed).
MIN_STD = 1e-6


def observation_statistics(obs: np.ndarray) -> dict[str, list[float]]:
    """``{"obs_mean": [...], "obs_std": [...]}`` of a dataset's observations for `model_config`.

    Args:
        obs: float ``(n, obs_dim)``, n >= 1.

    Returns:
        Per-feature mean and population standard deviation (float64 as Python floats); a
        standard deviation below `MIN_STD` is 1.0.

    Raises:
        ValueError: `obs` is not 2-D or is empty.
    """
    obs = np.asarray(obs, dtype=np.float64)
    if obs.ndim != 2 or len(obs) == 0:
        raise ValueError(f"observations must be a non-empty (n, obs_dim) array, got shape {obs.shape}")
    std = obs.std(axis=0)
    std = np.where(std < MIN_STD, 1.0, std)
    return {OBS_MEAN: obs.mean(axis=0).tolist(), OBS_STD: std.tolist()}


class StandardizedDQNTorchRLModule(DefaultDQNTorchRLModule):
    """`DefaultDQNTorchRLModule` computing Q-values of ``(obs - obs_mean) / obs_std``.

    Every forward pass of RLlib's DQN module (inference, exploration, train, the target network)
    goes through ``_qf_forward_helper``, which is where the observations are standardized.
    ``model_config`` needs `OBS_MEAN` and `OBS_STD` (lists of ``obs_dim`` floats,
    `observation_statistics`); a module built without them does not standardize.
    """

    def setup(self) -> None:
        super().setup()
        config = self.model_config or {}
        mean, std = config.get(OBS_MEAN), config.get(OBS_STD)
        self._standardize = mean is not None and std is not None
        if self._standardize:
            self.register_buffer("obs_mean", torch.tensor(mean, dtype=torch.float32), persistent=False)
            self.register_buffer("obs_std", torch.tensor(std, dtype=torch.float32), persistent=False)

    def _qf_forward_helper(self, batch: dict[str, Any], encoder: Any, head: Any) -> dict[str, Any]:
        if self._standardize:
            batch = {**batch, Columns.OBS: (batch[Columns.OBS] - self.obs_mean) / self.obs_std}
        return super()._qf_forward_helper(batch, encoder, head)
