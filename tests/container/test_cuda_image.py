"""The CUDA variant (scripts/build.sh --variant cuda). Its tag comes in SAGEMAKER_RAY_RL_CUDA_IMAGE:
CodeBuild (buildspec.yml) builds it and sets it; this project's CI builds only the CPU image (a
CUDA build in every run would take too long), so there these tests are skipped. The GPU test runs
only where Docker can hand a GPU to a container (`docker run --gpus all`)."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
from container.conftest import docker
from devtools import lock_pin
from helpers import write_job

pytestmark = pytest.mark.container


@pytest.fixture(scope="module")
def cuda_image() -> str:
    tag = os.environ.get("SAGEMAKER_RAY_RL_CUDA_IMAGE")
    if not tag:
        pytest.skip("SAGEMAKER_RAY_RL_CUDA_IMAGE is not set (build with scripts/build.sh --variant cuda)")
    assert docker("image", "inspect", tag).returncode == 0, f"image {tag} does not exist"
    return tag


def test_torch_is_the_cuda_build_and_tags_labels_env_agree(cuda_image: str):
    run = docker(
        "run",
        "--rm",
        cuda_image,
        "python",
        "-c",
        "import json, os, torch; print(json.dumps([torch.__version__, torch.version.cuda,"
        " os.environ.get('NVIDIA_VISIBLE_DEVICES'), os.environ.get('NVIDIA_DRIVER_CAPABILITIES')]))",
    )
    assert run.returncode == 0, run.stderr
    version, cuda, visible, capabilities = json.loads(run.stdout)
    assert version.startswith(lock_pin("torch", "cuda")) and "+cpu" not in version and cuda
    assert (visible, capabilities) == ("all", "compute,utility")
    labels = json.loads(docker("image", "inspect", "-f", "{{json .Config.Labels}}", cuda_image).stdout)
    assert labels["com.sagemaker-ray-rl.variant"] == "cuda"
    assert labels["com.sagemaker-ray-rl.cuda-version"] == cuda
    assert re.search(rf"-cu{cuda.replace('.', '')}-py311$", cuda_image)


def test_training_code_puts_learners_on_gpus_when_the_job_has_them(cuda_image: str):
    """The config the built-in experiment builds, with SM_NUM_GPUS as SageMaker sets it."""
    script = (
        "import json; from sagemaker_ray_rl.training.api import build_config;"
        "c = build_config({'stop.training_iteration': 1}, num_cpus=4);"
        "print(json.dumps([c.num_learners, c.num_gpus_per_learner, c.num_gpus_per_env_runner]))"
    )
    for gpus, expected in (("0", [0, 0, 0]), ("1", [0, 1, 0]), ("4", [4, 1, 0])):
        run = docker("run", "--rm", "-e", f"SM_NUM_GPUS={gpus}", cuda_image, "python", "-c", script, timeout=300)
        assert run.returncode == 0, run.stderr[-3000:]
        assert json.loads(run.stdout.strip().splitlines()[-1]) == expected, gpus


def test_training_on_a_gpu(cuda_image: str, tmp_path: Path):
    if (
        shutil.which("nvidia-smi") is None
        or docker("run", "--rm", "--gpus", "all", cuda_image, "nvidia-smi").returncode
    ):
        pytest.skip("no GPU that Docker can give a container (nvidia-smi and the NVIDIA container runtime)")
    base = write_job(tmp_path, {"stop.training_iteration": "2", "num_env_runners": "1"})
    run = docker("run", "--rm", "--gpus", "all", "-v", f"{base}:/opt/ml", cuda_image, "train", timeout=900)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert (base / "model" / "metadata.json").is_file()
    # SM_NUM_GPUS came from nvidia-smi in the container; the trial ran with a GPU learner.
    params = json.loads(next((base / "checkpoints").glob("PPO_*/PPO_*/params.json")).read_text())
    assert params["num_gpus_per_learner"] == 1
