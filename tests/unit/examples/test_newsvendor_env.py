"""The basketball store env of examples/newsvendor_env.py: dynamics, reward and the base-stock baseline."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

sys.path.insert(0, str(Path(__file__).resolve().parents[3] / "examples"))

from newsvendor_env import NewsvendorEnv, base_stock_action, base_stock_level  # noqa: E402


def test_an_order_arrives_after_the_lead_time_and_is_paid_when_placed():
    env = NewsvendorEnv({"mean_demand": 0.0, "initial_inventory": 0})
    observation, _ = env.reset(seed=0)
    assert observation.shape == (10,) and env.observation_space.contains(observation)
    observation, reward, terminated, truncated, info = env.step(7)
    assert reward == -12.0 * 7 and info["ordered"] == 7 and not (terminated or truncated)
    assert list(observation[5:]) == [0, 0, 0, 0, 7]  # on hand 0, arriving in 4 days
    for day in range(1, 5):
        observation, reward, *_ = env.step(0)
        assert observation[5] == (7 if day == 4 else 0), day  # on hand on the morning of day 5
    assert reward == 0.0
    _, reward, *_ = env.step(0)
    assert reward == -1.5 * 7  # unsold balls cost holding


def test_sales_lost_sales_and_the_episode_length():
    env = NewsvendorEnv({"mean_demand": 10.0, "initial_inventory": 4})
    env.reset(seed=3)
    _, reward, _, _, info = env.step(0)
    sold, lost = info["sold"], info["lost"]
    assert sold == min(4, info["demand"]) and lost == info["demand"] - sold
    assert reward == pytest.approx(30.0 * sold - 6.0 * lost - 1.5 * (4 - sold))
    steps = 1
    while not env.step(0)[3]:
        steps += 1
    assert steps + 1 == 40


def test_base_stock_orders_up_to_the_critical_fractile_of_lead_time_demand():
    env = NewsvendorEnv()
    observation, _ = env.reset(seed=0)
    fractile = (30 - 12 + 6) / (30 - 12 + 6 + 1.5)
    level = base_stock_level(observation)
    assert level == int(stats.poisson.ppf(fractile, 6 * 10.0)) == 72
    observation[5:] = [20, 10, 10, 10, 10]  # inventory position 60
    assert base_stock_action(observation) == 12
    observation[5:] = [80, 0, 0, 0, 0]
    assert base_stock_action(observation) == 0


def test_bad_env_config_names_the_expected_keys():
    with pytest.raises(ValueError, match="unknown newsvendor env_config keys \\['demand'\\]"):
        NewsvendorEnv({"demand": 3})
    randomized = NewsvendorEnv({"randomize": True})
    first, _ = randomized.reset(seed=1)
    second, _ = randomized.reset(seed=2)
    assert not np.allclose(first[:5], second[:5])
