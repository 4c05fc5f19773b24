"""The production loop's first half over real HTTP: a served policy acts in CartPole with
``explore`` and ``action_prob``, every request and answer is written down as SageMaker's data
capture writes it (JSON and BASE64 encodings), the rewards the env gave are logged by inference id,
`convert` turns both into a dataset, and an offline job trained on it ends with a promotion report
against the served policy's own return."""

from __future__ import annotations

import base64
import json
import socket
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import requests
from helpers import run_train, write_job

from sagemaker_ray_rl.offline.capture import convert_capture
from sagemaker_ray_rl.offline.dataset import read_dataset, read_info

pytestmark = pytest.mark.integration

ENV_CONFIG = {"max_episode_steps": 60}
NUM_ENVS, NUM_EPISODES = 3, 12


def capture_part(mode: str, content_type: str, body: bytes, base64_encoded: bool) -> dict:
    if base64_encoded:
        return {
            "observedContentType": content_type,
            "mode": mode,
            "data": base64.b64encode(body).decode(),
            "encoding": "BASE64",
        }
    return {"observedContentType": content_type, "mode": mode, "data": body.decode(), "encoding": "JSON"}


@pytest.fixture(scope="module")
def played(servers, tmp_path_factory):
    """NUM_EPISODES episodes on NUM_ENVS envs in lockstep, one request per step for all live envs."""
    server = servers("cartpole")
    folder = tmp_path_factory.mktemp("capture")
    envs = [gym.make("CartPole-v1", **ENV_CONFIG) for _ in range(NUM_ENVS)]
    obs = [env.reset(seed=100 + i)[0] for i, env in enumerate(envs)]
    eps = [f"ep{i}" for i in range(NUM_ENVS)]
    started, returns, probs = NUM_ENVS, {}, []
    records, rewards = [], []
    session = requests.Session()
    n = 0
    while any(e is not None for e in eps):
        live = [i for i in range(NUM_ENVS) if eps[i] is not None]
        body = json.dumps(
            {"instances": [obs[i].tolist() for i in live], "explore": True, "outputs": ["action_prob"]}
        ).encode()
        answer = session.post(
            f"{server.url}/invocations",
            data=body,
            headers={"Content-Type": "application/json", "Accept": "application/json"},
            timeout=30,
        )
        assert answer.status_code == 200, answer.text
        records.append(
            {
                "captureData": {
                    "endpointInput": capture_part("INPUT", "application/json", body, n % 2 == 1),
                    "endpointOutput": capture_part("OUTPUT", "application/json", answer.content, n % 2 == 1),
                },
                "eventMetadata": {
                    "eventId": f"event-{n}",
                    "inferenceId": f"req-{n}",
                    "inferenceTime": f"2026-12-01T16:{n // 60 % 60:02d}:{n % 60:02d}Z",
                },
                "eventVersion": "0",
            }
        )
        for index, (i, prediction) in enumerate(zip(live, answer.json()["predictions"])):
            probs.append(prediction["action_prob"])
            next_obs, reward, terminated, truncated, _ = envs[i].step(prediction["action"])
            line = {
                "inferenceId": f"req-{n}",
                "index": index,
                "reward": float(reward),
                "terminated": bool(terminated),
                "truncated": bool(truncated),
                "eps_id": eps[i],
            }
            returns[eps[i]] = returns.get(eps[i], 0.0) + float(reward)
            if terminated or truncated:
                line["next_observation"] = next_obs.tolist()
                if started < NUM_EPISODES:
                    eps[i], started = f"ep{started}", started + 1
                    next_obs, _ = envs[i].reset(seed=100 + started)
                else:
                    eps[i] = None
            obs[i] = next_obs
            rewards.append(line)
        n += 1
    # hourly files as SageMaker writes them
    for hour, chunk in ((16, records[: len(records) // 2]), (17, records[len(records) // 2 :])):
        path = folder / "capture" / "endpoint" / "AllTraffic" / "2026" / "12" / "01" / str(hour)
        path.mkdir(parents=True)
        (path / "capture.jsonl").write_text("".join(json.dumps(r) + "\n" for r in chunk))
    (folder / "rewards.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rewards))
    return folder, returns, probs


def test_captured_episodes_convert_to_what_was_played(played):
    folder, returns, probs = played
    result = convert_capture(
        folder / "dataset",
        captures=[folder / "capture"],
        rewards=folder / "rewards.jsonl",
        env="CartPole-v1",
        env_config=ENV_CONFIG,
    )
    data = read_dataset(folder / "dataset")
    assert result.num_episodes == data.num_episodes == NUM_EPISODES
    assert dict(zip(data.eps_ids, data.episode_returns().tolist())) == returns
    assert sorted(data.action_prob.tolist()) == pytest.approx(sorted(probs), rel=1e-6)
    assert read_info(folder / "dataset")["behaviour_probabilities"] is True


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_offline_job_on_the_captured_data_reports_a_verdict(played, tmp_path: Path):
    folder, returns, _ = played
    if not (folder / "dataset").exists():
        convert_capture(
            folder / "dataset",
            captures=[folder / "capture"],
            rewards=folder / "rewards.jsonl",
            env="CartPole-v1",
            env_config=ENV_CONFIG,
        )
    base = write_job(
        tmp_path,
        {
            "mode": "offline",
            "env": "CartPole-v1",
            "env_config": ENV_CONFIG,
            "offline.num_updates": 200,
            "offline.evaluate_every": 100,
            "offline.num_runs": 1,
            "offline.fqe_updates": 100,
            "offline.model_updates": 200,
            "ray.include_dashboard": "false",
            "ray.gcs_port": str(_free_port()),
        },
        inputdataconfig={"train": {}},
    )
    (base / "input" / "data").mkdir(parents=True, exist_ok=True)
    (folder / "dataset").rename(base / "input" / "data" / "train")
    run = run_train(base)
    assert run.returncode == 0, run.output[-4000:]
    report = json.loads((base / "output" / "data" / "promotion.json").read_text())
    assert report["episodes"] == NUM_EPISODES and report["estimator"] == "mb"
    assert report["logged"]["undiscounted_return_mean"] == pytest.approx(np.mean(list(returns.values())))
    assert report["verdict"] in ("promote", "keep") and set(report["estimates"]) >= {
        "is",
        "wis",
        "pdis",
        "dm",
        "dr",
        "mb",
    }
    assert f"Promotion verdict: {report['verdict']}" in run.output
