#!/usr/bin/env python
"""Collect the next offline dataset through a deployed endpoint (a live system's batch-transform step).

Steps ``--num-envs`` envs in lockstep; at every step all their observations go to ``POST
/invocations`` in one request (``{"instances": [...]}``, as batch transform sends a mini-batch of
records), the returned greedy actions are explored epsilon-greedily here, and the transitions, with
the behaviour probability of each action (``1 - ε + ε/n`` or ``ε/n``), the env's rewards and next
observations, are written in the offline dataset format (`sagemaker_ray_rl.offline.dataset`).

    python scripts/collect_http.py --url http://127.0.0.1:8080 --out DIR [--episodes 100]
        [--num-envs 20] [--epsilon 0.1] [--env CartPole-v1] [--max-episode-steps 200] [--seed 0]

It asks for the greedy action (the request has no ``"explore"``) and explores here, so the
behaviour probabilities are exact whatever the served model's own exploration is. To record a
model's own sampled actions instead, send ``"explore": true, "outputs": ["action_prob"]`` through a
batch transform and convert its output (``python -m sagemaker_ray_rl.offline.convert``, see the
README's batch RL section).
"""

from __future__ import annotations

import argparse
import json
import urllib.request
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--num-envs", type=int, default=20)
    parser.add_argument("--epsilon", type=float, default=0.1)
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--max-episode-steps", type=int, default=200)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()

    from sagemaker_ray_rl.offline.collect import EPSILON_GREEDY, collect

    def greedy(observations: np.ndarray) -> np.ndarray:
        body = json.dumps({"instances": observations.tolist()}).encode()
        request = urllib.request.Request(
            f"{args.url}/invocations", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            return np.array([p["action"] for p in json.load(response)["predictions"]])

    result = collect(
        args.out,
        env=args.env,
        env_config={"max_episode_steps": args.max_episode_steps},
        num_episodes=args.episodes,
        num_envs=args.num_envs,
        behaviour=EPSILON_GREEDY,
        epsilon=args.epsilon,
        greedy=greedy,
        seed=args.seed,
    )
    print(
        f"collected {result.num_episodes} episodes ({result.num_transitions} transitions) through "
        f"{args.url}: mean return {result.episode_return_mean:.2f}"
    )


if __name__ == "__main__":
    main()
