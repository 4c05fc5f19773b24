"""Promotion report: bootstrap intervals over episodes and the verdict against the logged return."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from sagemaker_ray_rl.contract.errors import HyperparameterError
from sagemaker_ray_rl.offline.promotion import (
    KEEP,
    PROMOTE,
    bootstrap_interval,
    metric_lines,
    promotion_report,
    write_report,
)
from sagemaker_ray_rl.offline.settings import OfflineSettings, promotion_estimator


def test_interval_of_a_mean_matches_the_normal_approximation():
    rng = np.random.default_rng(1)
    values = rng.normal(10.0, 4.0, size=400)
    low, high = bootstrap_interval((values, None), confidence=0.95, samples=2000, seed=3)
    half = 1.96 * values.std(ddof=1) / math.sqrt(len(values))
    assert low < values.mean() < high
    assert high - low == pytest.approx(2 * half, rel=0.15)
    assert (low, high) == bootstrap_interval((values, None), confidence=0.95, samples=2000, seed=3)  # seeded


def test_intervals_cover_the_true_mean_about_as_often_as_their_level():
    rng = np.random.default_rng(2)
    covered = 0
    for k in range(200):
        sample = rng.exponential(5.0, size=60)  # skewed, like episode returns
        low, high = bootstrap_interval((sample, None), confidence=0.9, samples=500, seed=k)
        covered += low <= 5.0 <= high
    assert 0.8 <= covered / 200 <= 0.97


def test_weighted_ratio_is_resampled_in_pairs():
    rng = np.random.default_rng(4)
    weights = rng.choice([0.0, 2.0, 4.0], size=300)
    returns = rng.normal(50.0, 10.0, size=300)
    low, high = bootstrap_interval((weights * returns, weights), samples=1000)
    estimate = (weights * returns).sum() / weights.sum()
    assert low < estimate < high and high - low < 10.0  # a ratio near 50, not a mean of products near 100
    assert all(math.isnan(x) for x in bootstrap_interval((np.zeros(10), np.zeros(10))))  # WIS undefined


def test_identical_episodes_give_a_point_interval():
    assert bootstrap_interval((np.full(20, 7.5), None)) == (7.5, 7.5)


def _report(estimate_values, logged, estimator="mb", **kwargs):
    return promotion_report(
        {"mb": (np.asarray(estimate_values, float), None), "dm": (np.full(len(logged), 1.0), None)},
        np.asarray(logged, float),
        estimator=estimator,
        gamma=0.99,
        samples=1000,
        **kwargs,
    )


def test_promotes_only_when_the_lower_bound_beats_the_logged_return():
    rng = np.random.default_rng(5)
    logged = rng.normal(20.0, 5.0, size=200)
    clearly_better = _report(rng.normal(60.0, 5.0, size=200), logged)
    assert clearly_better["verdict"] == PROMOTE
    assert clearly_better["estimates"]["mb"]["low"] > clearly_better["logged"]["return_mean"]
    assert "lower bound" in clearly_better["reason"] and "> logged return" in clearly_better["reason"]
    # a higher point estimate from few, noisy episodes: its lower bound is under the logged return
    noisy = _report(np.array([0.0, 0.0, 0.0, 0.0, 200.0, 0.0, 0.0, 0.0, 0.0, 0.0]), np.full(10, 15.0))
    assert noisy["estimates"]["mb"]["estimate"] > 15.0 and noisy["verdict"] == KEEP
    assert "<= logged return" in noisy["reason"]
    assert _report(rng.normal(20.0, 5.0, size=200), logged)["verdict"] == KEEP


def test_an_estimate_tied_with_the_logged_return_up_to_rounding_keeps():
    """Every logged episode at the best return there is (CartPole's 500 steps at γ 0.99): the same
    sum in another order, as the mb rollout adds it, is 4e-14 above the logged return. No candidate
    can beat that data, and rounding must not promote one."""
    best = 0.0
    for t in range(500):  # the mb rollout's order: step by step
        best += 0.99**t * 1.0
    logged = np.add.reduceat(np.ones(500) * 0.99 ** np.arange(500), [0])[0]  # Transitions.episode_returns'
    assert best > logged  # the rounding the verdict must not read as better
    report = _report(np.full(40, best), np.full(40, logged))
    assert report["verdict"] == KEEP and "<= logged return" in report["reason"], report["reason"]
    # a real margin still promotes
    assert _report(np.full(40, logged + 1e-6), np.full(40, logged))["verdict"] == PROMOTE


def test_a_skipped_estimator_keeps_the_logged_policy_and_says_why():
    report = promotion_report(
        {"dm": (np.full(5, 100.0), None)},
        np.full(5, 1.0),
        estimator="wis",
        gamma=0.99,
        skipped={"wis": "the dataset has no behaviour probabilities"},
    )
    assert (
        report["verdict"] == KEEP and report["reason"] == "no wis estimate: the dataset has no behaviour probabilities"
    )


def test_metric_lines_and_json(tmp_path):
    report = _report(np.full(30, 40.0) + np.arange(30) % 3, np.full(30, 10.0) + np.arange(30) % 2, checkpoint="c")
    lines = metric_lines(report)
    assert lines[0] == "promotion_logged_return: 10.5"
    assert [line.split(":")[0] for line in lines] == [
        "promotion_logged_return",
        "promotion_estimate",
        "promotion_estimate_low",
        "promotion_estimate_high",
        "promotion_verdict",
    ]
    assert lines[-1] == "promotion_verdict: 1"
    written = json.loads(write_report(tmp_path / "promotion.json", report).read_text())
    assert written["verdict"] == "promote" and written["episodes"] == 30 and written["checkpoint"] == "c"
    assert set(written["estimates"]) == {"mb", "dm"} and written["logged"]["low"] <= 10.5 <= written["logged"]["high"]


def test_promotion_settings():
    base = {"mode": "offline"}
    assert OfflineSettings.from_hyperparameters(base).promote_by == "select"
    assert promotion_estimator("mb", "select") == "mb"
    assert promotion_estimator("last", "select") == "mb" and promotion_estimator("last", "select", model=False) == "dm"
    assert promotion_estimator("mb", "dr") == "dr"
    with pytest.raises(
        HyperparameterError, match=r"hyperparameter 'offline.confidence': expected a number in \(0, 1\)"
    ):
        OfflineSettings.from_hyperparameters({**base, "offline.confidence": 1})
    with pytest.raises(HyperparameterError, match="offline.promote_by"):
        OfflineSettings.from_hyperparameters({**base, "offline.promote_by": "best"})
    with pytest.raises(HyperparameterError, match="offline.model_updates"):
        OfflineSettings.from_hyperparameters(
            {**base, "offline.select": "last", "offline.promote_by": "mb", "offline.model_updates": 0}
        )
