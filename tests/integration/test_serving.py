"""The flask app and the real `serve` command (gunicorn) answering from the trained checkpoint."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import requests
from devtools import REPO, free_port, wait_for_ping
from helpers import BIN, TrainingRun, job_environ
from integration.conftest import ServeProcess

pytestmark = pytest.mark.integration

OBS = [[0.01, -0.02, 0.03, 0.04], [0.1, 0.5, -0.1, -0.5], [-0.2, 0.0, 0.2, 1.0]]


@pytest.fixture(scope="module")
def policy(trained_job: TrainingRun):
    from sagemaker_ray_rl.inference.policy import Policy

    return Policy.load(trained_job.base / "model")


@pytest.fixture(scope="module")
def client(policy):
    from sagemaker_ray_rl.contract.environment import ServingSettings
    from sagemaker_ray_rl.serving.flask_app import create_app

    return create_app(policy, ServingSettings(max_payload_mb=0.01)).test_client()


def reference_actions(policy, observations) -> list[int]:
    """Greedy actions computed straight from the RLModule, as RLlib's env runner does with explore=False."""
    import torch
    from ray.rllib.core.columns import Columns

    module = policy.pipeline(None).module
    with torch.no_grad():
        logits = module.forward_inference({Columns.OBS: torch.tensor(observations, dtype=torch.float32)})[
            Columns.ACTION_DIST_INPUTS
        ]
    return logits.argmax(dim=-1).tolist()


def test_ping(client):
    response = client.get("/ping")
    assert response.status_code == 200
    assert response.json == {"status": "healthy", "inference": {"default_policy": "torch"}}


def test_instances_get_the_modules_greedy_actions(client, policy):
    response = client.post("/invocations", json={"instances": OBS})
    assert response.status_code == 200
    assert response.json == {"predictions": [{"action": a} for a in reference_actions(policy, OBS)]}


def test_single_observation_without_content_type(client, policy):
    response = client.post("/invocations", data=json.dumps({"observation": OBS[1]}))
    assert response.status_code == 200
    assert response.json["predictions"] == [{"action": reference_actions(policy, [OBS[1]])[0]}]


@pytest.mark.parametrize(
    "kwargs, status, field",
    [
        ({"data": "{oops", "content_type": "application/json"}, 400, None),
        ({"json": {"instances": [[1, 2, 3]]}}, 400, "instances[0]"),
        ({"json": {"instances": [[1, 2, 3, "4"]]}}, 400, "instances[0]"),
        ({"data": "1,2,3,4", "content_type": "text/plain"}, 415, "Content-Type"),
        ({"json": {"observation": OBS[0]}, "headers": {"Accept": "text/html"}}, 406, "Accept"),
        ({"json": {"observation": OBS[0]}, "headers": {"Accept": "application/json;q=0, text/html"}}, 406, "Accept"),
        ({"json": {"instances": [OBS[0]] * 1000}}, 413, None),
    ],
)
def test_bad_requests_are_4xx_json_and_the_app_keeps_serving(client, policy, kwargs, status, field):
    response = client.post("/invocations", **kwargs)
    assert response.status_code == status
    body = response.json
    assert body["message"]
    assert body.get("field") == field
    good = client.post("/invocations", json={"instances": OBS})
    assert good.status_code == 200


def test_unknown_route_and_method_are_json(client):
    assert client.get("/nope").status_code == 404 and client.get("/nope").json["error"] == "NotFound"
    assert client.get("/invocations").status_code == 405


FRONT_CASES = [
    {"json": {"observation": OBS[0]}},
    {"json": {"instances": OBS}, "headers": {"Accept": "text/csv"}},
    {"data": "1,2,3,4\n0,0,0,0\n", "content_type": "text/csv"},
    {"data": "\n".join(json.dumps(o) for o in OBS), "content_type": "application/jsonlines"},
    {"json": {"inputs": {"observations": OBS}}},
    {"json": {"instances": OBS, "outputs": ["vf_preds", "action_prob"]}},
    {"data": "{oops", "content_type": "application/json"},
    {"json": {"instances": [[1, 2, 3]]}},
    {"json": {"instances": [OBS[0]] * 1000}},
    {"json": {"observation": OBS[0]}, "headers": {"Accept": "text/html"}},
    {"data": "1,2,3,4", "content_type": "text/plain"},
]


@pytest.mark.parametrize("kwargs", FRONT_CASES)
def test_invocations_front_answers_as_the_flask_route(policy, kwargs):
    """`InvocationsFront` (which answers POST /invocations before flask) gives the bytes, status
    line and headers flask's own route gives: the route is reached through the app's inner
    ``wsgi_app``."""
    from werkzeug.test import Client

    from sagemaker_ray_rl.contract.environment import ServingSettings
    from sagemaker_ray_rl.serving.flask_app import InvocationsFront, create_app

    app = create_app(policy, ServingSettings(max_payload_mb=0.01))
    assert isinstance(app.wsgi_app, InvocationsFront)
    front = Client(app).post("/invocations", **kwargs)
    route = Client(app.wsgi_app.wsgi_app).post("/invocations", **kwargs)
    assert (front.status, sorted(front.headers.items()), front.get_data()) == (
        route.status,
        sorted(route.headers.items()),
        route.get_data(),
    )


def test_an_unexpected_error_is_a_json_500_and_logged(policy, caplog):
    from sagemaker_ray_rl.contract.environment import ServingSettings
    from sagemaker_ray_rl.serving.flask_app import create_app

    def compute(jobs):
        raise RuntimeError("boom")

    client = create_app(policy, ServingSettings(), compute=compute).test_client()
    response = client.post("/invocations", json={"observation": OBS[0]})
    assert response.status_code == 500
    assert response.json == {"error": "InternalServerError", "message": "RuntimeError: boom"}
    assert "unexpected error answering POST /invocations" in caplog.text
    assert client.post("/invocations", data="{oops").status_code == 400  # still serving


def test_serve_command_over_http(trained_job: TrainingRun, policy):
    port = free_port()
    env = job_environ(trained_job.base, SAGEMAKER_BIND_TO_PORT=str(port), SAGEMAKER_MODEL_SERVER_WORKERS="2")
    proc = subprocess.Popen([str(BIN / "serve")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        url = f"http://127.0.0.1:{port}"

        def running() -> None:
            assert proc.poll() is None, proc.stdout.read()

        wait_for_ping(url, 60, check=running)
        response = requests.post(f"{url}/invocations", json={"instances": OBS}, timeout=10)
        assert response.json() == {"predictions": [{"action": a} for a in reference_actions(policy, OBS)]}
        bad = requests.post(f"{url}/invocations", data="[", headers={"Content-Type": "application/json"}, timeout=10)
        assert bad.status_code == 400 and "not valid JSON" in bad.json()["message"]
        assert requests.post(f"{url}/invocations", json={"observation": OBS[0]}, timeout=10).status_code == 200
    finally:
        proc.terminate()
        assert proc.wait(timeout=30) == 0


def test_serve_without_a_model_exits_with_the_reason(tmp_path: Path):
    proc = subprocess.run([str(BIN / "serve")], env=job_environ(tmp_path), capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert f"model directory {tmp_path / 'model'} does not exist" in proc.stderr


def test_play_http_script_plays_episodes_through_serve(trained_job: TrainingRun, tmp_path: Path):
    """scripts/play_http.py, as the demo runs it (with devtools.py beside it), against the real
    `serve`: every episode is played to its end over POST /invocations and the mean is the mean of
    the episodes' returns; ``--min-return`` above what a 2-iteration policy reaches exits 1."""
    server = ServeProcess(trained_job.base / "model", tmp_path)
    try:
        server.wait_until_healthy()
        script = [sys.executable, str(REPO / "scripts" / "play_http.py"), "--url", server.url, "--episodes", "2"]
        played = subprocess.run(script, capture_output=True, text=True, timeout=300, cwd=tmp_path)
        assert played.returncode == 0, played.stderr[-3000:]
        returns = [float(r) for r in re.findall(r"^episode \d+: return ([\d.]+)$", played.stdout, re.M)]
        assert len(returns) == 2 and all(r >= 1 for r in returns)
        mean = re.search(r"mean return over 2 episodes of CartPole-v1 played over HTTP: ([\d.]+)", played.stdout)
        assert mean and float(mean.group(1)) == pytest.approx(sum(returns) / 2, abs=0.06)
        strict = subprocess.run([*script, "--min-return", "501"], capture_output=True, text=True, timeout=300)
        assert strict.returncode == 1 and "below the expected 501" in strict.stderr
    finally:
        assert server.stop() == 0
