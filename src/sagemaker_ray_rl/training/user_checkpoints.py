"""The model of a user entry point that saves none: the newest RLlib checkpoint its Tune runs left,
exported to the model dir.

RLlib's own example scripts (``ray/rllib/examples/...``, run through
``ray.rllib.examples.utils.run_rllib_example_script_experiment``) train with ``tune.Tuner`` and
write nothing to ``/opt/ml/model``; many user scripts do the same. For such scripts the image:

1. points Tune's default storage path at the job's checkpoint dir: ``RAY_STORAGE=/opt/ml/checkpoints``
   (Tune's own variable, read by ``RunConfig`` when the script sets no ``storage_path``; without
   it Tune writes to ``~/ray_results``), so the checkpoints are synced to ``checkpoint_s3_uri``
   like the built-in experiment's; a ``RAY_STORAGE`` the job sets itself is kept;
2. adds Tune callbacks (`tune_callbacks`, through ``RAY_TUNE_CALLBACKS``): every trial checkpoints
   at its end, and on several hosts every host has the experiment's storage marker, so a trial Ray
   placed on a worker host persists its checkpoints to that host's own checkpoint dir;
3. after the script, on several hosts, copies the newest checkpoint of each worker host to the same
   path on the master (`collect_from_workers`);
4. when the model dir holds no RLlib checkpoint, exports the newest one found under the storage
   roots (`storage_roots`: ``RAY_STORAGE``'s path, the checkpoint dir and ``~/ray_results``) with
   ``metadata.json`` (`export_newest_checkpoint`; the caller adds the ONNX graphs), or logs a
   WARNING that the model dir stays empty, naming where checkpoints were looked for.

"Newest" is the checkpoint whose ``rllib_checkpoint.json`` was written last: with several trials
(``--num-samples``) that is the trial that finished last, not the best one; a script that wants
the best one saves it to ``SM_MODEL_DIR`` itself (the model dir then holds a checkpoint and
nothing here runs).
"""

from __future__ import annotations

import io
import json
import logging
import os
import shutil
import tarfile
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import ray
from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

from sagemaker_ray_rl.checkpoint import (
    CHECKPOINT_MARKER,
    RL_MODULE_SUBDIR,
    build_metadata,
    export_model,
    find_checkpoint,
)
from sagemaker_ray_rl.contract.environment import Environment
from sagemaker_ray_rl.contract.errors import ModelLoadError

logger = logging.getLogger(__name__)

#: Tune's variable for the default ``RunConfig(storage_path)`` (`ray.air.config.RunConfig`).
TUNE_STORAGE_ENV = "RAY_STORAGE"
#: Tune's variable naming callback classes added to every Tune run (`ray.tune.constants`).
TUNE_CALLBACKS_ENV = "RAY_TUNE_CALLBACKS"
#: The callbacks the image adds (`tune_callbacks`).
IMAGE_TUNE_CALLBACKS = (
    "sagemaker_ray_rl.training.tune_callbacks.CheckpointAtEnd",
    "sagemaker_ray_rl.training.tune_callbacks.StorageOnEveryHost",
)
#: Tune's directory for checkpoint ``i`` of a trial (``checkpoint_000003``).
CHECKPOINT_DIR_PREFIX = "checkpoint_"


def script_environment(environment: Environment, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """The variables to set for the user script (see the module docstring, 1 and 2).

    Args:
        environment: the job's contract (its ``checkpoint_dir``).
        environ: the current environment (``os.environ`` when None).

    Returns:
        ``{"RAY_STORAGE": ..., "RAY_TUNE_CALLBACKS": ...}``: ``RAY_STORAGE`` only when unset, the
        image's callbacks appended to any the job names.
    """
    environ = os.environ if environ is None else environ
    updates: dict[str, str] = {}
    if not environ.get(TUNE_STORAGE_ENV):
        updates[TUNE_STORAGE_ENV] = str(environment.checkpoint_dir)
    named = [c.strip() for c in environ.get(TUNE_CALLBACKS_ENV, "").split(",") if c.strip()]
    updates[TUNE_CALLBACKS_ENV] = ",".join([*named, *(c for c in IMAGE_TUNE_CALLBACKS if c not in named)])
    return updates


def storage_roots(environment: Environment, environ: Mapping[str, str] | None = None) -> list[Path]:
    """Where a user script's Tune runs leave their checkpoints: ``RAY_STORAGE``'s path (when a local
    path), the job's checkpoint dir and Tune's default ``~/ray_results``, without repeats."""
    environ = os.environ if environ is None else environ
    roots: list[Path] = []
    storage = environ.get(TUNE_STORAGE_ENV, "")
    if storage and "://" not in storage:
        roots.append(Path(storage))
    elif storage.startswith("file://"):
        roots.append(Path(storage[len("file://") :]))
    roots += [Path(environment.checkpoint_dir), Path.home() / "ray_results"]
    unique: list[Path] = []
    for root in roots:
        if root.resolve() not in {r.resolve() for r in unique}:
            unique.append(root)
    return unique


@dataclass(frozen=True)
class TuneCheckpoint:
    """An RLlib algorithm checkpoint that Tune wrote into a trial directory.

    Attributes:
        path: the checkpoint directory (``.../<trial>/checkpoint_000001``).
        written_at: modification time of its ``rllib_checkpoint.json`` (Unix seconds).
    """

    path: Path

    @property
    def written_at(self) -> float:
        return (self.path / CHECKPOINT_MARKER).stat().st_mtime

    @property
    def trial_dir(self) -> Path:
        return self.path.parent

    @property
    def algorithm(self) -> str:
        """The algorithm's name: Tune names a trial ``<trainable>_<env>_<id>...`` and RLlib's
        trainables by their algorithm (``PPO_SimpleCorridor_a9044_00000_0_...`` -> ``PPO``)."""
        return self.trial_dir.name.split("_", 1)[0] or "unknown"

    def last_result(self) -> dict[str, Any]:
        """The trial's last line of ``result.json`` ({} when missing or unreadable)."""
        try:
            lines = (self.trial_dir / "result.json").read_text().splitlines()
            return json.loads(lines[-1]) if lines else {}
        except (OSError, ValueError):
            return {}

    def params(self) -> dict[str, Any]:
        """The trial's config as Tune wrote it to ``params.json`` ({} when missing or unreadable)."""
        try:
            return json.loads((self.trial_dir / "params.json").read_text())
        except (OSError, ValueError):
            return {}


def tune_checkpoints(roots: Iterable[Path]) -> list[TuneCheckpoint]:
    """Every RLlib algorithm checkpoint Tune left under `roots`, oldest first: directories named
    ``checkpoint_*`` holding ``rllib_checkpoint.json`` and ``learner_group/learner/rl_module/``.
    Roots that do not exist are skipped."""
    found: dict[Path, TuneCheckpoint] = {}
    for root in roots:
        root = Path(root)
        if not root.is_dir():
            continue
        for marker in root.rglob(CHECKPOINT_MARKER):
            directory = marker.parent
            if directory.name.startswith(CHECKPOINT_DIR_PREFIX) and (directory / RL_MODULE_SUBDIR).is_dir():
                found.setdefault(directory.resolve(), TuneCheckpoint(directory))
    return sorted(found.values(), key=lambda c: (c.written_at, str(c.path)))


def newest_checkpoint(roots: Iterable[Path]) -> TuneCheckpoint | None:
    """The checkpoint of `tune_checkpoints` written last, or None when there is none."""
    checkpoints = tune_checkpoints(roots)
    return checkpoints[-1] if checkpoints else None


def export_newest_checkpoint(environment: Environment, roots: Iterable[Path] | None = None) -> Path | None:
    """When the model dir holds no RLlib checkpoint, copy the newest one under `roots` there with
    ``metadata.json`` (`checkpoint.export_model`); else log a WARNING naming the roots searched.

    The metadata's ``env`` and ``env_config`` come from the trial's ``params.json``, its
    ``metrics`` from the trial's last result (``episode_return_mean``, ``training_iteration``,
    ``num_env_steps_sampled_lifetime``), ``hyperparameters`` are the job's.

    Args:
        environment: the job's contract (model dir, hyperparameters).
        roots: where to look; `storage_roots` when None.

    Returns:
        The exported checkpoint's source directory, or None when nothing was exported (the model
        dir already holds a checkpoint, or none was found).

    Raises:
        ModelLoadError: the newest checkpoint holds an RLModule that does not load.
    """
    try:
        find_checkpoint(environment.model_dir)
        return None
    except ModelLoadError:
        pass
    roots = list(storage_roots(environment) if roots is None else roots)
    newest = newest_checkpoint(roots)
    if newest is None:
        model_dir = Path(environment.model_dir)
        empty = not model_dir.is_dir() or not any(model_dir.iterdir())
        logger.warning(
            "The model dir %s %s: the entry point saved no RLlib checkpoint there and none was found "
            "under %s, where Tune runs of the script write theirs (a checkpoint_*/ directory with %s). "
            "Save one with algo.save(os.environ['SM_MODEL_DIR']) or let Tune checkpoint (RLlib example "
            "scripts: hyperparameter checkpoint-freq).",
            environment.model_dir,
            "is empty" if empty else "holds no RLlib checkpoint",
            ", ".join(map(str, roots)),
            CHECKPOINT_MARKER,
        )
        return None
    params = newest.params()
    result = newest.last_result()
    runners = result.get("env_runners") or {}
    metrics = {
        "episode_return_mean": runners.get("episode_return_mean"),
        "training_iteration": result.get("training_iteration"),
        "num_env_steps_sampled_lifetime": runners.get("num_env_steps_sampled_lifetime"),
    }
    env = params.get("env")
    metadata = build_metadata(
        newest.path,
        algorithm=newest.algorithm,
        env=str(env) if env is not None else "",
        env_config=params.get("env_config") or {},
        metrics=metrics,
        hyperparameters=environment.hyperparameters,
        normalize_actions=bool(params.get("normalize_actions", True)),
        clip_actions=bool(params.get("clip_actions", False)),
    )
    metadata["source_checkpoint"] = str(newest.path)
    export_model(newest.path, environment.model_dir, metadata)
    print(
        f"[sagemaker-ray-rl] the entry point saved no model: exported its newest Tune checkpoint "
        f"{newest.path} ({newest.algorithm}, iteration {metrics['training_iteration']}) to {environment.model_dir}",
        flush=True,
    )
    return newest.path


def _newest_as_tar(roots: list[str]) -> tuple[float, str, bytes] | None:
    """On one host: its newest checkpoint under `roots` as (written_at, path, tar of the checkpoint
    directory and its trial's ``params.json`` and ``result.json``, named relative to the trial dir)."""
    newest = newest_checkpoint([Path(r) for r in roots])
    if newest is None:
        return None
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w") as tar:
        tar.add(newest.path, arcname=newest.path.name)
        for name in ("params.json", "result.json"):
            if (newest.trial_dir / name).is_file():
                tar.add(newest.trial_dir / name, arcname=name)
    return newest.written_at, str(newest.path), buffer.getvalue()


def collect_from_workers(environment: Environment, roots: Iterable[Path] | None = None) -> Path | None:
    """On the master of a multi-host cluster (this process a Ray driver): when a worker host holds a
    checkpoint newer than every checkpoint here, copy it (with its trial's ``params.json`` and
    ``result.json``) to the same path on this host, where `export_newest_checkpoint` finds it.

    A trial Ray placed on a worker host wrote its checkpoints to that host's own storage path
    (`tune_callbacks.StorageOnEveryHost`). One zero-CPU task per other alive node; nothing is
    copied when the model dir already holds a checkpoint.

    Returns:
        The path the copied checkpoint has here, or None when nothing was copied.
    """
    try:
        find_checkpoint(environment.model_dir)
        return None
    except ModelLoadError:
        pass
    roots = [str(r) for r in (storage_roots(environment) if roots is None else roots)]
    here = ray.get_runtime_context().get_node_id()
    task = ray.remote(num_cpus=0, max_retries=0)(_newest_as_tar)
    refs = [
        task.options(scheduling_strategy=NodeAffinitySchedulingStrategy(node["NodeID"], soft=False)).remote(roots)
        for node in ray.nodes()
        if node.get("Alive") and node["NodeID"] != here
    ]
    local = newest_checkpoint([Path(r) for r in roots])
    best = max((found for found in ray.get(refs, timeout=300) if found), default=None, key=lambda f: f[0])
    if best is None or (local is not None and local.written_at >= best[0]):
        return None
    written_at, path, data = best
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        _extract_plain(tar, target.parent)
    os.utime(target / CHECKPOINT_MARKER, (written_at, written_at))
    print(f"[sagemaker-ray-rl] copied the newest checkpoint {path} from a worker host", flush=True)
    return target


def _extract_plain(tar: tarfile.TarFile, destination: Path) -> None:
    """Extract the regular files and directories of `tar` below `destination` (what `_newest_as_tar`
    writes); a member that is a link, a device or names a path outside `destination` raises
    ValueError. By hand: the image's Python 3.11 may predate ``extractall(filter="data")``."""
    root = destination.resolve()
    for member in tar.getmembers():
        path = (root / member.name).resolve()
        if not (member.isfile() or member.isdir()) or (path != root and root not in path.parents):
            raise ValueError(f"unexpected member {member.name!r} in a worker host's checkpoint archive")
        if member.isdir():
            path.mkdir(parents=True, exist_ok=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        source = tar.extractfile(member)
        assert source is not None  # a regular file
        with source, open(path, "wb") as sink:
            shutil.copyfileobj(source, sink)
