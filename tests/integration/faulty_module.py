"""An RLModule with a bug a user's custom module could have: its forward pass raises for
observations its training never saw, a CartPole cart beyond the track's edge (|x| > 2.4 ends an
episode, so no trained policy met one), although the observation space (x in [-4.8, 4.8]) holds
them and the server's validation lets them through. Used by test_request_limits.py to make the
policy raise inside a real server: the transports must answer it as a JSON 500 and keep serving.
Every other observation gets the trained module's answer."""

from __future__ import annotations

from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
from ray.rllib.core.columns import Columns

#: |cart position| beyond which the forward pass raises.
TRACK_EDGE = 2.4


class OffTrackError(RuntimeError):
    """What the forward pass raises for a cart beyond the track's edge."""


class FaultyPPOModule(DefaultPPOTorchRLModule):
    def _forward_inference(self, batch, **kwargs):
        positions = batch[Columns.OBS][..., 0]
        if positions.abs().max() > TRACK_EDGE:
            raise OffTrackError(f"cart position {positions.abs().max().item():g} is off the track")
        return super()._forward_inference(batch, **kwargs)
