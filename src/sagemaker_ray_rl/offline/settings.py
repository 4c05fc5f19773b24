"""The ``mode`` hyperparameter and the ``offline.*`` hyperparameters of collect and offline jobs.

`sagemaker_ray_rl.training.hyperparameters` skips these keys (as it skips ``ray.*``); this module checks
them, before Ray starts, and fails with `HyperparameterError` naming the key.

==============================  =============================================================
``mode``                        ``train`` (default: online RLlib training), ``collect`` or
                                ``offline``.
``env``, ``env_config``         As for ``train``; collect needs the env, offline uses it only for
                                the optional real-env evaluation (and the spaces when the dataset
                                has no ``dataset_info.json``).
``offline.num_episodes``        collect: episodes to record (default 500).
``offline.num_envs``            collect: envs stepped side by side (default 100).
``offline.behaviour``           collect: ``random`` (default) or ``epsilon_greedy``.
``offline.epsilon``             collect, ``epsilon_greedy``: exploration (default 0.1).
``offline.behaviour_channel``   collect, ``epsilon_greedy``: input channel with the exported
                                model to act with (default ``model``).
``offline.output``              collect: ``output_data`` (default, ``/opt/ml/output/data/dataset``)
                                or ``model`` (the model dir, i.e. ``model.tar.gz``).
``offline.seed``                seeds collection, training and FQE (default 0).
``offline.input_channel``       offline: the channel holding the dataset (default ``train``).
``offline.algorithm``           offline: ``cql`` (default), ``iql``, ``bc`` or ``marwil``.
                                Discrete actions: ``cql`` is `DiscreteCQL`; ``bc``, ``marwil`` are
                                RLlib's BC and MARWIL fed whole episodes (`offline.imitation`).
                                Box actions: ``cql`` and ``iql`` are RLlib's own CQL and IQL
                                (`offline.continuous`), with RLlib's ``actor_lr``/``critic_lr``
                                (``offline.lr``/``lr_end``/``cql_alpha`` are not read). Other pairs
                                are refused (`check_action_space`) before Ray starts.
``offline.cql_alpha``           offline, ``cql``: CQL weight α (default 1.0; 0 = offline double DQN).
``offline.beta``                offline, ``marwil``: advantage temperature β (default 1.0).
``offline.lr``                  offline: Adam learning rate at the start (default 5e-4).
``offline.lr_end``              offline: learning rate after ``num_updates``, reached linearly
                                (default 5e-5; equal to ``lr`` = constant). Decay is what keeps late
                                checkpoints good: at a constant 5e-4 all 3 seeds fell from 196-199
                                to 158-163 by 6000 updates (docs/benchmarks.md).
``offline.num_updates``         offline: gradient updates per training run (default 6000).
``offline.num_runs``            offline: independent training runs (seeds ``seed + 1000 r``), all
                                of whose checkpoints compete in the selection (default 5).
                                Model selection across runs by OPE as in Paine et al. 2020,
                                "Hyperparameter Selection for Offline Reinforcement Learning".
``offline.evaluate_every``      offline: updates between checkpoints + OPE (default 500).
``offline.gamma``               discount for learning and OPE (default 0.99).
``offline.select``              OPE estimate that picks the exported checkpoint: ``mb``
                                (default), ``dm``, ``dr``, ``wis``, ``pdis``, ``is``, or ``last``.
                                ``mb`` (model-based rollouts) by default: on seed 004's data it
                                ranked checkpoints by their real return with Spearman 0.85-0.96,
                                DM 0.28-0.50 (docs/benchmarks.md). The learned policies are greedy,
                                so on data from a stochastic behaviour policy the importance
                                weights are 0 or ``(1/μ)^k`` for an episode's first k steps, and IS,
                                WIS, PDIS and DR swing by hundreds between close checkpoints.
``offline.promote_by``          the estimator whose lower confidence bound decides the promotion
                                verdict (``promotion.json``): ``select`` (default: ``offline.select``,
                                or ``mb`` when that is ``last``), or any estimator name.
``offline.confidence``          two-sided level of the promotion report's bootstrap intervals
                                (default 0.95).
``offline.bootstrap_samples``   bootstrap resamples of episodes per interval (default 1000).
``offline.fqe_updates``         fitted-Q evaluation updates (default 2000) behind ``dm`` and
                                ``dr``: for the exported checkpoint's promotion report always, for
                                every checkpoint only when ``offline.select`` is ``dm`` or ``dr``
                                or ``offline.eval_episodes`` > 0 (rank correlations of every
                                estimator); it is most of a checkpoint's OPE time.
``offline.model_updates``       dynamics-model updates for ``mb``, once per job (default 3000;
                                0 = no ``mb``).
``offline.horizon``             ``mb`` rollout steps (default 0: the env's episode limit from
                                ``env``/``env_config`` or ``dataset_info.json``, else the longest
                                logged episode).
``offline.eval_episodes``       real-env greedy episodes per checkpoint, 0 = none (default 0).
``offline.hidden``              JSON list: hidden layer sizes of the Q network (default [64, 64]).
``offline.standardize``         offline, ``cql`` on a flat Box observation space: the Q network
                                standardizes observations with the dataset's per-feature mean and
                                standard deviation, frozen in the module (default true;
                                `q_module`). On the three CartPole seeds where raw observations
                                gave 0, 0 and 11 of 60 checkpoints >= 195, standardized ones gave
                                42, 50 and 50 (docs/benchmarks.md, run H).
==============================  =============================================================
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym

from sagemaker_ray_rl.contract import validation
from sagemaker_ray_rl.contract.errors import HyperparameterError
from sagemaker_ray_rl.contract.names import MODE_HYPERPARAMETER as MODE
from sagemaker_ray_rl.contract.names import OFFLINE_HYPERPARAMETER_PREFIX as PREFIX
from sagemaker_ray_rl.offline.collect import BEHAVIOUR_POLICIES
from sagemaker_ray_rl.offline.ope import ESTIMATORS

TRAIN, COLLECT, OFFLINE = "train", "collect", "offline"
MODES = (TRAIN, COLLECT, OFFLINE)
OUTPUTS = ("output_data", "model")
SELECTIONS = (*ESTIMATORS, "last")
ALGORITHMS = ("cql", "iql", "bc", "marwil")
#: ``offline.algorithm`` values per action-space kind.
DISCRETE_ALGORITHMS = ("cql", "bc", "marwil")
BOX_ALGORITHMS = ("cql", "iql")
#: ``offline.select`` values on Box actions (only ``mb`` of the OPE estimators is defined there).
BOX_SELECTIONS = ("mb", "last")


def requested_mode(hyperparameters: Mapping[str, Any]) -> str:
    """The ``mode`` hyperparameter (``train`` when absent).

    Raises:
        HyperparameterError: not one of `MODES`.
    """
    return validation.choice(MODE, hyperparameters.get(MODE, TRAIN), MODES)


@dataclass(frozen=True)
class OfflineSettings:
    """A checked collect or offline job (see the module docstring for each field)."""

    mode: str
    env: str
    env_config: Mapping[str, Any]
    num_episodes: int = 500
    num_envs: int = 100
    behaviour: str = "random"
    epsilon: float = 0.1
    behaviour_channel: str = "model"
    output: str = "output_data"
    seed: int = 0
    input_channel: str = "train"
    algorithm: str = "cql"
    cql_alpha: float = 1.0
    beta: float = 1.0
    lr: float = 5e-4
    lr_end: float = 5e-5
    num_updates: int = 6000
    num_runs: int = 5
    evaluate_every: int = 500
    gamma: float = 0.99
    select: str = "mb"
    promote_by: str = "select"
    confidence: float = 0.95
    bootstrap_samples: int = 1000
    fqe_updates: int = 2000
    model_updates: int = 3000
    horizon: int = 0
    eval_episodes: int = 0
    hidden: tuple[int, ...] = (64, 64)
    standardize: bool = True
    hyperparameters: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def from_hyperparameters(cls, hyperparameters: Mapping[str, Any]) -> OfflineSettings | None:
        """The settings of a collect/offline job, or None for ``mode=train``.

        Raises:
            HyperparameterError: an unknown ``offline.*`` key or a bad value.
        """
        mode = requested_mode(hyperparameters)
        if mode == TRAIN:
            return None
        defaults = _defaults()
        values = dict(defaults)
        for key, value in hyperparameters.items():
            if not key.startswith(PREFIX):
                continue
            name = key[len(PREFIX) :]
            if name not in defaults:
                raise validation.unknown(key, [PREFIX + n for n in defaults], "collect and offline jobs")
            values[name] = validation.like(key, value, defaults[name])
        validation.choice("offline.behaviour", values["behaviour"], BEHAVIOUR_POLICIES)
        validation.choice("offline.output", values["output"], OUTPUTS)
        validation.choice("offline.select", values["select"], SELECTIONS)
        validation.choice("offline.promote_by", values["promote_by"], ("select", *ESTIMATORS))
        if not validation.number("offline.confidence", values["confidence"], low=0, high=1, low_open=True) < 1:
            raise validation.invalid("offline.confidence", "a number in (0, 1)", values["confidence"])
        validation.integer("offline.bootstrap_samples", values["bootstrap_samples"], low=100)
        validation.choice("offline.algorithm", values["algorithm"], ALGORITHMS)
        for name in ("lr", "lr_end"):
            validation.number(f"offline.{name}", values[name], low=0, low_open=True)
        for name in ("num_episodes", "num_envs", "num_updates", "num_runs", "evaluate_every"):
            validation.integer(f"offline.{name}", values[name], low=1)
        for name in ("fqe_updates", "model_updates", "horizon", "eval_episodes"):
            validation.integer(f"offline.{name}", values[name], low=0)
        for name in ("cql_alpha", "beta"):
            validation.number(f"offline.{name}", values[name], low=0)
        for name in ("gamma", "epsilon"):
            validation.number(f"offline.{name}", values[name], low=0, high=1)
        if values["select"] in ("dm", "dr") and values["fqe_updates"] == 0:
            raise validation.invalid(
                "offline.fqe_updates", f"> 0: offline.select={values['select']} needs fitted-Q evaluation", 0
            )
        if values["select"] == "mb" and values["model_updates"] == 0:
            raise validation.invalid("offline.model_updates", "> 0: offline.select=mb needs a dynamics model", 0)
        promote_by = promotion_estimator(values["select"], values["promote_by"], values["model_updates"] > 0)
        if promote_by in ("dm", "dr") and values["fqe_updates"] == 0:
            raise validation.invalid(
                "offline.fqe_updates", f"> 0: the promotion verdict by {promote_by} needs fitted-Q evaluation", 0
            )
        if promote_by == "mb" and values["model_updates"] == 0:
            raise validation.invalid(
                "offline.model_updates", "> 0: the promotion verdict by mb needs a dynamics model", 0
            )
        hidden = values.pop("hidden")
        if not isinstance(hidden, (list, tuple)) or not hidden or not all(isinstance(h, int) and h > 0 for h in hidden):
            raise validation.invalid("offline.hidden", "a JSON list of positive integers", hidden)
        env_config = validation.json_object("env_config", hyperparameters.get("env_config", {}))
        return cls(
            mode=mode,
            env=str(hyperparameters.get("env", "CartPole-v1")),
            env_config=dict(env_config),
            hidden=tuple(hidden),
            hyperparameters=dict(hyperparameters),
            **values,
        )


def promotion_estimator(select: str, promote_by: str, model: bool = True) -> str:
    """The estimator that decides the promotion verdict: `promote_by`, or for ``select`` the
    ``offline.select`` estimator (``mb`` when that is ``last``, ``dm`` without a dynamics model)."""
    if promote_by != "select":
        return promote_by
    if select != "last":
        return select
    return "mb" if model else "dm"


def _defaults() -> dict[str, Any]:
    """The ``offline.*`` names and their defaults, read from `OfflineSettings`' fields (written once)."""
    skip = {"mode", "env", "env_config", "hyperparameters"}
    return {f.name: f.default for f in dataclasses.fields(OfflineSettings) if f.name not in skip}


def check_action_space(settings: OfflineSettings, action_space: Any) -> None:
    """Refuse an ``offline.algorithm`` or ``offline.select`` the action space does not fit.

    Discrete: ``cql`` (`DiscreteCQL`), ``bc``, ``marwil``; Box: ``cql``, ``iql`` (RLlib's CQL and
    IQL) with ``offline.select`` ``mb`` or ``last``.

    Raises:
        HyperparameterError: a pair that does not fit, or an action space that is neither.
    """
    if settings.mode != OFFLINE:
        return
    if isinstance(action_space, gym.spaces.Discrete):
        kind, allowed = "Discrete", DISCRETE_ALGORITHMS
    elif isinstance(action_space, gym.spaces.Box):
        kind, allowed = "Box", BOX_ALGORITHMS
    else:
        raise HyperparameterError(
            f"offline training handles Discrete or Box action spaces, the dataset has {action_space}"
        )
    if settings.algorithm not in allowed:
        raise HyperparameterError(
            f"hyperparameter offline.algorithm={settings.algorithm} does not fit the {kind} action space "
            f"{action_space}; for {kind} actions use one of {list(allowed)}"
        )
    if kind == "Box" and settings.select not in BOX_SELECTIONS:
        raise HyperparameterError(
            f"hyperparameter offline.select={settings.select} is not estimated on Box actions (only the model-based "
            f"estimate is defined for a deterministic continuous policy); use one of {list(BOX_SELECTIONS)}"
        )
