#!/usr/bin/env python
"""Benchmark: loading a policy, and its connector pipelines' two paths, in-process (no HTTP).

    .venv/bin/python scripts/bench/bench_inference.py --model DIR [--observations 1024] [--repeats 20]

DIR is a checkpoint (``algo.save()`` or an exported model). Prints, with one torch thread:
- the RLlib import, then `Policy.load` (RLModule and connector pipelines restored, no ``ray.init``);
- for one request of ``--observations`` observations (the observation space's samples, seed 0):
  the module's ``forward_inference`` alone, the batched path (`InferencePipeline`'s whole batch at
  once, when the checkpoint's connectors allow it) and the episode path (one ``SingleAgentEpisode``
  per observation through RLlib's connectors, as ``SingleAgentEnvRunner`` does), median of
  ``--repeats`` calls each.
Results go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path


def median_ms(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--observations", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=20)
    args = parser.parse_args()

    start = time.perf_counter()
    import numpy as np
    import torch
    from ray.rllib.core.columns import Columns

    from sagemaker_ray_rl.inference.policy import Policy

    imported = time.perf_counter() - start
    torch.set_num_threads(1)
    start = time.perf_counter()
    policy = Policy.load(args.model)
    loaded = time.perf_counter() - start
    pipeline = policy.pipeline(None)
    space = pipeline.observation_space
    space.seed(0)
    obs = np.stack([np.asarray(space.sample(), dtype=np.float32) for _ in range(args.observations)])
    n = args.observations
    print(f"model {args.model}: spaces {space} -> {pipeline.action_space}")
    print(f"connectors allow the batched path: {pipeline.batched}")
    print(f"import (numpy, torch, RLlib, the package): {imported:.2f} s; Policy.load: {loaded:.2f} s")
    with torch.inference_mode():
        forward = median_ms(
            lambda: pipeline.module.forward_inference({Columns.OBS: torch.from_numpy(obs)}), args.repeats
        )
        rows = [("forward_inference alone", forward)]
        if pipeline.batched:
            rows.append(("batched path", median_ms(lambda: pipeline._batched(obs, False, None), args.repeats)))
        rows.append(("episode path", median_ms(lambda: pipeline._episodes(obs, False), args.repeats)))
    print(f"| {n:,} observations, one call | median | per observation |")
    print("| --- | --- | --- |")
    for name, ms in rows:
        print(f"| {name} | {ms:.1f} ms | {ms / n * 1000:.1f} us |")


if __name__ == "__main__":
    main()
