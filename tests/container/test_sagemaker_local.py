"""The image under the SageMaker Python SDK's own local mode: the real client, real containers.

SDK v2 (``sagemaker<3``, ``.venv-sdk2``): ``Estimator(image_uri=...).fit()`` in local mode runs our
image with ``train`` through docker-compose, ``deploy(instance_type="local")`` runs ``serve`` and
``Predictor.predict`` posts JSON to it, and a local batch transform sends a JSON Lines file to it
(application/jsonlines, several records per request). ``RLEstimator(entry_point=..., image_uri=...)``
does the same with a user entry point (its ``deploy`` returns None: a `Predictor` is made from the
endpoint's name). SDK v3 (``sagemaker>=3``, ``.venv-sdk3``): a ``ModelTrainer`` local-container job,
without ``source_code`` and with ``source_code=SourceCode(command="train")`` (the SDK's own driver
script; dotless hyperparameter names).

The SDKs live in their own venvs (they pin their own boto3 and numpy); ``scripts/ensure-tools.sh
sdk`` makes them and installs docker-compose. Each SDK runs a driver script in ``sdk/`` with its
venv's Python; the script prints a ``RESULT {json}`` line that the tests check. Only AWS is absent:
dummy credentials and a region, file:// paths, no S3.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import tarfile
from pathlib import Path

import pytest
from container.conftest import docker
from devtools import free_port

pytestmark = pytest.mark.container

REPO = Path(__file__).resolve().parents[2]
SDK_DIR = Path(__file__).resolve().parent / "sdk"
OBS = [[0.01, -0.02, 0.03, 0.04], [0.1, 0.5, -0.1, -0.5]]

#: Hosts of the SDK v2 training job: `train` brings up one Ray cluster over SM_HOSTS.
SDK2_INSTANCE_COUNTS = [2]
#: Hosts of the SDK v3 ModelTrainer local-container job.
SDK3_INSTANCE_COUNTS = [2]


def sdk_python(venv: str) -> str:
    python = REPO / venv / "bin" / "python"
    if not python.exists():
        message = f"{venv} is missing: scripts/ensure-tools.sh sdk makes it"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return str(python)


@pytest.fixture
def sdk_label(tmp_path: Path):
    """A docker label for the containers an SDK starts; they are removed afterwards."""
    label = f"smrl-release-test={tmp_path.name}"
    yield label
    ids = docker("ps", "-aq", "--filter", f"label={label}").stdout.split()
    if ids:
        docker("rm", "-f", *ids)


@pytest.fixture
def compose_project(tmp_path: Path):
    """A docker-compose project name for an SDK run (COMPOSE_PROJECT_NAME); its containers and
    networks are removed afterwards (the SDKs leave them behind)."""
    name = f"smrl-release-{tmp_path.name.lower()}".replace("_", "-")
    yield name
    ids = docker("ps", "-aq", "--filter", f"label=com.docker.compose.project={name}").stdout.split()
    if ids:
        docker("rm", "-f", *ids)
    networks = docker("network", "ls", "-q", "--filter", f"label=com.docker.compose.project={name}").stdout.split()
    if networks:
        docker("network", "rm", *networks)


def run_driver(python: str, script: str, *args: str, timeout: float = 1200, **extra_env: str) -> tuple[dict, str]:
    """Run an SDK driver script; return its RESULT and its whole output."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "SM_", "SAGEMAKER_"))}
    env.update(
        AWS_DEFAULT_REGION="us-east-1",
        AWS_ACCESS_KEY_ID="testing",  # local mode signs nothing, but boto3 wants credentials
        AWS_SECRET_ACCESS_KEY="testing",
        # Debian's docker client first: the SDK runs `docker compose`, then `docker-compose`.
        PATH=f"/usr/bin:{env.get('PATH', '')}",
        **extra_env,
    )
    proc = subprocess.run(
        [python, str(SDK_DIR / script), *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        timeout=timeout,
        env=env,
    )
    results = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    assert proc.returncode == 0 and results, proc.stdout[-6000:]
    return json.loads(results[-1][len("RESULT ") :]), proc.stdout


@pytest.mark.parametrize("instance_count", SDK2_INSTANCE_COUNTS)
def test_sdk_v2_local_train_deploy_predict_and_batch_transform(
    image: str, tmp_path: Path, sdk_label: str, instance_count: int
):
    python = sdk_python(".venv-sdk2")
    result, output = run_driver(
        python, "sdk2_local.py", image, str(tmp_path), str(instance_count), str(free_port()), sdk_label
    )
    assert len(docker("ps", "-aq", "--filter", f"label={sdk_label}").stdout.split()) == instance_count + 2

    # Training: our `train` ran from the Estimator's hyperparameters, one Ray cluster over every host.
    assert "training_iteration: 2" in output
    assert f"Ray cluster up: {instance_count} of {instance_count} host(s) alive" in output
    assert output.count("the master says the job is over (succeeded: True)") == instance_count - 1
    model_tar = Path(result["model_data"].removeprefix("file://"))
    with tarfile.open(model_tar) as tar:
        names = set(tar.getnames())
    assert {"metadata.json", "rllib_checkpoint.json"} <= {n.removeprefix("./") for n in names}

    # deploy + predict through the SDK's JSON serializer.
    predictions = result["predict"]["predictions"]
    actions = [p["action"] for p in predictions]
    assert len(actions) == len(OBS) and set(actions) <= {0, 1}
    assert result["predict_single"] == {"predictions": [predictions[0]]}

    # Batch transform (application/jsonlines, MultiRecord): one output line per input record, the
    # same greedy actions as the endpoint.
    output_lines = result["transform_output"]
    assert len(output_lines) == result["transform_input_lines"] == 3 * len(OBS)
    assert [line["action"] for line in output_lines] == actions * 3


def test_sdk_v2_rlestimator_entry_point_deploy_predictor_and_batch_transform(
    image: str, tmp_path: Path, sdk_label: str
):
    """RLEstimator with image_uri and a user entry point (sdk/rl_cartpole.py) on one host: fit, deploy
    (returns None), a Predictor by endpoint name, batch transform."""
    python = sdk_python(".venv-sdk2")
    result, output = run_driver(python, "sdk2_rlestimator_local.py", image, str(tmp_path), str(free_port()), sdk_label)
    # Training ran the entry point with the job's hyperparameters over the script's defaults.
    assert "rl_cartpole.py exported /opt/ml/model after 2 iterations" in output
    assert "learning_rate: 0.0003" in output and "learning_rate: 0.0001" not in output
    with tarfile.open(Path(result["model_data"].removeprefix("file://"))) as tar:
        metadata = json.load(
            tar.extractfile(next(m for m in tar.getmembers() if m.name.removeprefix("./") == "metadata.json"))
        )
    assert metadata["metrics"]["training_iteration"] == 2

    # deploy() gives no predictor; the serving container was told about the training script, and
    # serve answered from the checkpoint anyway.
    assert result["deploy_returned"] == "None"
    assert result["serving_env"]["SAGEMAKER_PROGRAM"] == "rl_cartpole.py"
    assert result["serving_env"]["SAGEMAKER_SUBMIT_DIRECTORY"].startswith("file://")
    actions = [p["action"] for p in result["predict"]["predictions"]]
    assert len(actions) == len(OBS) and set(actions) <= {0, 1}

    output_lines = result["transform_output"]
    assert len(output_lines) == result["transform_input_lines"] == 3 * len(OBS)
    assert [line["action"] for line in output_lines] == actions * 3


@pytest.mark.parametrize("instance_count", SDK3_INSTANCE_COUNTS)
def test_sdk_v3_model_trainer_local_container_trains(
    image: str, tmp_path: Path, compose_project: str, instance_count: int
):
    """No source_code: the SDK runs the image with no command, and the image trains (see sdk3_local.py)."""
    python = sdk_python(".venv-sdk3")
    result, output = run_driver(
        python, "sdk3_local.py", image, str(tmp_path), str(instance_count), COMPOSE_PROJECT_NAME=compose_project
    )
    plain = re.sub(r"\x1b\[[0-9;]*m", "", output)  # docker-compose colours its host prefixes
    assert re.findall(r"\| training_iteration: (\d+)\s*$", plain, re.M) == ["1", "2"]
    assert f"Ray cluster up: {instance_count} of {instance_count} host(s) alive" in plain
    assert "Reporting training SUCCESS" in output
    with tarfile.open(result["model_tar"]) as tar:
        metadata = json.load(
            tar.extractfile(next(m for m in tar.getmembers() if m.name.removeprefix("./") == "metadata.json"))
        )
    assert metadata["algorithm"] == "PPO" and metadata["metrics"]["training_iteration"] == 2
    assert metadata["hyperparameters"]["rl.training.config.lr"] == 0.0003


def test_sdk_v3_model_trainer_source_code_command_runs_the_builtin_experiment(
    image: str, tmp_path: Path, compose_project: str
):
    """source_code=SourceCode(command="train"): the SDK's sm_train.sh exports every hyperparameter as a
    shell variable, so they are given dotless (rl__training__config__lr); `train` reads the dotted names."""
    python = sdk_python(".venv-sdk3")
    result, output = run_driver(
        python, "sdk3_local.py", image, str(tmp_path), "1", "train", COMPOSE_PROJECT_NAME=compose_project
    )
    plain = re.sub(r"\x1b\[[0-9;]*m", "", output)  # docker-compose colours its host prefixes
    assert "Executing command: train" in plain  # the SDK's driver ran, not our entrypoint
    assert re.findall(r"\| training_iteration: (\d+)\s*$", plain, re.M) == ["1", "2"]
    assert "Training Container Execution Completed" in plain
    assert "learning_rate: 0.0003" in plain  # the decoded setting reached RLlib (its default: 5e-05)
    with tarfile.open(result["model_tar"]) as tar:
        metadata = json.load(
            tar.extractfile(next(m for m in tar.getmembers() if m.name.removeprefix("./") == "metadata.json"))
        )
    assert metadata["metrics"]["training_iteration"] == 2
    hyperparameters = metadata["hyperparameters"]
    assert hyperparameters["rl.training.config.lr"] == 0.0003
    assert hyperparameters["stop.training_iteration"] == 2
    assert "rl__training__config__lr" not in hyperparameters
