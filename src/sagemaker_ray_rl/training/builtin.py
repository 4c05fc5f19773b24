"""The built-in experiment: hyperparameters -> checked spec -> RLlib config (before Ray starts) ->
Tune on the job's cluster -> the best trial's checkpoint exported to the model dir, with the trial
table, curves and TensorBoard files.

`prepare` runs before Ray starts (so a bad hyperparameter never waits for a cluster), `train` on the
running cluster. `sagemaker_ray_rl.train` calls both when the job has neither a user entry point nor
``mode=collect|offline``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import ray

from sagemaker_ray_rl.checkpoint import build_metadata, export_model
from sagemaker_ray_rl.cluster.placement import check_fits, default_num_env_runners, place_actors
from sagemaker_ray_rl.contract.environment import Environment
from sagemaker_ray_rl.training.algorithm_config import build_algorithm_config, first_variant
from sagemaker_ray_rl.training.evaluation import evaluate_checkpoint
from sagemaker_ray_rl.training.experiment import run_experiment
from sagemaker_ray_rl.training.hyperparameters import parse_hyperparameters
from sagemaker_ray_rl.training.outputs import write_outputs

if TYPE_CHECKING:
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

    from sagemaker_ray_rl.cluster import Cluster
    from sagemaker_ray_rl.training.hyperparameters import ExperimentSpec


@dataclass(frozen=True)
class Plan:
    """A checked built-in experiment: the spec and the RLlib config made from it before Ray starts."""

    spec: ExperimentSpec
    config: AlgorithmConfig


def prepare(environment: Environment) -> Plan:
    """Check the hyperparameters and build the RLlib config, before Ray starts.

    Raises:
        HyperparameterError: see `hyperparameters.parse_hyperparameters` and `algorithm_config.build_algorithm_config`.
    """
    spec = parse_hyperparameters(environment.hyperparameters, num_cpus=environment.num_cpus)
    return Plan(spec, build_algorithm_config(spec, num_gpus=environment.num_gpus))


def train(environment: Environment, plan: Plan, cluster: Cluster) -> None:
    """The built-in experiment on the running cluster: place the actors, train with Tune (one trial
    per grid-search combination), export the best trial's checkpoint, write the trial table, curves
    and TensorBoard files (`outputs`).

    Raises:
        ClusterError: the experiment's actors do not fit in the cluster.
        TrainingError: the trial failed.
        ModelLoadError: the checkpoint could not be read back for export.
    """
    spec, config = plan.spec, plan.config
    master = environment.resource_config.master_host
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
        config, stop=spec.stop, storage_dir=environment.checkpoint_dir, checkpoint_frequency=spec.checkpoint_frequency
    )
    if result.stopped:
        print(
            f"Stopped by SIGTERM; checkpoint {result.checkpoint_dir} saved. A job restarted on the same "
            f"{environment.checkpoint_dir} resumes from it (no model exported).",
            flush=True,
        )
        return
    metrics = dict(result.metrics)
    if spec.evaluation_episodes:
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
        hyperparameters=environment.hyperparameters,
        normalize_actions=config.normalize_actions,
        clip_actions=config.clip_actions,
    )
    path = export_model(result.checkpoint_dir, environment.model_dir, metadata)
    print(f"Exported {result.checkpoint_dir} to {environment.model_dir} ({path.name} written)", flush=True)
    if result.best is not None:
        written = write_outputs(result.trials, result.best, environment.output_data_dir, environment.tensorboard_dir)
        print(
            f"Wrote {', '.join(sorted({p.name for p in written}))} to the output data and TensorBoard dirs", flush=True
        )
