#!/usr/bin/env python
"""The production loop at full size: a served policy logs 500 CartPole episodes through SageMaker
data capture, the captures convert to a dataset, an offline job with the image's defaults trains on
it and says whether to promote, and the promoted policy plays 100 greedy episodes in the real env.

    nice -n 5 unshare -n /tmp/netns-run.sh .venv/bin/python scripts/bench/bench_loop.py --out DIR
        [--episodes 500] [--greedy 0.25] [--seed 0] [--final-episodes 100] [--served CHECKPOINT]
        [--offline '{"offline.num_updates": 500}']

Steps:

1. The served policy: PPO on CartPole-v1 (scripts/demo.sh's lr 3e-4 and 6 epochs, else RLlib's
   defaults; seeded, sampling in the driver), trained until its greedy
   action scores >= 190 over 10 episodes of the 200-step task (at most 20 iterations), saved with
   ``algo.save`` and served by the `serve` command (gunicorn) on a loopback port (``--served``:
   serve that model dir instead).
2. The logged (behaviour) policy: every step the client asks the endpoint for the greedy action
   (``"explore": false``), takes it with probability ``--greedy`` and otherwise a uniform random
   action (which may be the greedy one). The behaviour probability of the action taken is
   ``greedy * [a == greedy action] + (1 - greedy) / n``, 0.625 or 0.375 at 0.25 on CartPole's 2
   actions; the endpoint's answer knows nothing of it, so the client logs the action it took and
   this probability on the rewards line (``"action"``, ``"action_prob"``, `convert_capture`).
   50 envs step in lockstep, one request per step for all live envs; every request and answer is
   written as SageMaker's data capture writes it (hourly ``capture.jsonl`` files; records alternate
   the JSON and BASE64 encodings).
3. `convert_capture` -> the dataset; the logged policy's observed mean return is its episodes' mean.
4. The offline job as the image runs it (the `train` command, ``mode=offline``, no ``offline.*``
   hyperparameter: the defaults; ``--offline`` adds some) -> ``promotion.json``.
5. The exported model (`Policy.load`) plays ``--final-episodes`` greedy episodes of the 200-step task
   (env seeds 1,000,000 + ...), never used before.

Prints each figure and writes ``results.json`` to ``--out``. Run it in its own network namespace
(Ray and the server bind loopback ports).
"""

from __future__ import annotations

import argparse
import base64
import datetime
import json
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # scripts/, for devtools
from devtools import free_port, job_environ, wait_for_ping, write_job  # noqa: E402

ENV_CONFIG = {"max_episode_steps": 200}
NUM_ENVS = 50
BIN = Path(sys.executable).parent


def train_served_policy(out: Path, seed: int) -> tuple[Path, float, int]:
    """PPO until greedy >= 190 over 10 episodes (at most 20 iterations): (checkpoint, score, iterations)."""
    import ray
    from ray.rllib.algorithms.ppo import PPOConfig

    from sagemaker_ray_rl.inference.policy import Policy
    from sagemaker_ray_rl.offline.collect import make_env
    from sagemaker_ray_rl.offline.runner import evaluate_in_env

    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    config = PPOConfig().environment("CartPole-v1").training(lr=3e-4, num_epochs=6)  # scripts/demo.sh's
    algo = config.env_runners(num_env_runners=0).debugging(seed=seed).build_algo()
    score, iterations = 0.0, 0
    for iterations in range(1, 21):
        algo.train()
        algo.save(str(out.resolve()))
        score = float(np.mean(evaluate_in_env(Policy.load(out), make_env("CartPole-v1", ENV_CONFIG), 10, seed=500_000)))
        print(f"PPO iteration {iterations}: greedy return {score:.1f} over 10 episodes", flush=True)
        if score >= 190:
            break
    algo.stop()
    ray.shutdown()
    return out, score, iterations


def part(mode: str, body: bytes, base64_encoded: bool) -> dict:
    if base64_encoded:
        data, encoding = base64.b64encode(body).decode(), "BASE64"
    else:
        data, encoding = body.decode(), "JSON"
    return {"observedContentType": "application/json", "mode": mode, "data": data, "encoding": encoding}


def play_logged(url: str, folder: Path, episodes: int, greedy: float, seed: int) -> dict[str, float]:
    """Step 2 of the module docstring; returns eps_id -> undiscounted return."""
    import gymnasium as gym
    import requests

    rng = np.random.default_rng(seed)
    envs = [gym.make("CartPole-v1", **ENV_CONFIG) for _ in range(NUM_ENVS)]
    n_actions = int(envs[0].action_space.n)
    started = min(NUM_ENVS, episodes)
    obs = [env.reset(seed=seed + i)[0] for i, env in enumerate(envs[:started])]
    eps: list[str | None] = [f"ep{i}" for i in range(started)] + [None] * (NUM_ENVS - started)
    returns: dict[str, float] = {}
    rewards, start = [], datetime.datetime(2026, 12, 1, 16, tzinfo=datetime.UTC)
    session, n = requests.Session(), 0  # closed below: an open keep-alive holds up `serve`'s stop
    capture = folder / "capture" / "endpoint" / "AllTraffic"
    while any(e is not None for e in eps):
        live = [i for i in range(NUM_ENVS) if eps[i] is not None]
        body = json.dumps({"instances": [obs[i].tolist() for i in live], "explore": False}).encode()
        answer = session.post(f"{url}/invocations", data=body, headers={"Content-Type": "application/json"}, timeout=60)
        answer.raise_for_status()
        when = start + datetime.timedelta(seconds=n)
        record = {
            "captureData": {
                "endpointInput": part("INPUT", body, n % 2 == 1),
                "endpointOutput": part("OUTPUT", answer.content, n % 2 == 1),
            },
            "eventMetadata": {
                "eventId": f"event-{n}",
                "inferenceId": f"req-{n}",
                "inferenceTime": when.strftime("%Y-%m-%dT%H:%M:%SZ"),
            },
            "eventVersion": "0",
        }
        hour = capture / when.strftime("%Y/%m/%d/%H")
        hour.mkdir(parents=True, exist_ok=True)
        with (hour / "capture.jsonl").open("a") as file:
            file.write(json.dumps(record) + "\n")
        for index, (i, prediction) in enumerate(zip(live, answer.json()["predictions"])):
            best = int(prediction["action"])
            action = best if rng.random() < greedy else int(rng.integers(n_actions))
            prob = greedy * (action == best) + (1 - greedy) / n_actions
            next_obs, reward, terminated, truncated, _ = envs[i].step(action)
            line = {
                "inferenceId": f"req-{n}",
                "index": index,
                "action": action,
                "action_prob": prob,
                "reward": float(reward),
                "terminated": bool(terminated),
                "truncated": bool(truncated),
                "eps_id": eps[i],
            }
            returns[eps[i]] = returns.get(eps[i], 0.0) + float(reward)
            if terminated or truncated:
                line["next_observation"] = next_obs.tolist()
                if started < episodes:
                    next_obs, _ = envs[i].reset(seed=seed + started)
                    eps[i], started = f"ep{started}", started + 1
                else:
                    eps[i] = None
            obs[i] = next_obs
            rewards.append(line)
        n += 1
    session.close()
    (folder / "rewards.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rewards))
    print(f"played {len(returns)} episodes, {len(rewards)} decisions in {n} requests", flush=True)
    return returns


def serve(model_dir: Path, log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "SAGEMAKER_"))}
    env.update(
        SM_MODEL_DIR=str(model_dir),
        SAGEMAKER_BIND_TO_PORT=str(port),
        SAGEMAKER_MODEL_SERVER_WORKERS="1",
        RAY_USAGE_STATS_ENABLED="0",
    )
    proc = subprocess.Popen([str(BIN / "serve")], env=env, stdout=log.open("w"), stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"

    def running() -> None:
        if proc.poll() is not None:
            raise RuntimeError(f"serve exited {proc.returncode}: {log.read_text()[-2000:]}")

    wait_for_ping(url, 120, check=running)
    return proc, url


def offline_job(dataset: Path, base: Path, extra: dict) -> tuple[dict, Path, float]:
    """Step 4: (promotion.json, model dir, seconds)."""
    write_job(
        base,
        {
            **extra,
            "mode": "offline",
            "env": "CartPole-v1",
            "env_config": ENV_CONFIG,
            "ray.include_dashboard": "false",
            "ray.gcs_port": str(free_port()),
        },
        inputdataconfig={"train": {}},
    )
    (base / "input" / "data").mkdir(parents=True, exist_ok=True)
    dataset.rename(base / "input" / "data" / "train")
    env = job_environ(base)
    start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "sagemaker_ray_rl.contract.standalone"], env=env, check=True)
    with (base / "train.log").open("w") as log:
        code = subprocess.run([str(BIN / "train")], env=env, stdout=log, stderr=subprocess.STDOUT).returncode
    seconds = time.perf_counter() - start
    if code != 0:
        raise SystemExit(f"the offline job failed ({code}): {(base / 'train.log').read_text()[-4000:]}")
    return json.loads((base / "output" / "data" / "promotion.json").read_text()), base / "model", seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--episodes", type=int, default=500)
    parser.add_argument("--greedy", type=float, default=0.25)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--final-episodes", type=int, default=100)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--served", type=Path, default=None, help="serve this model dir, no PPO training")
    parser.add_argument("--offline", type=json.loads, default={}, help="JSON: extra offline job hyperparameters")
    args = parser.parse_args()

    from sagemaker_ray_rl.inference.policy import Policy
    from sagemaker_ray_rl.offline.capture import convert_capture
    from sagemaker_ray_rl.offline.collect import make_env
    from sagemaker_ray_rl.offline.runner import evaluate_in_env

    out = args.out or Path(tempfile.mkdtemp(prefix="bench-loop-"))
    out.mkdir(parents=True, exist_ok=True)
    print(f"load average at start: {os.getloadavg()}", flush=True)
    t0 = time.perf_counter()
    if args.served is None:
        served, score, iterations = train_served_policy(out / "served", args.seed)
    else:
        served, score, iterations = args.served, float("nan"), 0
    proc, url = serve(served, out / "serve.log")
    try:
        returns = play_logged(url, out / "logged", args.episodes, args.greedy, args.seed)
    finally:
        proc.terminate()
        proc.wait(timeout=60)
    result = convert_capture(
        out / "logged" / "dataset",
        captures=[out / "logged" / "capture"],
        rewards=out / "logged" / "rewards.jsonl",
        env="CartPole-v1",
        env_config=ENV_CONFIG,
    )
    logged = float(np.mean(list(returns.values())))
    print(f"dataset: {result.num_episodes} episodes, {result.num_transitions} transitions", flush=True)
    report, model, job_s = offline_job(out / "logged" / "dataset", out / "job", args.offline)
    final = evaluate_in_env(
        Policy.load(model), make_env("CartPole-v1", ENV_CONFIG), args.final_episodes, seed=1_000_000 + args.seed
    )
    record = {
        "served_policy_greedy_return": score,
        "served_policy_ppo_iterations": iterations,
        "greedy": args.greedy,
        "episodes": len(returns),
        "transitions": result.num_transitions,
        "logged_return_mean": logged,
        "logged_return_std": float(np.std(list(returns.values()))),
        "verdict": report["verdict"],
        "reason": report["reason"],
        "checkpoint": report["checkpoint"],
        "logged_discounted": report["logged"],
        "estimates": report["estimates"],
        "promoted_return_mean": float(np.mean(final)),
        "promoted_return_std": float(np.std(final)),
        "offline_hyperparameters": args.offline,
        "offline_job_s": round(job_s, 1),
        "total_s": round(time.perf_counter() - t0, 1),
    }
    (out / "results.json").write_text(json.dumps(record, indent=2, default=str) + "\n")
    print(f"served policy: PPO, {iterations} iterations, greedy {score:.1f} over 10 episodes")
    print(
        f"logged policy ({args.greedy:.0%} greedy, else uniform): {len(returns)} episodes, "
        f"mean return {logged:.2f} ± {record['logged_return_std']:.2f}"
    )
    print(f"verdict: {report['verdict']} ({report['reason']}); checkpoint {report['checkpoint']}")
    for name, value in report["estimates"].items():
        low, estimate, high = (value[k] if value[k] is not None else math.nan for k in ("low", "estimate", "high"))
        print(f"  {name}: {estimate:.2f} [{low:.2f}, {high:.2f}]")
    print(
        f"promoted policy: {args.final_episodes} greedy episodes, mean return {np.mean(final):.2f} ± {np.std(final):.2f}"
    )
    print(f"offline job {job_s:.0f} s, total {record['total_s']:.0f} s; load average at end: {os.getloadavg()}")
    print(f"results in {out / 'results.json'}")


if __name__ == "__main__":
    main()
