"""Run an RLlib experiment with Ray Tune and return its checkpoint and final metrics.

Tune (not a hand-written ``algo.train()`` loop) drives training: it owns stop criteria, checkpoint
files and resume (``Tuner.restore``). The algorithm runs in a Tune trial actor; metric lines
are printed by `reporting.MetricLinesCallback` in the driver.
"""

from __future__ import annotations

import json
import math
import os
import pickletools
import re
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import ray
from ray import tune

from sagemaker_ray_rl.cluster.node import HOST_RESOURCE_PREFIX
from sagemaker_ray_rl.cluster.placement import ACTOR_SHARE, check_fits
from sagemaker_ray_rl.contract.environment import Environment
from sagemaker_ray_rl.contract.errors import TrainingError
from sagemaker_ray_rl.training.algorithm_config import first_variant
from sagemaker_ray_rl.training.graceful_stop import GracefulStop, wait_for_env_runners_at_stop
from sagemaker_ray_rl.training.outputs import TrialSummary, sort_trials
from sagemaker_ray_rl.training.reporting import METRICS, MetricLinesCallback, lookup

#: The experiment's directory under the storage path; a fixed name lets a restarted job find it.
DEFAULT_EXPERIMENT_NAME = "experiment"
#: Iterations between checkpoints (hyperparameter ``checkpoint_frequency``).
DEFAULT_CHECKPOINT_FREQUENCY = 10

if TYPE_CHECKING:
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
    from ray.tune import Callback


@dataclass(frozen=True)
class ExperimentResult:
    """What an experiment left behind.

    Attributes:
        checkpoint_dir: the final algorithm checkpoint (a directory RLlib wrote).
        experiment_dir: Tune's experiment directory (result.json, progress.csv per trial).
        metrics: final metrics by `reporting.METRICS` name; missing values are None.
        stopped: SIGTERM stopped the run before a stop criterion was met; `checkpoint_dir` is the
            checkpoint saved for the restart.
        trials: every trial (one per grid-search combination).
        best: the trial `checkpoint_dir` and `metrics` belong to: the highest final mean episode
            return among the trials that finished with a checkpoint.
    """

    checkpoint_dir: Path
    experiment_dir: Path
    metrics: Mapping[str, Any]
    stopped: bool = False
    trials: tuple[TrialSummary, ...] = ()
    best: TrialSummary | None = None


def run_experiment(
    config: AlgorithmConfig,
    *,
    stop: Mapping[str, float],
    storage_dir: Path,
    name: str = DEFAULT_EXPERIMENT_NAME,
    checkpoint_frequency: int = DEFAULT_CHECKPOINT_FREQUENCY,
    num_cpus: int | None = None,
    num_gpus: int | None = None,
    callbacks: Iterable[Callback] = (),
) -> ExperimentResult:
    """Train `config` with Tune until a `stop` criterion is met, resuming an unfinished run found in
    `storage_dir`; checkpoint every `checkpoint_frequency` iterations, at the end, and on SIGTERM
    (`graceful_stop`). One trial, or one per combination of ``tune.grid_search`` values in `config`;
    the best trial's checkpoint is returned.

    When Ray is not initialised in this process it connects to the job's cluster (``RAY_ADDRESS``, set
    by the launcher for ``train`` and user entry points), or else starts a local Ray instance with
    `num_cpus` and `num_gpus`; either way it disconnects afterwards. A script that called
    ``ray.init(...)`` first keeps its own.

    Args:
        config: an RLlib new-stack algorithm config (its ``on_train_result`` callback is set, and an
            ``on_algorithm_init`` one added: `graceful_stop`).
        stop: Tune stop criteria, RLlib result key (``training_iteration``,
            ``env_runners/episode_return_mean``, ...) -> threshold; the first one met stops.
        storage_dir: Tune's storage path (made absolute; Tune refuses relative ones), e.g.
            ``/opt/ml/checkpoints``, which SageMaker syncs to ``checkpoint_s3_uri`` and restores
            after a spot interruption.
        name: experiment name: the directory under `storage_dir`; a run with the same storage and
            name resumes the unfinished trial (``Tuner.restore``) with its counters.
        checkpoint_frequency: iterations between checkpoints; 0 for only the last.
        num_cpus: CPUs for a local Ray instance started here (Ray's own count when None).
        num_gpus: GPUs for a local Ray instance started here.
        callbacks: more Tune callbacks, after the metric lines.

    Returns:
        The result; ``stopped`` is True when SIGTERM ended the run early (after a checkpoint).

    Raises:
        ClusterError: the trial's actors (main process, env runners, learners) ask for more CPUs,
            GPUs or custom resources than the cluster has (`cluster.placement.check_fits`), before
            any trial starts.
        TrainingError: the trial failed (its error is in the message) or left no checkpoint.
    """
    storage = Path(storage_dir).resolve()
    graceful = GracefulStop(storage)
    config.callbacks(
        on_train_result=graceful.rllib_callback,
        on_algorithm_init=_with_callback(config.callbacks_on_algorithm_init, wait_for_env_runners_at_stop),
    )
    started_here = not ray.is_initialized()
    if started_here and os.environ.get("RAY_ADDRESS"):
        ray.init()
    elif started_here:  # address="local": a new instance, never a cluster another process runs here
        ray.init(address="local", num_cpus=num_cpus, num_gpus=num_gpus, include_dashboard=False)
    try:
        _pin_main_process_to_this_host(config)
        # Fail now, naming what is asked and what the cluster has, instead of a trial that waits forever.
        check_fits(first_variant(config), ray.nodes())
        path = storage / name
        if tune.Tuner.can_restore(path):
            check_resumable(path)
            print(f"Resuming the experiment in {path} from its latest checkpoint", flush=True)
            try:
                tuner = tune.Tuner.restore(
                    str(path),
                    trainable=config.algo_class,
                    param_space=config,
                    resume_unfinished=True,
                    resume_errored=True,
                )
            except (OSError, ValueError, EOFError) as exc:  # json/pickle errors of damaged state files
                raise TrainingError(
                    f"cannot resume the experiment in {path}: Tune could not read its state "
                    f"({type(exc).__name__}: {exc}). {_CLEAR_HINT.format(path=path, previous='')}"
                ) from exc
        else:
            tuner = tune.Tuner(
                config.algo_class,
                param_space=config,
                run_config=tune.RunConfig(
                    name=name,
                    storage_path=str(storage),
                    stop=dict(stop),
                    verbose=0,
                    callbacks=[MetricLinesCallback(stop=stop), graceful.tune_callback, *callbacks],
                    checkpoint_config=tune.CheckpointConfig(
                        checkpoint_frequency=checkpoint_frequency, checkpoint_at_end=True, num_to_keep=3
                    ),
                ),
            )
        with graceful:
            results = list(tuner.fit())
    finally:
        if started_here:
            ray.shutdown()
    trials = [_summary(r, results) for r in results]
    finished = [(t, r) for t, r in zip(trials, results) if r.error is None and r.checkpoint is not None]
    if not finished:
        failed = [t for t in trials if t.error]
        if failed:
            more = f" ({len(failed)} of {len(trials)} trials failed)" if len(trials) > 1 else ""
            raise TrainingError(f"the training trial failed: {failed[0].error}{more}")
        raise TrainingError("the training trial ended without a checkpoint")
    best, result = min(finished, key=lambda pair: sort_trials(trials).index(pair[0]))
    if len(trials) > 1:
        print(
            f"Best of {len(trials)} trials: {best.trial_id} {best.params} "
            f"(episode_return_mean {best.episode_return_mean})",
            flush=True,
        )
    return ExperimentResult(
        checkpoint_dir=Path(result.checkpoint.path),
        experiment_dir=Path(result.path).parent,
        metrics={metric: lookup(result.metrics, path) for metric, path in METRICS.items()},
        stopped=graceful.requested,
        trials=tuple(trials),
        best=best,
    )


_CLEAR_HINT = (
    "Delete {path} (the experiment/ prefix under checkpoint_s3_uri) to start over{previous}. A job stopped while "
    "writing, or a partial sync from checkpoint_s3_uri, leaves files cut short; Tune resumes a trial only from "
    "its newest checkpoint"
)


def damaged_files(directory: Path) -> list[tuple[Path, str]]:
    """The files under `directory` that are cut short or unreadable (`file_damage`), each with what
    is wrong.

    Args:
        directory: a checkpoint directory (RLlib writes ``*.pkl`` and ``*.json`` files).
    """
    found = ((file, file_damage(file)) for file in sorted(Path(directory).rglob("*")) if file.is_file())
    return [(file, why) for file, why in found if why is not None]


def file_damage(file: Path) -> str | None:
    """What is wrong with a ``.pkl`` or ``.json`` file of a checkpoint, or None: a pickle whose opcode
    stream ends before its STOP (read with `pickletools.genops`, which runs no code and imports
    nothing), JSON that does not parse, a file that cannot be read. Other files: None."""
    if file.suffix not in (".pkl", ".json"):
        return None
    try:
        if file.suffix == ".pkl":
            with file.open("rb") as stream:
                for _ in pickletools.genops(stream):
                    pass
        else:
            json.loads(file.read_bytes())
    except (ValueError, UnicodeDecodeError) as exc:
        return f"{type(exc).__name__}: {exc}"
    except OSError as exc:
        return f"unreadable: {exc}"
    return None


def check_resumable(experiment_dir: Path) -> None:
    """Before ``Tuner.restore``: the experiment's state files (``tuner.pkl``, the newest
    ``experiment_state-*.json``) and each trial's newest checkpoint must be whole.

    A damaged one would fail the resumed job the same way on every spot restart; this fails it at
    once (seconds) naming the file and what to delete.

    Raises:
        TrainingError: the first damaged file (relative to `experiment_dir`), the directory to
            delete to start over and the previous checkpoint when it is whole; the action comes before
            the explanation, as SageMaker shows only the first 1024 characters.
    """
    experiment_dir = Path(experiment_dir)
    states = sorted(experiment_dir.glob("experiment_state-*.json"))
    for file in [experiment_dir / "tuner.pkl", *states[-1:]]:
        why = file_damage(file) if file.exists() else None
        if why is not None:
            raise TrainingError(
                f"cannot resume the experiment in {experiment_dir}: its state file {file.name} is damaged "
                f"({why}). {_CLEAR_HINT.format(path=experiment_dir, previous='')}"
            )
    for trial in sorted(d for d in experiment_dir.iterdir() if d.is_dir()):
        checkpoints = sorted(
            (d for d in trial.glob("checkpoint_*") if d.is_dir() and d.name[len("checkpoint_") :].isdigit()),
            key=lambda d: int(d.name[len("checkpoint_") :]),
        )
        for bad, why in damaged_files(checkpoints[-1]) if checkpoints else []:
            previous = (
                f"; the previous checkpoint {checkpoints[-2].relative_to(experiment_dir)} is whole "
                "(Algorithm.from_checkpoint loads it)"
                if len(checkpoints) > 1 and not damaged_files(checkpoints[-2])
                else ""
            )
            raise TrainingError(
                f"cannot resume the experiment in {experiment_dir}: {bad.relative_to(experiment_dir)} in its "
                f"trial's newest checkpoint is damaged ({why}). "
                f"{_CLEAR_HINT.format(path=experiment_dir, previous=previous)}"
            )


def _with_callback(callbacks: Any, callback: Callable[..., None]) -> list[Callable[..., None]]:
    """An RLlib callback setting (None, one callable or a list) with `callback` last, once."""
    listed = [] if callbacks is None else list(callbacks) if isinstance(callbacks, list | tuple) else [callbacks]
    return listed if callback in listed else [*listed, callback]


def _pin_main_process_to_this_host(config: AlgorithmConfig) -> None:
    """On the job's multi-host cluster, run the trial (RLlib's main process) on this host.

    Tune's storage (``/opt/ml/checkpoints``) is this host's own directory, and Tune checks from the
    trial actor that it can write there: a trial Ray put on a worker host fails with "Unable to set
    up cluster storage". The built-in experiment pins it with `cluster.placement.place_actors`; a
    user entry point's config gets the same pin here, through the ``sagemaker_host:<host>`` resource
    the launcher gives every host (absent outside the launcher's cluster: nothing to do). A pin the
    config already has is kept.
    """
    pinned = config.custom_resources_for_main_process or {}
    if any(key.startswith(HOST_RESOURCE_PREFIX) for key in pinned):
        return
    here = f"{HOST_RESOURCE_PREFIX}{Environment.from_environ().resource_config.current_host}"
    if here in ray.cluster_resources():
        config.resources(custom_resources_for_main_process={**pinned, here: ACTOR_SHARE})


def _summary(result: Any, results: list[Any]) -> TrialSummary:
    """A `TrialSummary` of one Tune result; `params` are the top-level config values that differ
    between the trials (what a grid search varied)."""
    config = result.config or {}
    varied = {k: v for k, v in config.items() if len({repr((r.config or {}).get(k)) for r in results}) > 1}
    metrics = result.metrics or {}
    value = lookup(metrics, METRICS["episode_return_mean"])
    return TrialSummary(
        trial_id=str(metrics.get("trial_id") or Path(result.path).name),
        params=varied,
        episode_return_mean=float(value) if value is not None else math.nan,
        training_iteration=int(metrics.get("training_iteration") or 0),
        timesteps_total=int(lookup(metrics, METRICS["timesteps_total"]) or 0),
        status="ERROR" if result.error is not None else "TERMINATED",
        error=_trial_error_summary(result.error) if result.error is not None else "",
        path=Path(result.path),
    )


def _trial_error_summary(error: BaseException) -> str:
    """The most telling line of a trial error.

    Tune wraps the trial's exception in a long report whose last ``SomeError: ...`` line is the
    cause. When an actor of the trial died while starting, RLlib often reports an unrelated
    IndexError; the message says that an actor failed to start.
    """
    text = str(error).strip()
    causes = re.findall(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception): .*)$", text, re.M)
    if causes:
        line = causes[-1].strip()
    else:
        line = f"{type(error).__name__}: {text.splitlines()[-1] if text else ''}"
    if "died because of an error raised in its creation task" in text:
        line += " (an actor of the trial failed while starting, e.g. its env or RLModule could not be built)"
    return line
