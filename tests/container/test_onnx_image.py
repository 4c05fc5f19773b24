"""ONNX export in the real image: the demo's job (scripts/demo.sh's hyperparameters) writes
``model/onnx/``, and examples/edge_inference.py plays CartPole from it with the image's system
Python seeing only numpy, onnxruntime and gymnasium (and their pure dependencies): no Ray, no
torch, no sagemaker_ray_rl on its path."""

from __future__ import annotations

import json
import re

import pytest
from container.conftest import REPO, docker
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
