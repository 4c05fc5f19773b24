"""Multi-model endpoint (``SAGEMAKER_MULTI_MODEL=true``) over real HTTP: the `serve` command with
SageMaker's BYOC multi-model contract (``/models`` load, list, get, unload, invoke), two CartPole
policies and a Pendulum policy, answers equal to what the single-model server answers for the
same policy (`protocol.answer_invocation`, the function its ``/invocations`` runs)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import requests
from integration.conftest import ServeProcess

from sagemaker_ray_rl.contract.environment import ServingSettings
from sagemaker_ray_rl.inference.policy import Policy
from sagemaker_ray_rl.serving.multi_model import estimate_model_bytes
from sagemaker_ray_rl.serving.protocol import answer_invocation

pytestmark = pytest.mark.integration

#: model name -> policy kind of tests/integration/train_policies.py (cartpole and lstm: CartPole-v1)
MODELS = {"cartpole-a": "cartpole", "cartpole-lstm": "lstm", "pendulum": "pendulum"}
CARTPOLE_OBS = {"instances": [[0.01, -0.02, 0.03, 0.04], [0.1, 0.2, -0.1, -0.3]], "outputs": ["action_prob"]}
PENDULUM_OBS = {"instances": [[1.0, 0.0, 0.5], [0.0, 1.0, -2.0]], "outputs": ["action_dist_inputs"]}


@pytest.fixture(scope="module")
def model_root(policy_dirs, tmp_path_factory) -> Path:
    """``/opt/ml/models/<name>/model`` as SageMaker lays out the models it loads."""
    root = tmp_path_factory.mktemp("models")
    for name, kind in MODELS.items():
        shutil.copytree(policy_dirs[kind], root / name / "model")
    return root


@pytest.fixture(scope="module")
def mme(model_root, tmp_path_factory):
    empty = tmp_path_factory.mktemp("no-model")
    server = ServeProcess(empty, tmp_path_factory.mktemp("serve-mme"), SAGEMAKER_MULTI_MODEL="true")
    server.wait_until_healthy()
    yield server
    assert server.stop() == 0


def load(server, name: str, url: Path) -> requests.Response:
    return requests.post(f"{server.url}/models", json={"model_name": name, "url": str(url)}, timeout=120)


def single_model_answer(model_dir: Path, body: dict) -> tuple[int, bytes]:
    status, _, answer = answer_invocation(
        Policy.load(model_dir), ServingSettings(), {"Content-Type": "application/json"}, json.dumps(body).encode()
    )
    return status, answer


def test_load_list_get_invoke_and_unload(mme, model_root):
    for name in MODELS:
        answer = load(mme, name, model_root / name / "model")
        assert answer.status_code == 200, answer.text
        assert answer.json()["modelName"] == name and answer.json()["memoryBytesMeasured"] >= 0

    listed = requests.get(f"{mme.url}/models", timeout=10).json()
    assert listed == {"models": [{"modelName": n, "modelUrl": str(model_root / n / "model")} for n in sorted(MODELS)]}
    first = requests.get(f"{mme.url}/models", params={"max_results": 2}, timeout=10).json()
    assert [m["modelName"] for m in first["models"]] == sorted(MODELS)[:2] and first["nextPageToken"]
    rest = requests.get(
        f"{mme.url}/models", params={"max_results": 2, "next_page_token": first["nextPageToken"]}, timeout=10
    ).json()
    assert [m["modelName"] for m in rest["models"]] == sorted(MODELS)[2:] and "nextPageToken" not in rest

    described = requests.get(f"{mme.url}/models/pendulum", timeout=10).json()
    assert described["modelUrl"] == str(model_root / "pendulum" / "model") and described["estimatedBytes"] > 0

    for name, kind in MODELS.items():
        body = PENDULUM_OBS if kind == "pendulum" else CARTPOLE_OBS
        answer = requests.post(f"{mme.url}/models/{name}/invoke", json=body, timeout=30)
        assert answer.status_code == 200, answer.text
        assert (answer.status_code, answer.content) == single_model_answer(model_root / name / "model", body), name

    # /invocations with SageMaker's target-model header reaches the same model
    routed = requests.post(
        f"{mme.url}/invocations",
        json=CARTPOLE_OBS,
        headers={"X-Amzn-SageMaker-Target-Model": "cartpole-a"},
        timeout=30,
    )
    assert routed.content == single_model_answer(model_root / "cartpole-a" / "model", CARTPOLE_OBS)[1]
    # the same request formats as /invocations: CSV in, CSV out
    csv_answer = requests.post(
        f"{mme.url}/models/pendulum/invoke",
        data="1.0,0.0,0.5\n",
        headers={"Content-Type": "text/csv", "Accept": "text/csv"},
        timeout=30,
    )
    assert csv_answer.status_code == 200 and len(csv_answer.text.strip().split(",")) == 1

    conflict = load(mme, "cartpole-a", model_root / "cartpole-a" / "model")
    assert conflict.status_code == 409 and conflict.json()["error"] == "Conflict"

    assert requests.delete(f"{mme.url}/models/cartpole-a", timeout=10).status_code == 200
    for method, path in (
        ("get", "/models/cartpole-a"),
        ("delete", "/models/cartpole-a"),
        ("post", "/models/cartpole-a/invoke"),
    ):
        gone = requests.request(method, f"{mme.url}{path}", json=CARTPOLE_OBS, timeout=10)
        assert gone.status_code == 404 and "not loaded" in gone.json()["message"], (method, path)
    assert [m["modelName"] for m in requests.get(f"{mme.url}/models", timeout=10).json()["models"]] == [
        "cartpole-lstm",
        "pendulum",
    ]
    again = load(mme, "cartpole-a", model_root / "cartpole-a" / "model")  # loadable again once unloaded
    assert again.status_code == 200


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"model_name": "x"}, 400, "string 'model_name' and 'url'"),
        ({"model_name": "x", "url": "/nonexistent/model"}, 400, "is not a directory"),
    ],
)
def test_bad_loads_are_4xx_json(mme, body, status, message):
    answer = requests.post(f"{mme.url}/models", json=body, timeout=30)
    assert answer.status_code == status and message in answer.json()["message"]


def test_a_directory_without_a_checkpoint_is_400_and_leaves_no_model(mme, tmp_path):
    answer = load(mme, "empty", tmp_path)
    assert answer.status_code == 400 and "cannot load model 'empty'" in answer.json()["message"]
    assert requests.get(f"{mme.url}/models/empty", timeout=10).status_code == 404


def test_invocations_without_target_model_say_what_is_expected(mme):
    answer = requests.post(f"{mme.url}/invocations", json=CARTPOLE_OBS, timeout=10)
    assert answer.status_code == 400 and answer.json()["field"] == "X-Amzn-SageMaker-Target-Model"


def test_507_when_the_budget_is_below_two_models(model_root, tmp_path):
    one = estimate_model_bytes(model_root / "cartpole-a" / "model")
    two = one + estimate_model_bytes(model_root / "pendulum" / "model")
    budget_mb = (one + two) / 2 / 2**20  # room for one model, not for two
    (tmp_path / "none").mkdir()
    server = ServeProcess(
        tmp_path / "none", tmp_path, SAGEMAKER_MULTI_MODEL="true", SAGEMAKER_RAY_RL_MME_MEMORY_MB=f"{budget_mb:.6f}"
    )
    try:
        server.wait_until_healthy()
        assert load(server, "cartpole-a", model_root / "cartpole-a" / "model").status_code == 200
        full = load(server, "pendulum", model_root / "pendulum" / "model")
        assert full.status_code == 507, full.text
        assert "would exceed the memory budget" in full.json()["message"]
        assert requests.get(f"{server.url}/models/pendulum", timeout=10).status_code == 404
        assert requests.delete(f"{server.url}/models/cartpole-a", timeout=10).status_code == 200
        assert load(server, "pendulum", model_root / "pendulum" / "model").status_code == 200
    finally:
        assert server.stop() == 0


def test_every_worker_answers_the_same(model_root, tmp_path):
    """Two gunicorn workers: a model loaded through one is served by both (each loads its own copy
    on first use), and after an unload through one, neither serves it."""
    import re

    (tmp_path / "none").mkdir()
    server = ServeProcess(tmp_path / "none", tmp_path, SAGEMAKER_MULTI_MODEL="true", SAGEMAKER_MODEL_SERVER_WORKERS="2")
    try:
        server.wait_until_healthy()
        assert load(server, "cartpole-a", model_root / "cartpole-a" / "model").status_code == 200
        expected = single_model_answer(model_root / "cartpole-a" / "model", CARTPOLE_OBS)
        workers_seen = set()
        for _ in range(60):  # a new connection each time: the workers take turns accepting them
            answer = requests.post(f"{server.url}/models/cartpole-a/invoke", json=CARTPOLE_OBS, timeout=30)
            assert (answer.status_code, answer.content) == expected
            listed = requests.get(f"{server.url}/models", timeout=10).json()["models"]
            assert [m["modelName"] for m in listed] == ["cartpole-a"]
            workers_seen = set(re.findall(r"serve: worker (\d+): loaded model 'cartpole-a'", server.log.read_text()))
            if len(workers_seen) == 2:
                break
        assert len(workers_seen) == 2, server.log.read_text()[-3000:]
        assert requests.delete(f"{server.url}/models/cartpole-a", timeout=10).status_code == 200
        for _ in range(20):
            assert (
                requests.post(f"{server.url}/models/cartpole-a/invoke", json=CARTPOLE_OBS, timeout=30).status_code
                == 404
            )
            assert requests.get(f"{server.url}/models/cartpole-a", timeout=10).status_code == 404
    finally:
        assert server.stop() == 0
