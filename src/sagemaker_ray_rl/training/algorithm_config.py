"""A checked `ExperimentSpec` -> an RLlib new-stack `AlgorithmConfig`, before Ray starts.

Overrides are applied by calling the builder methods with keyword arguments (which raise on unknown
names; `AlgorithmConfig.update_from_dict` would ignore them), then the config is validated and, for
Gymnasium ids, the env made and the RLModule built once (`_preflight`), so settings RLlib refuses fail
here with RLlib's own message. Grid searches (``{"grid_search": [...]}``) become Tune's.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import gymnasium
from gymnasium import spaces
from ray.tune.registry import ENV_CREATOR, _global_registry

from sagemaker_ray_rl.contract import validation
from sagemaker_ray_rl.contract.environment import Environment
from sagemaker_ray_rl.contract.errors import HyperparameterError
from sagemaker_ray_rl.training.hyperparameters import (
    ENV,
    EVALUATION_STOP,
    STOP_EVALUATION_EPISODES,
    ConfigOverride,
    ExperimentSpec,
    algorithm_config_class,
)

if TYPE_CHECKING:
    import gymnasium
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

logger = logging.getLogger(__name__)

#: ``model_config`` keys that only continuous (Box) action spaces use: the "Continuous action
#: settings" of RLlib's `DefaultModelConfig` (Ray 2.60), key -> what it does. On an action space with
#: no Box in it they are dropped with a warning (`drop_settings_of_other_action_spaces`): RLlib's
#: catalogs refuse ``free_log_std=True`` there (PPO's: "free_log_std is only supported for
#: DiagGaussian action distributions") and ignore ``log_std_clip_param``, yet AWS's CartPole notebooks
#: set ``model: {"free_log_std": true}``. No ``model_config`` key applies only to Discrete action spaces.
BOX_ONLY_MODEL_SETTINGS: Mapping[str, str] = MappingProxyType(
    {
        "free_log_std": "a state-independent log std of the DiagGaussian action distribution",
        "log_std_clip_param": "clipping of the DiagGaussian action distribution's log std",
    }
)


def build_algorithm_config(spec: ExperimentSpec, *, num_gpus: int | None = None) -> AlgorithmConfig:
    """The RLlib new-stack config for `spec`: the algorithm's defaults, the env, the overrides, then
    learners on GPUs when the job has GPUs (`place_learners_on_gpus`).

    Does not start Ray. The config is validated (`AlgorithmConfig.validate`), and for Gymnasium envs
    the env is made and the RLModule built once (`_preflight`), so that settings RLlib refuses fail
    here, with RLlib's own message, before any cluster exists.

    A value ``{"grid_search": [v1, v2, ...]}`` (Ray Tune's own grid search, as JSON) makes one trial per
    value: every value is validated on its own, and the returned config holds
    ``tune.grid_search([...])`` for Tune to expand.

    Args:
        spec: the checked experiment.
        num_gpus: GPUs of this host for the learners; the job's own (``SM_NUM_GPUS``, else
            ``nvidia-smi``; see `Environment.from_environ`) when None.

    Raises:
        HyperparameterError: RLlib refused an override (wrong type, deprecated name, bad value), or a
            grid search is not a non-empty list.
    """
    config = algorithm_config_class(spec.algorithm)()
    config.environment(spec.env, env_config=dict(spec.env_config))
    config.env_runners(num_env_runners=spec.num_env_runners)
    grids = [o for o in spec.overrides if is_grid_search(o.value)]
    for override in spec.overrides:
        _apply(config, override, grid_values(override)[0] if override in grids else override.value)
    place_learners_on_gpus(config, spec, _job_gpus() if num_gpus is None else num_gpus)
    evaluate_as_served(config, spec)
    _validate(config, "")
    _preflight(config)
    for override in grids:
        for value in grid_values(override)[1:]:
            variant = config.copy(copy_frozen=False)
            _apply(variant, override, value)
            _validate(variant, f" with {override.hyperparameter}={value!r} (from its grid_search)")
    for override in grids:
        _apply(config, override, {GRID_SEARCH: list(grid_values(override))})
    return config


#: Ray Tune's grid search marker: ``tune.grid_search(values) == {"grid_search": values}``.
GRID_SEARCH = "grid_search"


def is_grid_search(value: Any) -> bool:
    """Whether a hyperparameter value is a Tune grid search (``{"grid_search": [...]}``)."""
    return isinstance(value, dict) and set(value) == {GRID_SEARCH}


def grid_values(override: ConfigOverride) -> list[Any]:
    """The values of a grid-search override.

    Raises:
        HyperparameterError: the grid is not a non-empty JSON list.
    """
    values = override.value[GRID_SEARCH]
    if not isinstance(values, list) or not values:
        raise validation.invalid(
            override.hyperparameter,
            'a grid search of a non-empty list of values, e.g. {"grid_search": [0.001, 0.0001]}',
            values,
        )
    return values


def first_variant(config: AlgorithmConfig) -> AlgorithmConfig:
    """A copy of `config` with every top-level grid search replaced by its first value (what the
    first trial runs), for code that needs one concrete config (e.g. resource checks)."""
    variant = config.copy(copy_frozen=False)
    for name, value in vars(variant).items():
        if is_grid_search(value) and value[GRID_SEARCH]:
            setattr(variant, name, value[GRID_SEARCH][0])
    return variant


def evaluate_as_served(config: AlgorithmConfig, spec: ExperimentSpec) -> None:
    """Make RLlib's evaluation judge the policy as ``serve`` runs it: greedy actions
    (``evaluation_config={"explore": False}``; RLlib's new-stack evaluation env runners otherwise use
    the training config's ``explore=True``, i.e. sample actions: `AlgorithmConfig.get_evaluation_config_object`),
    unless the hyperparameters set ``evaluation.evaluation_config`` themselves. With
    ``stop.evaluation_return_mean`` it also turns evaluation on: every iteration (unless
    ``evaluation.evaluation_interval`` is given), after the iteration's update (so the weights judged are
    those of the checkpoint the iteration saves), over ``evaluation_episodes`` episodes or
    `STOP_EVALUATION_EPISODES` (unless ``evaluation.evaluation_duration`` is given).

    Args:
        config: the config being built; changed in place.
        spec: its experiment spec (to see which evaluation settings the user gave).
    """
    given = {o.name for o in spec.overrides if o.section == "evaluation"}
    if "evaluation_config" not in given:
        config.evaluation(evaluation_config={"explore": False})
    if EVALUATION_STOP not in spec.stop:
        return
    if "evaluation_interval" not in given:
        config.evaluation(evaluation_interval=1)
    if "evaluation_duration" not in given:
        config.evaluation(evaluation_duration=spec.evaluation_episodes or STOP_EVALUATION_EPISODES)
        if "evaluation_duration_unit" not in given:
            config.evaluation(evaluation_duration_unit="episodes")


def _apply(config: AlgorithmConfig, override: ConfigOverride, value: Any) -> None:
    try:
        getattr(config, override.section)(**{override.name: value})
    except Exception as exc:  # RLlib raises TypeError, ValueError or its own deprecation errors
        raise HyperparameterError(
            f"hyperparameter {override.hyperparameter}={value!r} was refused by RLlib "
            f"({type(config).__name__}.{override.section}): {exc}"
        ) from exc


def _validate(config: AlgorithmConfig, where: str) -> None:
    try:
        config.validate()
    except Exception as exc:
        raise HyperparameterError(f"RLlib refused the configuration{where}: {exc}") from exc


def place_learners_on_gpus(config: AlgorithmConfig, spec: ExperimentSpec, num_gpus: int) -> None:
    """Put RLlib's learners on the host's GPUs unless the hyperparameters place them.

    With ``num_gpus > 0`` and no ``num_gpus_per_learner`` hyperparameter: one GPU per learner
    (``config.learners(num_gpus_per_learner=1)``); with more than one GPU and no ``num_learners``
    hyperparameter, also one learner per GPU (``num_learners=num_gpus``: RLlib's data-parallel
    learners). Env runners are left on CPU (``num_gpus_per_env_runner`` stays RLlib's default 0):
    sampling small envs gains nothing from a GPU. Follows RLlib's scaling guide for the new API
    stack (``AlgorithmConfig.learners``). With ``num_gpus == 0`` the config is not touched.

    Args:
        config: the config being built; changed in place.
        spec: its experiment spec (to see which learner settings the user gave).
        num_gpus: GPUs of this host (``SM_NUM_GPUS``), >= 0.
    """
    if num_gpus <= 0:
        return
    given = {o.name for o in spec.overrides if o.section == "learners"}
    if "num_gpus_per_learner" not in given:
        config.learners(num_gpus_per_learner=1)
        if num_gpus > 1 and "num_learners" not in given:
            config.learners(num_learners=num_gpus)


def _job_gpus() -> int:
    return Environment.from_environ().num_gpus


def _preflight(config: AlgorithmConfig) -> None:
    """Make the env and build the RLModule once, in this process, before Ray starts.

    RLlib builds both inside env runner actors; when that fails there, the trial dies with an
    unrelated ``IndexError`` from `EnvRunnerGroup.get_spaces` and the real cause is lost. Done
    here, a wrong ``env_config`` keyword or ``model_config`` value fails with its own message.
    Settings of another action space's model are dropped first (`drop_settings_of_other_action_spaces`).
    Only for Gymnasium ids made as RLlib makes them (``gymnasium.make(env, **env_config)``);
    envs registered with Tune are the user script's to check.
    """
    env_id = config.env
    if not isinstance(env_id, str) or _global_registry.contains(ENV_CREATOR, env_id):
        return
    try:
        env = gymnasium.make(env_id, **config.env_config)
    except Exception as exc:
        raise HyperparameterError(
            f"hyperparameter {ENV!r}: gymnasium.make({env_id!r}, **{dict(config.env_config)!r}) failed: "
            f"{type(exc).__name__}: {exc}"
        ) from exc
    try:
        drop_settings_of_other_action_spaces(config, env.action_space)
        config.get_rl_module_spec(env=env).build()
    except Exception as exc:
        raise HyperparameterError(
            f"RLlib cannot build the RLModule for {env_id!r} with this configuration: {type(exc).__name__}: {exc}"
        ) from exc
    finally:
        env.close()


def drop_settings_of_other_action_spaces(config: AlgorithmConfig, action_space: gymnasium.Space) -> list[str]:
    """Remove the `BOX_ONLY_MODEL_SETTINGS` from ``config.model_config`` when `action_space` holds no
    ``Box`` (a ``Discrete`` or ``MultiDiscrete`` env, also inside ``Dict``/``Tuple`` spaces), logging one
    WARNING per setting dropped, naming it and why. Old notebooks set them on every env; RLlib refuses
    ``free_log_std=True`` on a Categorical action distribution when it builds the RLModule.

    A ``model_config`` that is a grid search, or not a dict, is left as it is.

    Args:
        config: the config being built; its ``model_config`` is replaced (``config.rl_module``).
        action_space: the env's action space (from the env `_preflight` made).

    Returns:
        The dropped keys, in ``model_config`` order (empty when nothing was dropped).
    """
    model_config = config._model_config  # what rl_module(model_config=...) set, RLlib's defaults not merged
    if not isinstance(model_config, dict) or is_grid_search(model_config) or _has_box(action_space):
        return []
    dropped = [key for key in model_config if key in BOX_ONLY_MODEL_SETTINGS]
    for key in dropped:
        logger.warning(
            "model setting %s=%r dropped: it sets %s, which only continuous (Box) action spaces have, and the "
            "env's action space is %s",
            key,
            model_config[key],
            BOX_ONLY_MODEL_SETTINGS[key],
            action_space,
        )
    if dropped:
        config.rl_module(model_config={k: v for k, v in model_config.items() if k not in dropped})
    return dropped


def _has_box(space: Any) -> bool:
    """Whether a gymnasium space is, or contains (``Dict``, ``Tuple``), a ``Box``."""
    if isinstance(space, spaces.Box):
        return True
    if isinstance(space, spaces.Dict):
        return any(_has_box(s) for s in space.spaces.values())
    if isinstance(space, spaces.Tuple):
        return any(_has_box(s) for s in space.spaces)
    return False
