"""The checkpoint's connector pipelines, restored and run on request batches.

An RLlib env runner never feeds raw observations to its RLModule: the env-to-module pipeline
(``MeanStdFilter``, ``FlattenObservations``, ... then RLlib's default batching connectors) turns
them into the module's batch, and the module-to-env pipeline (``GetActions``, ``TensorToNumpy``,
``NormalizeAndClipActions``, ...) turns the module's output into what the env receives. Serving
must do the same or its answers differ from what the policy did in training (Box actions leave
the module squashed into [-1, 1]; a ``MeanStdFilter``-trained module expects normalised inputs).

`InferencePipeline` restores both pipelines with RLlib's own ``from_checkpoint`` (state included:
the filter's running mean and std) and runs one request batch through them in one of two ways:

- **episode path**: exactly what ``SingleAgentEnvRunner`` does: one ``SingleAgentEpisode`` per
  observation, ``env_to_module`` -> ``forward_inference`` / ``forward_exploration`` ->
  ``module_to_env``. Correct for any connector, but RLlib's connectors work episode by episode in
  Python: an order of magnitude slower than the batched path on a large request
  (docs/benchmarks.md, inference in-process).
- **batched path**: the same steps on the whole batch at once, used when every connector of both
  pipelines is one whose per-observation effect is known: RLlib's default batching connectors
  (which only move data between episodes and batches), ``MeanStdFilter`` (RLlib's own filter
  object applied to the batch with ``update=False``), ``FlattenObservations``
  (``flatten_inputs_to_1d_tensor(..., batch_axis=True)``, what the connector calls per
  observation), ``GetActions`` (the connector itself, it works on batches) and
  ``NormalizeAndClipActions`` (``unsquash_action`` / ``clip_action`` on the batch). This is our
  own code because RLlib has no batch-level inference entry point for connector pipelines; the
  integration tests check it against the episode path observation for observation.

Restored ``MeanStdFilter`` connectors are switched to ``update_stats=False``: left on, every
request would shift the filter's statistics and the same observation would get different
actions over time (the trap of ray-project/ray#53588).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import tree
from ray.rllib.connectors.env_to_module import EnvToModulePipeline
from ray.rllib.connectors.module_to_env import ModuleToEnvPipeline
from ray.rllib.connectors.module_to_env.get_actions import GetActions
from ray.rllib.core.columns import Columns
from ray.rllib.env.single_agent_episode import SingleAgentEpisode
from ray.rllib.utils.numpy import flatten_inputs_to_1d_tensor
from ray.rllib.utils.spaces.space_utils import clip_action, get_base_struct_from_space, unsquash_action

from sagemaker_ray_rl.checkpoint import ENV_TO_MODULE_SUBDIR, MODULE_TO_ENV_SUBDIR
from sagemaker_ray_rl.contract.errors import ModelLoadError

#: RLlib's default env-to-module connectors: they move observations (and RNN states) from episodes
#: into a batch, which the batched path builds directly.
_E2M_LAYOUT = {
    "AddObservationsFromEpisodesToBatch",
    "AddTimeDimToBatchAndZeroPad",
    "AddStatesFromEpisodesToBatch",
    "AgentToModuleMapping",
    "BatchIndividualItems",
    "NumpyToTensor",
}
#: RLlib's default module-to-env connectors that only reshape a batch into per-episode items.
_M2E_LAYOUT = {
    "UnBatchToIndividualItems",
    "ModuleToAgentUnmapping",
    "RemoveSingleTsTimeRankFromBatch",
    "ListifyDataForVectorEnv",
    "TensorToNumpy",
}


#: An env step beyond any exploration schedule: its final value.
END_OF_SCHEDULE = 2**62


def is_epsilon_greedy(module: Any) -> bool:
    """Whether `module` explores epsilon-greedily (RLlib's DQN modules: an ``epsilon_schedule``)."""
    return getattr(module, "epsilon_schedule", None) is not None


def restore_pipelines(checkpoint_dir: Path) -> tuple[Any, Any]:
    """The env-to-module and module-to-env pipelines of an algorithm checkpoint.

    Args:
        checkpoint_dir: an ``Algorithm.save()`` directory (holds ``env_runner/``).

    Returns:
        ``(env_to_module, module_to_env)``: `EnvToModulePipeline` and `ModuleToEnvPipeline`, each
        None when the checkpoint has none (then the module gets raw observations, RLlib's default
        when no connectors were saved).

    Raises:
        ModelLoadError: a pipeline exists but cannot be restored (e.g. a custom connector class
            that is not importable here).
    """
    pipelines = []
    for subdir, cls in ((ENV_TO_MODULE_SUBDIR, EnvToModulePipeline), (MODULE_TO_ENV_SUBDIR, ModuleToEnvPipeline)):
        name = subdir.name
        path = (Path(checkpoint_dir) / subdir).resolve()
        if not path.is_dir():
            pipelines.append(None)
            continue
        try:
            pipeline = cls.from_checkpoint(str(path))
        except Exception as exc:
            raise ModelLoadError(
                f"cannot restore the {name} pipeline from {path}: {type(exc).__name__}: {exc}"
            ) from exc
        pipelines.append(pipeline)
    env_to_module, module_to_env = pipelines
    if env_to_module is not None:
        for connector in env_to_module.connectors:
            if type(connector).__name__ == "MeanStdFilter":
                connector._update_stats = False  # RLlib has no setter; see the module docstring
    return env_to_module, module_to_env


def connector_names(pipeline: Any) -> list[str]:
    """Class names of a pipeline's connectors, in order ([] for None)."""
    return [] if pipeline is None else [type(c).__name__ for c in pipeline.connectors]


@dataclass
class InferencePipeline:
    """One RLModule between its env-to-module and module-to-env pipelines.

    Attributes:
        module: the torch RLModule (eval mode).
        module_id: its id in the checkpoint.
        env_to_module: the restored `EnvToModulePipeline`, or None.
        module_to_env: the restored `ModuleToEnvPipeline`, or None.
        observation_space: what one observation from the env looks like (before connectors).
        action_space: what the env receives as one action (after connectors).
        multi_agent: whether the pipelines are the multi-agent kind (``AgentToModuleMapping``).
        batched: whether every connector is one the batched path knows (else the episode path).
    """

    module: Any
    module_id: str
    env_to_module: Any
    module_to_env: Any
    observation_space: gym.Space
    action_space: gym.Space
    multi_agent: bool
    batched: bool

    def __post_init__(self) -> None:
        # RLlib's struct of the action space; Discrete actions pass NormalizeAndClipActions unchanged.
        discrete = isinstance(self.action_space, gym.spaces.Discrete)
        self._action_struct = _DISCRETE if discrete else get_base_struct_from_space(self.action_space)

    @classmethod
    def build(cls, module: Any, module_id: str, env_to_module: Any, module_to_env: Any) -> InferencePipeline:
        """Wire `module` between the restored pipelines and pick the path.

        Raises:
            ModelLoadError: a multi-agent checkpoint whose pipelines hold connectors other than
                the ones the batched path knows (multi-agent requests name a module, and such a
                connector may depend on the agent id).
        """
        e2m, m2e = connector_names(env_to_module), connector_names(module_to_env)
        multi_agent = "AgentToModuleMapping" in e2m or "ModuleToAgentUnmapping" in m2e
        known_e2m = {"MeanStdFilter", "FlattenObservations"} if not multi_agent else set()
        batched = all(n in _E2M_LAYOUT or n in known_e2m for n in e2m) and all(
            n in _M2E_LAYOUT or n in ("GetActions", "NormalizeAndClipActions") for n in m2e
        )
        if batched and env_to_module is not None:
            for connector in env_to_module.connectors:
                if type(connector).__name__ == "FlattenObservations" and (
                    connector._multi_agent or connector._keys_to_remove
                ):
                    batched = False
        if multi_agent and not batched:
            unknown = [
                n for n in e2m + m2e if n not in _E2M_LAYOUT | _M2E_LAYOUT | {"GetActions", "NormalizeAndClipActions"}
            ]
            raise ModelLoadError(
                f"multi-agent checkpoint with connectors {unknown}: this server serves multi-agent "
                "policies whose pipelines hold RLlib's default connectors only"
            )
        if module.is_stateful() and not batched:
            raise ModelLoadError(
                f"module {module_id!r} is stateful (RNN) and its pipelines hold connectors {e2m + m2e}: "
                "this server carries RNN state for pipelines of RLlib's default connectors, MeanStdFilter "
                "and FlattenObservations only"
            )
        if multi_agent or env_to_module is None:
            observation_space = module.observation_space
        else:
            observation_space = env_to_module.input_observation_space
        if multi_agent or module_to_env is None:
            action_space = module.action_space
        else:
            action_space = module_to_env.action_space
        return cls(
            module, module_id, env_to_module, module_to_env, observation_space, action_space, multi_agent, batched
        )

    def __call__(self, observations: Any, *, explore: bool, state: Any = None) -> tuple[dict[str, Any], dict[str, Any]]:
        """Actions (and the module's outputs) for a batch of observations.

        Args:
            observations: a batch in the structure of `observation_space`: an array of shape
                ``(batch, *space.shape)`` for Box/Discrete, a dict or tuple of such arrays for
                Dict/Tuple spaces.
            explore: sample from the exploration distribution (``forward_exploration``) instead
                of taking the greedy action of the inference distribution.
            state: for stateful (RNN) modules, the batch of state-ins in the structure of
                ``module.get_initial_state()`` with a leading batch axis; None for the initial state.

        Returns:
            ``(to_env, to_module)``: numpy columns after the module-to-env pipeline
            (``actions_for_env`` always, batch-first; ``actions``, ``action_logp``,
            ``action_dist_inputs`` and ``state_out`` when the module or connectors produce them)
            and the module's input batch (for value predictions).
        """
        if self.batched:
            return self._batched(observations, explore, state)
        return self._episodes(observations, explore)

    def forward(self, batch: dict[str, Any], explore: bool) -> dict[str, Any]:
        """`forward_exploration` or `forward_inference` without autograd.

        ``TorchRLModule.forward_inference`` is ``self.eval()`` (a walk over every submodule, about
        a quarter of a single-observation request here) then ``_forward_inference``; the module
        was put in eval mode once at load and nothing here switches it back, so the walk is
        skipped while it stays in eval mode.
        """
        module = self.module
        # Epsilon-greedy modules (RLlib's DQN, our DiscreteCQL) explore with the epsilon of their
        # schedule at env step `t`; a served policy explores as at the end of training.
        kwargs = {"t": END_OF_SCHEDULE} if explore and is_epsilon_greedy(module) else {}
        with torch.inference_mode():
            if module.training:
                return module.forward_exploration(batch, **kwargs) if explore else module.forward_inference(batch)
            return module._forward_exploration(batch, **kwargs) if explore else module._forward_inference(batch)

    def _batched(self, observations: Any, explore: bool, state: Any) -> tuple[dict[str, Any], dict[str, Any]]:
        obs = observations
        for connector in self.env_to_module.connectors if self.env_to_module is not None else ():
            name = type(connector).__name__
            if name == "MeanStdFilter":
                if connector._filters is None:
                    connector._init_new_filters()
                obs = connector._filters[None](obs, update=False)
            elif name == "FlattenObservations":
                obs = flatten_inputs_to_1d_tensor(obs, connector._input_obs_base_struct, batch_axis=True)
        to_module: dict[str, Any] = {
            Columns.OBS: _to_tensor(obs) if isinstance(obs, np.ndarray) else tree.map_structure(_to_tensor, obs)
        }
        stateful = self.module.is_stateful()
        if stateful:
            batch_size = len(tree.flatten(obs)[0])
            if state is None:
                state = tree.map_structure(
                    lambda s: np.repeat(np.asarray(s)[None], batch_size, axis=0), self.module.get_initial_state()
                )
            to_module[Columns.OBS] = tree.map_structure(lambda t: t.unsqueeze(1), to_module[Columns.OBS])
            to_module[Columns.STATE_IN] = tree.map_structure(_to_tensor, state)
        out = self.forward(to_module, explore)
        if stateful:  # RemoveSingleTsTimeRankFromBatch
            out = {
                k: v if k == Columns.STATE_OUT else tree.map_structure(lambda t: t.squeeze(1), v)
                for k, v in out.items()
            }
        normalize = clip = False
        for connector in self.module_to_env.connectors if self.module_to_env is not None else ():
            name = type(connector).__name__
            if name == "GetActions":
                connector._get_actions(out, self.module, explore)
            elif name == "NormalizeAndClipActions":
                normalize, clip = connector.normalize_actions, connector.clip_actions
        if Columns.ACTIONS not in out:  # no module-to-env pipeline: RLlib's GetActions default
            GetActions()._get_actions(out, self.module, explore)
        out = {
            k: v.numpy() if isinstance(v, torch.Tensor) else tree.map_structure(_to_numpy, v) for k, v in out.items()
        }
        actions = out[Columns.ACTIONS]
        if normalize and self._action_struct is not _DISCRETE:
            out[Columns.ACTIONS_FOR_ENV] = unsquash_action(actions, self._action_struct)
        elif clip and self._action_struct is not _DISCRETE:
            out[Columns.ACTIONS_FOR_ENV] = clip_action(actions, self._action_struct)
        else:
            out[Columns.ACTIONS_FOR_ENV] = actions
        return out, to_module

    def _episodes(self, observations: Any, explore: bool) -> tuple[dict[str, Any], dict[str, Any]]:
        size = len(tree.flatten(observations)[0])
        episodes = [
            SingleAgentEpisode(
                observations=[tree.map_structure(lambda x, i=i: x[i], observations)],
                observation_space=self.observation_space,
                action_space=self.action_space,
            )
            for i in range(size)
        ]
        shared: dict[str, Any] = {}
        to_module = self.env_to_module(rl_module=self.module, episodes=episodes, explore=explore, shared_data=shared)
        out = self.forward(to_module, explore)
        out = self.module_to_env(
            rl_module=self.module, batch=out, episodes=episodes, explore=explore, shared_data=shared
        )
        columns: dict[str, Any] = {}
        for key, value in out.items():
            value = tree.map_structure(_to_numpy, value)
            if isinstance(value, list):  # one item per episode
                value = tree.map_structure(lambda *xs: np.stack(xs), *value) if value else np.zeros(0)
            columns[key] = value
        columns.setdefault(Columns.ACTIONS_FOR_ENV, columns.get(Columns.ACTIONS))
        return columns, to_module


_DISCRETE = object()


def _to_tensor(x: Any) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(x))


def _to_numpy(x: Any) -> Any:
    return x.numpy() if isinstance(x, torch.Tensor) else np.asarray(x)
