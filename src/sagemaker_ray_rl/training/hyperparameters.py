"""Hyperparameters -> a checked experiment spec -> an RLlib new-stack `AlgorithmConfig`.

SageMaker hands hyperparameters over as strings; `environment.decode_hyperparameters` has already
turned them into JSON values. This module checks every key and value and fails with
`HyperparameterError` *before Ray starts*, naming the key and what is accepted.

Accepted keys (docs/training.md, "Hyperparameters of the built-in experiment"):

==============================  ===============================================================
``algorithm``                   RLlib algorithm name (``PPO``, ``DQN``, ``SAC``, ...). Default PPO.
``env``                         Gymnasium id or a name given to `ray.tune.registry.register_env`.
                                Default ``CartPole-v1``.
``env_config``                  JSON object passed to the env creator / ``gymnasium.make``.
``num_env_runners``             Remote env runners. Default: CPUs - 1 (at least 1).
``checkpoint_frequency``        Iterations between checkpoints (and SIGTERM checkpoints). Default 10.
``evaluation_episodes``         Episodes to evaluate the exported policy on after training. Default 0.
``stop.training_iteration``     Stop after this many iterations.
``stop.episode_return_mean``    Stop once ``env_runners/episode_return_mean`` reaches this.
``stop.evaluation_return_mean`` Stop once the greedy policy's evaluation return (RLlib's evaluation,
                                every iteration unless ``evaluation.evaluation_interval`` says
                                otherwise, over ``evaluation_episodes`` or
                                `STOP_EVALUATION_EPISODES` episodes) reaches this.
``stop.timesteps_total``        Stop after this many env steps sampled.
``stop.time_total_s``           Stop after this many seconds of training.
``rl.training.stop.<name>``     The same stop criteria in the seed-000 layout; ``episode_reward_mean``
                                (old name) stops on ``env_runners/episode_return_mean``.
``rl.training.config.<name>``   Any keyword of the algorithm config's builder methods, in the
                                seed-000 style (``rl.training.config.lr``). The builder method
                                that owns ``<name>`` is found from the config class.
``<section>.<name>``            The same, naming the builder method (``training.lr``,
                                ``env_runners.num_envs_per_env_runner``).
old-stack names               ``num_workers``, ``num_sgd_iter``, ``sgd_minibatch_size``,
                                ``train_batch_size``, ``model`` / ``model.<key>``, ``num_gpus``,
                                ``observation_filter``, ``framework``, top level or after
                                ``rl.training.config.``: translated with a warning (`legacy`).
``ray.*``                       The Ray cluster over the job's hosts (`cluster.settings`); ignored here.
``mode``, ``offline.*``         Collect and offline jobs (`offline.settings`); ignored here.
``sagemaker_*``                 The toolkit's and the SDK's own; ignored here.
``_*``                          Reserved by SageMaker (a tuning job's ``_tuning_objective_metric``);
                                ignored here.
``a__b__c``                      The dotless spelling of ``a.b.c`` (``rl__training__config__lr``), for
                                drivers that export hyperparameters as shell variables; turned into
                                the dotted one when the contract is read (`environment.dotted_names`).
==============================  ===============================================================

With no stop key at all, training stops after `DEFAULT_TRAINING_ITERATIONS` iterations. Several stop
keys stop at whichever is reached first (Tune's semantics).

RLlib's own `AlgorithmConfig.update_from_dict` silently ignores unknown keys (see
Ray 2.60's ``algorithm_config.py``); calling the builder methods with keyword arguments raises on them,
so overrides are applied that way.
"""

from __future__ import annotations

import difflib
import importlib
import inspect
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any

import gymnasium
from ray.rllib.algorithms.registry import ALGORITHMS
from ray.tune.registry import ENV_CREATOR, _global_registry

from sagemaker_ray_rl.contract import validation
from sagemaker_ray_rl.contract.environment import dotted_name, is_image_hyperparameter
from sagemaker_ray_rl.contract.errors import HyperparameterError
from sagemaker_ray_rl.training import legacy

if TYPE_CHECKING:
    from ray.rllib.algorithms.algorithm_config import AlgorithmConfig

ALGORITHM = "algorithm"
ENV = "env"
ENV_CONFIG = "env_config"
NUM_ENV_RUNNERS = "num_env_runners"
CHECKPOINT_FREQUENCY = "checkpoint_frequency"
EVALUATION_EPISODES = "evaluation_episodes"
RLLIB_CONFIG_PREFIX = "rl.training.config."

DEFAULT_ALGORITHM = "PPO"
DEFAULT_ENV = "CartPole-v1"
DEFAULT_TRAINING_ITERATIONS = 100
DEFAULT_CHECKPOINT_FREQUENCY = 10
#: The stop criterion on the greedy policy's evaluation return, and its RLlib result key.
EVALUATION_STOP = "evaluation/env_runners/episode_return_mean"
#: Evaluation episodes per iteration for ``stop.evaluation_return_mean`` without ``evaluation_episodes``.
STOP_EVALUATION_EPISODES = 10

#: Stop hyperparameter -> the key of RLlib's result dict that Tune's stopper compares.
#: Prefixes of stop criteria: ours, and the seed-000 experiment layout's ``rl.training.stop.<name>``.
STOP_PREFIXES = ("stop.", "rl.training.stop.")

STOP_CRITERIA: Mapping[str, str] = MappingProxyType(
    {
        "stop.training_iteration": "training_iteration",
        "stop.episode_return_mean": "env_runners/episode_return_mean",
        "stop.evaluation_return_mean": "evaluation/env_runners/episode_return_mean",
        "stop.timesteps_total": "num_env_steps_sampled_lifetime",
        "stop.time_total_s": "time_total_s",
    }
)

#: Builder methods of `AlgorithmConfig` that overrides may reach, in the order used to find the
#: owner of a bare name (a few names appear in two methods; the first one wins).
BUILDER_SECTIONS: tuple[str, ...] = (
    "environment",
    "env_runners",
    "learners",
    "training",
    "rl_module",
    "evaluation",
    "multi_agent",
    "offline_data",
    "framework",
    "reporting",
    "checkpointing",
    "debugging",
    "fault_tolerance",
    "resources",
)

# Builder keywords that have a top-level hyperparameter of their own.
_TOP_LEVEL_ALIASES = {"env": ENV, "env_config": ENV_CONFIG, "num_env_runners": NUM_ENV_RUNNERS}


@dataclass(frozen=True)
class ConfigOverride:
    """One hyperparameter applied as ``config.<section>(<name>=<value>)``.

    Attributes:
        hyperparameter: the key as the user wrote it (for error messages).
        section: the builder method, one of `BUILDER_SECTIONS`.
        name: the keyword argument.
        value: the decoded value.
    """

    hyperparameter: str
    section: str
    name: str
    value: Any


@dataclass(frozen=True)
class ExperimentSpec:
    """A checked description of the built-in experiment.

    Attributes:
        algorithm: RLlib algorithm name, as registered in `ray.rllib.algorithms.registry`.
        env: Gymnasium id or Tune-registered env name.
        env_config: keyword arguments for the env.
        num_env_runners: remote env runner actors (0 samples in the driver).
        stop: Tune stop criteria, RLlib result key -> threshold.
        overrides: builder calls applied after the defaults, in hyperparameter order.
        num_env_runners_set: whether the top-level ``num_env_runners`` key was given.
        checkpoint_frequency: iterations between checkpoints to ``/opt/ml/checkpoints``.
        evaluation_episodes: episodes the exported policy is evaluated on after training (0: none).
    """

    algorithm: str
    env: str
    env_config: Mapping[str, Any]
    num_env_runners: int
    stop: Mapping[str, float]
    overrides: tuple[ConfigOverride, ...] = ()
    num_env_runners_set: bool = False
    checkpoint_frequency: int = DEFAULT_CHECKPOINT_FREQUENCY
    evaluation_episodes: int = 0

    @property
    def num_env_runners_given(self) -> bool:
        """Whether any hyperparameter set ``num_env_runners`` (else the launcher sizes it to the cluster)."""
        return self.num_env_runners_set or any(o.name == NUM_ENV_RUNNERS for o in self.overrides)


def parse_hyperparameters(
    hyperparameters: Mapping[str, Any],
    *,
    num_cpus: int,
    ignore: Iterable[str] = (),
) -> ExperimentSpec:
    """Check decoded hyperparameters and turn them into an `ExperimentSpec`.

    Imports RLlib (to know the algorithm's settings and registered envs) but does not start Ray.

    Args:
        hyperparameters: name -> decoded value (see `environment.decode_hyperparameters`).
        num_cpus: CPUs of this host; sets the default ``num_env_runners`` (``max(1, num_cpus - 1)``).
        ignore: further keys to skip (a user entry point's own arguments), in either spelling
            (`environment.dotted_name`).

    Raises:
        HyperparameterError: an unknown key, a value of the wrong type, an unknown algorithm or env.
    """
    skipped = {dotted_name(k) for k in ignore} | set(ignore)
    hps = {k: v for k, v in hyperparameters.items() if k not in skipped and not is_image_hyperparameter(k)}
    algorithm = validation.string(ALGORITHM, hps.get(ALGORITHM, DEFAULT_ALGORITHM))
    config_cls = algorithm_config_class(algorithm)
    owners = _builder_keywords(config_cls)

    top_level: dict[str, Any] = {}
    stop: dict[str, float] = {}
    overrides: list[ConfigOverride] = []
    model_config: dict[str, Any] = {}
    model_keys: list[str] = []

    def add_legacy(key: str, name: str, value: Any) -> None:
        translated = legacy.translate(key, name, value)
        if translated is None:
            return
        section, keyword, new_value = translated
        if keyword == "model_config":
            model_config.update(new_value)
            model_keys.append(key)
        else:
            overrides.append(ConfigOverride(key, section, keyword, new_value))

    for key, value in hps.items():
        if key in (ALGORITHM, ENV, ENV_CONFIG, NUM_ENV_RUNNERS, CHECKPOINT_FREQUENCY, EVALUATION_EPISODES):
            _set_once(top_level, key, value, key)
        elif key in STOP_CRITERIA:
            stop[STOP_CRITERIA[key]] = _stop_value(key, value)
        elif key.startswith(STOP_PREFIXES):
            name = key.split("stop.", 1)[1]
            result_key = STOP_CRITERIA.get(f"stop.{name}") or legacy.translate_stop(key, name)
            if result_key is None:
                raise HyperparameterError(
                    f"unknown stop criterion {key!r}; accepted: {', '.join(STOP_CRITERIA)} "
                    f"(and the old stop.episode_reward_mean)"
                )
            stop[result_key] = _stop_value(key, value)
        elif key.startswith(RLLIB_CONFIG_PREFIX):
            name = key[len(RLLIB_CONFIG_PREFIX) :]
            if name in _TOP_LEVEL_ALIASES:
                _set_once(top_level, _TOP_LEVEL_ALIASES[name], value, key)
            elif legacy.is_legacy(name):
                add_legacy(key, name, value)
            elif name in owners:
                overrides.append(ConfigOverride(key, owners[name][0], name, value))
            else:
                raise _unknown(key, name, config_cls, owners)
        elif legacy.is_legacy(key):
            add_legacy(key, key, value)
        elif "." in key and key.split(".", 1)[0] in BUILDER_SECTIONS:
            section, name = key.split(".", 1)
            if section not in owners.get(name, ()):
                raise _unknown(key, name, config_cls, owners, section=section)
            overrides.append(ConfigOverride(key, section, name, value))
        else:
            raise _unknown(key, key, config_cls, owners)
    if model_config:
        overrides.append(ConfigOverride(", ".join(model_keys), "rl_module", "model_config", model_config))

    env = validation.string(ENV, top_level.get(ENV, DEFAULT_ENV))
    env_config = validation.json_object(ENV_CONFIG, top_level.get(ENV_CONFIG, {}))
    _check_env_registered(env)
    num_env_runners = validation.integer(NUM_ENV_RUNNERS, top_level.get(NUM_ENV_RUNNERS, max(1, num_cpus - 1)), low=0)
    checkpoint_frequency = validation.integer(
        CHECKPOINT_FREQUENCY,
        top_level.get(CHECKPOINT_FREQUENCY, DEFAULT_CHECKPOINT_FREQUENCY),
        low=0,
        why="iterations between checkpoints; 0 for only the last",
    )
    evaluation_episodes = validation.integer(
        EVALUATION_EPISODES,
        top_level.get(EVALUATION_EPISODES, 0),
        low=0,
        why="episodes to evaluate the exported policy on; 0 for none",
    )
    if not stop:
        stop["training_iteration"] = DEFAULT_TRAINING_ITERATIONS
    return ExperimentSpec(
        algorithm=algorithm,
        env=env,
        env_config=MappingProxyType(dict(env_config)),
        num_env_runners=num_env_runners,
        num_env_runners_set=NUM_ENV_RUNNERS in top_level,
        checkpoint_frequency=checkpoint_frequency,
        evaluation_episodes=evaluation_episodes,
        stop=MappingProxyType(stop),
        overrides=tuple(overrides),
    )


def accepted_keys_text(config_name: str = "the algorithm's config") -> str:
    """One sentence listing the accepted hyperparameter keys, for error messages."""
    fixed = ", ".join(
        [ALGORITHM, ENV, ENV_CONFIG, NUM_ENV_RUNNERS, CHECKPOINT_FREQUENCY, EVALUATION_EPISODES, *STOP_CRITERIA]
    )
    return (
        f"Accepted: {fixed}, {RLLIB_CONFIG_PREFIX}<name> and <section>.<name> for any keyword of "
        f"{config_name}'s builder methods ({', '.join(BUILDER_SECTIONS)}), and sagemaker_* keys."
    )


def algorithm_config_class(algorithm: str) -> type[AlgorithmConfig]:
    if algorithm not in ALGORITHMS:
        raise HyperparameterError(
            f"hyperparameter {ALGORITHM!r}: unknown RLlib algorithm {algorithm!r}; expected one of {sorted(ALGORITHMS)}"
        )
    _, default_config = ALGORITHMS[algorithm]()
    return type(default_config)


def _builder_keywords(config_cls: type) -> dict[str, tuple[str, ...]]:
    """Keyword name -> the builder sections accepting it, preferred section first.

    Subclasses often take ``**kwargs`` and pass them to `AlgorithmConfig`'s method of the same
    name, so the keywords of every class in the MRO count.
    """
    owners: dict[str, list[str]] = {}
    for section in BUILDER_SECTIONS:
        for klass in config_cls.__mro__:
            method = klass.__dict__.get(section)
            if method is None:
                continue
            for name, param in inspect.signature(method).parameters.items():
                if name == "self" or param.kind in (param.VAR_KEYWORD, param.VAR_POSITIONAL):
                    continue
                sections = owners.setdefault(name, [])
                if section not in sections:
                    sections.append(section)
    return {name: tuple(sections) for name, sections in owners.items()}


def _unknown(
    key: str,
    name: str,
    config_cls: type,
    owners: Mapping[str, tuple[str, ...]],
    section: str | None = None,
) -> HyperparameterError:
    candidates = [n for n, s in owners.items() if section is None or section in s]
    close = difflib.get_close_matches(name, candidates, n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    where = f"{config_cls.__name__}.{section}()" if section else config_cls.__name__
    return HyperparameterError(
        f"Unknown hyperparameter {key!r}: {name!r} is not a setting of {where}.{hint} "
        + accepted_keys_text(config_cls.__name__)
    )


def _set_once(target: dict[str, Any], name: str, value: Any, key: str) -> None:
    if name in target and target[name] != value:
        raise HyperparameterError(
            f"hyperparameter {key!r} sets {name!r} to {value!r}, but it was already set to {target[name]!r}"
        )
    target[name] = value


def _stop_value(key: str, value: Any) -> float:
    """A stop threshold: a number > 0, except a return target, which may be any finite number."""
    if key.endswith(("episode_return_mean", "episode_reward_mean", "evaluation_return_mean")):
        return validation.number(key, value)
    return validation.number(key, value, low=0, low_open=True)


def _check_env_registered(env: str) -> None:
    """The env must be a Gymnasium id (``module:EnvId`` imports the module first) or a name
    registered with `ray.tune.registry.register_env`."""
    if _global_registry.contains(ENV_CREATOR, env):
        return
    if ":" in env:  # gymnasium's "module:EnvId" form: importing the module registers the id
        module, _, env_id = env.partition(":")
        try:
            importlib.import_module(module)
        except ImportError as exc:
            raise HyperparameterError(f"hyperparameter {ENV!r}: cannot import {module!r} for {env!r}: {exc}") from exc
        env = env_id
    if env in gymnasium.registry:
        return
    close = difflib.get_close_matches(env, list(gymnasium.registry), n=3)
    hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    raise HyperparameterError(
        f"hyperparameter {ENV!r}: {env!r} is neither a registered Gymnasium id nor an env registered "
        f"with ray.tune.registry.register_env.{hint} A user entry point (sagemaker_program) can "
        f"register its own env first."
    )
