"""A custom RLModule in the new API stack's style: seed 003's ``custom_model``, without ModelV2.

`ResidualMLPModule` is an actor-critic module for PPO (and other algorithms that use RLlib's
`ValueFunctionAPI`): a shared encoder of ``num_blocks`` pre-norm residual blocks (He et al. 2016,
"Identity Mappings in Deep Residual Networks", arXiv:1603.05027) of width ``hidden_dim``, then a
policy head and a value head. Settings come from RLlib's ``model_config`` (hyperparameter
``rl_module.model_config``): ``{"hidden_dim": 64, "num_blocks": 2}`` by default.

Shapes: observations ``(B, obs_dim)`` float32 (a flat ``Box``); policy head output ``(B, n)`` logits
for ``Discrete(n)`` or ``(B, 2 * act_dim)`` means and log standard deviations for a ``Box`` (RLlib's
default action distributions `TorchCategorical` and `TorchDiagGaussian`); values ``(B,)``.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import ValueFunctionAPI
from ray.rllib.core.rl_module.torch import TorchRLModule
from torch import nn


class ResidualBlock(nn.Module):
    """``x + W2 relu(W1 layernorm(x))``: a pre-norm residual block of width `dim`."""

    def __init__(self, dim: int):
        super().__init__()
        self.body = nn.Sequential(nn.LayerNorm(dim), nn.Linear(dim, dim), nn.ReLU(), nn.Linear(dim, dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


class ResidualMLPModule(TorchRLModule, ValueFunctionAPI):
    """Residual-MLP actor-critic RLModule; see the module docstring for shapes and settings.

    Raises:
        ValueError: (at build) an observation space that is not a flat ``Box``, or an action space
            other than ``Discrete`` and ``Box``.
    """

    def setup(self) -> None:
        obs_space, action_space = self.observation_space, self.action_space
        if not isinstance(obs_space, gym.spaces.Box) or len(obs_space.shape) != 1:
            raise ValueError(f"ResidualMLPModule expects a flat Box observation space, got {obs_space}")
        if isinstance(action_space, gym.spaces.Discrete):
            outputs = int(action_space.n)
        elif isinstance(action_space, gym.spaces.Box):
            outputs = 2 * int(np.prod(action_space.shape))
        else:
            raise ValueError(f"ResidualMLPModule supports Discrete and Box actions, got {action_space}")
        hidden = int(self.model_config.get("hidden_dim", 64))
        blocks = int(self.model_config.get("num_blocks", 2))
        self.encoder = nn.Sequential(
            nn.Linear(obs_space.shape[0], hidden), *[ResidualBlock(hidden) for _ in range(blocks)], nn.LayerNorm(hidden)
        )
        self.pi = nn.Linear(hidden, outputs)
        self.vf = nn.Linear(hidden, 1)

    def _forward(self, batch: dict[str, Any], **kwargs) -> dict[str, Any]:
        embeddings = self.encoder(batch[Columns.OBS].float())
        return {Columns.ACTION_DIST_INPUTS: self.pi(embeddings), Columns.EMBEDDINGS: embeddings}

    def compute_values(self, batch: dict[str, Any], embeddings: torch.Tensor | None = None) -> torch.Tensor:
        """State values ``(B,)`` float32, from the forward pass's embeddings when given."""
        if embeddings is None:
            embeddings = self.encoder(batch[Columns.OBS].float())
        return self.vf(embeddings).squeeze(-1)
