#!/usr/bin/env python
"""Multi-model endpoint: does loading a slow (big) model stall invocations of a loaded one?

    PYTHONPATH=src .venv/bin/python scripts/bench/bench_mme_load_stall.py SMALL_CHECKPOINT [--hidden 1024]
        [--layers 4] [--workers 1] [--out DIR]

Builds a big PPO CartPole policy (``--layers`` hidden layers of ``--hidden`` units, untrained,
saved with ``algo.save()`` in a subprocess), starts ``serve`` with ``SAGEMAKER_MULTI_MODEL=true``
(one worker by default, so the load and the invocations share it), loads SMALL_CHECKPOINT, times
300 invocations of it alone, then times invocations of it while ``POST /models`` loads the big one
(one connection, back to back), and prints p50 / p99 / max of both and the load's seconds.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import requests

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/, for devtools
from devtools import free_port, wait_for_ping  # noqa: E402

BUILD = """
import sys, ray
from ray.rllib.algorithms.ppo import PPOConfig
ray.init(address="local", num_cpus=1, include_dashboard=False, log_to_driver=False)
hidden = [int(sys.argv[2])] * int(sys.argv[3])
algo = (PPOConfig().environment("CartPole-v1").env_runners(num_env_runners=0)
        .rl_module(model_config={"fcnet_hiddens": hidden}).build_algo())
algo.save(sys.argv[1])
algo.stop()
ray.shutdown()
"""
BODY = {"instances": [[0.01, -0.02, 0.03, 0.04]]}


def stats(latencies: list[float]) -> str:
    ms = np.asarray(latencies) * 1000
    return f"n={len(ms)} p50 {np.percentile(ms, 50):.1f} ms, p99 {np.percentile(ms, 99):.1f} ms, max {ms.max():.1f} ms"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("small", type=Path)
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="bench-mme-"))
    big = out / "big"
    if not (big / "rllib_checkpoint.json").exists():
        tick = time.perf_counter()
        subprocess.run([sys.executable, "-c", BUILD, str(big), str(args.hidden), str(args.layers)], check=True)
        print(f"built the big policy in {time.perf_counter() - tick:.1f} s", flush=True)
    size = sum(p.stat().st_size for p in big.rglob("*") if p.is_file())
    print(f"big policy: {args.layers} x {args.hidden} hidden, {size / 2**20:.0f} MB on disk", flush=True)

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    env = dict(
        os.environ,
        SAGEMAKER_MULTI_MODEL="true",
        SAGEMAKER_BIND_TO_PORT=str(port),
        SAGEMAKER_MODEL_SERVER_WORKERS=str(args.workers),
        SAGEMAKER_BASE_DIR=str(out / "opt_ml"),
    )
    log = (out / "serve.log").open("w")
    server = subprocess.Popen([str(Path(sys.executable).parent / "serve")], env=env, stdout=log, stderr=log)
    try:

        def alive() -> None:
            assert server.poll() is None, (out / "serve.log").read_text()

        wait_for_ping(url, timeout=120, check=alive)
        session = requests.Session()
        answer = session.post(f"{url}/models", json={"model_name": "small", "url": str(args.small)}, timeout=120)
        assert answer.status_code == 200, answer.text
        for _ in range(20):
            session.post(f"{url}/models/small/invoke", json=BODY, timeout=30)
        alone = []
        for _ in range(300):
            tick = time.perf_counter()
            assert session.post(f"{url}/models/small/invoke", json=BODY, timeout=30).status_code == 200
            alone.append(time.perf_counter() - tick)
        print(f"invocations alone:          {stats(alone)}", flush=True)

        loaded: dict[str, object] = {}

        def load_big() -> None:
            tick = time.perf_counter()
            reply = requests.post(f"{url}/models", json={"model_name": "big", "url": str(big)}, timeout=600)
            loaded.update(status=reply.status_code, seconds=time.perf_counter() - tick, body=reply.json())

        thread = threading.Thread(target=load_big)
        during = []
        thread.start()
        while thread.is_alive():
            tick = time.perf_counter()
            assert session.post(f"{url}/models/small/invoke", json=BODY, timeout=30).status_code == 200
            during.append(time.perf_counter() - tick)
        thread.join()
        print(f"invocations during the load: {stats(during)}", flush=True)
        print(
            f"load of the big policy: {loaded['status']} in {loaded['seconds']:.2f} s "
            f"(server: {json.dumps({k: loaded['body'].get(k) for k in ('loadSeconds', 'memoryBytesMeasured')})})",
            flush=True,
        )
        print(f"load average: {os.getloadavg()[0]:.2f}", flush=True)
    finally:
        server.terminate()
        server.wait(timeout=60)
        log.close()


if __name__ == "__main__":
    main()
