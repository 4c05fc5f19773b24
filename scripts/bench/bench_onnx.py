"""Time the ONNX export of checkpoints and compare the exported graph with the torch policy.

    PYTHONPATH=src python scripts/bench/bench_onnx.py MODEL_DIR [MODEL_DIR ...] [--repeats 200]

Per model dir: seconds to export every module (`export_onnx`, its 256-observation parity check
included), graph size, then per module the median time of a greedy answer for 1 and for 1,024
observations sampled from the observation space, in-process on one thread: `Policy.compute`
(what `serve` runs) and ONNX Runtime's ``session.run`` on the exported graph. Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def median_us(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e6


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("model_dirs", nargs="+", type=Path)
    parser.add_argument("--repeats", type=int, default=200)
    args = parser.parse_args()

    import onnxruntime as ort
    import torch
    import tree
    from ray.rllib.utils.spaces.space_utils import get_base_struct_from_space

    from sagemaker_ray_rl.inference.onnx_export import export_onnx
    from sagemaker_ray_rl.inference.policy import Policy

    torch.set_num_threads(1)
    print(
        "| model | module | export s | graph kB | torch 1 obs µs | ORT 1 obs µs | torch 1,024 obs µs | ORT 1,024 obs µs |"
    )
    print("| --- | --- | --- | --- | --- | --- | --- | --- |")
    for model_dir in args.model_dirs:
        out = Path(tempfile.mkdtemp(prefix="bench-onnx-"))
        start = time.perf_counter()
        report = export_onnx(model_dir, out)
        export_s = time.perf_counter() - start
        policy = Policy.load(model_dir)
        for module_id, path in report.exported.items():
            sidecar = json.loads(path.with_suffix(".json").read_text())
            options = ort.SessionOptions()
            options.intra_op_num_threads = 1
            options.inter_op_num_threads = 1
            session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
            pipeline = policy.pipeline(module_id)
            struct = get_base_struct_from_space(pipeline.observation_space)
            row = [model_dir.name, module_id, f"{export_s:.1f}", f"{path.stat().st_size / 1024:.0f}"]
            timings = []
            for size in (1, 1024):
                space = pipeline.observation_space
                space.seed(0)
                samples = [space.sample() for _ in range(size)]
                leaves = [np.stack([np.asarray(x) for x in col]) for col in zip(*(tree.flatten(s) for s in samples))]
                feed = {spec["name"]: leaf.astype(spec["dtype"]) for spec, leaf in zip(sidecar["inputs"], leaves)}
                batch = leaves[0] if len(leaves) == 1 else tree.unflatten_as(struct, leaves)
                timings.append(
                    median_us(lambda b=batch, m=module_id, p=policy: p.compute(b, module_id=m), args.repeats)
                )
                timings.append(median_us(lambda f=feed, s=session: s.run(["action"], f), args.repeats))
            row += [f"{t:,.0f}" for t in timings]
            print("| " + " | ".join(row) + " |", flush=True)
        for module_id, reason in report.not_exported.items():
            print(f"| {model_dir.name} | {module_id} | {export_s:.1f} | not exported: {reason} | | | | |", flush=True)


if __name__ == "__main__":
    sys.exit(main())
