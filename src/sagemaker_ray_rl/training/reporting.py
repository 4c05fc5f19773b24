"""Metric lines on stdout, one ``name: value`` per line, for SageMaker's metric regexes.

SageMaker reads training metrics by applying each metric definition's regex to every log line;
with ``image_uri`` the SDK applies none of its own, so users paste `METRIC_DEFINITIONS` (also in
docs/training.md, "Metrics"). The names are stable: the legacy ``episode_reward_*`` names that the regexes of
existing notebooks match (Ray 1.x printed them; Ray 2.x renamed them to
``env_runners/episode_return_*``, ray-project/ray#45547), and the new ``episode_return_*`` names.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, TextIO

from ray import tune

from sagemaker_ray_rl.contract.metrics import metric_definitions

#: Printed name -> path of the value in RLlib's new-stack result dict (``a/b`` = result[a][b]).
METRICS: Mapping[str, str] = MappingProxyType(
    {
        "training_iteration": "training_iteration",
        "episode_reward_mean": "env_runners/episode_return_mean",
        "episode_reward_max": "env_runners/episode_return_max",
        "episode_reward_min": "env_runners/episode_return_min",
        "episode_return_mean": "env_runners/episode_return_mean",
        "episode_return_max": "env_runners/episode_return_max",
        "episode_return_min": "env_runners/episode_return_min",
        "episode_len_mean": "env_runners/episode_len_mean",
        "timesteps_total": "num_env_steps_sampled_lifetime",
        "time_total_s": "time_total_s",
        "learning_rate": "learners/default_policy/default_optimizer_learning_rate",
        # Evaluation episodes (evaluation.evaluation_interval, evaluation_episodes). No name may end with a
        # training metric's name: SageMaker's regexes are not anchored.
        "evaluation_return_mean": "evaluation/env_runners/episode_return_mean",
        "evaluation_return_max": "evaluation/env_runners/episode_return_max",
        "evaluation_return_min": "evaluation/env_runners/episode_return_min",
        "evaluation_len_mean": "evaluation/env_runners/episode_len_mean",
    }
)

#: Ready-to-paste ``metric_definitions`` for `sagemaker.estimator.Estimator` (`contract.metrics`).
METRIC_DEFINITIONS: list[dict[str, str]] = metric_definitions(METRICS)


def lookup(result: Mapping[str, Any], path: str) -> Any:
    """The value at ``a/b/c`` in a nested result dict, or None when any level is missing."""
    value: Any = result
    for part in path.split("/"):
        if not isinstance(value, Mapping) or part not in value:
            return None
        value = value[part]
    return value


def metric_lines(result: Mapping[str, Any]) -> list[str]:
    """The metric lines for one training result, in `METRICS` order.

    Values that are missing or not finite (``nan`` before the first episode ends) are left out, so
    every printed line parses as a number. Whole floats print as integers (``4000.0`` -> ``4000``),
    others with 6 significant digits (``21.06``, ``0.0003``, ``5e-05``).
    """
    lines = []
    for name, path in METRICS.items():
        value = lookup(result, path)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            continue
        if isinstance(value, float):
            if not math.isfinite(value):
                continue
            lines.append(f"{name}: {int(value) if value.is_integer() else format(value, '.6g')}")
        else:
            lines.append(f"{name}: {value}")
    return lines


def progress_line(result: Mapping[str, Any], stop: Mapping[str, float] | None = None) -> str:
    """One line a person reads at a glance, e.g.
    ``[progress] iter 7/40 | return 212.4 (min 31, max 500; stop at 450) | 28,000 env steps | 61 s``,
    with ``| greedy 480.3 (stop at 475)`` after the return when the iteration evaluated.

    Written so that no `METRIC_DEFINITIONS` regex matches it (no metric name appears in it), so
    SageMaker's charts see only the metric lines.

    Args:
        result: one RLlib training result.
        stop: the run's stop criteria (result key -> threshold), for the ``/40`` and ``stop at``.
    """
    stop = stop or {}

    def number(path: str) -> str:
        value = lookup(result, path)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            return "-"
        return f"{value:,.0f}" if abs(value) >= 1000 or float(value).is_integer() else f"{value:.1f}"

    iteration = number("training_iteration")
    if "training_iteration" in stop:
        iteration += f"/{stop['training_iteration']:g}"
    target = METRICS["episode_return_mean"]
    goal = f"; stop at {stop[target]:g}" if target in stop else ""
    returns = (
        f"return {number(target)} (min {number(METRICS['episode_return_min'])}, "
        f"max {number(METRICS['episode_return_max'])}{goal})"
    )
    evaluated = METRICS["evaluation_return_mean"]
    if lookup(result, evaluated) is not None:
        goal = f" (stop at {stop[evaluated]:g})" if evaluated in stop else ""
        returns += f" | greedy {number(evaluated)}{goal}"
    return (
        f"[progress] iter {iteration} | {returns} | {number(METRICS['timesteps_total'])} env steps | "
        f"{number('time_total_s')} s"
    )


class MetricLinesCallback(tune.Callback):
    """A Tune callback printing, for every result of every trial, `metric_lines` and then one
    `progress_line`.

    With several trials each block starts with ``trial: <trial id>``.

    Args:
        stream: where to write; stdout when None.
        stop: the run's stop criteria, shown in the progress line.
    """

    def __init__(self, stream: TextIO | None = None, stop: Mapping[str, float] | None = None) -> None:
        self._stream = stream
        self._stop = dict(stop or {})

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any) -> None:
        stream = self._stream or sys.stdout
        header = [f"trial: {trial.trial_id}"] if len(trials) > 1 else []
        stream.write("\n".join([*header, *metric_lines(result), progress_line(result, self._stop)]) + "\n")
        stream.flush()
