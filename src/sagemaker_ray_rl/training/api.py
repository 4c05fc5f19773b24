"""The public API for user entry points: the job's experiment from a script's defaults and the job's
hyperparameters (`build_experiment`, `build_config`), checked as the built-in experiment's are."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sagemaker_ray_rl.contract.environment import Environment
from sagemaker_ray_rl.training.algorithm_config import build_algorithm_config
from sagemaker_ray_rl.training.hyperparameters import ENV, parse_hyperparameters

if TYPE_CHECKING:
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig


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
