#!/usr/bin/env python
"""Batch RL on Box actions: collect uniform-random Pendulum-v1 episodes, train RLlib's CQL or IQL
offline (`offline.algorithm=cql|iql`), select a checkpoint by the model-based estimate ``mb``, and
evaluate the exported model and the random behaviour policy over the same greedy-evaluation episodes.

    .venv/bin/python scripts/bench/bench_offline_box.py [--algorithm cql|iql] [--episodes 100]
        [--num-updates 2000] [--evaluate-every 500] [--num-runs 1] [--checkpoint-episodes 10]
        [--final-episodes 100] [--seed 0] [--out DIR]

Prints one line per checkpoint (``ope_mb``, real mean return over ``--checkpoint-episodes``), the
exported model's and the random policy's mean return over ``--final-episodes`` (env seeds
``1_000_000 + i``), the seconds in ``algo.train()`` and the load average; writes ``results.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/, for devtools

from devtools import rollout  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--algorithm", default="cql", choices=("cql", "iql"))
    parser.add_argument("--episodes", type=int, default=100)
    parser.add_argument("--num-updates", type=int, default=2000)
    parser.add_argument("--evaluate-every", type=int, default=500)
    parser.add_argument("--num-runs", type=int, default=1)
    parser.add_argument("--checkpoint-episodes", type=int, default=10)
    parser.add_argument("--final-episodes", type=int, default=100)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import ray

    from sagemaker_ray_rl.inference.policy import Policy
    from sagemaker_ray_rl.offline.collect import collect, make_env
    from sagemaker_ray_rl.offline.runner import evaluate_in_env, train_offline
    from sagemaker_ray_rl.offline.settings import OfflineSettings

    out = args.out or Path(tempfile.mkdtemp(prefix="bench-offline-box-"))
    env = "Pendulum-v1"
    print(f"load average at start: {os.getloadavg()}", flush=True)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    collected = collect(
        out / "dataset", env=env, num_episodes=args.episodes, num_envs=min(args.episodes, 100), seed=args.seed
    )
    settings = OfflineSettings.from_hyperparameters(
        {
            "mode": "offline",
            "env": env,
            "offline.algorithm": args.algorithm,
            "offline.seed": args.seed,
            "offline.num_updates": args.num_updates,
            "offline.evaluate_every": args.evaluate_every,
            "offline.num_runs": args.num_runs,
            "offline.eval_episodes": args.checkpoint_episodes,
        }
    )
    start = time.perf_counter()
    result = train_offline(
        out / "dataset",
        settings,
        checkpoint_root=out / "checkpoints",
        output_data_dir=out / "output",
        model_dir=out / "model",
    )
    wall = time.perf_counter() - start
    eval_env = make_env(env, {})
    final = evaluate_in_env(Policy.load(out / "model"), eval_env, args.final_episodes, seed=1_000_000)
    rng = np.random.default_rng(args.seed)

    def reseed(*_) -> None:  # the random policy's sampler: one seed per episode, drawn from --seed
        eval_env.action_space.seed(int(rng.integers(2**31)))

    reseed()
    random_returns = rollout(
        eval_env, lambda _: eval_env.action_space.sample(), args.final_episodes, seed=1_000_000, on_episode=reseed
    )
    print(
        f"\ndataset: {collected.num_episodes} random episodes, {collected.num_transitions} transitions, "
        f"mean return {collected.episode_return_mean:.1f}"
    )
    print("run updates  ope_mb  real_return  learn_s")
    for r in result.rows:
        print(
            f"{r['run']:3d} {r['offline_updates']:7d} {r['ope_mb']:8.1f} {r['eval_return_mean']:12.1f} {r['learn_time_s']:8.1f}"
        )
    print(
        f"exported ({args.algorithm}, selected by mb: run {result.selected['run']}, {result.selected['offline_updates']} "
        f"updates): {args.final_episodes}-episode mean return {np.mean(final):.1f} ± {np.std(final):.1f}; "
        f"random policy {np.mean(random_returns):.1f} ± {np.std(random_returns):.1f}; rank correlation mb "
        f"{result.rank_correlations.get('mb', float('nan')):.2f}; learn {result.rows[-1]['learn_time_s']} s, wall {wall:.0f} s"
    )
    print(f"load average at end: {os.getloadavg()}")
    (out / "results.json").write_text(
        json.dumps(
            {
                "rows": [{k: v for k, v in r.items() if k != "checkpoint"} for r in result.rows],
                "final_return_mean": float(np.mean(final)),
                "final_return_std": float(np.std(final)),
                "random_return_mean": float(np.mean(random_returns)),
                "random_return_std": float(np.std(random_returns)),
                "rank_correlations": result.rank_correlations,
                "wall_s": round(wall, 1),
            },
            indent=2,
            default=str,
        )
        + "\n"
    )
    ray.shutdown()


if __name__ == "__main__":
    main()
