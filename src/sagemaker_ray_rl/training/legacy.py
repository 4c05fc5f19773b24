"""Old-API-stack hyperparameter names from users' notebooks, translated to RLlib's new API stack.

Notebooks written for Ray 1.x and the old SageMaker RL images set ``num_workers``, ``num_sgd_iter``,
``sgd_minibatch_size``, ``train_batch_size``, ``model``, ``num_gpus`` and ``observation_filter`` and stop
on ``episode_reward_mean`` (seeds 000, 002, 003). Ray 2.x renamed them, and on the new stack RLlib
ignores some of the old ones without a word (``observation_filter`` is an old-stack setting: see
``AlgorithmConfig.env_runners``). Each translation here logs one warning naming the new setting, so the
user sees what the job really ran with. ``framework`` other than torch is refused: the new stack is
torch-only.

Source: RLlib's "New API stack migration guide" (Ray 2.x docs).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from ray.rllib.connectors.env_to_module import MeanStdFilter

from sagemaker_ray_rl.contract import validation
from sagemaker_ray_rl.contract.errors import HyperparameterError

logger = logging.getLogger(__name__)


def mean_std_filter(env: Any = None, spaces: Any = None, device: Any = None) -> Any:
    """The env-to-module connector that replaces the old stack's ``observation_filter=MeanStdFilter``:
    RLlib's `MeanStdFilter` connector (running mean/std normalisation, clipped at 10). A module-level
    function, so that checkpoints pickle it by reference."""
    return MeanStdFilter(multi_agent=False)


@dataclass(frozen=True)
class Translation:
    """Where an old setting lives on the new stack.

    Attributes:
        section: the builder method (``training``, ``env_runners``, ...).
        name: its keyword.
        note: what changed, for the warning.
    """

    section: str
    name: str
    note: str = ""


#: Old config key -> new-stack builder keyword.
TRANSLATIONS: dict[str, Translation] = {
    "num_workers": Translation("env_runners", "num_env_runners"),
    "num_rollout_workers": Translation("env_runners", "num_env_runners"),
    "num_envs_per_worker": Translation("env_runners", "num_envs_per_env_runner"),
    "num_sgd_iter": Translation("training", "num_epochs"),
    "sgd_minibatch_size": Translation("training", "minibatch_size"),
    "train_batch_size": Translation(
        "training", "train_batch_size_per_learner", "per learner; the job has one learner unless num_learners says more"
    ),
    "num_gpus": Translation("learners", "num_gpus_per_learner", "GPUs now belong to the learner(s)"),
    "model": Translation("rl_module", "model_config", "the RLModule's model config (DefaultModelConfig)"),
}

#: Old stop keys -> RLlib result keys.
STOP_TRANSLATIONS = {"episode_reward_mean": "env_runners/episode_return_mean"}

#: The only framework of the new API stack.
FRAMEWORK = "torch"


def is_legacy(name: str) -> bool:
    """Whether `name` (a key after ``rl.training.config.``, or a top-level key) is an old setting
    handled here: one of `TRANSLATIONS`, ``model.<key>``, ``observation_filter`` or ``framework``."""
    return name in TRANSLATIONS or name.startswith("model.") or name in ("observation_filter", "framework")


def translate(key: str, name: str, value: Any) -> tuple[str, str, Any] | None:
    """The new-stack ``(section, keyword, value)`` for old setting `name` given as hyperparameter
    `key`, or None when it needs no setting (``observation_filter=NoFilter``, ``framework=torch``).
    ``model.<k>`` comes back as ``("rl_module", "model_config", {k: value})``: callers merge those.

    Raises:
        HyperparameterError: ``framework`` other than torch, an ``observation_filter`` other than
            ``MeanStdFilter``/``NoFilter``, or ``model`` that is not a JSON object.
    """
    if name == "framework":
        if value != FRAMEWORK:
            raise HyperparameterError(
                f"hyperparameter {key}={value!r}: RLlib's new API stack (Ray 2.x, used by this image) is "
                f"torch-only; remove the key or set it to {FRAMEWORK!r}"
            )
        return None
    if name == "observation_filter":
        if value == "NoFilter":
            return None
        if value != "MeanStdFilter":
            raise HyperparameterError(
                f"hyperparameter {key}={value!r}: expected 'MeanStdFilter' or 'NoFilter' (the new stack's "
                "observation filters are env-to-module connectors)"
            )
        _warn(key, value, "env_runners(env_to_module_connector=MeanStdFilter)", "an env-to-module connector now")
        return ("env_runners", "env_to_module_connector", mean_std_filter)
    if name.startswith("model."):
        sub = name[len("model.") :]
        _warn(key, value, f"rl_module(model_config={{{sub!r}: ...}})", "the RLModule's model config")
        return ("rl_module", "model_config", {sub: value})
    t = TRANSLATIONS[name]
    if name == "model" and not isinstance(value, dict):
        raise validation.invalid(key, "a JSON object of model settings", value)
    _warn(key, value, f"{t.section}({t.name}={value!r})", t.note)
    return (t.section, t.name, value)


def translate_stop(key: str, name: str) -> str | None:
    """The RLlib result key for an old stop criterion `name` (hyperparameter `key`), with a warning;
    None when `name` is not an old one."""
    new = STOP_TRANSLATIONS.get(name)
    if new is not None:
        _warn(key, None, f"stop on {new}", "Ray 2.x renamed episode rewards to episode returns")
    return new


def _warn(key: str, value: Any, new: str, note: str) -> None:
    shown = "" if value is None else f"={value!r}"
    logger.warning(
        "hyperparameter %s%s is an old-API-stack setting: using %s on RLlib's new API stack%s",
        key,
        shown,
        new,
        f" ({note})" if note else "",
    )
