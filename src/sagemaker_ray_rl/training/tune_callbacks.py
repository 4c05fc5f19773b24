"""Tune callbacks the image adds to a user entry point's Tune runs, through Tune's own
``RAY_TUNE_CALLBACKS`` variable (`ray.tune.utils.callback._initialize_env_callbacks`: a
comma-separated list of `ray.tune.Callback` classes, each made with no arguments, added to every
``Tuner.fit()`` / ``tune.run()`` of the script's process).

`user_checkpoints.script_environment` sets that variable for the script, so a script needs no change:

- `CheckpointAtEnd`: every trial checkpoints when it stops, as ``CheckpointConfig(checkpoint_at_end=True)``
  would (RLlib's example scripts leave it False unless ``--checkpoint-at-end`` is given, a bare flag
  that a hyperparameter cannot pass), so the job always leaves a checkpoint to export;
- `StorageOnEveryHost`: on a multi-host cluster, the experiment directory exists, with Tune's
  ``.validate_storage_marker``, at the same path on every host, so a trial Ray placed on a worker
  host can persist its checkpoints to its own local ``/opt/ml/checkpoints``
  (`ray.train._internal.storage.StorageContext._check_validation_file` otherwise fails it with
  "Unable to set up cluster storage"); the image copies them to the master after the script
  (`user_checkpoints.collect_from_workers`).

Only this module imports ``ray.tune`` at import time; keep it small.
"""

from __future__ import annotations

import os
from typing import Any

import ray
from ray.tune import Callback
from ray.tune.trainable import Trainable
from ray.tune.trainable.function_trainable import FunctionTrainable
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

#: Tune's flag in a trial result that makes the controller checkpoint the trial now
#: (`ray.tune.result.SHOULD_CHECKPOINT`; `TuneController._process_trial_result` reads it after the
#: callbacks' ``on_trial_result``, which may modify the result in place).
SHOULD_CHECKPOINT = "should_checkpoint"
#: Tune's marker file at the top of an experiment directory (`ray.train._internal.storage`).
VALIDATE_STORAGE_MARKER = ".validate_storage_marker"


class CheckpointAtEnd(Callback):
    """Checkpoint each trial of a class trainable (an RLlib ``Algorithm``) on its last result (the
    result Tune's stop criteria, or the trial's own ``done``, ended it). A trial whose
    ``CheckpointConfig`` already checkpoints at the end is saved once: Tune makes one save decision
    per result. Function trainables are left alone: they checkpoint only through their own
    ``tune.report(checkpoint=...)``."""

    def on_trial_result(self, iteration: int, trials: list[Any], trial: Any, result: dict, **info: Any) -> None:
        """Set `SHOULD_CHECKPOINT` in `result` (Tune's dict, in place) when it is the last result of
        a class trainable's trial."""
        if result.get("done") and _is_class_trainable(trial):
            result[SHOULD_CHECKPOINT] = True


def _is_class_trainable(trial: Any) -> bool:
    """Whether the trial's trainable is a `ray.tune.Trainable` class other than a wrapped function."""
    try:
        trainable = trial.get_trainable_cls()
    except Exception:  # an unregistered name: Tune fails the trial itself
        return False
    return (
        isinstance(trainable, type)
        and issubclass(trainable, Trainable)
        and not issubclass(trainable, FunctionTrainable)
    )


class StorageOnEveryHost(Callback):
    """When a trial starts, make its experiment directory and Tune's storage marker on every alive
    node of the Ray cluster (a zero-CPU task pinned to each node), so the trial's checkpoints
    persist wherever Ray placed it. Only local storage paths are touched; nothing to do on one host
    or with a URI (``s3://...``) that every host reaches anyway."""

    def __init__(self) -> None:
        self._done: set[str] = set()

    def on_trial_start(self, iteration: int, trials: list[Any], trial: Any, **info: Any) -> None:
        """Create ``<experiment dir>/.validate_storage_marker`` on every node (once per experiment).

        Raises:
            ray.exceptions.RayError: a node could not run the task (the trial would fail anyway).
        """
        storage = trial.storage
        if type(storage.storage_filesystem).__name__ != "LocalFileSystem":
            return
        path = storage.experiment_fs_path
        if path in self._done:
            return
        nodes = [node["NodeID"] for node in ray.nodes() if node.get("Alive")]
        if len(nodes) > 1:
            ray.get([_make_marker.options(scheduling_strategy=_on_node(node)).remote(path) for node in nodes])
        self._done.add(path)


def _on_node(node_id: str) -> Any:
    return NodeAffinitySchedulingStrategy(node_id=node_id, soft=False)


def _make_marker_impl(path: str) -> None:
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, VALIDATE_STORAGE_MARKER), "a"):
        pass


def _remote(fn: Any) -> Any:
    return ray.remote(num_cpus=0)(fn)


_make_marker = _remote(_make_marker_impl)
