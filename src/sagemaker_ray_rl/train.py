"""The ``train`` command: ``SAGEMAKER_TRAINING_MODULE=sagemaker_ray_rl.train:main``.

The training toolkit's ``train`` command (what SageMaker and ``docker run IMAGE train`` run) imports
this module and calls `main`. Every host of the job runs it; the cluster launcher
(`sagemaker_ray_rl.cluster`) makes one Ray cluster of them before any training code runs:

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

from typing import TYPE_CHECKING

from sagemaker_ray_rl.cluster import quiet
from sagemaker_ray_rl.contract.environment import Environment
from sagemaker_ray_rl.contract.errors import HyperparameterError, SageMakerRayRLError
from sagemaker_ray_rl.contract.failure import exit_failed, write_failure
from sagemaker_ray_rl.offline.settings import OfflineSettings

if TYPE_CHECKING:
    from sagemaker_ray_rl.cluster import ClusterSettings


def main() -> None:
    """Run this host's part of the job described by the container's contract; see the module
    docstring.

    Raises:
        sagemaker_training.errors.ClientError: the job failed for a reason the user can fix (the
            failure file says which).
        Exception: anything unexpected, after the failure file names it.
    """
    from sagemaker_training.errors import ClientError

    try:
        environment = Environment.from_environ()
    except HyperparameterError as exc:  # a dotless name (`dotted_names`); the toolkit writes the failure file
        raise ClientError(f"{type(exc).__name__}: {exc}") from exc
    quiet.install(environment.hyperparameters)
    user_code = False
    try:
        settings = _cluster_settings(environment)
        if not environment.resource_config.is_master:
            # Workers do not check the experiment's hyperparameters: the master does, before its head
            # starts, and SageMaker (or local mode's docker compose) ends every host when one fails.
            from sagemaker_ray_rl.cluster.launcher import run_worker

            if environment.user_entry_point:
                from sagemaker_ray_rl.training.user_script import install_user_code

                install_user_code(environment)
            run_worker(environment, settings)
            return
        offline = (
            None if environment.user_entry_point else OfflineSettings.from_hyperparameters(environment.hyperparameters)
        )
        if offline is not None:
            from sagemaker_ray_rl.offline.runner import check_before_ray

            check_before_ray(environment, offline)
        plan = None
        if not environment.user_entry_point and offline is None:
            from sagemaker_ray_rl.training.builtin import prepare

            plan = prepare(environment)
        user_code = plan is None and offline is None
        if user_code:
            # Its requirements.txt is checked before any Ray starts or pip runs (training.image_pins).
            from sagemaker_ray_rl.training.user_script import fetch_source_dir

            fetch_source_dir()
        if user_code and len(environment.resource_config.hosts) == 1:
            # One host: Ray is left to the script, whose own ray.init(...) starts it here as on any
            # machine, num_cpus= and num_gpus= included (Ray refuses those when joining a running
            # cluster); run_experiment starts it when the script did not.
            from sagemaker_ray_rl.training.user_script import LOCAL_RAY_ADDRESS, run_user_entry_point

            run_user_entry_point(environment, ray_address=LOCAL_RAY_ADDRESS)
            export_user_checkpoint(environment)
            export_onnx_next_to_checkpoint(environment)
            return

        from sagemaker_ray_rl.cluster import ray_cluster

        with ray_cluster(environment, settings) as cluster:
            if user_code:
                from sagemaker_ray_rl.training.user_script import run_user_entry_point

                run_user_entry_point(environment)
                _collect_user_checkpoint(environment)
            elif offline is not None:  # mode=collect|offline: sagemaker_ray_rl.offline
                from sagemaker_ray_rl.offline import runner as offline_runner

                offline_runner.run(environment, offline)
            else:
                from sagemaker_ray_rl.training.builtin import train

                train(environment, plan, cluster)
        if user_code:
            export_user_checkpoint(environment)
        export_onnx_next_to_checkpoint(environment)
    except SageMakerRayRLError as exc:
        if not write_failure(environment, f"{type(exc).__name__}: {exc}"):
            exit_failed(1)  # the toolkit would fail to write it too, and then exit 0
        raise ClientError(str(exc)) from exc
    except Exception as exc:
        if user_code:  # the toolkit reports the user's own errors, failure file included
            if not _failure_file_writable(environment):
                import traceback

                traceback.print_exc()
                exit_failed(1)
            raise
        if not write_failure(
            environment,
            f"Unexpected {type(exc).__name__} in sagemaker_ray_rl training: {exc}. The job log holds the traceback.",
        ):
            import traceback

            traceback.print_exc()
            exit_failed(1)
        if isinstance(exc, OSError) and not isinstance(exc.errno, int):
            # The toolkit exits with an OSError's errno, and with 0 when that is None (int(None)
            # raises inside its handler and its `finally` exits with the success code): a failed job
            # would look successful. Any other exception exits 1.
            raise RuntimeError(f"{type(exc).__name__}: {exc}") from exc
        raise


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
    from sagemaker_ray_rl.training.user_checkpoints import export_newest_checkpoint

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
    from sagemaker_ray_rl.training.user_checkpoints import collect_from_workers

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
    from sagemaker_ray_rl.checkpoint import ONNX_EXPORT_REPORT, find_checkpoint, onnx_dir
    from sagemaker_ray_rl.contract.errors import ModelLoadError

    try:
        find_checkpoint(environment.model_dir)
    except ModelLoadError:
        return
    try:
        from sagemaker_ray_rl.inference.onnx_export import export_onnx_safely

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
    from sagemaker_ray_rl.cluster import ClusterSettings

    return ClusterSettings.from_hyperparameters(environment.hyperparameters, environment.resource_config)
