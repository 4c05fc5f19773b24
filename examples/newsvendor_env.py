"""The basketball store of seed 002: a multi-period newsvendor with a 5-day lead time, as a Gymnasium env.

Every day the store orders basketballs from its supplier; an order arrives `lead_time` days later.
Demand is Poisson; unmet demand is lost (and costs goodwill); unsold balls stay in the store and cost
holding. This is the multi-period newsvendor of Balaji et al. 2019, "ORL: Reinforcement Learning
Benchmarks for Online Stochastic Optimization Problems" (arXiv:1911.10641), section 3.1, with the
lost-sales dynamics of the seed (balls keep their value while in the store).

One day (`step`), in this order:

1. the agent orders ``action`` balls (paid now, ``cost`` each); they arrive ``lead_time`` days later;
2. demand ``D ~ Poisson(mean_demand)`` is served from on-hand inventory; the rest is lost;
3. reward (profit, dollars) = ``price * sold - cost * ordered - holding_cost * left - lost_sale_penalty * lost``;
4. overnight, the order due tomorrow morning joins the on-hand inventory.

Observation (``Box(10,)`` float32; raw units, normalise them with a connector such as RLlib's
``MeanStdFilter``): ``[price, cost, holding_cost, lost_sale_penalty, mean_demand, on_hand,
in_transit_1, ..., in_transit_4]``, where ``in_transit_i`` arrives in ``i`` days (an order placed
today arrives in ``lead_time`` = 5 days and shows as ``in_transit_4`` tomorrow).
Action: ``Discrete(max_order + 1)``, the number of balls ordered today.
An episode is ``horizon`` days (40, as in ORL) and ends by truncation.

With ``randomize=True`` every episode draws new prices, costs and demand (ORL's setting); by default
the store's numbers are fixed (``env_config`` overrides any of them).
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
from scipy import stats

DEFAULTS: dict[str, Any] = {
    "price": 30.0,  # dollars per ball sold
    "cost": 12.0,  # dollars per ball ordered
    "holding_cost": 1.5,  # dollars per ball left in the store at the end of a day
    "lost_sale_penalty": 6.0,  # dollars of goodwill per unmet unit of demand
    "mean_demand": 10.0,  # balls per day (Poisson mean)
    "lead_time": 5,  # days from order to arrival
    "max_order": 40,  # most balls one order can hold
    "horizon": 40,  # days per episode
    "initial_inventory": 30,  # balls on hand on day 0
    "randomize": False,  # draw price, costs and demand per episode (ORL's setting)
}


class NewsvendorEnv(gym.Env):
    """Multi-period newsvendor (basketball store) with lead time and lost sales.

    Args:
        config: RLlib's ``env_config``; any key of `DEFAULTS`.

    Raises:
        ValueError: a key not in `DEFAULTS`, or a lead time below 1.
    """

    metadata: dict[str, Any] = {"render_modes": []}

    def __init__(self, config: dict[str, Any] | None = None):
        unknown = set(config or {}) - set(DEFAULTS)
        if unknown:
            raise ValueError(
                f"unknown newsvendor env_config keys {sorted(unknown)}; expected some of {sorted(DEFAULTS)}"
            )
        self.config = {**DEFAULTS, **(config or {})}
        if int(self.config["lead_time"]) < 1:
            raise ValueError(f"lead_time must be >= 1 day, got {self.config['lead_time']!r}")
        self.lead_time = int(self.config["lead_time"])
        self.max_order = int(self.config["max_order"])
        self.horizon = int(self.config["horizon"])
        size = 6 + self.lead_time - 1
        self.observation_space = gym.spaces.Box(0.0, np.inf, shape=(size,), dtype=np.float32)
        self.action_space = gym.spaces.Discrete(self.max_order + 1)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        c = self.config
        if c["randomize"]:  # ORL's ranges (arXiv:1911.10641, section 3.1)
            price = self.np_random.uniform(1, 100)
            cost = self.np_random.uniform(1, price)
            self.params = np.array(
                [
                    price,
                    cost,
                    self.np_random.uniform(0, min(cost, 5)),
                    self.np_random.uniform(0, 10),
                    self.np_random.uniform(0, 20),
                ]
            )
        else:
            self.params = np.array([c["price"], c["cost"], c["holding_cost"], c["lost_sale_penalty"], c["mean_demand"]])
        self.on_hand = float(c["initial_inventory"])
        self.in_transit = np.zeros(self.lead_time - 1)  # in_transit[i] arrives in i + 1 days
        self.day = 0
        return self._observation(), {}

    def _observation(self) -> np.ndarray:
        return np.concatenate([self.params, [self.on_hand], self.in_transit]).astype(np.float32)

    def step(self, action):
        price, cost, holding, penalty, mean_demand = self.params
        ordered = int(np.clip(np.asarray(action).item(), 0, self.max_order))
        demand = int(self.np_random.poisson(mean_demand))
        sold = min(self.on_hand, demand)
        lost = demand - sold
        self.on_hand -= sold
        reward = price * sold - cost * ordered - holding * self.on_hand - penalty * lost
        pipeline = np.append(self.in_transit, ordered)  # overnight: tomorrow's delivery arrives
        self.on_hand += pipeline[0]
        self.in_transit = pipeline[1:]
        self.day += 1
        info = {"demand": demand, "sold": sold, "lost": lost, "ordered": ordered}
        return self._observation(), float(reward), False, self.day >= self.horizon, info


def base_stock_level(observation: np.ndarray, lead_time: int = DEFAULTS["lead_time"]) -> int:
    """The order-up-to level of the critical-fractile base-stock heuristic for this day's parameters.

    Classic newsvendor critical fractile (e.g. Zipkin, "Foundations of Inventory Management", 2000,
    ch. 6; the baseline of Balaji et al. 2019): underage cost ``cu = price - cost + lost_sale_penalty``
    (margin and goodwill lost per unit short), overage cost ``co = holding_cost`` (per unit per day);
    the level ``S`` is the ``cu / (cu + co)`` quantile of demand over the protection period of
    ``lead_time + 1`` days, which is Poisson with mean ``(lead_time + 1) * mean_demand``.

    Args:
        observation: a `NewsvendorEnv` observation, shape (10,) for the default lead time.
        lead_time: the env's lead time in days.

    Returns:
        S in balls (int).
    """
    price, cost, holding, penalty, mean_demand = (float(v) for v in observation[:5])
    underage, overage = price - cost + penalty, holding
    fractile = underage / (underage + overage) if underage + overage > 0 else 0.5
    return int(stats.poisson.ppf(fractile, (lead_time + 1) * mean_demand))


def base_stock_action(observation: np.ndarray, max_order: int = DEFAULTS["max_order"]) -> int:
    """Order up to `base_stock_level`: ``S - inventory position`` (on hand plus everything ordered
    and not yet arrived), clipped to ``[0, max_order]``.

    Args:
        observation: a `NewsvendorEnv` observation (shape (6 + lead_time - 1,), float32).
        max_order: the env's ``max_order``.

    Returns:
        Balls to order today (int).
    """
    lead_time = observation.shape[0] - 5
    position = float(observation[5:].sum())
    return int(np.clip(base_stock_level(observation, lead_time) - position, 0, max_order))


def tuned_base_stock_level(env: NewsvendorEnv, levels: range, episodes: int = 100, seed: int = 0) -> int:
    """The base-stock level with the highest mean profit over `episodes` simulated episodes (seeds
    ``seed + i``): the heuristic tuned by simulation, a stronger baseline than the critical fractile
    for lost sales with a long lead time (Zipkin, "Old and New Methods for Lost-Sales Inventory
    Systems", Operations Research 56(5), 2008). Fixed parameters only (``randomize=False``).

    Returns:
        S in balls (int).
    """

    def profit(level: int) -> float:
        total = 0.0
        for i in range(episodes):
            observation, _ = env.reset(seed=seed + i)
            done = False
            while not done:
                order = int(np.clip(level - observation[5:].sum(), 0, env.max_order))
                observation, reward, terminated, truncated, _ = env.step(order)
                total += reward
                done = terminated or truncated
        return total / episodes

    return max(levels, key=profit)
