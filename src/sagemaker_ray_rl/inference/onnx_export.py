"""ONNX export of a checkpoint's policies: raw env observations in, the served greedy action out.

RLlib's new API stack exports nothing usable on its own (``export_policy_model`` raises for
RLModules; its example exports ``forward_inference`` logits and leaves connectors, the greedy
action, unsquashing and clipping to the caller). `export_onnx` exports, per module of an
algorithm checkpoint, one graph that does what `sagemaker_ray_rl.inference.policy.Policy.compute`
does for a greedy request, with everything the served path applies inside the graph:

- env-to-module: frozen ``MeanStdFilter`` statistics (``(x - mean) / (std + 1e-6)``, clipped,
  computed in float64 as RLlib's numpy filter does), ``FlattenObservations`` (one-hot for
  Discrete/MultiDiscrete leaves, flattened Box leaves, concatenated in the space's order);
- the module's ``forward_inference`` and the inference distribution's deterministic action
  (argmax for Discrete, the mean for a diagonal Gaussian), or the module's own actions (DQN);
- module-to-env: ``NormalizeAndClipActions`` as the checkpoint's pipeline configured it
  (unsquash from [-1, 1] to the Box bounds, then clip; or clip only).

Layout written next to the checkpoint (default ``MODEL_DIR/onnx/``; every name is
`sagemaker_ray_rl.checkpoint`'s: ``ONNX_SUBDIR``, ``ONNX_EXPORT_REPORT``, `onnx_graph_path`,
`onnx_sidecar_path`)::

    <module_id>.onnx     the graph (inputs and outputs below)
    <module_id>.json     the sidecar: inputs, outputs, spaces, connectors in the graph, opset, versions
    export.json          which modules were exported and why any other was not

Inputs: one per leaf of the observation space, batch-first, in the env's dtype (``obs`` for a
Box/Discrete space; ``obs.<key>`` / ``obs.<index>`` per leaf of Dict/Tuple spaces, in
``tree.flatten`` order, i.e. sorted dict keys). Outputs: ``action`` (B, *action_shape) as the env
receives it (int64 for Discrete, the Box's dtype), ``action_logp`` (B,) float32 and
``action_prob`` (B,) float32 (0 and 1: the greedy distribution is deterministic, as the server
answers), ``action_dist_inputs`` (B, N) float32 where the module has a distribution, ``vf_preds``
(B,) float32 where the module has RLlib's ``ValueFunctionAPI``.

Exporter: ``torch.onnx.export(..., dynamo=True)`` (torch.export + onnxscript; it worked for every
module kind tested, so the deprecated TorchScript exporter is not used); the batch axis is
dynamic. The sidecar's ``checkpoint_sha256`` (`sagemaker_ray_rl.checkpoint.checkpoint_fingerprint`)
ties the graph to the checkpoint it came from. Every exported graph is checked before it is kept: a
batch sampled from the observation space goes through ONNX Runtime and through
`Policy.compute`, and the file is removed (and reported) when the actions differ.

Not exported, with the reason in ``export.json`` (never an exception from `export_onnx_safely`):
stateful (RNN) modules, pipelines with connectors whose effect is not a pure function of the
observation (the served episode path: frame stacking, custom connectors), structured
(Dict/Tuple) action spaces, modules the exporter refuses, and graphs that fail the parity check.
A checkpoint `Policy.load` cannot load at all (e.g. multi-agent with such connectors) is reported
under ``"*"`` by `export_onnx_safely`.

One concern despite its length: turning one checkpoint's modules into graphs that answer exactly
what `Policy.compute` answers (the connector and action steps folded in, checked, reported).
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import onnx
import onnxruntime as ort
import torch
import tree
from ray.rllib.core.columns import Columns
from ray.rllib.core.rl_module.apis import ValueFunctionAPI
from ray.rllib.utils.numpy import SMALL_NUMBER
from ray.rllib.utils.serialization import gym_space_to_dict
from ray.rllib.utils.spaces.space_utils import get_base_struct_from_space

from sagemaker_ray_rl.checkpoint import (
    ONNX_EXPORT_REPORT,
    ONNX_SUBDIR,
    checkpoint_fingerprint,
    onnx_dir,
    onnx_graph_path,
    onnx_sidecar_path,
    versions,
)
from sagemaker_ray_rl.contract.errors import ModelLoadError
from sagemaker_ray_rl.inference.pipelines import connector_names
from sagemaker_ray_rl.inference.policy import Policy

logger = logging.getLogger(__name__)

SIDECAR_FORMAT_VERSION = 1
#: Observations sampled from the observation space for the check run after each export.
PARITY_SAMPLES = 256
#: Largest difference between ONNX Runtime's and `Policy.compute`'s Box actions the check accepts.
BOX_TOLERANCE = 1e-5


class NotExportable(Exception):
    """A module that cannot be exported; the message is the reason recorded in ``export.json``."""


@dataclass
class ExportReport:
    """The outcome of one export.

    Attributes:
        out_dir: where the files went.
        exported: module id -> path of its ``.onnx`` file.
        not_exported: module id -> why it was not exported (``"*"`` when the checkpoint itself
            could not be loaded).
    """

    out_dir: Path
    exported: dict[str, Path] = field(default_factory=dict)
    not_exported: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """``export.json``'s contents: file names relative to `out_dir`."""
        return {
            "format_version": SIDECAR_FORMAT_VERSION,
            "exported": {k: v.name for k, v in self.exported.items()},
            "not_exported": dict(self.not_exported),
        }


def export_onnx(model_dir: Path, out_dir: Path | None = None, *, check_samples: int = PARITY_SAMPLES) -> ExportReport:
    """Export every module of the checkpoint in `model_dir` to ONNX (see the module docstring).

    Args:
        model_dir: a directory holding an RLlib algorithm checkpoint (found as `Policy.load`
            finds it: itself or the shallowest directory below it with ``rllib_checkpoint.json``).
        out_dir: where to write; default ``model_dir/onnx``. Created if missing.
        check_samples: observations sampled for the parity check of each graph (0: no check).

    Returns:
        The report, also written to ``out_dir/export.json``. Modules that cannot be exported
        are in ``not_exported`` with the reason.

    Raises:
        ModelLoadError: the checkpoint cannot be loaded at all (no checkpoint, corrupt files).
    """
    model_dir = Path(model_dir)
    out_dir = Path(out_dir) if out_dir is not None else onnx_dir(model_dir)
    policy = Policy.load(model_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    report = ExportReport(out_dir)
    for module_id, pipeline in policy.pipelines.items():
        try:
            report.exported[module_id] = _export_module(policy, pipeline, out_dir, check_samples)
        except NotExportable as exc:
            report.not_exported[module_id] = str(exc)
        except Exception as exc:  # the exporter's own refusals come in many types
            report.not_exported[module_id] = f"the exporter failed: {type(exc).__name__}: {_first_line(exc)}"
        if module_id in report.not_exported:
            graph = onnx_graph_path(out_dir, module_id)
            for path in (graph, onnx_sidecar_path(graph)):
                path.unlink(missing_ok=True)
            logger.warning("module %r not exported to ONNX: %s", module_id, report.not_exported[module_id])
        else:
            logger.info("module %r exported to %s", module_id, report.exported[module_id])
    (out_dir / ONNX_EXPORT_REPORT).write_text(json.dumps(report.to_json(), indent=2) + "\n")
    return report


def export_onnx_safely(model_dir: Path, out_dir: Path | None = None, **kwargs: Any) -> ExportReport | None:
    """`export_onnx` for training jobs: never raises; a failure is logged (and, when `model_dir`
    exists, written to ``export.json`` under ``"*"``) and the job goes on.

    Returns:
        The report, or None when nothing could be exported.
    """
    try:
        return export_onnx(model_dir, out_dir, **kwargs)
    except Exception as exc:  # an export must never fail the training job
        reason = f"{type(exc).__name__}: {_first_line(exc)}"
        logger.warning("ONNX export of %s failed: %s", model_dir, reason)
        if out_dir is None and not Path(model_dir).is_dir():
            return None
        try:
            target = Path(out_dir) if out_dir is not None else onnx_dir(model_dir)
            target.mkdir(parents=True, exist_ok=True)
            report = ExportReport(target, not_exported={"*": reason})
            (target / ONNX_EXPORT_REPORT).write_text(json.dumps(report.to_json(), indent=2) + "\n")
        except OSError:
            pass
        return None


def _first_line(exc: BaseException) -> str:
    """One line of `exc`'s message: torch.onnx's ``Exception summary`` when it has one."""
    lines = [line.strip() for line in str(exc).strip().splitlines() if line.strip()]
    if "## Exception summary" in lines:
        lines = lines[lines.index("## Exception summary") + 1 :]
    return lines[0][:500] if lines else ""


def _observation_leaves(space: gym.Space) -> list[tuple[str, gym.Space]]:
    """(input name, leaf space) per leaf of `space`, in ``tree.flatten`` order."""
    struct = get_base_struct_from_space(space)
    if isinstance(struct, gym.Space):
        return [("obs", struct)]
    return [(".".join(["obs", *(str(p) for p in path)]), leaf) for path, leaf in tree.flatten_with_path(struct)]


def _leaf_dtype(space: gym.Space) -> np.dtype:
    if isinstance(space, (gym.spaces.Discrete, gym.spaces.MultiDiscrete)):
        return np.dtype(np.int64)
    return np.dtype(space.dtype)


def _refuse_unless_exportable(pipeline: Any) -> None:
    """Raise `NotExportable` for what the graph cannot hold."""
    if pipeline.module.is_stateful():
        raise NotExportable(
            f"module {pipeline.module_id!r} is stateful (RNN): its actions depend on a state carried "
            "between steps, which this export does not model (serve it with the torch path)"
        )
    if not pipeline.batched:
        names = connector_names(pipeline.env_to_module) + connector_names(pipeline.module_to_env)
        raise NotExportable(
            f"the connector pipelines {names} hold connectors whose effect is not a pure function of one "
            "observation (per-episode state or custom code): only RLlib's default connectors, MeanStdFilter "
            "and FlattenObservations go into the graph"
        )
    if not isinstance(
        pipeline.action_space, (gym.spaces.Discrete, gym.spaces.Box, gym.spaces.MultiDiscrete, gym.spaces.MultiBinary)
    ):
        raise NotExportable(f"action space {pipeline.action_space} is structured: one action output per graph only")


def _build_graph(pipeline: Any) -> Any:
    """A ``torch.nn.Module`` mapping the observation leaves to the outputs (module docstring)."""
    module = pipeline.module
    obs_struct = get_base_struct_from_space(pipeline.observation_space)
    n_leaves = len(_observation_leaves(pipeline.observation_space))
    steps: list[
        tuple[str, Any]
    ] = []  # ("filter", [per leaf (mean, denom, clip, demean, destd) | None]) | ("flatten", spaces)
    in_graph: list[str] = []
    for connector in pipeline.env_to_module.connectors if pipeline.env_to_module is not None else ():
        name = type(connector).__name__
        if name == "MeanStdFilter":
            if connector._filters is None:
                connector._init_new_filters()
            flt = connector._filters[None]
            stats = tree.flatten(flt.running_stats) if flt.no_preprocessor else [flt.running_stats]
            shapes = tree.flatten(flt.shape) if flt.no_preprocessor else [flt.shape]
            leaves = []
            for rs, shape in zip(stats, shapes, strict=True):
                if shape is None:  # Discrete leaves pass unchanged
                    leaves.append(None)
                    continue
                leaves.append(
                    (
                        torch.from_numpy(np.asarray(rs.mean, dtype=np.float64).copy()),
                        torch.from_numpy(np.asarray(rs.std + SMALL_NUMBER, dtype=np.float64).copy()),
                    )
                )
            steps.append(("filter", (leaves, bool(flt.demean), bool(flt.destd), flt.clip)))
            in_graph.append(f"MeanStdFilter (frozen: {int(np.sum([rs.n for rs in stats]))} observations seen)")
        elif name == "FlattenObservations":
            steps.append(("flatten", tree.flatten(connector._input_obs_base_struct)))
            in_graph.append("FlattenObservations")
    normalize = clip = False
    for connector in pipeline.module_to_env.connectors if pipeline.module_to_env is not None else ():
        if type(connector).__name__ == "NormalizeAndClipActions":
            normalize, clip = bool(connector.normalize_actions), bool(connector.clip_actions)
    action_space = pipeline.action_space
    bounds = None
    if isinstance(action_space, gym.spaces.Box) and (normalize or clip):
        low, high = action_space.low, action_space.high
        if normalize and np.all(action_space.bounded_below) and np.all(action_space.bounded_above):
            if action_space.dtype in (np.float32, np.float64):
                mode = "unsquash"
            elif np.issubdtype(action_space.dtype, np.integer):
                mode = "shift"
            else:
                mode = None
        elif normalize:
            mode = None  # unsquash_action leaves unbounded Boxes alone
        else:
            mode = "clip"
        if mode is not None:
            bounds = (mode, torch.from_numpy(np.array(low)), torch.from_numpy(np.array(high)))
            in_graph.append({"unsquash": "unsquash + clip", "shift": "shift by low", "clip": "clip"}[mode])
    has_values = isinstance(module, ValueFunctionAPI)

    class Graph(torch.nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.module = module

        def forward(self, *leaves: torch.Tensor) -> tuple[torch.Tensor, ...]:
            flat = list(leaves)
            for kind, spec in steps:
                if kind == "filter":
                    stats, demean, destd, clip_value = spec
                    out = []
                    for x, stat in zip(flat, stats, strict=True):
                        if stat is None:
                            out.append(x)
                            continue
                        mean, denom = stat
                        y = x.to(torch.float64)
                        if demean:
                            y = y - mean
                        if destd:
                            y = y / denom
                        if clip_value:
                            y = torch.clamp(y, -float(clip_value), float(clip_value))
                        out.append(y.to(x.dtype))
                    flat = out
                else:
                    parts = []
                    for x, space in zip(flat, spec, strict=True):
                        if isinstance(space, gym.spaces.Discrete):
                            parts.append(torch.nn.functional.one_hot(x.long(), int(space.n)).to(torch.float32))
                        elif isinstance(space, gym.spaces.MultiDiscrete):
                            parts.extend(
                                torch.nn.functional.one_hot(x[:, i].long(), int(n)).to(torch.float32)
                                for i, n in enumerate(space.nvec)
                            )
                        else:
                            parts.append(x.reshape(x.shape[0], -1).to(torch.float32))
                    flat = [torch.cat(parts, dim=-1)]
            obs = flat[0] if len(flat) == 1 else tree.unflatten_as(obs_struct, flat)
            batch = {Columns.OBS: obs}
            out = self.module._forward_inference(batch)
            dist_inputs = out.get(Columns.ACTION_DIST_INPUTS)
            if Columns.ACTIONS in out:
                action = out[Columns.ACTIONS]
            else:
                dist = self.module.get_inference_action_dist_cls().from_logits(dist_inputs).to_deterministic()
                action = dist.sample()
            size = action.shape[0]
            logp = out.get(Columns.ACTION_LOGP)
            logp = (
                logp.reshape(size).to(torch.float32)
                if logp is not None
                else torch.zeros(size, dtype=torch.float32, device=action.device)
            )
            if bounds is not None:
                mode, low, high = bounds
                if mode == "unsquash":
                    action = action.to(low.dtype)
                    action = low + (action + 1.0) * (high - low) / 2.0
                    action = torch.minimum(torch.maximum(action, low), high)
                elif mode == "shift":
                    action = low + action
                else:
                    action = torch.minimum(torch.maximum(action, low.to(action.dtype)), high.to(action.dtype))
            outputs = [action, logp, torch.exp(logp)]
            if dist_inputs is not None:
                outputs.append(dist_inputs)
            if has_values:
                values = self.module.compute_values(batch)
                if values.dim() > 1:
                    values = values.reshape(values.shape[0], *values.shape[2:])
                outputs.append(values)
            return tuple(outputs)

    graph = Graph().eval()
    graph.in_graph = in_graph
    graph.n_leaves = n_leaves
    graph.has_values = has_values
    graph.postprocessing = {"normalize_actions": normalize, "clip_actions": clip}
    return graph


def _sample_observations(space: gym.Space, size: int, seed: int = 0) -> list[np.ndarray]:
    """`size` observations of `space` as input leaves (bounded Box leaves sampled in their
    bounds, unbounded ones from a normal distribution)."""
    space = _copy_space(space)
    space.seed(seed)
    samples = [space.sample() for _ in range(size)]
    return [
        np.stack([np.asarray(x) for x in column]).astype(_leaf_dtype(leaf))
        for column, (_, leaf) in zip(
            zip(*(tree.flatten(s) for s in samples), strict=True), _observation_leaves(space), strict=True
        )
    ]


def _copy_space(space: gym.Space) -> gym.Space:
    return copy.deepcopy(space)


def _export_module(policy: Any, pipeline: Any, out_dir: Path, check_samples: int) -> Path:
    _refuse_unless_exportable(pipeline)
    graph = _build_graph(pipeline)
    leaves = _observation_leaves(pipeline.observation_space)
    names = [name for name, _ in leaves]
    example = tuple(torch.from_numpy(x) for x in _sample_observations(pipeline.observation_space, 4, seed=1))
    batch = torch.export.Dim("batch", min=1)
    output_names = ["action", "action_logp", "action_prob"]
    with torch.no_grad():
        probe = graph(*example)
    if len(probe) - len(output_names) - int(graph.has_values) == 1:
        output_names.append("action_dist_inputs")
    if graph.has_values:
        output_names.append("vf_preds")
    path = onnx_graph_path(out_dir, pipeline.module_id)
    previous = logging.getLogger("torch.onnx").level
    logging.getLogger("torch.onnx").setLevel(logging.ERROR)
    try:
        program = torch.onnx.export(
            graph,
            example,
            input_names=names,
            output_names=output_names,
            dynamic_shapes=(tuple({0: batch} for _ in names),),  # forward(*leaves)
            dynamo=True,
            external_data=False,
            verbose=False,
        )
    finally:
        logging.getLogger("torch.onnx").setLevel(previous)
    program.save(str(path), external_data=False)
    parity = _check_parity(policy, pipeline, path, names, output_names, check_samples) if check_samples else None
    sidecar = _sidecar(pipeline, graph, path, leaves, output_names, probe, parity, policy.checkpoint_dir)
    onnx_sidecar_path(path).write_text(json.dumps(sidecar, indent=2, default=str) + "\n")
    return path


def _check_parity(
    policy: Any, pipeline: Any, path: Path, names: list[str], output_names: list[str], samples: int
) -> dict[str, Any]:
    """Run `samples` sampled observations through ONNX Runtime and `Policy.compute`.

    Raises:
        NotExportable: the actions differ (Discrete: any; Box: beyond `BOX_TOLERANCE`).
    """
    leaves = _sample_observations(pipeline.observation_space, samples)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = dict(zip(output_names, session.run(None, dict(zip(names, leaves, strict=True))), strict=True))
    observations = leaves[0] if len(leaves) == 1 else tree.unflatten_as(_obs_struct(pipeline), leaves)
    want = policy.compute(observations, module_id=pipeline.module_id)["action"]
    want = np.asarray(want)
    if got["action"].shape != want.shape:
        raise NotExportable(f"parity check: ONNX actions have shape {got['action'].shape}, the server's {want.shape}")
    if np.issubdtype(want.dtype, np.integer):
        mismatches = int(np.sum(np.any((got["action"] != want).reshape(samples, -1), axis=1)))
        if mismatches:
            raise NotExportable(f"parity check: {mismatches} of {samples} greedy actions differ from the server's")
        return {"observations": samples, "actions_equal": True}
    diff = float(np.max(np.abs(got["action"].astype(np.float64) - want))) if samples else 0.0
    if not diff <= BOX_TOLERANCE:
        raise NotExportable(f"parity check: actions differ from the server's by up to {diff:g} (> {BOX_TOLERANCE})")
    return {"observations": samples, "max_abs_action_difference": diff}


def _obs_struct(pipeline: Any) -> Any:
    return get_base_struct_from_space(pipeline.observation_space)


def _sidecar(
    pipeline: Any,
    graph: Any,
    path: Path,
    leaves: list[tuple[str, gym.Space]],
    output_names: list[str],
    probe: tuple[Any, ...],
    parity: dict[str, Any] | None,
    checkpoint_dir: Path,
) -> dict[str, Any]:
    model = onnx.load(str(path), load_external_data=False)
    opset = next((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), None)
    return {
        "format_version": SIDECAR_FORMAT_VERSION,
        "module_id": pipeline.module_id,
        "file": path.name,
        "opset": opset,
        "exporter": "torch.onnx.export(dynamo=True)",
        "inputs": [
            {
                "name": name,
                "dtype": _leaf_dtype(space).name,
                "shape": ["batch", *_leaf_shape(space)],
                "space": str(space),
            }
            for name, space in leaves
        ],
        "outputs": [
            {"name": name, "dtype": str(value.dtype).removeprefix("torch."), "shape": ["batch", *value.shape[1:]]}
            for name, value in zip(output_names, probe, strict=True)
        ],
        "observation_space": str(pipeline.observation_space),
        "observation_space_spec": gym_space_to_dict(pipeline.observation_space),
        "action_space": str(pipeline.action_space),
        "action_space_spec": gym_space_to_dict(pipeline.action_space),
        "module_class": f"{type(pipeline.module).__module__}.{type(pipeline.module).__qualname__}",
        "connectors": {
            "env_to_module": connector_names(pipeline.env_to_module),
            "module_to_env": connector_names(pipeline.module_to_env),
            "in_graph": graph.in_graph,
        },
        "action_postprocessing": graph.postprocessing,
        "parity_check": parity,
        "checkpoint_sha256": checkpoint_fingerprint(checkpoint_dir, pipeline.module_id),
        "versions": versions("onnx", "onnxscript", "onnxruntime"),
    }


def _leaf_shape(space: gym.Space) -> list[int]:
    if isinstance(space, gym.spaces.Discrete):
        return []
    if isinstance(space, gym.spaces.MultiDiscrete):
        return [len(space.nvec)]
    return list(space.shape)


def main(argv: list[str] | None = None) -> int:
    """``python -m sagemaker_ray_rl.inference.onnx_export MODEL_DIR [--out DIR]``.

    Prints one line per module (exported file or the reason it was not). Exit status 0 when at
    least one module was exported, 1 when none was, 2 when the checkpoint cannot be loaded.
    """
    parser = argparse.ArgumentParser(
        prog="python -m sagemaker_ray_rl.inference.onnx_export",
        description="Export every module of an RLlib checkpoint to ONNX (raw observations in, greedy action out).",
    )
    parser.add_argument("model_dir", type=Path, help="a directory holding an RLlib algorithm checkpoint")
    parser.add_argument("--out", type=Path, default=None, help=f"output directory (default MODEL_DIR/{ONNX_SUBDIR})")
    parser.add_argument(
        "--check-samples",
        type=int,
        default=PARITY_SAMPLES,
        help="sampled observations checked against the torch policy per module (0: no check)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        report = export_onnx(args.model_dir, args.out, check_samples=args.check_samples)
    except ModelLoadError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    for module_id, path in report.exported.items():
        print(f"exported {module_id}: {path}")
    for module_id, reason in report.not_exported.items():
        print(f"not exported {module_id}: {reason}")
    return 0 if report.exported else 1


if __name__ == "__main__":
    sys.exit(main())
