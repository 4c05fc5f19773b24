"""Promotion report: should the policy an offline job selected replace the policy that logged the data?

The logged (behaviour) policy's value on the data is what it earned: the mean discounted return of
the logged episodes. The selected policy's value is estimated off-policy by every estimator that
applies (`ope.evaluate_terms`), each with a bootstrap confidence interval over episodes (episodes
resampled with replacement, the estimator recomputed on each resample: Efron and Tibshirani 1993,
"An Introduction to the Bootstrap", ch. 13 percentile intervals; the high-confidence off-policy
evaluation of Thomas, Theocharous and Ghavamzadeh 2015, ICML, uses the same lower-bound-beats-
the-baseline rule). The verdict is ``promote`` only when the lower bound of the chosen estimator's
interval is above the logged return by more than rounding (`TIE_TOLERANCE`); otherwise ``keep``
(the deployed policy stays). On data where every episode earned the most the rewards allow (a
CartPole policy at the step limit), the ``mb`` estimate is at most that same return (`ope`: the
model's rewards are clipped to the logged range), the two sums differ only in the order of their
float additions (4e-14 at 500 steps), and the verdict is ``keep``: no candidate can be shown better
than a policy that already earns the maximum.

Both sides use the same discount (``offline.gamma``) and the same episodes; the undiscounted logged
return is reported beside them for people. The resampling is `scipy.stats.bootstrap` (vectorised,
``paired`` for WIS's weighted ratio), not our own loop.

``promotion.json`` (in the output data directory)::

    {"verdict": "promote" | "keep", "estimator": "mb", "reason": "...", "confidence": 0.95,
     "gamma": 0.99, "episodes": 500, "checkpoint": "...",
     "logged": {"return_mean": 21.3, "low": 20.4, "high": 22.3, "undiscounted_return_mean": 23.9},
     "estimates": {"mb": {"estimate": 80.2, "low": 77.9, "high": 82.6}, "dm": {...}, ...},
     "skipped": {"is": "why", ...}}

Metric lines (``name: value``, `METRIC_DEFINITIONS`): ``promotion_logged_return``,
``promotion_estimate``, ``promotion_estimate_low``, ``promotion_estimate_high`` (the chosen
estimator) and ``promotion_verdict`` (1 = promote, 0 = keep).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from sagemaker_ray_rl.contract.metrics import metric_definitions
from sagemaker_ray_rl.offline.ope import EpisodeTerms, estimate_from_terms

PROMOTION_FILE = "promotion.json"
PROMOTE, KEEP = "promote", "keep"
METRIC_NAMES = (
    "promotion_logged_return",
    "promotion_estimate",
    "promotion_estimate_low",
    "promotion_estimate_high",
    "promotion_verdict",
)
METRIC_DEFINITIONS = metric_definitions(METRIC_NAMES)
#: Relative margin by which a lower bound must exceed the logged return to promote: below it the
#: two are equal up to float rounding (the same sum added in another order).
TIE_TOLERANCE = 1e-9


def bootstrap_interval(
    terms: EpisodeTerms, *, confidence: float = 0.95, samples: int = 1000, seed: int = 0
) -> tuple[float, float]:
    """Percentile bootstrap interval over episodes of the estimate ``Σ numerator / Σ denominator``
    (`ope.EpisodeTerms`; the mean when the denominator is None).

    Args:
        terms: per-episode ``(numerator, denominator)``, float ``(num_episodes,)`` each.
        confidence: two-sided level in (0, 1).
        samples: bootstrap resamples.
        seed: seeds the resampling (the interval is reproducible).

    Returns:
        ``(low, high)``; both equal the estimate when every episode's term is the same, NaN when the
        estimate is undefined (WIS with all weights 0) or there are fewer than 2 episodes.
    """
    from scipy.stats import bootstrap  # noqa: PLC0415  (scipy.stats: collect jobs never load it)

    numerator, denominator = (np.asarray(t, dtype=np.float64) if t is not None else None for t in terms)
    if len(numerator) < 2 or not math.isfinite(estimate_from_terms(terms)):
        return math.nan, math.nan
    if denominator is None:
        data: tuple[np.ndarray, ...] = (numerator,)

        def statistic(x: np.ndarray, axis: int = -1) -> np.ndarray:
            return np.mean(x, axis=axis)

    else:
        data = (numerator, denominator)

        def statistic(x: np.ndarray, w: np.ndarray, axis: int = -1) -> np.ndarray:
            total = np.sum(w, axis=axis)
            with np.errstate(invalid="ignore", divide="ignore"):
                return np.where(total > 0, np.sum(x, axis=axis) / total, np.nan)

    if all(np.ptp(d) == 0 for d in data):  # every episode alike: no spread to resample
        value = estimate_from_terms(terms)
        return value, value
    result = bootstrap(
        data,
        statistic,
        paired=denominator is not None,
        vectorized=True,
        n_resamples=samples,
        confidence_level=confidence,
        method="percentile",
        random_state=np.random.default_rng(seed),
    )
    return float(result.confidence_interval.low), float(result.confidence_interval.high)


def promotion_report(
    terms: Mapping[str, EpisodeTerms],
    logged_returns: np.ndarray,
    *,
    estimator: str,
    gamma: float,
    undiscounted_returns: np.ndarray | None = None,
    skipped: Mapping[str, str] | None = None,
    confidence: float = 0.95,
    samples: int = 1000,
    seed: int = 0,
    checkpoint: str | None = None,
) -> dict[str, Any]:
    """The promotion report (module docstring's ``promotion.json``).

    Args:
        terms: estimator name -> per-episode terms of the selected policy (`ope.evaluate_terms`).
        logged_returns: float ``(num_episodes,)``: each logged episode's return discounted by `gamma`
            (`Transitions.episode_returns`), the same episodes as `terms`.
        estimator: the estimator whose lower bound decides.
        gamma: the discount of both sides (recorded).
        undiscounted_returns: the logged episodes' undiscounted returns (recorded for people).
        skipped: estimator -> why it was not computed (recorded).
        confidence, samples, seed: of every `bootstrap_interval`.
        checkpoint: the selected checkpoint (recorded).

    Returns:
        A JSON-ready dict; ``verdict`` is ``promote`` only when ``estimates[estimator].low`` is
        finite and above ``logged.return_mean`` by more than `TIE_TOLERANCE` (relative, at least
        ``TIE_TOLERANCE`` absolute).
    """
    logged_returns = np.asarray(logged_returns, dtype=np.float64)
    logged_low, logged_high = bootstrap_interval(
        (logged_returns, None), confidence=confidence, samples=samples, seed=seed
    )
    logged = {"return_mean": float(logged_returns.mean()), "low": logged_low, "high": logged_high}
    if undiscounted_returns is not None:
        logged["undiscounted_return_mean"] = float(np.mean(undiscounted_returns))
    estimates = {}
    for name, value in terms.items():
        low, high = bootstrap_interval(value, confidence=confidence, samples=samples, seed=seed)
        estimates[name] = {"estimate": estimate_from_terms(value), "low": low, "high": high}
    chosen = estimates.get(estimator)
    if chosen is None:
        why = (skipped or {}).get(estimator, "it was not computed")
        verdict, reason = KEEP, f"no {estimator} estimate: {why}"
    elif not math.isfinite(chosen["low"]):
        verdict, reason = KEEP, f"the {estimator} estimate has no confidence interval (undefined on this data)"
    elif chosen["low"] > logged["return_mean"] + TIE_TOLERANCE * max(1.0, abs(logged["return_mean"])):
        verdict = PROMOTE
        reason = (
            f"{estimator} lower bound {chosen['low']:.4g} ({confidence:.0%} bootstrap) > logged return "
            f"{logged['return_mean']:.4g}"
        )
    else:
        verdict = KEEP
        reason = (
            f"{estimator} lower bound {chosen['low']:.4g} ({confidence:.0%} bootstrap) <= logged return "
            f"{logged['return_mean']:.4g}"
        )
    return {
        "verdict": verdict,
        "estimator": estimator,
        "reason": reason,
        "confidence": confidence,
        "bootstrap_samples": samples,
        "gamma": gamma,
        "episodes": int(len(logged_returns)),
        "checkpoint": checkpoint,
        "logged": logged,
        "estimates": estimates,
        "skipped": dict(skipped or {}),
    }


def metric_lines(report: Mapping[str, Any]) -> list[str]:
    """``name: value`` lines of `METRIC_NAMES` (non-finite values left out)."""
    chosen = report["estimates"].get(report["estimator"], {})
    values = {
        "promotion_logged_return": report["logged"]["return_mean"],
        "promotion_estimate": chosen.get("estimate", math.nan),
        "promotion_estimate_low": chosen.get("low", math.nan),
        "promotion_estimate_high": chosen.get("high", math.nan),
        "promotion_verdict": 1.0 if report["verdict"] == PROMOTE else 0.0,
    }
    return [f"{name}: {values[name]:.6g}" for name in METRIC_NAMES if math.isfinite(values[name])]


def write_report(path: Path, report: Mapping[str, Any]) -> Path:
    """Write `report` as JSON (non-finite floats as null)."""
    path.write_text(json.dumps(_finite(report), indent=2) + "\n")
    return path


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value
