"""The ``train`` command: ``SAGEMAKER_TRAINING_MODULE=sagemaker_ray_rl.train:main``.

The training toolkit's ``train`` command (what SageMaker and ``docker run IMAGE train`` run) imports
this module and calls `main`. Every host of the job runs it; `choose_job` says which of four jobs
(`Job`) this host runs, and `main` runs that job's runner. The cluster launcher
(`sagemaker_ray_rl.cluster`) makes one Ray cluster of the hosts before any training code runs:

- worker hosts join the master's Ray head and block until the master says the job is over; they
  never run training or user code, but with a user entry point they fetch and install its source
  dir as the master does (`install_user_code`), so the modules it imports load in their env runners;
- the master runs either a user entry point (``sagemaker_program`` / ``SAGEMAKER_PROGRAM``), through
  the toolkit's own `sagemaker_training.entry_point.run` as it would without us
  (hyperparameters other than the image's own as command-line arguments, ``SM_*`` variables,
  ``requirements.txt``, checked against the image's pins before Ray starts: `training.image_pins`),
  its error in the failure file (`training.user_script`); on several hosts
  with ``RAY_ADDRESS`` set, on one host with no Ray started (the script's own ``ray.init(num_cpus=...)``
  starts it, as on any machine); or the built-in experiment: hyperparameters -> checked spec -> RLlib config
  (all before Ray starts) -> Tune -> export to the model dir, or, with hyperparameter
  ``mode=collect|offline``, a batch-RL job (`sagemaker_ray_rl.offline.runner`).

A user entry point that saves no model (RLlib's own example scripts, any script that only runs
``tune.Tuner``) gets the newest checkpoint its Tune runs left exported to the model dir
(`training.user_checkpoints`; on several hosts first copied from the worker host that wrote it).

Failures write the failure file (``/opt/ml/output/failure``) with a one-paragraph reason and raise
`sagemaker_training.errors.ClientError`, which makes the toolkit exit 1 without overwriting it. When
no failure file can be written (a full disk, an unwritable output dir) the process exits 1 at once
(`failure.exit_failed`): the toolkit's own attempt would raise in its handler and exit 0.
"""

from __future__ import annotations

import enum
import traceback
from collections.abc import Callable

from sagemaker_training.errors import ClientError

from sagemaker_ray_rl.checkpoint import ONNX_EXPORT_REPORT, find_checkpoint, onnx_dir
from sagemaker_ray_rl.cluster import ClusterSettings, quiet, ray_cluster
from sagemaker_ray_rl.cluster.launcher import run_worker
from sagemaker_ray_rl.contract.environment import Environment
from sagemaker_ray_rl.contract.errors import HyperparameterError, ModelLoadError, SageMakerRayRLError
from sagemaker_ray_rl.contract.failure import exit_failed, write_failure
from sagemaker_ray_rl.offline import runner as offline_runner
from sagemaker_ray_rl.offline.settings import TRAIN, OfflineSettings, requested_mode
from sagemaker_ray_rl.training.builtin import prepare, train
from sagemaker_ray_rl.training.user_checkpoints import collect_from_workers, export_newest_checkpoint
from sagemaker_ray_rl.training.user_script import (
    LOCAL_RAY_ADDRESS,
    fetch_source_dir,
    install_user_code,
    run_user_entry_point,
)


class Job(enum.Enum):
    """The job a host of a training job runs (`choose_job`)."""

    WORKER_HOST = "worker host"  # joins the master's Ray head and blocks
    USER_SCRIPT = "user entry point"  # sagemaker_program, run by the toolkit's own runner
    OFFLINE = "collect or offline job"  # mode=collect|offline: sagemaker_ray_rl.offline
    BUILTIN = "built-in experiment"  # hyperparameters -> RLlib config -> Tune -> export


def choose_job(environment: Environment) -> Job:
    """Which job this host runs, in this order: a worker host (not the master) only joins the
    cluster; the master runs the user entry point when there is one (``mode`` is then not read),
    the collect or offline job for ``mode=collect|offline``, else the built-in experiment.

    Raises:
        HyperparameterError: ``mode`` is not one of `offline.settings.MODES`.
    """
    if not environment.resource_config.is_master:
        return Job.WORKER_HOST
    if environment.user_entry_point:
        return Job.USER_SCRIPT
    if requested_mode(environment.hyperparameters) != TRAIN:
        return Job.OFFLINE
    return Job.BUILTIN


def main() -> None:
    """Run this host's part of the job described by the container's contract (`choose_job`, then
    that job's runner); see the module docstring.

    Raises:
        sagemaker_training.errors.ClientError: the job failed for a reason the user can fix (the
            failure file says which).
        Exception: anything unexpected, after the failure file names it.
    """

    try:
        environment = Environment.from_environ()
    except HyperparameterError as exc:  # a dotless name (`dotted_names`); the toolkit writes the failure file
        raise ClientError(f"{type(exc).__name__}: {exc}") from exc
    quiet.install(environment.hyperparameters)
    user_code = False
    try:
        settings = _cluster_settings(environment)
        job = choose_job(environment)
        user_code = job is Job.USER_SCRIPT
        _RUNNERS[job](environment, settings)
    except SageMakerRayRLError as exc:
        if not write_failure(environment, f"{type(exc).__name__}: {exc}"):
            exit_failed(1)  # the toolkit would fail to write it too, and then exit 0
        raise ClientError(str(exc)) from exc
    except Exception as exc:
        if user_code:  # the toolkit reports the user's own errors, failure file included
            if not _failure_file_writable(environment):
                traceback.print_exc()
                exit_failed(1)
            raise
        if not write_failure(
            environment,
            f"Unexpected {type(exc).__name__} in sagemaker_ray_rl training: {exc}. The job log holds the traceback.",
        ):
            traceback.print_exc()
            exit_failed(1)
        if isinstance(exc, OSError) and not isinstance(exc.errno, int):
            # The toolkit exits with an OSError's errno, and with 0 when that is None (int(None)
            # raises inside its handler and its `finally` exits with the success code): a failed job
            # would look successful. Any other exception exits 1.
            raise RuntimeError(f"{type(exc).__name__}: {exc}") from exc
        raise


def _run_worker_host(environment: Environment, settings: ClusterSettings) -> None:
    """Join the master's Ray head and block until the job is over (`cluster.launcher.run_worker`).
    Workers do not check the experiment's hyperparameters: the master does, before its head starts,
    and SageMaker (or local mode's docker compose) ends every host when one fails."""

    if environment.user_entry_point:
        install_user_code(environment)
    run_worker(environment, settings)


def _run_user_script(environment: Environment, settings: ClusterSettings) -> None:
    """The user entry point on the master: its ``requirements.txt`` checked before any Ray starts
    or pip runs (`training.image_pins`), then the script on one host without Ray, or on several
    with the job's cluster around it; the newest Tune checkpoint it left exported when it saved no
    model, and ONNX graphs of the model."""

    fetch_source_dir()
    if len(environment.resource_config.hosts) == 1:
        # One host: Ray is left to the script, whose own ray.init(...) starts it here as on any
        # machine, num_cpus= and num_gpus= included (Ray refuses those when joining a running
        # cluster); run_experiment starts it when the script did not.
        run_user_entry_point(environment, ray_address=LOCAL_RAY_ADDRESS)
    else:
        with ray_cluster(environment, settings):
            run_user_entry_point(environment)
            _collect_user_checkpoint(environment)
    export_user_checkpoint(environment)
    export_onnx_next_to_checkpoint(environment)


def _run_offline(environment: Environment, settings: ClusterSettings) -> None:
    """``mode=collect|offline`` (`sagemaker_ray_rl.offline.runner`): its settings and action space
    checked before Ray starts, then the job on the cluster, then ONNX graphs of the model."""

    offline = OfflineSettings.from_hyperparameters(environment.hyperparameters)
    assert offline is not None  # choose_job: mode is collect or offline
    offline_runner.check_before_ray(environment, offline)
    with ray_cluster(environment, settings):
        offline_runner.run(environment, offline)
    export_onnx_next_to_checkpoint(environment)


def _run_builtin(environment: Environment, settings: ClusterSettings) -> None:
    """The built-in experiment (`training.builtin`): hyperparameters checked and the RLlib config
    built before Ray starts, then Tune on the cluster and the export, then ONNX graphs."""

    plan = prepare(environment)
    with ray_cluster(environment, settings) as cluster:
        train(environment, plan, cluster)
    export_onnx_next_to_checkpoint(environment)


#: One runner per job (`choose_job`), each given the environment and the cluster settings.
_RUNNERS: dict[Job, Callable[[Environment, ClusterSettings], None]] = {
    Job.WORKER_HOST: _run_worker_host,
    Job.USER_SCRIPT: _run_user_script,
    Job.OFFLINE: _run_offline,
    Job.BUILTIN: _run_builtin,
}


def _failure_file_writable(environment: Environment) -> bool:
    """Whether the toolkit will be able to write its failure file: one exists already, or the output
    dir takes a new file (an empty placeholder is created, then removed)."""
    path = environment.failure_file
    try:
        if path.exists():
            return True
        path.parent.mkdir(parents=True, exist_ok=True)
        probe = path.with_name(".failure-probe")
        probe.write_text("x")
        probe.unlink()
        return True
    except OSError:
        return False


def export_user_checkpoint(environment: Environment) -> None:
    """After a user entry point that saved no model: the newest RLlib checkpoint its Tune runs left
    (in ``/opt/ml/checkpoints`` or ``~/ray_results``) exported to the model dir with
    ``metadata.json``, or a WARNING that the model dir is empty
    (`training.user_checkpoints.export_newest_checkpoint`). Never fails the job: a checkpoint that
    cannot be exported is logged, and the model dir keeps what the script wrote.
    """

    try:
        export_newest_checkpoint(environment)
    except Exception as exc:
        print(
            f"[sagemaker-ray-rl] WARNING: exporting the entry point's Tune checkpoint failed: "
            f"{type(exc).__name__}: {exc}",
            flush=True,
        )


def _collect_user_checkpoint(environment: Environment) -> None:
    """On the master of several hosts, while Ray is up: a newer checkpoint a user entry point's
    trial left on a worker host copied here (`training.user_checkpoints.collect_from_workers`).
    Never fails the job."""

    try:
        collect_from_workers(environment)
    except Exception as exc:
        print(
            f"[sagemaker-ray-rl] WARNING: copying checkpoints from the worker hosts failed: {type(exc).__name__}: {exc}",
            flush=True,
        )


def export_onnx_next_to_checkpoint(environment: Environment) -> None:
    """After a successful job, ONNX graphs of every module in ``SM_MODEL_DIR/onnx/``
    (`sagemaker_ray_rl.inference.onnx_export`), whichever way the checkpoint got there: the
    built-in experiment's or the offline runner's `export_model`, or a user entry point's
    ``export_model`` / ``algo.save(SM_MODEL_DIR)``. Here, at the top layer, because the
    checkpoint layer (`export_model`) and the training layer sit below the inference layer and
    cannot import it. Nothing to do when the model dir holds no RLlib checkpoint (``mode=collect``,
    a job stopped by SIGTERM, a user script that saves something else). Never fails the job: what
    cannot be exported is logged and listed with its reason in ``onnx/export.json``.
    """

    try:
        find_checkpoint(environment.model_dir)
    except ModelLoadError:
        return
    try:
        from sagemaker_ray_rl.inference.onnx_export import export_onnx_safely  # noqa: PLC0415  (onnx may be missing: docs/architecture.md)

        report = export_onnx_safely(environment.model_dir)
    except Exception as exc:  # e.g. onnx missing from a custom image: the job still succeeds
        print(f"ONNX export skipped: {type(exc).__name__}: {exc}", flush=True)
        return
    if report is None:
        print(f"ONNX export failed; see {onnx_dir(environment.model_dir) / ONNX_EXPORT_REPORT}", flush=True)
        return
    for module_id, path in report.exported.items():
        print(f"ONNX: exported module {module_id} to {path}", flush=True)
    for module_id, reason in report.not_exported.items():
        print(f"ONNX: module {module_id} not exported: {reason}", flush=True)


def _cluster_settings(environment: Environment) -> ClusterSettings:

    return ClusterSettings.from_hyperparameters(environment.hyperparameters, environment.resource_config)
