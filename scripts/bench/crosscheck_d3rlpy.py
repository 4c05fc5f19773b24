#!/usr/bin/env python
"""Cross-check the discrete offline learner against d3rlpy (an independent, maintained implementation).

Run with the d3rlpy venv's Python (d3rlpy 2.8.1 pins gymnasium 1.0.0, which conflicts with this
image's gymnasium 1.2.2, so it lives in its own venv, ``scripts/bench/setup_d3rlpy.sh``):

    .venv-d3rlpy/bin/python scripts/bench/crosscheck_d3rlpy.py --data DATASET.npz --algo cql --steps 3000 \
        [--alpha 1.0] [--lr 5e-4] [--batch-size 256] [--target-update 100] [--gamma 0.99] \
        [--episodes 100] [--seed 0] [--log-dir DIR]

``DATASET.npz`` (``seed<N>/dataset.npz``, which ``scripts/bench/bench_offline.py`` writes beside our Parquet dataset):
observations, actions, rewards, terminals, timeouts. Prints one JSON line: the algorithm, its
settings, and the mean/std greedy return over ``--episodes`` CartPole-v1 episodes (200-step limit).
d3rlpy's training logs go to ``--log-dir`` (default: a new temporary directory, never the
working directory: d3rlpy's own default is ``./d3rlpy_logs``).

A benchmark, not a test: CI would need a second venv with its own torch plus about two minutes of
d3rlpy and DiscreteCQL training side by side, more than the suite's budget allows for one check.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/, for devtools

from devtools import rollout  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--data", required=True)
    parser.add_argument("--algo", choices=("cql", "bcq"), default="cql")
    parser.add_argument("--steps", type=int, default=3000)
    parser.add_argument("--alpha", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--target-update", type=int, default=100)
    parser.add_argument("--gamma", type=float, default=0.99)
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--log-dir", default=None, help="d3rlpy's log directory (default: a new temporary one)")
    args = parser.parse_args()

    import d3rlpy
    import gymnasium as gym

    d3rlpy.seed(args.seed)
    raw = np.load(args.data)
    dataset = d3rlpy.dataset.MDPDataset(
        observations=raw["observations"],
        actions=raw["actions"],
        rewards=raw["rewards"],
        terminals=raw["terminals"],
        timeouts=raw["timeouts"],
        action_space=d3rlpy.constants.ActionSpace.DISCRETE,
    )
    encoder = d3rlpy.models.VectorEncoderFactory(hidden_units=[64, 64])
    common = dict(
        learning_rate=args.lr,
        batch_size=args.batch_size,
        gamma=args.gamma,
        target_update_interval=args.target_update,
        encoder_factory=encoder,
    )
    if args.algo == "cql":
        algo = d3rlpy.algos.DiscreteCQLConfig(alpha=args.alpha, **common).create(device="cpu:0")
    else:
        algo = d3rlpy.algos.DiscreteBCQConfig(**common).create(device="cpu:0")
    start = time.perf_counter()
    log_dir = args.log_dir or tempfile.mkdtemp(prefix="d3rlpy-logs-")
    algo.fit(
        dataset,
        n_steps=args.steps,
        n_steps_per_epoch=args.steps,
        show_progress=False,
        save_interval=10**9,
        logger_adapter=d3rlpy.logging.FileAdapterFactory(root_dir=log_dir),
    )
    seconds = time.perf_counter() - start
    env = gym.make("CartPole-v1", max_episode_steps=200)
    returns = rollout(
        env, lambda obs: int(algo.predict(obs[None].astype(np.float32))[0]), args.episodes, seed=1_000_000 + args.seed
    )
    print(
        json.dumps(
            {
                "library": f"d3rlpy {d3rlpy.__version__}",
                "algo": f"Discrete{args.algo.upper()}",
                "steps": args.steps,
                "seed": args.seed,
                "return_mean": float(np.mean(returns)),
                "return_std": float(np.std(returns)),
                "fit_s": round(seconds, 1),
                "log_dir": log_dir,
            }
        )
    )


if __name__ == "__main__":
    main()
