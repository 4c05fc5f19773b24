"""ONNX export in the real image: the demo's job (scripts/demo.sh's hyperparameters) writes
``model/onnx/``, and examples/edge_inference.py plays CartPole from it with the image's system
Python seeing only numpy, onnxruntime and gymnasium (and their pure dependencies): no Ray, no
torch, no sagemaker_ray_rl on its path."""

from __future__ import annotations

import json
import re

import numpy as np
import pytest
import requests
from container.conftest import REPO, docker
from devtools import wait_for_ping
from helpers import write_job

pytestmark = pytest.mark.container

#: What the edge example may import: numpy, onnxruntime, gymnasium and their dependencies, linked
#: one by one from the image's venv into an otherwise empty path.
EDGE_PACKAGES = (
    "numpy",
    "numpy.libs",
    "onnxruntime",
    "flatbuffers",
    "packaging",
    "google",
    "gymnasium",
    "cloudpickle",
    "typing_extensions.py",
    "farama_notifications",
)

EDGE_RUN = """
set -e
site=$(echo /opt/venv/lib/python3.*/site-packages)
mkdir /tmp/edge
for p in {packages}; do if [ -e "$site/$p" ]; then ln -s "$site/$p" /tmp/edge/; fi; done
# -S: no site-packages at all (not the venv's, not Debian's); only /tmp/edge is added.
/usr/bin/python3 -S -c "
import runpy, sys
sys.path.insert(0, '/tmp/edge')
sys.argv = ['edge_inference.py', '/model', '--episodes', '10']
runpy.run_path('/examples/edge_inference.py', run_name='__main__')
print('heavy', sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ray', 'sagemaker_ray_rl')))
"
"""


@pytest.fixture(scope="module")
def demo_model(image: str, tmp_path_factory):
    """scripts/demo.sh's job: PPO CartPole, stop at mean return 450 or 40 iterations."""
    base = write_job(
        tmp_path_factory.mktemp("demo_job"),
        {"rl.training.config.lr": "0.0003", "stop.episode_return_mean": "450", "stop.training_iteration": "40"},
    )
    run = docker("run", "--rm", "-v", f"{base}:/opt/ml", image, "train", timeout=1800)
    assert run.returncode == 0, (run.stdout + run.stderr)[-4000:]
    assert "ONNX: exported module default_policy to /opt/ml/model/onnx/default_policy.onnx" in run.stdout + run.stderr
    return base / "model"


def test_demo_model_plays_cartpole_from_onnx_without_ray_or_torch(image: str, demo_model):
    report = json.loads((demo_model / "onnx" / "export.json").read_text())
    assert report["exported"] == {"default_policy": "default_policy.onnx"}, report
    sidecar = json.loads((demo_model / "onnx" / "default_policy.json").read_text())
    assert sidecar["parity_check"]["actions_equal"] is True
    run = docker(
        "run",
        "--rm",
        "--entrypoint",
        "bash",
        "-v",
        f"{demo_model}:/model:ro",
        "-v",
        f"{REPO / 'examples'}:/examples:ro",
        image,
        "-c",
        EDGE_RUN.format(packages=" ".join(EDGE_PACKAGES)),
        timeout=600,
    )
    assert run.returncode == 0, run.stderr[-4000:]
    assert "heavy []" in run.stdout
    mean = float(re.search(r"mean return over 10 episodes: (\S+)", run.stdout).group(1))
    assert mean >= 450, run.stdout


def _serve(image: str, model_dir, inference: str) -> tuple[str, str]:
    """``docker run -d ... serve`` with SAGEMAKER_RAY_RL_INFERENCE; (container id, url) once /ping is 200."""
    run = docker(
        "run", "-d", "-p", "127.0.0.1::8080", "-e", f"SAGEMAKER_RAY_RL_INFERENCE={inference}",
        "-v", f"{model_dir}:/opt/ml/model", image, "serve", check=True,
    )  # fmt: skip
    container = run.stdout.strip()
    port = docker("port", container, "8080/tcp", check=True).stdout.strip().splitlines()[0].rsplit(":", 1)[1]
    url = f"http://127.0.0.1:{port}"
    try:
        wait_for_ping(url, timeout=120)
    except TimeoutError:
        logs = docker("logs", container)
        docker("rm", "-f", container)
        raise AssertionError(f"no 200 on /ping within 120 s:\n{logs.stdout + logs.stderr}") from None
    return container, url


def test_image_serves_the_demo_model_from_onnx_as_from_torch(image: str, demo_model):
    """`serve` in the image: by default (auto) greedy requests go through the exported graph, and
    1,000 observations get the torch path's answers."""
    rng = np.random.default_rng(0)
    instances = (rng.normal(size=(1000, 4)) * [1.0, 1.0, 0.1, 1.0]).astype(np.float32).tolist()
    body = {"instances": instances, "outputs": ["action_prob", "action_dist_inputs", "vf_preds"]}
    answers = {}
    for inference, expected in (("auto", "onnx"), ("torch", "torch")):
        container, url = _serve(image, demo_model, inference)
        try:
            ping = requests.get(f"{url}/ping", timeout=10).json()
            assert ping == {"status": "healthy", "inference": {"default_policy": expected}}
            response = requests.post(f"{url}/invocations", json=body, timeout=60)
            assert response.status_code == 200, response.text[:2000]
            answers[expected] = response.json()["predictions"]
        finally:
            docker("stop", "-t", "30", container, timeout=60)
            code = docker("inspect", "-f", "{{.State.ExitCode}}", container).stdout.strip()
            docker("rm", "-f", container)
            assert code == "0"
    assert [p["action"] for p in answers["onnx"]] == [p["action"] for p in answers["torch"]]
    for name in ("action_prob", "action_dist_inputs", "vf_preds"):
        np.testing.assert_allclose(
            [p[name] for p in answers["onnx"]], [p[name] for p in answers["torch"]], rtol=1e-5, atol=1e-5
        )
