"""The real image: entrypoint dispatch, training from hyperparameters, serving over HTTP."""

from __future__ import annotations

import json
import re
import time
from pathlib import Path

import numpy as np
import pytest
import requests
from container.conftest import docker
from devtools import lock_pin, wait_for_ping
from helpers import rllib_reference, write_job

pytestmark = pytest.mark.container

OBS = [[0.01, -0.02, 0.03, 0.04], [0.1, 0.5, -0.1, -0.5]]


def test_no_arguments_prints_usage(image: str):
    run = docker("run", "--rm", image)
    assert run.returncode == 0
    assert "usage: docker run [options] IMAGE train" in run.stdout


def test_other_commands_run_as_given_with_the_pinned_stack(image: str):
    script = (
        "import json, sys, ray, torch, gymnasium, sagemaker_ray_rl;"
        "print(json.dumps([sys.version_info[:2], ray.__version__, torch.__version__, torch.version.cuda]))"
    )
    run = docker("run", "--rm", image, "python", "-c", script)
    assert run.returncode == 0, run.stderr
    python, ray_version, torch_version, cuda = json.loads(run.stdout)
    assert python == [3, 11] and ray_version == lock_pin("ray") == "2.60.0"
    assert torch_version.startswith(lock_pin("torch"))
    assert cuda is None


def test_labels_carry_versions_and_sagemaker_capabilities(image: str):
    labels = json.loads(docker("image", "inspect", "-f", "{{json .Config.Labels}}", image).stdout)
    version = (Path(__file__).resolve().parents[2] / "VERSION").read_text().strip()
    assert labels["org.opencontainers.image.version"] == version
    assert labels["com.sagemaker-ray-rl.ray-version"] == lock_pin("ray")
    assert labels["com.sagemaker-ray-rl.torch-version"] == lock_pin("torch")
    assert labels["com.amazonaws.sagemaker.capabilities.accept-bind-to-port"] == "true"
    assert labels["com.amazonaws.sagemaker.capabilities.multi-models"] == "true"


def test_train_from_hyperparameters_only(container_job):
    base, run = container_job
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    # The seed's metric regex, as SageMaker would apply it to the log.
    means = re.findall(r"episode_reward_mean: ([-+]?[0-9]*[.]?[0-9]+([eE][-+]?[0-9]+)?)", run.stdout)
    assert len(means) == 3
    assert re.findall(r"^training_iteration: (\d+)$", run.stdout, re.M) == ["1", "2", "3"]
    # The lr reached RLlib: the learner's optimizer reports it, and Tune's params.json holds it.
    assert re.findall(r"^learning_rate: (\S+)$", run.stdout, re.M) == ["0.0003"] * 3
    params = next((base / "checkpoints").glob("experiment/PPO_*/params.json"))
    assert json.loads(params.read_text())["lr"] == 0.0003

    model = base / "model"
    assert (model / "rllib_checkpoint.json").is_file()
    assert (model / "learner_group/learner/rl_module/default_policy").is_dir()
    metadata = json.loads((model / "metadata.json").read_text())
    assert metadata["algorithm"] == "PPO" and metadata["env"] == "CartPole-v1"
    assert metadata["metrics"]["training_iteration"] == 3
    assert metadata["versions"]["ray"] == "2.60.0"
    assert (base / "output" / "success").exists() and not (base / "output" / "failure").exists()


def test_unknown_hyperparameter_fails_before_ray_starts(image: str, tmp_path: Path):
    base = write_job(tmp_path, {"rl.training.config.lrr": "0.0003"})
    start = time.monotonic()
    run = docker("run", "--rm", "-v", f"{base}:/opt/ml", image, "train", timeout=120)
    seconds = time.monotonic() - start
    assert run.returncode != 0
    failure = (base / "output" / "failure").read_text()
    assert "Unknown hyperparameter 'rl.training.config.lrr'" in failure and "Did you mean 'lr'" in failure
    assert "Started a local Ray instance" not in run.stdout + run.stderr
    print(f"unknown hyperparameter: container exited {run.returncode} after {seconds:.1f} s")


class Server:
    """A `docker run -d ... serve` container on a loopback port, `model_dir` mounted at `mount`
    (``/opt/ml/models`` for a multi-model endpoint), `env` set in the container."""

    def __init__(
        self,
        image: str,
        model_dir: Path,
        *serve_args: str,
        mount: str = "/opt/ml/model",
        env: dict[str, str] | None = None,
    ) -> None:
        env_args = [arg for name, value in (env or {}).items() for arg in ("-e", f"{name}={value}")]
        run = docker(
            "run",
            "-d",
            "-p",
            "127.0.0.1::8080",
            *env_args,
            "-v",
            f"{model_dir}:{mount}",
            image,
            "serve",
            *serve_args,
            check=True,
        )
        self.container = run.stdout.strip()
        self.final_logs: str | None = None
        port = docker("port", self.container, "8080/tcp", check=True).stdout.strip().splitlines()[0]
        self.url = f"http://127.0.0.1:{port.rsplit(':', 1)[1]}"

    def wait_until_healthy(self, timeout: float = 60) -> None:
        try:
            wait_for_ping(self.url, timeout)
        except TimeoutError as error:
            raise AssertionError(f"{error}:\n{self.logs()}") from None

    def logs(self) -> str:
        if self.final_logs is not None:
            return self.final_logs
        logs = docker("logs", "-t", self.container)
        return logs.stdout + logs.stderr

    def stop(self) -> int:
        """``docker stop -t 30`` (gunicorn waits up to its 25 s graceful timeout for idle keep-alive
        connections, which clients such as ``requests`` may leave open); the exit code. `logs` keeps
        answering once the container is removed."""
        docker("stop", "-t", "30", self.container, timeout=60)
        code = int(docker("inspect", "-f", "{{.State.ExitCode}}", self.container).stdout.strip())
        self.final_logs = self.logs()
        docker("rm", "-f", self.container)
        return code


def test_serve_answers_recovers_from_bad_requests_and_stops_cleanly(image: str, container_job):
    base, run = container_job
    assert run.returncode == 0
    server = Server(image, base / "model")
    try:
        server.wait_until_healthy()
        good = requests.post(f"{server.url}/invocations", json={"instances": OBS}, timeout=10)
        assert good.status_code == 200
        actions = [p["action"] for p in good.json()["predictions"]]
        assert len(actions) == 2 and set(actions) <= {0, 1}

        bad = requests.post(f"{server.url}/invocations", json={"instances": [[1, 2, 3]]}, timeout=10)
        assert bad.status_code == 400
        assert bad.json()["field"] == "instances[0]" and "shape (4,)" in bad.json()["expected"]
        wrong_type = requests.post(
            f"{server.url}/invocations", data="1,2,3,4", headers={"Content-Type": "text/plain"}, timeout=10
        )
        assert wrong_type.status_code == 415 and "text/csv" in wrong_type.json()["expected"]

        again = requests.post(f"{server.url}/invocations", json={"instances": OBS}, timeout=10)
        assert again.status_code == 200 and again.json() == good.json()
        single = requests.post(f"{server.url}/invocations", json={"observation": OBS[0]}, timeout=10)
        assert single.json() == {"predictions": [good.json()["predictions"][0]]}
    finally:
        assert server.stop() == 0, server.logs()


def test_serve_without_a_model_exits_with_the_reason(image: str, tmp_path: Path):
    empty = tmp_path / "model"
    empty.mkdir()
    run = docker("run", "--rm", "-v", f"{empty}:/opt/ml/model", image, "serve", timeout=60)
    assert run.returncode == 1
    assert "serve: cannot start: no RLlib algorithm checkpoint in /opt/ml/model" in run.stderr


@pytest.fixture(scope="module")
def user_checkpoints(policy_dirs):
    """CartPole and Pendulum policies saved with a bare ``algo.save()`` (trained in the venv)."""
    return policy_dirs


@pytest.mark.parametrize("kind", ["cartpole", "pendulum"])
def test_image_serves_what_rllibs_pipeline_computes(image: str, user_checkpoints, kind):
    """A checkpoint with no metadata of ours, served by the image: actions equal RLlib's restored
    env-to-module -> forward_inference -> module-to-env (unsquashed into [-2, 2] for Pendulum)."""
    import gymnasium as gym

    space = gym.spaces.Box(-1.0, 1.0, (4,) if kind == "cartpole" else (3,), np.float32)
    space.seed(3)
    observations = [space.sample() for _ in range(32)]
    expected = rllib_reference(user_checkpoints[kind], observations)["action"]
    server = Server(image, user_checkpoints[kind])
    try:
        start = time.monotonic()
        server.wait_until_healthy()
        print(f"{kind}: docker run -> first 200 on /ping in {time.monotonic() - start:.1f} s")
        instances = [o.tolist() for o in observations]
        response = requests.post(f"{server.url}/invocations", json={"instances": instances}, timeout=30)
        assert response.status_code == 200, response.text
        served = np.array([p["action"] for p in response.json()["predictions"]])
        np.testing.assert_allclose(served, expected, rtol=1e-6, atol=1e-6)
        lines = requests.post(
            f"{server.url}/invocations",
            data="\n".join(json.dumps(o) for o in instances),
            headers={"Content-Type": "application/jsonlines"},
            timeout=30,
        )
        assert [json.loads(line)["action"] for line in lines.text.splitlines()] == served.tolist()
        legacy = requests.post(
            f"{server.url}/invocations", json={"inputs": {"observations": instances[:1]}}, timeout=30
        )
        assert legacy.json()["outputs"]["actions_0"] == served.tolist()[:1]
        assert requests.get(f"{server.url}/execution-parameters", timeout=5).status_code == 200
    finally:
        assert server.stop() == 0, server.logs()


def test_image_ray_serve_backend_answers_like_gunicorn(image: str, user_checkpoints):
    """``serve --server ray-serve`` in the image: /ping, the same bodies as the gunicorn transport
    (also for concurrent single observations, which ``@serve.batch`` runs together) and 4xx JSON
    for bad input."""
    from concurrent.futures import ThreadPoolExecutor

    ray_serve = Server(image, user_checkpoints["cartpole"], "--backend", "ray-serve")
    gunicorn = Server(image, user_checkpoints["cartpole"])
    try:
        start = time.monotonic()
        ray_serve.wait_until_healthy(timeout=120)
        print(f"ray-serve: docker run -> first 200 on /ping in {time.monotonic() - start:.1f} s")
        gunicorn.wait_until_healthy()
        assert requests.get(f"{ray_serve.url}/ping", timeout=5).json() == {
            "status": "healthy",
            "inference": {"default_policy": "torch"},
        }

        def both(body=None, **kwargs):
            kwargs = {"json": body, **kwargs} if body is not None else kwargs
            return [requests.post(f"{s.url}/invocations", timeout=30, **kwargs) for s in (ray_serve, gunicorn)]

        ours, reference = both({"instances": OBS, "outputs": ["action_prob", "action_dist_inputs", "vf_preds"]})
        assert ours.status_code == 200 and ours.json() == reference.json()
        ours, reference = both({"instances": [[1, 2, 3]]})
        assert ours.status_code == 400 and ours.json() == reference.json() and ours.json()["field"] == "instances[0]"
        ours, reference = both(data="1,2,3,4", headers={"Content-Type": "text/plain"})
        assert ours.status_code == 415 and ours.json() == reference.json()

        observations = np.random.default_rng(0).uniform(-1, 1, (16, 4)).round(3).tolist()
        with ThreadPoolExecutor(16) as pool:
            batched = list(
                pool.map(
                    lambda o: requests.post(f"{ray_serve.url}/invocations", json={"observation": o}, timeout=60),
                    observations,
                )
            )
        alone = requests.post(f"{gunicorn.url}/invocations", json={"instances": observations}, timeout=30).json()
        assert [r.json()["predictions"][0] for r in batched] == alone["predictions"]
    finally:
        codes = ray_serve.stop(), gunicorn.stop()
        assert codes == (0, 0), ray_serve.logs()[-3000:]


def test_image_serves_a_multi_model_endpoint(image: str, user_checkpoints, tmp_path: Path):
    """``SAGEMAKER_MULTI_MODEL=true``: SageMaker's calls as it makes them (models under
    ``/opt/ml/models/<name>/model``), each answer equal to RLlib's pipeline for that policy."""
    import shutil

    import gymnasium as gym

    models = tmp_path / "models"
    for kind in ("cartpole", "pendulum"):
        shutil.copytree(user_checkpoints[kind], models / kind / "model")
    server = Server(image, models, mount="/opt/ml/models", env={"SAGEMAKER_MULTI_MODEL": "true"})
    try:
        server.wait_until_healthy()
        for kind in ("cartpole", "pendulum"):
            url = f"/opt/ml/models/{kind}/model"
            loaded = requests.post(f"{server.url}/models", json={"model_name": kind, "url": url}, timeout=120)
            assert loaded.status_code == 200, loaded.text + server.logs()
        assert (
            requests.post(
                f"{server.url}/models",
                json={"model_name": "cartpole", "url": "/opt/ml/models/cartpole/model"},
                timeout=60,
            ).status_code
            == 409
        )
        listed = requests.get(f"{server.url}/models", timeout=10).json()
        assert [m["modelName"] for m in listed["models"]] == ["cartpole", "pendulum"]
        for kind in ("cartpole", "pendulum"):
            space = gym.spaces.Box(-1.0, 1.0, (4,) if kind == "cartpole" else (3,), np.float32)
            space.seed(5)
            observations = [space.sample() for _ in range(8)]
            expected = rllib_reference(user_checkpoints[kind], observations)["action"]
            answer = requests.post(
                f"{server.url}/models/{kind}/invoke", json={"instances": [o.tolist() for o in observations]}, timeout=30
            )
            assert answer.status_code == 200, answer.text
            served = np.array([p["action"] for p in answer.json()["predictions"]])
            np.testing.assert_allclose(served, expected, rtol=1e-6, atol=1e-6)
        assert requests.delete(f"{server.url}/models/cartpole", timeout=10).status_code == 200
        assert (
            requests.post(f"{server.url}/models/cartpole/invoke", json={"instances": OBS}, timeout=10).status_code
            == 404
        )
    finally:
        assert server.stop() == 0, server.logs()
