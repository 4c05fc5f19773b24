"""Benchmark: the `serve` container over HTTP vs the same RLModule's forward_inference in-process.

    .venv/bin/python scripts/bench_serving.py [--model build/demo/job/model] [--requests 2000]

Starts ``docker run --network host IMAGE serve`` on the model (default: the demo's; run
scripts/demo.sh first) and measures, from this process over loopback:
- cold start: ``docker run`` -> first 200 on /ping;
- GET /ping latency (sequential);
- POST /invocations with one observation: latency at concurrency 1 (sequential), requests/s at
  concurrency 1 and 4 (client threads), and one 1,024-observation batch request;
- in-process: `RLModule.forward_inference` on one observation and on 1,024, and our
  `Policy.compute_actions` (forward + greedy action), in this process with one torch thread.
The HTTP client (http.client, a new connection per request, as gunicorn's sync workers close
them) runs on the same 2 cores as the server. Results go to docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

OBS = [0.01, -0.02, 0.03, 0.04]


def docker_cli() -> str:
    return os.environ.get("DOCKER") or ("/usr/bin/docker" if os.path.exists("/usr/bin/docker") else "docker")


def request(port: int, method: str, path: str, body: bytes | None = None) -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        headers = {"Content-Type": "application/json"} if body is not None else {}
        conn.request(method, path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def latencies(fn, n: int) -> list[float]:
    out = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        out.append(time.perf_counter() - start)
    return out


def summary(name: str, seconds: list[float]) -> str:
    ms = np.array(seconds) * 1000
    return (f"{name:44s} p50 {np.percentile(ms, 50):7.3f} ms  p99 {np.percentile(ms, 99):7.3f} ms  "
            f"({len(ms)} calls, {len(ms) / sum(seconds):8.0f} calls/s sequential)")


def throughput(port: int, body: bytes, threads: int, seconds: float) -> float:
    count = [0] * threads
    stop = time.monotonic() + seconds

    def worker(i: int) -> None:
        while time.monotonic() < stop:
            status, _ = request(port, "POST", "/invocations", body)
            assert status == 200
            count[i] += 1

    pool = [threading.Thread(target=worker, args=(i,)) for i in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    return sum(count) / seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--image", default="sagemaker-ray-rl:latest-cpu")
    parser.add_argument("--model", type=Path, default=Path("build/demo/job/model"))
    parser.add_argument("--requests", type=int, default=2000)
    parser.add_argument("--port", type=int, default=8089)
    args = parser.parse_args()
    model = args.model.resolve()
    if not (model / "rllib_checkpoint.json").exists():
        sys.exit(f"no exported model in {model}: run scripts/demo.sh first or pass --model")

    import torch

    torch.set_num_threads(1)
    from ray.rllib.core.columns import Columns

    from sagemaker_ray_rl.policy import Policy

    policy = Policy.load(model)
    one = torch.tensor([OBS], dtype=torch.float32)
    batch = torch.tensor(np.tile(OBS, (1024, 1)), dtype=torch.float32)
    with torch.inference_mode():
        print(summary("in-process forward_inference, 1 obs", latencies(lambda: policy.module.forward_inference({Columns.OBS: one}), args.requests)))
        print(summary("in-process forward_inference, 1024 obs", latencies(lambda: policy.module.forward_inference({Columns.OBS: batch}), 200)))
    print(summary("in-process Policy.compute_actions, 1 obs", latencies(lambda: policy.compute_actions(one.numpy()), args.requests)))
    print(summary("in-process Policy.compute_actions, 1024 obs", latencies(lambda: policy.compute_actions(batch.numpy()), 200)))

    start = time.monotonic()
    container = subprocess.run(
        [docker_cli(), "run", "-d", "--rm", "--network", "host", "-e", f"SAGEMAKER_BIND_TO_PORT={args.port}",
         "-v", f"{model}:/opt/ml/model:ro", args.image, "serve"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()
    try:
        while True:
            try:
                if request(args.port, "GET", "/ping")[0] == 200:
                    break
            except OSError:
                time.sleep(0.02)
            if time.monotonic() - start > 120:
                sys.exit("serve did not answer /ping within 120 s")
        print(f"{'cold start: docker run -> first 200 on /ping':44s} {time.monotonic() - start:.2f} s")
        single = json.dumps({"observation": OBS}).encode()
        big = json.dumps({"instances": [OBS] * 1024}).encode()
        assert request(args.port, "POST", "/invocations", single)[0] == 200
        print(summary("HTTP GET /ping", latencies(lambda: request(args.port, "GET", "/ping"), args.requests)))
        print(summary("HTTP POST /invocations, 1 obs, concurrency 1", latencies(lambda: request(args.port, "POST", "/invocations", single), args.requests)))
        print(summary("HTTP POST /invocations, 1024 obs", latencies(lambda: request(args.port, "POST", "/invocations", big), 200)))
        for threads in (1, 4):
            print(f"{f'HTTP POST /invocations, 1 obs, concurrency {threads}':44s} {throughput(args.port, single, threads, 10):8.0f} requests/s")
    finally:
        subprocess.run([docker_cli(), "stop", container], capture_output=True)


if __name__ == "__main__":
    main()
