"""SageMaker automatic model tuning: the hyperparameters a tuning job gives each training job.

The tuning service adds the reserved ``_tuning_objective_metric`` to every training job it starts,
and the SDK's tuner adds ``sagemaker_estimator_class_name`` / ``sagemaker_estimator_module``; the
built-in experiment must accept them and keep them away from RLlib. The SDK-built cases run the SDK
v2's own `HyperparameterTuner` (``sdk2_tuning_job.py`` in the SDK's venv; only AWS is faked).
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest

from sagemaker_ray_rl.contract.environment import decode_hyperparameters, is_image_hyperparameter
from sagemaker_ray_rl.contract.errors import HyperparameterError
from sagemaker_ray_rl.training.algorithm_config import build_algorithm_config
from sagemaker_ray_rl.training.hyperparameters import parse_hyperparameters
from sagemaker_ray_rl.training.reporting import METRIC_DEFINITIONS

REPO = Path(__file__).resolve().parents[3]
DRIVER = Path(__file__).resolve().parent / "sdk2_tuning_job.py"


def tuning_job(static: dict) -> dict:
    """The SDK v2 tuner's request and one training job's hyperparameters (see the driver)."""
    python = REPO / ".venv-sdk2" / "bin" / "python"
    if not python.exists():
        message = ".venv-sdk2 is missing: scripts/ensure-tools.sh sdk makes it"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    proc = subprocess.run(
        [str(python), str(DRIVER), "IMAGE_URI", json.dumps(list(METRIC_DEFINITIONS)), json.dumps(static)],
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, "SAGEMAKER_SUPPRESS_V2_WARNING": "1"},
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    (line,) = [line for line in proc.stdout.splitlines() if line.startswith("RESULT ")]
    return json.loads(line[len("RESULT ") :])


def test_a_tuning_jobs_hyperparameters_built_by_the_sdk_reach_rllib_without_the_reserved_ones():
    job = tuning_job({"stop.training_iteration": 2, "evaluation_episodes": 5, "rl.training.config.gamma": 0.98})
    raw = job["training_job_hyperparameters"]
    # What the SDK and the service add, besides the user's own.
    assert raw["_tuning_objective_metric"] == "evaluation_return_mean"
    assert {"sagemaker_estimator_class_name", "sagemaker_estimator_module"} <= set(raw)

    spec = parse_hyperparameters(decode_hyperparameters(raw), num_cpus=2)
    applied = {(o.section, o.name): o.value for o in spec.overrides}
    assert applied == {
        ("training", "gamma"): 0.98,
        ("training", "lr"): 0.0001,
        ("training", "num_epochs"): 2,
        ("training", "minibatch_size"): 100,
    }
    assert spec.evaluation_episodes == 5 and dict(spec.stop) == {"training_iteration": 2}
    config = build_algorithm_config(spec)
    assert (config.lr, config.num_epochs, config.minibatch_size) == (0.0001, 2, 100)


def test_the_tuners_objective_is_one_of_the_metric_definitions_it_sends():
    job = tuning_job({"stop.training_iteration": 2, "evaluation_episodes": 5})
    request = job["request"]
    objective = request["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"]["MetricName"]
    sent = {d["Name"] for d in request["TrainingJobDefinition"]["AlgorithmSpecification"]["MetricDefinitions"]}
    assert objective in sent


@pytest.mark.parametrize("key", ["_tuning_objective_metric", "_some_future_reserved_name", "sagemaker_region"])
def test_reserved_and_sdk_hyperparameters_are_the_images_own(key: str):
    assert is_image_hyperparameter(key)
    spec = parse_hyperparameters({key: "episode_return_mean", "training.lr": 0.001}, num_cpus=2)
    assert [(o.name, o.value) for o in spec.overrides] == [("lr", 0.001)]


def test_an_unknown_hyperparameter_without_the_reserved_underscore_still_fails():
    assert not is_image_hyperparameter("tuning_objective_metric")
    with pytest.raises(HyperparameterError, match="hyperparameter 'tuning_objective_metric'"):
        parse_hyperparameters({"tuning_objective_metric": "x"}, num_cpus=2)
