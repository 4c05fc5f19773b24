"""The training entry point: ``SAGEMAKER_TRAINING_MODULE=sagemaker_ray_rl.training:main``.

The training toolkit's ``train`` command (what SageMaker and ``docker run IMAGE train`` run) imports
this module and calls `main`. Every host of the job runs it; the cluster launcher
(`sagemaker_ray_rl.cluster`) makes one Ray cluster of them before any training code runs:

- worker hosts join the master's Ray head and block until the master says the job is over; they
  never run training or user code, but with a user entry point they fetch and install its source
  dir as the master does (`install_user_code`), so the modules it imports load in their env runners;
- the master runs either a user entry point (``sagemaker_program`` / ``SAGEMAKER_PROGRAM``), through
  the toolkit's own `sagemaker_training.entry_point.run` exactly as it would without us
  (hyperparameters as command-line arguments, ``SM_*`` variables, ``requirements.txt``) and with
  ``RAY_ADDRESS`` set, or the built-in experiment: hyperparameters -> checked spec -> RLlib config
  (all before Ray starts) -> Tune -> export to the model dir, or, with hyperparameter
  ``mode=collect|offline``, a batch-RL job (`sagemaker_ray_rl.offline.runner`).

Failures write the failure file (``/opt/ml/output/failure``) with a one-paragraph reason and raise
`sagemaker_training.errors.ClientError`, which makes the toolkit exit 1 without overwriting it.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from sagemaker_ray_rl.environment import Environment
from sagemaker_ray_rl.errors import SageMakerRayRLError
from sagemaker_ray_rl.failure import write_failure
from sagemaker_ray_rl.offline.settings import OfflineSettings

if TYPE_CHECKING:
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

    from sagemaker_ray_rl.cluster import Cluster, ClusterSettings
    from sagemaker_ray_rl.hyperparameters import ExperimentSpec


@dataclass(frozen=True)
class Plan:
    """A checked built-in experiment: the spec and the RLlib config made from it before Ray starts."""

    spec: ExperimentSpec
    config: AlgorithmConfig


def main() -> None:
    """Run this host's part of the job described by the container's contract; see the module
    docstring.

    Raises:
        sagemaker_training.errors.ClientError: the job failed for a reason the user can fix (the
            failure file says which).
        Exception: anything unexpected, after the failure file names it.
    """
    from sagemaker_training.errors import ClientError

    contract = Environment.from_environ()
    user_code = False
    try:
        settings = _cluster_settings(contract)
        if not contract.resource_config.is_master:
            # Workers do not check the experiment's hyperparameters: the master does, before its head
            # starts, and SageMaker (or local mode's docker compose) ends every host when one fails.
            from sagemaker_ray_rl.cluster.launcher import run_worker

            if contract.user_entry_point:
                install_user_code()
            run_worker(contract, settings)
            return
        offline = None if contract.user_entry_point else OfflineSettings.from_hyperparameters(contract.hyperparameters)
        if offline is not None:
            from sagemaker_ray_rl.offline.runner import check_before_ray

            check_before_ray(contract, offline)
        plan = None if contract.user_entry_point or offline else prepare(contract)
        user_code = plan is None and offline is None

        from sagemaker_ray_rl.cluster import ray_cluster

        with ray_cluster(contract, settings) as cluster:
            if user_code:
                run_user_entry_point()
            elif offline is not None:  # mode=collect|offline: sagemaker_ray_rl.offline
                from sagemaker_ray_rl.offline import runner as offline_runner

                offline_runner.run(contract, offline)
            else:
                train(contract, plan, cluster)
    except SageMakerRayRLError as exc:
        write_failure(contract, f"{type(exc).__name__}: {exc}")
        raise ClientError(str(exc)) from exc
    except Exception as exc:
        if user_code:  # the toolkit reports the user's own errors, failure file included
            raise
        write_failure(
            contract,
            f"Unexpected {type(exc).__name__} in sagemaker_ray_rl training: {exc}. "
            "The job log holds the traceback.",
        )
        if isinstance(exc, OSError) and not isinstance(exc.errno, int):
            # The toolkit exits with an OSError's errno, and with 0 when that is None (int(None)
            # raises inside its handler and its `finally` exits with the success code): a failed job
            # would look successful. Any other exception exits 1.
            raise RuntimeError(f"{type(exc).__name__}: {exc}") from exc
        raise


def _cluster_settings(contract: Environment) -> ClusterSettings:
    from sagemaker_ray_rl.cluster import ClusterSettings

    return ClusterSettings.from_hyperparameters(contract.hyperparameters, contract.resource_config)


def prepare(contract: Environment) -> Plan:
    """Check the hyperparameters and build the RLlib config, before Ray starts.

    Raises:
        HyperparameterError: see `hyperparameters.parse_hyperparameters` and `build_algorithm_config`.
    """
    from sagemaker_ray_rl.hyperparameters import build_algorithm_config, parse_hyperparameters

    spec = parse_hyperparameters(contract.hyperparameters, num_cpus=contract.num_cpus)
    return Plan(spec, build_algorithm_config(spec, num_gpus=contract.num_gpus))


def train(contract: Environment, plan: Plan, cluster: Cluster) -> None:
    """The built-in experiment on the running cluster: place the actors, train with Tune (one trial
    per grid-search combination), export the best trial's checkpoint, write the trial table, curves
    and TensorBoard files (`outputs`).

    Raises:
        ClusterError: the experiment's actors do not fit in the cluster.
        TrainingError: the trial failed.
        ModelLoadError: the checkpoint could not be read back for export.
    """
    import ray

    from sagemaker_ray_rl.cluster.placement import check_fits, default_num_env_runners, place_actors
    from sagemaker_ray_rl.experiment import run_experiment
    from sagemaker_ray_rl.export import build_metadata, export_model
    from sagemaker_ray_rl.hyperparameters import first_variant
    from sagemaker_ray_rl.outputs import write_outputs

    spec, config = plan.spec, plan.config
    master = contract.resource_config.master_host
    place_actors(config, cluster.settings, master)
    if not spec.num_env_runners_given:
        config.env_runners(
            num_env_runners=default_num_env_runners(ray.nodes(), cluster.settings, master, config.num_learners)
        )
    check_fits(first_variant(config), ray.nodes())
    print(
        f"Training {spec.algorithm} on {spec.env} with {config.num_env_runners} env runner(s) on "
        f"{len(cluster.hosts)} host(s), stop at {dict(spec.stop)}",
        flush=True,
    )
    result = run_experiment(
        config, stop=spec.stop, storage_dir=contract.checkpoint_dir, checkpoint_frequency=spec.checkpoint_frequency
    )
    if result.stopped:
        print(
            f"Stopped by SIGTERM; checkpoint {result.checkpoint_dir} saved. A job restarted on the same "
            f"{contract.checkpoint_dir} resumes from it (no model exported).",
            flush=True,
        )
        return
    metrics = dict(result.metrics)
    if spec.evaluation_episodes:
        from sagemaker_ray_rl.evaluation import evaluate_checkpoint

        trained = first_variant(config)
        for name, value in (result.best.params if result.best else {}).items():
            if hasattr(trained, name):
                setattr(trained, name, value)
        metrics.update(evaluate_checkpoint(trained, result.checkpoint_dir, spec.evaluation_episodes))
    metadata = build_metadata(
        result.checkpoint_dir,
        algorithm=spec.algorithm,
        env=spec.env,
        env_config=spec.env_config,
        metrics=metrics,
        hyperparameters=contract.hyperparameters,
        normalize_actions=config.normalize_actions,
        clip_actions=config.clip_actions,
    )
    path = export_model(result.checkpoint_dir, contract.model_dir, metadata)
    print(f"Exported {result.checkpoint_dir} to {contract.model_dir} ({path.name} written)", flush=True)
    if result.best is not None:
        written = write_outputs(result.trials, result.best, contract.output_data_dir, contract.tensorboard_dir)
        print(f"Wrote {', '.join(sorted({p.name for p in written}))} to the output data and TensorBoard dirs",
              flush=True)


def install_user_code() -> None:
    """On a worker host: put the user's source dir (``sagemaker_submit_directory``) in the code dir
    and install its ``requirements.txt``, with the training toolkit's own functions, as
    `run_user_entry_point` does on the master, without running the script.

    Why: the script runs on the master only, but Ray runs its env runners (and learners) on every
    host and imports the script's modules there (a custom env, an RLModule class). Ray adds the
    driver's script directory to every worker's ``sys.path``; the code dir is the same path on each
    host, so after this those imports work on worker hosts too.
    """
    from sagemaker_training import entry_point, files
    from sagemaker_training import environment as toolkit_environment

    env = toolkit_environment.Environment()
    files.download_and_extract(uri=env.module_dir, path=toolkit_environment.code_dir)
    entry_point.install(env.user_entry_point, toolkit_environment.code_dir, capture_error=True)


def run_user_entry_point() -> None:
    """Run ``sagemaker_program`` the way the training toolkit does without a framework module."""
    from sagemaker_training import entry_point
    from sagemaker_training import environment as toolkit_environment

    env = toolkit_environment.Environment()
    entry_point.run(env.module_dir, env.user_entry_point, env.to_cmd_args(), env.to_env_vars())
