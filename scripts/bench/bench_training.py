"""Benchmark: training to a mean return of 450 in the container vs the same RLlib config in a venv.

    .venv/bin/python scripts/bench/bench_training.py [--repeats 2] [--image sagemaker-ray-rl:latest-cpu]

Runs, alternating so that both see the same machine load:
- container: ``docker run --rm -v JOB:/opt/ml IMAGE train`` with the demo's hyperparameters
  (PPO, CartPole-v1, lr 3e-4, 6 epochs, 1 env runner, seed 0), stop at mean return 450 or 40
  iterations; wall time from ``docker run`` to exit (container start, toolkit, Tune, export);
- raw RLlib: a fresh Python process in this venv running ``config.build_algo()`` and
  ``algo.train()`` until the same stop, then ``algo.save()``; wall time of the process.
Prints one line per run and the ratio of the medians. Results go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/, for devtools

from devtools import docker_cli, write_job  # noqa: E402

HYPERPARAMETERS = {
    "algorithm": "PPO",
    "env": "CartPole-v1",
    "num_env_runners": "1",
    "rl.training.config.lr": "0.0003",
    "rl.training.config.num_epochs": "6",
    "debugging.seed": "0",
    "stop.episode_return_mean": "450",
    "stop.training_iteration": "40",
}

RAW_SCRIPT = """
import json, sys, time
start = time.time()
import ray
from ray.rllib.algorithms.ppo import PPOConfig
config = (
    PPOConfig().environment("CartPole-v1").env_runners(num_env_runners=1)
    .training(lr=0.0003, num_epochs=6).debugging(seed=0)
)
ray.init(address="local")  # a new local instance, never a cluster that another process left here
algo = config.build_algo()
iterations, mean = 0, float("nan")
while True:
    result = algo.train()
    iterations += 1
    mean = result["env_runners"].get("episode_return_mean", float("nan"))
    if mean >= 450 or iterations >= 40:
        break
algo.save(sys.argv[1])
algo.stop()
ray.shutdown()
print(json.dumps({"iterations": iterations, "return": mean, "inner_s": time.time() - start}))
"""


def run_container(image: str, work: Path) -> dict:
    job = write_job(work / f"job-{time.monotonic_ns()}", HYPERPARAMETERS)
    start = time.monotonic()
    proc = subprocess.run(
        [docker_cli(), "run", "--rm", "-v", f"{job}:/opt/ml", image, "train"], capture_output=True, text=True
    )
    wall = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"container training failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    metrics = json.loads((job / "model" / "metadata.json").read_text())["metrics"]
    return {"iterations": metrics["training_iteration"], "return": metrics["episode_return_mean"], "wall_s": wall}


def run_raw(work: Path) -> dict:
    script = work / "raw_rllib.py"
    script.write_text(RAW_SCRIPT)
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0"}
    start = time.monotonic()
    proc = subprocess.run(
        [sys.executable, str(script), str(work / f"ckpt-{time.monotonic_ns()}")],
        capture_output=True,
        text=True,
        env=env,
    )
    wall = time.monotonic() - start
    if proc.returncode != 0:
        sys.exit(f"raw RLlib training failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {"iterations": result["iterations"], "return": result["return"], "wall_s": wall}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default="sagemaker-ray-rl:latest-cpu")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()
    runs: dict[str, list[dict]] = {"container": [], "raw": []}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        for repeat in range(args.repeats):
            order = ["container", "raw"] if repeat % 2 == 0 else ["raw", "container"]
            for kind in order:
                result = run_container(args.image, work) if kind == "container" else run_raw(work)
                runs[kind].append(result)
                print(
                    f"{kind:9s} run {repeat + 1}: {result['wall_s']:6.1f} s wall, {result['iterations']} iterations, "
                    f"mean return {result['return']:.1f}, {result['wall_s'] / result['iterations']:.2f} s/iteration",
                    flush=True,
                )
    median = {kind: statistics.median(r["wall_s"] for r in rs) for kind, rs in runs.items()}
    per_iteration = {kind: statistics.median(r["wall_s"] / r["iterations"] for r in rs) for kind, rs in runs.items()}
    print(
        f"median wall to stop: container {median['container']:.1f} s, raw RLlib {median['raw']:.1f} s, "
        f"ratio {median['container'] / median['raw']:.2f}"
    )
    print(
        f"median wall per iteration: container {per_iteration['container']:.2f} s, raw RLlib "
        f"{per_iteration['raw']:.2f} s, ratio {per_iteration['container'] / per_iteration['raw']:.2f}"
    )


if __name__ == "__main__":
    main()
