#!/usr/bin/env python
"""The batch-RL acceptance benchmark: per seed, collect exactly 500 uniform-random CartPole episodes
(200-step limit), train DiscreteCQL offline, estimate every checkpoint off-policy, export the one
with the best chosen estimate, and evaluate it over 100 greedy episodes in the real env.

    .venv/bin/python scripts/bench/bench_offline.py [--seeds 0 1 2] [--num-updates 6000] [--evaluate-every 500]
        [--select dr] [--checkpoint-episodes 20] [--final-episodes 100] [--out DIR]
        [--algorithm cql|bc|marwil] [--lr 5e-4] [--lr-end 5e-5] [--cql-alpha 1]

Prints, per seed, one line per checkpoint (OPE estimates and real returns over
``--checkpoint-episodes``), the Spearman rank correlation of each estimator with the real return,
the exported checkpoint's 100-episode mean return, and the seconds spent in ``algo.train()``
(the acceptance budget: 10 minutes on 2 cores). Writes ``results.json`` to ``--out``, and each seed's
dataset as ``seed<N>/dataset.npz`` for ``scripts/bench/crosscheck_d3rlpy.py``.
Acceptance: mean return >= 195 for 3 of 3 seeds.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--num-updates", type=int, default=6000)
    parser.add_argument("--evaluate-every", type=int, default=500)
    parser.add_argument("--num-runs", type=int, default=5)
    parser.add_argument("--select", default="mb")
    parser.add_argument("--cql-alpha", type=float, default=1.0)
    parser.add_argument("--lr", type=float, default=5e-4)
    parser.add_argument("--lr-end", type=float, default=5e-5)
    parser.add_argument("--algorithm", default="cql", help="offline.algorithm: cql, bc or marwil")
    parser.add_argument("--fqe-updates", type=int, default=2000)
    parser.add_argument("--checkpoint-episodes", type=int, default=20)
    parser.add_argument("--final-episodes", type=int, default=100)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()

    import ray

    from sagemaker_ray_rl.inference.policy import Policy
    from sagemaker_ray_rl.offline.collect import collect, make_env
    from sagemaker_ray_rl.offline.runner import evaluate_in_env, train_offline
    from sagemaker_ray_rl.offline.settings import OfflineSettings

    out = args.out or Path(tempfile.mkdtemp(prefix="bench-offline-"))
    env_config = {"max_episode_steps": 200}
    print(f"load average at start: {os.getloadavg()}", flush=True)
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    results = []
    for seed in args.seeds:
        root = out / f"seed{seed}"
        collected = collect(
            root / "dataset", env="CartPole-v1", env_config=env_config, num_episodes=500, num_envs=100, seed=seed
        )
        write_npz(root / "dataset", root / "dataset.npz")  # for scripts/bench/crosscheck_d3rlpy.py
        settings = OfflineSettings.from_hyperparameters(
            {
                "mode": "offline",
                "env": "CartPole-v1",
                "env_config": env_config,
                "offline.seed": seed,
                "offline.num_updates": args.num_updates,
                "offline.evaluate_every": args.evaluate_every,
                "offline.num_runs": args.num_runs,
                "offline.select": args.select,
                "offline.cql_alpha": args.cql_alpha,
                "offline.lr": args.lr,
                "offline.lr_end": args.lr_end,
                "offline.algorithm": args.algorithm,
                "offline.fqe_updates": args.fqe_updates,
                "offline.eval_episodes": args.checkpoint_episodes,
            }
        )
        start = time.perf_counter()
        result = train_offline(
            root / "dataset",
            settings,
            checkpoint_root=root / "checkpoints",
            output_data_dir=root / "output",
            model_dir=root / "model",
        )
        wall = time.perf_counter() - start
        final = evaluate_in_env(
            Policy.load(root / "model"), make_env("CartPole-v1", env_config), args.final_episodes, seed=1_000_000 + seed
        )
        best_real = max((r.get("eval_return_mean", math.nan) for r in result.rows), default=math.nan)
        record = {
            "seed": seed,
            "dataset_episodes": collected.num_episodes,
            "dataset_return_mean": collected.episode_return_mean,
            "rows": [{k: v for k, v in r.items() if k != "checkpoint"} for r in result.rows],
            "selected_updates": result.selected["offline_updates"],
            "selected_run": result.selected["run"],
            "rank_correlations": result.rank_correlations,
            "final_return_mean": float(np.mean(final)),
            "final_return_std": float(np.std(final)),
            "best_checkpoint_return": best_real,
            "last_checkpoint_return": result.rows[-1].get("eval_return_mean", math.nan),
            "learn_time_s": result.rows[-1]["learn_time_s"],
            "wall_s": round(wall, 1),
        }
        results.append(record)
        print(
            f"\n=== seed {seed}: dataset {collected.num_episodes} episodes, mean return "
            f"{collected.episode_return_mean:.2f}"
        )
        print("run updates  ope_is  ope_wis  ope_pdis  ope_dm  ope_dr  ope_mb  real_return  learn_s")
        for r in result.rows:
            print(
                f"{r['run']:3d} {r['offline_updates']:7d} {r['ope_is']:7.2f} {r['ope_wis']:8.2f} {r['ope_pdis']:9.2f} "
                f"{r.get('ope_dm', math.nan):7.2f} {r.get('ope_dr', math.nan):7.2f} {r.get('ope_mb', math.nan):7.2f} "
                f"{r.get('eval_return_mean', math.nan):12.1f} {r['learn_time_s']:8.1f}"
            )
        print(
            "rank correlation (Spearman) with real return: "
            + ", ".join(f"{k} {v:.2f}" for k, v in result.rank_correlations.items())
        )
        print(
            f"selected by {args.select}: run {result.selected['run']}, {result.selected['offline_updates']} updates; "
            f"{args.final_episodes}-episode mean return {np.mean(final):.2f} ± {np.std(final):.2f} "
            f"(best checkpoint {best_real:.1f}, last {record['last_checkpoint_return']:.1f}); "
            f"learn {record['learn_time_s']} s, wall {wall:.0f} s",
            flush=True,
        )
    (out / "results.json").write_text(json.dumps(results, indent=2, default=str) + "\n")
    print(f"load average at end: {os.getloadavg()}")
    passed = sum(r["final_return_mean"] >= 195 for r in results)
    print(f"\n{passed} of {len(results)} seeds reached a mean return >= 195; results in {out / 'results.json'}")
    ray.shutdown()


def write_npz(dataset_dir: Path, path: Path) -> None:
    """The dataset as d3rlpy's MDPDataset arrays (observations, actions, rewards, terminals, timeouts)."""
    from sagemaker_ray_rl.offline.dataset import read_dataset

    data = read_dataset(dataset_dir)
    np.savez(
        path,
        observations=data.obs,
        actions=data.actions,
        rewards=data.rewards,
        terminals=data.terminateds.astype(np.float32),
        timeouts=data.truncateds.astype(np.float32),
    )


if __name__ == "__main__":
    main()
