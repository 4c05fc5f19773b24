"""Actions from an exported RLlib checkpoint, in-process, without a Ray cluster.

`Policy.load` finds the algorithm checkpoint in the model dir (by its ``rllib_checkpoint.json``),
loads the RLModule with `RLModule.from_checkpoint` (no ``ray.init``, about 0.1 s) and applies the
same action post-processing RLlib's default module-to-env pipeline applies before the env sees an
action (``NormalizeAndClipActions``: unsquash, or clip, Box actions).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.utils.spaces.space_utils import clip_action, unsquash_action

from sagemaker_ray_rl.errors import ModelLoadError
from sagemaker_ray_rl.export import METADATA_FILE, RL_MODULE_SUBDIR, module_ids

CHECKPOINT_MARKER = "rllib_checkpoint.json"


def find_checkpoint(model_dir: Path) -> Path:
    """The algorithm checkpoint directory inside `model_dir`: `model_dir` itself when it holds
    ``rllib_checkpoint.json`` and an RLModule, else the shallowest such directory below it.

    Raises:
        ModelLoadError: there is none.
    """
    model_dir = Path(model_dir)
    if not model_dir.is_dir():
        raise ModelLoadError(f"model directory {model_dir} does not exist")
    candidates = sorted(
        (marker.parent for marker in model_dir.rglob(CHECKPOINT_MARKER) if (marker.parent / RL_MODULE_SUBDIR).is_dir()),
        key=lambda path: (len(path.relative_to(model_dir).parts), str(path)),
    )
    if not candidates:
        raise ModelLoadError(
            f"no RLlib algorithm checkpoint in {model_dir}: expected a directory with {CHECKPOINT_MARKER} "
            f"and {RL_MODULE_SUBDIR}/ (what Algorithm.save() and this image's training write)"
        )
    return candidates[0]


@dataclass
class Policy:
    """A loaded RLModule that maps observation batches to actions.

    Attributes:
        module: the torch RLModule, in eval mode.
        module_id: which module of the checkpoint this is (``default_policy`` for single-agent).
        observation_space: what one observation must look like (a `gym.spaces.Box`).
        action_space: what the env expects as one action.
        normalize_actions: RLlib's ``normalize_actions``: Box actions come out of the module in
            [-1, 1] and are unsquashed into the space's bounds (RLlib's default, True).
        clip_actions: RLlib's ``clip_actions``: Box actions are clipped to the bounds (default False).
        checkpoint_dir: where the checkpoint was loaded from.
        metadata: ``metadata.json`` when the checkpoint came from this image's training, else {}.
    """

    module: Any
    module_id: str
    observation_space: gym.spaces.Box
    action_space: gym.Space
    normalize_actions: bool = True
    clip_actions: bool = False
    checkpoint_dir: Path | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, model_dir: Path, module_id: str | None = None) -> Policy:
        """Load the policy of the checkpoint in `model_dir`.

        Args:
            model_dir: the model dir (``/opt/ml/model``) or any directory containing a checkpoint.
            module_id: which RLModule; the only one, or ``default_policy``, when None.

        Raises:
            ModelLoadError: no checkpoint, an unknown module id, a module that fails to load, or an
                observation space this server cannot decode from requests (only Box so far).
        """
        from ray.rllib.core.rl_module.rl_module import RLModule

        checkpoint_dir = find_checkpoint(model_dir)
        metadata: dict[str, Any] = {}
        if (checkpoint_dir / METADATA_FILE).is_file():
            try:
                metadata = json.loads((checkpoint_dir / METADATA_FILE).read_text())
            except ValueError as exc:
                raise ModelLoadError(f"{checkpoint_dir / METADATA_FILE} is not valid JSON: {exc}") from exc
        ids = module_ids(checkpoint_dir)
        if module_id is None:
            module_id = ids[0] if len(ids) == 1 else "default_policy"
        if module_id not in ids:
            raise ModelLoadError(f"module {module_id!r} is not in the checkpoint; it has {ids}")
        path = (checkpoint_dir / RL_MODULE_SUBDIR / module_id).resolve()
        try:
            module = RLModule.from_checkpoint(str(path))
        except Exception as exc:
            raise ModelLoadError(f"cannot load RLModule {module_id!r} from {path}: {type(exc).__name__}: {exc}") from exc
        module.eval()
        if not isinstance(module.observation_space, gym.spaces.Box):
            raise ModelLoadError(
                f"module {module_id!r} observes {module.observation_space}; this server decodes Box "
                "observations (arrays of numbers) only"
            )
        post = metadata.get("action_postprocessing", {})
        return cls(
            module=module,
            module_id=module_id,
            observation_space=module.observation_space,
            action_space=module.action_space,
            normalize_actions=bool(post.get("normalize_actions", True)),
            clip_actions=bool(post.get("clip_actions", False)),
            checkpoint_dir=checkpoint_dir,
            metadata=metadata,
        )

    def compute_actions(self, observations: np.ndarray) -> np.ndarray:
        """Greedy actions for a batch of observations.

        Args:
            observations: shape ``(batch, *observation_space.shape)``, dtype of the space.

        Returns:
            Actions, shape ``(batch, *action_space.shape)``: int64 for Discrete/MultiDiscrete,
            float32 in the env's bounds for Box.
        """
        with torch.inference_mode():
            out = self.module.forward_inference({Columns.OBS: torch.from_numpy(observations)})
            if Columns.ACTIONS in out:
                actions = out[Columns.ACTIONS]
            else:
                dist_cls = self.module.get_inference_action_dist_cls()
                actions = dist_cls.from_logits(out[Columns.ACTION_DIST_INPUTS]).to_deterministic().sample()
        return self._to_env(actions.numpy())

    def _to_env(self, actions: np.ndarray) -> np.ndarray:
        """RLlib's ``NormalizeAndClipActions`` for a batch (see `ray.rllib.utils.spaces.space_utils`)."""
        if isinstance(self.action_space, gym.spaces.Box):
            if self.normalize_actions:
                return unsquash_action(actions, self.action_space)
            if self.clip_actions:
                return clip_action(actions, self.action_space)
        return actions
