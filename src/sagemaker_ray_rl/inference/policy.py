"""Actions from any RLlib algorithm checkpoint, in-process, without a Ray cluster.

`Policy.load` finds the algorithm checkpoint in the model dir by its ``rllib_checkpoint.json``
(what ``algo.save(SM_MODEL_DIR)`` in any user entry point writes, with or without our
``metadata.json``), loads every RLModule with `RLModule.from_checkpoint` and restores the
checkpoint's env-to-module and module-to-env connector pipelines (`pipelines`). Spaces come from
the checkpoint itself (the pipelines' input spaces, else the modules'), so the env class need not
be importable at serving time. No ``ray.init``: loading is short next to the RLlib import (docs/benchmarks.md).

`Policy.compute` then answers as the env runner would have acted: greedy (``forward_inference``
and the inference distribution's deterministic action) unless ``explore`` (``forward_exploration``
and a sample), with the extra outputs batch RL and monitoring use (``action_logp``,
``action_prob``, ``action_dist_inputs``, ``vf_preds``). With ``Policy.load(model_dir, engine="auto")``
greedy requests go through the ONNX graphs exported next to the checkpoint (`onnx_engine`).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import ValueFunctionAPI
from ray.rllib.core.rl_module.rl_module import RLModule

from sagemaker_ray_rl.checkpoint import (
    METADATA_FILE,
    find_checkpoint,
    module_ids,
    pickled_algorithm_config,
    rl_module_dir,
)
from sagemaker_ray_rl.contract.errors import ModelLoadError, RequestError
from sagemaker_ray_rl.inference import OPTIONAL_OUTPUTS
from sagemaker_ray_rl.inference.onnx_engine import ENGINES, load_graphs
from sagemaker_ray_rl.inference.pipelines import InferencePipeline, is_epsilon_greedy, restore_pipelines


def _policy_mapping_fn(checkpoint_dir: Path) -> Any:
    """The ``policy_mapping_fn`` of the algorithm config pickled in the checkpoint, or None when
    the config cannot be unpickled here (e.g. it references a custom env class that is absent)."""
    try:
        config = pickled_algorithm_config(checkpoint_dir)
        fn = config.get("policy_mapping_fn") if isinstance(config, dict) else config.policy_mapping_fn
    except Exception as exc:  # unpickling runs arbitrary code paths; any failure means "no mapping"
        logging.getLogger(__name__).warning(
            "no policy_mapping_fn from %s: %s: %s", checkpoint_dir, type(exc).__name__, exc
        )
        return None
    return fn if callable(fn) else None


@dataclass
class Policy:
    """The RLModules of a checkpoint, each between its connector pipelines.

    Attributes:
        pipelines: module id -> `InferencePipeline`.
        default_module_id: the module answering requests that name none: the only module, or
            ``default_policy``; None when a multi-agent checkpoint has neither (requests must name one).
        checkpoint_dir: where the checkpoint was loaded from.
        metadata: ``metadata.json`` when the checkpoint came from this image's training, else {}.
        policy_mapping_fn: the checkpoint's ``policy_mapping_fn`` (multi-agent), or None.
        onnx_graphs: module id -> `onnx_engine.OnnxGraph` answering that module's greedy
            requests in ONNX Runtime (``engine`` ``onnx``/``auto`` of `load`); empty: torch only.
    """

    pipelines: dict[str, InferencePipeline]
    default_module_id: str | None
    checkpoint_dir: Path | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    policy_mapping_fn: Any = None
    onnx_graphs: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def load(cls, model_dir: Path, engine: str = "torch") -> Policy:
        """Load every module of the checkpoint in `model_dir` with its connector pipelines.

        Args:
            model_dir: a directory holding an RLlib algorithm checkpoint.
            engine: ``torch`` (every request through the torch modules), ``onnx`` (greedy
                requests through the ONNX graphs exported next to the checkpoint, required for
                every module) or ``auto`` (through ONNX Runtime for the modules that have a graph
                matching the checkpoint); see `onnx_engine`. Exploring and stateful requests,
                and outputs a graph lacks, always go through torch.

        Raises:
            ModelLoadError: no checkpoint, a module or pipeline that fails to load (a corrupt file,
                a custom class that is not importable), connectors this server cannot run, or
                ``engine="onnx"`` and a module without a usable graph (the reason is named).
            ValueError: `engine` is none of ``torch``, ``onnx``, ``auto``.
        """
        if engine not in ENGINES:
            raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")

        checkpoint_dir = find_checkpoint(model_dir)
        metadata: dict[str, Any] = {}
        if (checkpoint_dir / METADATA_FILE).is_file():
            try:
                metadata = json.loads((checkpoint_dir / METADATA_FILE).read_text())
            except ValueError as exc:
                raise ModelLoadError(f"{checkpoint_dir / METADATA_FILE} is not valid JSON: {exc}") from exc
        env_to_module, module_to_env = restore_pipelines(checkpoint_dir)
        pipelines: dict[str, InferencePipeline] = {}
        for module_id in module_ids(checkpoint_dir):
            path = rl_module_dir(checkpoint_dir, module_id).resolve()
            try:
                module = RLModule.from_checkpoint(str(path))
            except Exception as exc:
                raise ModelLoadError(
                    f"cannot load RLModule {module_id!r} from {path}: {type(exc).__name__}: {exc}"
                ) from exc
            module.eval()
            pipelines[module_id] = InferencePipeline.build(module, module_id, env_to_module, module_to_env)
        ids = list(pipelines)
        default = ids[0] if len(ids) == 1 else ("default_policy" if "default_policy" in ids else None)
        mapping = _policy_mapping_fn(checkpoint_dir) if len(ids) > 1 else None
        graphs: dict[str, Any] = {}
        if engine != "torch":
            found, missing = load_graphs(checkpoint_dir, model_dir)
            graphs = {k: v for k, v in found.items() if k in pipelines}
            lacking = [k for k in ids if k not in graphs]
            if engine == "onnx" and lacking:
                reasons = "; ".join(f"{k}: {missing.get(k, missing.get('*', 'no graph'))}" for k in lacking)
                raise ModelLoadError(
                    f"inference engine 'onnx' needs an ONNX graph of every module, and {lacking} have none "
                    f"({reasons}); export them with `python -m sagemaker_ray_rl.inference.onnx_export "
                    f"{model_dir}` or use the 'auto' or 'torch' engine"
                )
            for module_id in lacking:
                logging.getLogger(__name__).info(
                    "module %r answers through torch: %s", module_id, missing.get(module_id, missing.get("*"))
                )
        return cls(pipelines, default, checkpoint_dir, metadata, mapping, graphs)

    @property
    def engines(self) -> dict[str, str]:
        """module id -> ``onnx`` (greedy requests through ONNX Runtime) or ``torch``."""
        return {k: "onnx" if k in self.onnx_graphs else "torch" for k in self.pipelines}

    def module_for_agent(self, agent_id: str) -> str:
        """The module acting for `agent_id`: the checkpoint's ``policy_mapping_fn(agent_id, None)``
        (tried with the id as given, then as an integer: JSON keys are strings, RLlib agent ids
        often ints); the default module for single-agent checkpoints.

        Raises:
            RequestError: 400 naming ``agents.<id>`` when no module can be found.
        """
        if len(self.pipelines) == 1:
            return self.module_ids[0]
        candidates: list[Any] = [agent_id]
        if agent_id.lstrip("-").isdigit():
            candidates.append(int(agent_id))
        if self.policy_mapping_fn is not None:
            for candidate in candidates:
                try:
                    module_id = self.policy_mapping_fn(candidate, None)
                except Exception:  # a user function: any failure means "cannot map this id"
                    continue
                if module_id in self.pipelines:
                    return module_id
        raise RequestError(
            f"cannot map agent id {agent_id!r} to a module"
            + (
                ""
                if self.policy_mapping_fn is not None
                else " (the checkpoint's policy_mapping_fn could not be restored)"
            ),
            field=f"agents.{agent_id}",
            expected=f"an agent id the training's policy_mapping_fn maps to one of {self.module_ids}, or 'module_id'",
        )

    @property
    def module_ids(self) -> list[str]:
        """The checkpoint's module ids, sorted."""
        return list(self.pipelines)

    def pipeline(self, module_id: str | None) -> InferencePipeline:
        """The pipeline of `module_id` (the default module when None).

        Raises:
            RequestError: 400, the id is unknown, or None where there is no default module.
        """
        if module_id is None:
            module_id = self.default_module_id
            if module_id is None:
                raise RequestError(
                    "this multi-agent policy needs a module id", field="module_id", expected=f"one of {self.module_ids}"
                )
        pipeline = self.pipelines.get(module_id)
        if pipeline is None:
            raise RequestError(
                f"unknown module id {module_id!r}", field="module_id", expected=f"one of {self.module_ids}"
            )
        return pipeline

    def compute(
        self,
        observations: Any,
        *,
        module_id: str | None = None,
        explore: bool = False,
        outputs: tuple[str, ...] = (),
        state: Any = None,
    ) -> dict[str, Any]:
        """Actions for a batch of observations, as the env runner would have sent them to the env.

        Args:
            observations: a batch in the structure of the module's observation space (see
                `InferencePipeline.__call__`), already validated against it.
            module_id: which module (multi-agent); the default module when None.
            explore: sample (``forward_exploration``) instead of the greedy action; epsilon-greedy
                modules (DQN-style) explore with their schedule's final epsilon.
            outputs: extra outputs, a subset of `OPTIONAL_OUTPUTS`.
            state: RNN state-ins for stateful modules (batch-first), None for the initial state.

        Returns:
            Batch-first numpy arrays (or structures of them): ``action`` (after unsquash/clip, the
            env's dtype: int64 for Discrete, float32 for Box), ``state_out`` for stateful modules,
            and each requested output: ``action_logp`` (log-likelihood of the action under the
            distribution it came from; 0 for greedy actions, whose distribution is deterministic,
            as RLlib's ``GetActions`` computes it), ``action_prob`` (``exp(action_logp)``: a
            density for continuous actions), ``action_dist_inputs`` (the distribution's inputs,
            e.g. logits), ``vf_preds`` (the value function's estimate, modules with RLlib's
            ``ValueFunctionAPI`` only).

        Raises:
            RequestError: unknown module id, ``vf_preds`` from a module without a value function.
        """
        pipeline = self.pipeline(module_id)
        graph = self.onnx_graphs.get(pipeline.module_id)
        if graph is not None and graph.can_answer(explore, outputs, state):
            return graph.run(observations, outputs)
        to_env, to_module = pipeline(observations, explore=explore, state=state)
        result: dict[str, Any] = {"action": to_env[Columns.ACTIONS_FOR_ENV]}
        if Columns.STATE_OUT in to_env:
            result["state_out"] = to_env[Columns.STATE_OUT]
        for name in outputs:
            if name in ("action_logp", "action_prob"):
                logp = to_env.get(Columns.ACTION_LOGP)
                if logp is None and explore and is_epsilon_greedy(pipeline.module):
                    logp = self._epsilon_greedy_logp(pipeline, to_module, result["action"])
                if logp is None:
                    logp = np.zeros(len(result["action"]), dtype=np.float32)
                logp = np.asarray(logp, dtype=np.float32).reshape(len(logp))
                result[name] = logp if name == "action_logp" else np.exp(logp)
            elif name == "action_dist_inputs":
                if Columns.ACTION_DIST_INPUTS not in to_env:
                    raise RequestError(
                        f"module {pipeline.module_id!r} computes actions directly, without a distribution",
                        field="outputs",
                        expected=f"a subset of {[o for o in OPTIONAL_OUTPUTS if o != 'action_dist_inputs']}",
                    )
                result[name] = to_env[Columns.ACTION_DIST_INPUTS]
            elif name == "vf_preds":
                result[name] = self._values(pipeline, to_module)
        return result

    @staticmethod
    def _epsilon_greedy_logp(pipeline: InferencePipeline, to_module: dict[str, Any], actions: np.ndarray) -> np.ndarray:
        """log P(action) under epsilon-greedy exploration over ``n`` actions, as RLlib's DQN module
        explores (``DefaultDQNTorchRLModule._forward_exploration``): ``1 - eps + eps / n`` for the
        greedy action, ``eps / n`` for any other; eps is the schedule's final value. Shape (B,),
        float32."""
        module = pipeline.module
        with torch.inference_mode():
            q_values = module.compute_q_values(to_module)["qf_preds"].numpy()
        epsilon = float(module.epsilon_schedule.get_current_value())
        n = q_values.shape[-1]
        greedy = q_values.argmax(axis=-1)
        prob = np.where(np.asarray(actions).reshape(len(greedy)) == greedy, 1.0 - epsilon + epsilon / n, epsilon / n)
        return np.log(prob).astype(np.float32)

    @staticmethod
    def _values(pipeline: InferencePipeline, to_module: dict[str, Any]) -> np.ndarray:
        if not isinstance(pipeline.module, ValueFunctionAPI):
            raise RequestError(
                f"module {pipeline.module_id!r} ({type(pipeline.module).__name__}) has no value function",
                field="outputs",
                expected=f"a subset of {[o for o in OPTIONAL_OUTPUTS if o != 'vf_preds']}",
            )
        with torch.inference_mode():
            values = pipeline.module.compute_values(to_module).numpy()
        return values.reshape(len(values), *values.shape[2:]) if values.ndim > 1 else values
