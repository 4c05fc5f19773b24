#!/usr/bin/env python3
"""Benchmark the multi-host launcher: cluster bring-up and sampling throughput by host count.

    .venv/bin/python scripts/bench/bench_cluster.py [--image TAG] [--hosts 1 2 3] [--iterations 5]

For each host count, runs one PPO CartPole job over that many containers of the image on a docker
network (SageMaker local mode's layout, see scripts/multihost_job.py) and prints:

- bring-up: seconds from the moment the last container was started (`docker run -d` returned) to
  the moment the master saw every host alive in Ray (``all_alive_at`` in cluster.json);
- env steps/s: ``timesteps_total / time_total_s`` of the last training iteration (metric lines),
  with the default env runner count, which fills the cluster (CPUs of all hosts - 1).

All containers share this machine's cores, so more hosts add Ray processes, not CPU: the figure
shows the launcher's overhead, not the scaling a real multi-instance job gets.
"""

from __future__ import annotations

import argparse
import re
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/, for multihost_job

from multihost_job import MultiHostJob  # noqa: E402


def run(image: str, hosts: int, iterations: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        job = MultiHostJob(
            image, Path(tmp), {"stop.training_iteration": str(iterations)}, ["homogeneousCluster"] * hosts
        )
        try:
            for host in job.hosts[:-1]:
                job.start(host)
            time.sleep(2)
            job.start(job.hosts[-1])
            last_started = time.time()
            codes = job.wait_all(timeout=900)
            if set(codes.values()) != {0}:
                raise SystemExit(f"job over {hosts} host(s) failed: {codes}\n{job.all_logs()}")
            master = job.hosts[0]
            log = job.logs(master)
            steps = [int(v) for v in re.findall(r"^timesteps_total: (\d+)$", log, re.M)]
            seconds = [float(v) for v in re.findall(r"^time_total_s: ([\d.]+)$", log, re.M)]
            runners = re.search(r"with (\d+) env runner", log)
            return {
                "hosts": hosts,
                "env_runners": int(runners.group(1)) if runners else None,
                "bring_up_s": master.summary["all_alive_at"] - last_started,
                "steps_per_s": steps[-1] / seconds[-1],
            }
        finally:
            job.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[1])
    parser.add_argument("--image", default="sagemaker-ray-rl:latest-cpu")
    parser.add_argument("--hosts", type=int, nargs="+", default=[1, 2, 3])
    parser.add_argument("--iterations", type=int, default=5)
    args = parser.parse_args()
    print(f"{'hosts':>5} {'env runners':>11} {'bring-up s':>10} {'env steps/s':>11}")
    for hosts in args.hosts:
        r = run(args.image, hosts, args.iterations)
        print(f"{r['hosts']:>5} {r['env_runners']:>11} {r['bring_up_s']:>10.1f} {r['steps_per_s']:>11.0f}", flush=True)


if __name__ == "__main__":
    main()
