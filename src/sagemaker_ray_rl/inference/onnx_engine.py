"""Greedy answers from the exported ONNX graphs (`onnx_export`) in ONNX Runtime, for `Policy`.

`load_graphs` finds the graphs written next to a checkpoint (``<dir>/onnx/export.json`` and each
module's ``.onnx`` + ``.json`` sidecar, named by `sagemaker_ray_rl.checkpoint`) and keeps those
whose ``checkpoint_sha256`` matches the checkpoint being served: a graph left over from another
checkpoint is never used. `OnnxGraph.run` answers what `Policy.compute` answers for a greedy
request without RNN state; `Policy` sends every other request (``explore``, RNN state, an output
the graph lacks such as ``vf_preds`` of a module without a value function) to torch.

Each graph is loaded into an ONNX Runtime session once by `load_graphs` (so a corrupt file is
reported at startup, the module then answering through torch or ``serve`` refusing to start with
``onnx``), and again on first use in each forked process (one intra-op thread: the server runs one
forward pass at a time per worker): a session created before gunicorn forks its workers would
carry a thread pool whose threads do not exist in the children.

ONNX Runtime runs every node of a graph whatever outputs a call asks for, so a greedy request for
the action alone would also pay for the value function (a second MLP as large as the policy's in
RLlib's default PPO module) and the log-likelihoods. `OnnxGraph.run` therefore runs, for each set
of requested outputs, the subgraph that computes just those (``onnx.utils.Extractor``: the same
nodes, so the same answers), cut once per set (the action alone at load) and kept in its own
session.
"""

from __future__ import annotations

import json
import logging
import os
from pathlib import Path
from typing import Any

import numpy as np
import tree

from sagemaker_ray_rl.checkpoint import (
    ONNX_EXPORT_REPORT,
    ONNX_SUBDIR,
    checkpoint_fingerprint,
    onnx_dir,
    onnx_sidecar_path,
)
from sagemaker_ray_rl.contract.environment import INFERENCE_ENGINES

logger = logging.getLogger(__name__)

#: ``SAGEMAKER_RAY_RL_INFERENCE`` values: torch only, ONNX Runtime required for every module, or
#: ONNX Runtime where a graph matches the checkpoint (the contract's list, read there).
ENGINES = INFERENCE_ENGINES


class OnnxGraph:
    """One module's exported graph.

    Attributes:
        module_id: the module it was exported from.
        path: the ``.onnx`` file.
        sidecar: its ``.json`` sidecar (inputs, outputs, spaces, versions).
        outputs: the names of the graph's outputs (``action``, ``action_logp``, ``action_prob``,
            and ``action_dist_inputs`` / ``vf_preds`` where the module has them).
    """

    def __init__(self, module_id: str, path: Path, sidecar: dict[str, Any]) -> None:
        self.module_id = module_id
        self.path = path
        self.sidecar = sidecar
        self.outputs = tuple(o["name"] for o in sidecar["outputs"])
        self._inputs = [(i["name"], np.dtype(i["dtype"])) for i in sidecar["inputs"]]
        self._sessions: dict[tuple[str, ...], Any] = {}
        self._pid = -1
        #: output names -> the serialized subgraph computing just those (None: the whole graph).
        self._subgraphs: dict[tuple[str, ...], bytes | None] = {}

    def can_answer(self, explore: bool, outputs: tuple[str, ...], state: Any) -> bool:
        """Whether `run` gives this request's answer: greedy, no RNN state, outputs the graph has."""
        return not explore and state is None and all(name in self.outputs for name in outputs)

    def session(self, names: tuple[str, ...] | None = None) -> Any:
        """This process's ``onnxruntime.InferenceSession`` computing `names` (outputs of the
        graph; None: all of them), created on first use after a fork.

        Raises:
            Exception: what ONNX Runtime raises for a graph it cannot load.
        """
        if self._pid != os.getpid():
            self._sessions = {}
            self._pid = os.getpid()
        key = self.outputs if names is None else names
        session = self._sessions.get(key)
        if session is None:
            import onnxruntime as ort  # noqa: PLC0415  (only where a graph answers: docs/architecture.md)

            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            subgraph = self.subgraph(key)
            model = str(self.path) if subgraph is None else subgraph
            session = self._sessions[key] = ort.InferenceSession(model, options, providers=["CPUExecutionProvider"])
        return session

    def subgraph(self, names: tuple[str, ...]) -> bytes | None:
        """The serialized subgraph from the inputs to `names` (cut once, kept), or None for the
        whole graph: all outputs asked for, or a graph ``onnx.utils.Extractor`` cannot cut (then
        the whole graph answers, as before, only slower)."""
        if set(names) == set(self.outputs):
            return None
        if names not in self._subgraphs:
            import onnx  # noqa: PLC0415  (only to cut a subgraph: docs/architecture.md)
            from onnx.utils import Extractor  # noqa: PLC0415  (as onnx)

            try:
                model = Extractor(onnx.load(str(self.path))).extract_model([n for n, _ in self._inputs], list(names))
                self._subgraphs[names] = model.SerializeToString()
            except Exception as exc:  # onnx raises its own types (shape inference, checker)
                logger.warning("%s: no subgraph for %s, the whole graph answers: %s", self.path, names, exc)
                self._subgraphs[names] = None
        return self._subgraphs[names]

    def run(self, observations: Any, outputs: tuple[str, ...]) -> dict[str, np.ndarray]:
        """`Policy.compute`'s columns for a greedy request.

        Args:
            observations: a batch in the structure of the module's observation space (validated).
            outputs: extra outputs, each one of `outputs`.

        Returns:
            ``action`` (B, *action_shape) as the env takes it, and each requested output.
        """
        if isinstance(observations, np.ndarray) and len(self._inputs) == 1:  # a Box space: one input
            name, dtype = self._inputs[0]
            feed = {name: np.asarray(observations, dtype=dtype)}
        else:
            leaves = tree.flatten(observations)
            feed = {
                name: np.asarray(leaf, dtype=dtype) for (name, dtype), leaf in zip(self._inputs, leaves, strict=True)
            }
        names = ("action", *outputs)
        return dict(zip(names, self.session(names).run(list(names), feed), strict=True))


def load_graphs(checkpoint_dir: Path, model_dir: Path | None = None) -> tuple[dict[str, OnnxGraph], dict[str, str]]:
    """The exported graphs that belong to the checkpoint in `checkpoint_dir`.

    Looked for in ``checkpoint_dir/onnx`` then ``model_dir/onnx``.

    Returns:
        ``(graphs, missing)``: module id -> `OnnxGraph` for each usable graph, and module id ->
        why there is none (not exported and the export's reason, a checkpoint mismatch, an
        unreadable sidecar); ``"*"`` when no export was found at all.
    """
    dirs = [onnx_dir(checkpoint_dir)]
    if model_dir is not None and onnx_dir(model_dir) not in dirs:
        dirs.append(onnx_dir(model_dir))
    export_dir = next((d for d in dirs if (d / ONNX_EXPORT_REPORT).is_file()), None)
    if export_dir is None:
        return {}, {"*": f"no {ONNX_SUBDIR}/{ONNX_EXPORT_REPORT} next to the checkpoint"}
    try:
        report = json.loads((export_dir / ONNX_EXPORT_REPORT).read_text())
    except ValueError as exc:
        return {}, {"*": f"{export_dir / ONNX_EXPORT_REPORT} is not valid JSON: {exc}"}
    graphs: dict[str, OnnxGraph] = {}
    missing: dict[str, str] = {k: f"not exported: {v}" for k, v in report.get("not_exported", {}).items()}
    for module_id, name in report.get("exported", {}).items():
        path = export_dir / name
        try:
            sidecar = json.loads(onnx_sidecar_path(path).read_text())
        except (OSError, ValueError) as exc:
            missing[module_id] = f"unreadable sidecar {onnx_sidecar_path(path)}: {exc}"
            continue
        if not path.is_file():
            missing[module_id] = f"{path} is missing"
            continue
        if sidecar.get("checkpoint_sha256") != checkpoint_fingerprint(checkpoint_dir, module_id):
            missing[module_id] = f"{path} was exported from another checkpoint (checkpoint_sha256 differs)"
            continue
        graph = OnnxGraph(module_id, path, sidecar)
        try:
            graph.session()  # a corrupt file fails here, at load, not on every request
            graph.session(("action",))  # the common request's subgraph, cut before workers fork
        except Exception as exc:  # onnxruntime raises its own exception types
            missing[module_id] = f"ONNX Runtime cannot load {path}: {type(exc).__name__}: {exc}"
            continue
        graphs[module_id] = graph
    return graphs, missing
