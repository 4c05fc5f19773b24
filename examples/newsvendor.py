"""Seed 002's basketball store: PPO learns how many balls to order each day, and is compared with the
classic base-stock (order-up-to) heuristic on the same 100 evaluation episodes.

The env is `newsvendor_env.NewsvendorEnv` (Poisson demand, 5-day lead time, holding and lost-sale
costs, profit reward); `env_config` hyperparameters change the store's numbers. Observations are in
raw units (dollars, balls), so RLlib's ``MeanStdFilter`` env-to-module connector normalises them; it
is saved in the checkpoint and the server applies it unchanged. Training sees the profit in hundreds
of dollars (Gymnasium's ``TransformReward``), so returns (and the metric lines) are about 50 rather
than 5,000: value targets of that size suit PPO's value-function loss and its clipping.

After training, the exported model is loaded exactly as ``serve`` loads it (`Policy.load`) and plays
``evaluation_episodes`` (default 100) greedy episodes. Two baselines play the same episodes (same
seeds, so the same demand): the base-stock policy at the critical-fractile level (the textbook
heuristic, `newsvendor_env.base_stock_level`) and at the level that did best in simulation on other
seeds (`newsvendor_env.tuned_base_stock_level`). Metric lines (``newsvendor_ppo_profit_mean``,
``newsvendor_base_stock_profit_mean``, ``newsvendor_tuned_base_stock_profit_mean``, ...) and
``/opt/ml/output/data/newsvendor_evaluation.json`` report them.
"""

import json

import gymnasium as gym
import numpy as np
from newsvendor_env import NewsvendorEnv, base_stock_action, base_stock_level, tuned_base_stock_level
from ray.rllib.connectors.env_to_module import MeanStdFilter

from sagemaker_ray_rl import Environment, build_experiment, register_env, train_and_export
from sagemaker_ray_rl.inference.policy import Policy

ENV_NAME = "newsvendor"
EVALUATION_SEED = 1_000_000  # evaluation episodes use seeds EVALUATION_SEED + i, never seen in training
REWARD_SCALE = 0.01  # training rewards in hundreds of dollars

DEFAULTS = {
    "algorithm": "PPO",
    "evaluation_episodes": 100,
    "rl.training.config.lr": 0.0003,
    "rl.training.config.gamma": 0.99,
    "rl.training.config.lambda_": 0.95,
    "rl.training.config.train_batch_size_per_learner": 4000,
    "rl.training.config.minibatch_size": 256,
    "rl.training.config.num_epochs": 10,
    "env_runners.num_envs_per_env_runner": 4,
    "debugging.seed": 0,
    "rl.training.stop.training_iteration": 100,
}


def play(env, act, episodes):
    """Profits (dollars) of `episodes` episodes of `act(observation) -> order`, episode i seeded
    ``EVALUATION_SEED + i``."""
    profits = []
    for i in range(episodes):
        observation, _ = env.reset(seed=EVALUATION_SEED + i)
        profit, done = 0.0, False
        while not done:
            observation, reward, terminated, truncated, _ = env.step(act(observation))
            profit += reward
            done = terminated or truncated
        profits.append(profit)
    return np.array(profits)


def main():
    register_env(
        ENV_NAME, lambda config: gym.wrappers.TransformReward(NewsvendorEnv(config), lambda r: r * REWARD_SCALE)
    )
    environment = Environment.from_environ()
    experiment = build_experiment(DEFAULTS, env=ENV_NAME)
    config = experiment.config.env_runners(
        env_to_module_connector=lambda env, spaces=None, device=None: MeanStdFilter()
    )
    if train_and_export(experiment, config, environment=environment).stopped:  # SIGTERM: checkpointed only
        return

    policy = Policy.load(environment.model_dir)  # what `serve` answers with
    env = NewsvendorEnv(dict(config.env_config))
    episodes = experiment.evaluation_episodes
    ppo = play(env, lambda obs: int(policy.compute(obs[None])["action"][0]), episodes)
    base_stock = play(env, lambda obs: base_stock_action(obs, env.max_order), episodes)
    level = base_stock_level(env.reset(seed=0)[0], env.lead_time)
    if env.config["randomize"]:  # one level cannot be tuned for every episode's own prices and demand
        tuned, tuned_base_stock = None, np.full(episodes, np.nan)
    else:  # tuned on seeds 0..99, evaluated on others
        tuned = tuned_base_stock_level(env, range(max(0, level - 30), level + 11))
        tuned_base_stock = play(env, lambda obs: int(np.clip(tuned - obs[5:].sum(), 0, env.max_order)), episodes)
    report = {
        "episodes": episodes,
        "base_stock_level": level,
        "tuned_base_stock_level": tuned,
        "newsvendor_ppo_profit_mean": float(ppo.mean()),
        "newsvendor_ppo_profit_std": float(ppo.std()),
        "newsvendor_base_stock_profit_mean": float(base_stock.mean()),
        "newsvendor_base_stock_profit_std": float(base_stock.std()),
        "newsvendor_tuned_base_stock_profit_mean": float(tuned_base_stock.mean()),
    }
    # Paired per-episode differences (same seeds, same demand): mean and its standard error.
    for name, baseline in (("base_stock", base_stock), ("tuned_base_stock", tuned_base_stock)):
        difference = ppo - baseline
        report[f"newsvendor_ppo_minus_{name}_mean"] = float(difference.mean())
        report[f"newsvendor_ppo_minus_{name}_stderr"] = float(difference.std(ddof=1) / np.sqrt(episodes))
    for name, value in report.items():
        if value is not None and value == value:  # no line for what was not measured (nan, None)
            print(f"{name}: {value:.2f}" if isinstance(value, float) else f"{name}: {value}")
    environment.output_data_dir.mkdir(parents=True, exist_ok=True)
    finite = {k: v for k, v in report.items() if v is None or v == v}  # JSON has no NaN
    (environment.output_data_dir / "newsvendor_evaluation.json").write_text(json.dumps(finite, indent=2) + "\n")


if __name__ == "__main__":
    main()
