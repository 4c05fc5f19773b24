"""Play episodes of a Gymnasium env, every action fetched from a policy server over HTTP.

    python scripts/play_http.py --url http://127.0.0.1:8080 --env CartPole-v1 --episodes 10

Each step sends ``POST /invocations`` with ``{"observation": obs}`` and applies the returned
``predictions[0].action``. Prints each episode's return and the mean; exits 1 when the mean is
below ``--min-return``. Needs gymnasium, numpy and requests, and ``devtools.py`` beside it (the
image has the packages; mount the folder: ``docker run --network host -v $PWD/scripts:/scripts:ro
IMAGE python /scripts/play_http.py ...``, as scripts/demo.sh does).
"""

from __future__ import annotations

import argparse
import sys

import gymnasium as gym
import numpy as np
import requests
from devtools import rollout


def play(url: str, env_id: str, episodes: int, seed: int) -> list[float]:
    """Returns of `episodes` episodes of `env_id` (seeds seed, seed+1, ...) played by the server."""
    with requests.Session() as session:

        def act(obs: np.ndarray):
            response = session.post(f"{url}/invocations", json={"observation": obs.tolist()}, timeout=30)
            response.raise_for_status()
            return response.json()["predictions"][0]["action"]

        return rollout(
            gym.make(env_id),
            act,
            episodes,
            seed,
            on_episode=lambda i, total: print(f"episode {i + 1}: return {total:.1f}", flush=True),
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8080")
    parser.add_argument("--env", default="CartPole-v1")
    parser.add_argument("--episodes", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--min-return", type=float, default=None, help="exit 1 when the mean return is below this")
    args = parser.parse_args()
    returns = play(args.url, args.env, args.episodes, args.seed)
    mean = float(np.mean(returns))
    print(f"mean return over {len(returns)} episodes of {args.env} played over HTTP: {mean:.1f}")
    if args.min_return is not None and mean < args.min_return:
        print(f"below the expected {args.min_return}", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    main()
