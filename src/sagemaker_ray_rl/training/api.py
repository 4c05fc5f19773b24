"""The public API for user entry points: the job's experiment from a script's defaults and the job's
hyperparameters (`build_experiment`, `build_config`), checked as the built-in experiment's are, and
trained and exported for serving in one call (`train_and_export`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sagemaker_ray_rl.checkpoint import build_metadata, export_model
from sagemaker_ray_rl.contract.environment import Environment
from sagemaker_ray_rl.training.algorithm_config import build_algorithm_config
from sagemaker_ray_rl.training.experiment import ExperimentResult, run_experiment
from sagemaker_ray_rl.training.hyperparameters import ENV, parse_hyperparameters

if TYPE_CHECKING:
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
    from ray.tune import Callback


@dataclass(frozen=True)
class JobExperiment:
    """What a user entry point needs to run the job's experiment (see `build_experiment`).

    Attributes:
        config: the RLlib config, ready for `experiment.run_experiment` or ``config.build_algo()``.
        stop: Tune stop criteria, RLlib result key -> threshold (``stop.*`` hyperparameters).
        checkpoint_frequency: iterations between checkpoints (``checkpoint_frequency``).
        evaluation_episodes: episodes to evaluate the exported policy on (``evaluation_episodes``).
    """

    config: AlgorithmConfig
    stop: Mapping[str, float]
    checkpoint_frequency: int
    evaluation_episodes: int


def build_experiment(
    defaults: Mapping[str, Any] | None = None,
    *,
    hyperparameters: Mapping[str, Any] | None = None,
    env: str | None = None,
    num_cpus: int | None = None,
    ignore: Iterable[str] = (),
) -> JobExperiment:
    """Public API for user entry points: the job's experiment from the script's defaults and the
    job's hyperparameters, checked as the built-in experiment's are (before Ray starts).

    Args:
        defaults: the script's own settings, written as hyperparameters (``"rl.training.config.lr":
            1e-4``, ``"training.num_epochs": 30``, ``"stop.training_iteration": 300``, ...); a job
            hyperparameter with the same key or naming the same setting wins over them.
        hyperparameters: decoded hyperparameters; the job's own (``hyperparameters.json``) when None.
        env: an env name to use unless the defaults or hyperparameters name one (e.g. one the script
            registered with `ray.tune.registry.register_env`).
        num_cpus: CPUs for the default ``num_env_runners``; the job's own when None.
        ignore: the script's own hyperparameters, which are not RLlib settings.

    Returns:
        The experiment; ``stop`` is ``{"training_iteration": 100}`` when no stop key was given.

    Raises:
        HyperparameterError: see `parse_hyperparameters` and `build_algorithm_config`.
    """
    if hyperparameters is None or num_cpus is None:
        environment = Environment.from_environ()
        hyperparameters = environment.hyperparameters if hyperparameters is None else hyperparameters
        num_cpus = environment.num_cpus if num_cpus is None else num_cpus
    hps = {**(defaults or {}), **hyperparameters}
    if env is not None:
        hps.setdefault(ENV, env)
    spec = parse_hyperparameters(hps, num_cpus=num_cpus, ignore=ignore)
    return JobExperiment(
        config=build_algorithm_config(spec),
        stop=spec.stop,
        checkpoint_frequency=spec.checkpoint_frequency,
        evaluation_episodes=spec.evaluation_episodes,
    )


def build_config(
    hyperparameters: Mapping[str, Any] | None = None,
    *,
    env: str | None = None,
    num_cpus: int | None = None,
    ignore: Iterable[str] = (),
) -> AlgorithmConfig:
    """Public API for user entry points: an `AlgorithmConfig` from the job's hyperparameters
    (`build_experiment` without defaults, its config only).

    Args:
        hyperparameters: decoded hyperparameters; the job's own (``hyperparameters.json``) when None.
        env: an env name to use unless the hyperparameters name one.
        num_cpus: CPUs for the default ``num_env_runners``; the job's own when None.
        ignore: the script's own hyperparameters, which are not RLlib settings.

    Raises:
        HyperparameterError: see `parse_hyperparameters` and `build_algorithm_config`.
    """
    return build_experiment(hyperparameters=hyperparameters, env=env, num_cpus=num_cpus, ignore=ignore).config


def train_and_export(
    experiment: JobExperiment,
    config: AlgorithmConfig | None = None,
    *,
    environment: Environment | None = None,
    callbacks: Iterable[Callback] = (),
) -> ExperimentResult:
    """Public API for user entry points: train the job's experiment with Tune and export the best
    trial's checkpoint to the model dir for ``serve``, in one call: `run_experiment` with the
    experiment's stop criteria and checkpoint frequency, storing in the job's checkpoint dir (synced
    to ``checkpoint_s3_uri``: a restarted job resumes there), then `build_metadata` and `export_model`.
    The built-in experiment's end, without its evaluation episodes and output files.

    After SIGTERM (``StopTrainingJob``, a spot interruption) the run stops at a new checkpoint for
    the restart and nothing is exported; the result says so (``stopped``) and the script should
    return.

    Args:
        experiment: the job's experiment (`build_experiment`): stop criteria, checkpoint frequency,
            and the config to train unless `config` is given.
        config: the RLlib config to train when the script changed ``experiment.config`` (e.g.
            ``experiment.config.multi_agent(...)``); ``experiment.config`` when None. The metadata
            records its algorithm, env (by name), ``env_config`` and action post-processing.
        environment: the job's contract (checkpoint dir, model dir, the hyperparameters recorded in
            ``metadata.json``, secrets redacted); `Environment.from_environ` when None.
        callbacks: more Tune callbacks for `run_experiment`.

    Returns:
        The experiment's result: the exported checkpoint and the final metrics, or, with
        ``stopped`` True, the checkpoint saved after SIGTERM (not exported).

    Raises:
        ClusterError: the trial's actors ask for more than the cluster has (before Tune starts).
        TrainingError: the trial failed or left no checkpoint.
        ModelLoadError: the checkpoint holds no loadable RLModule; nothing was exported.
    """
    config = experiment.config if config is None else config
    environment = Environment.from_environ() if environment is None else environment
    result = run_experiment(
        config,
        stop=experiment.stop,
        storage_dir=environment.checkpoint_dir,
        checkpoint_frequency=experiment.checkpoint_frequency,
        callbacks=callbacks,
    )
    if result.stopped:
        print(
            f"Stopped by SIGTERM; checkpoint {result.checkpoint_dir} saved. A job restarted on the same "
            f"{environment.checkpoint_dir} resumes from it (no model exported).",
            flush=True,
        )
        return result
    metadata = build_metadata(
        result.checkpoint_dir,
        algorithm=config.algo_class.__name__,
        env=_env_name(config.env),
        env_config=dict(config.env_config),
        metrics=result.metrics,
        hyperparameters=environment.hyperparameters,
        normalize_actions=config.normalize_actions,
        clip_actions=config.clip_actions,
    )
    path = export_model(result.checkpoint_dir, environment.model_dir, metadata)
    print(
        f"Exported {result.checkpoint_dir} to {environment.model_dir} ({path.name} written): "
        f"episode_return_mean {result.metrics.get('episode_return_mean')}",
        flush=True,
    )
    return result


def _env_name(env: Any) -> str:
    """The env as ``metadata.json`` names it: a registered name or Gymnasium id as given, an env
    class by its import path."""
    if env is None or isinstance(env, str):
        return "" if env is None else env
    return f"{getattr(env, '__module__', '')}.{getattr(env, '__qualname__', type(env).__qualname__)}".lstrip(".")
