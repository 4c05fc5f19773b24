"""An RLModule torch's exporter refuses: its forward pass branches on tensor values (a
data-dependent Python ``if``), which torch.export cannot trace. Used by test_onnx_export.py to
check that such a module is reported, not exported, and does not stop the other modules' export."""

from __future__ import annotations

from ray.rllib.algorithms.ppo.torch.default_ppo_torch_rl_module import DefaultPPOTorchRLModule
from ray.rllib.core.columns import Columns


class BranchyPPOModule(DefaultPPOTorchRLModule):
    def _forward_inference(self, batch, **kwargs):
        out = super()._forward_inference(batch, **kwargs)
        if batch[Columns.OBS].abs().sum() > 1e9:  # never true for real observations
            out[Columns.ACTION_DIST_INPUTS] = out[Columns.ACTION_DIST_INPUTS] * 0
        return out
