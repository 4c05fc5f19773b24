"""The hyperparameters a SageMaker tuning job gives its training jobs, built by the SageMaker Python
SDK v2's own `HyperparameterTuner`.

Run with the SDK v2 venv's Python (``.venv-sdk2/bin/python``): the SDK pins its own boto3 and
numpy. Driven by ``tests/unit/training/test_tuning.py``. Only the AWS service is faked: the SDK's
tuner builds its ``CreateHyperParameterTuningJob`` request as it would for AWS, a stand-in SageMaker
client keeps it, and this script then does what the tuning service does for each training job it
starts (the API reference's ``HyperParameterTrainingJobDefinition``): the static hyperparameters,
one value of each tuned range, as strings, and the reserved ``_tuning_objective_metric``.

    python sdk2_tuning_job.py IMAGE METRIC_DEFINITIONS_JSON HYPERPARAMETERS_JSON

Prints one JSON line prefixed ``RESULT ``: ``{"request": ..., "training_job_hyperparameters": {...}}``.
"""

from __future__ import annotations

import json
import sys

import boto3
from sagemaker.estimator import Estimator
from sagemaker.session import Session
from sagemaker.tuner import CategoricalParameter, ContinuousParameter, HyperparameterTuner, IntegerParameter

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"


class RecordingSageMakerClient:
    """Stands in for boto3's SageMaker client: keeps the tuning job request, answers nothing else."""

    def __init__(self) -> None:
        self.requests: list[dict] = []

    def create_hyper_parameter_tuning_job(self, **request):
        self.requests.append(request)
        return {"HyperParameterTuningJobArn": "arn:aws:sagemaker:us-east-1:123456789012:hyper-parameter-tuning-job/x"}


def service_training_job_hyperparameters(request: dict) -> dict[str, str]:
    """What the tuning service writes to a training job's hyperparameters.json: static values, the
    lowest value of each tuned range (any value of the range would do), and the objective's name."""
    definition = request["TrainingJobDefinition"]
    hps = dict(definition["StaticHyperParameters"])
    ranges = request["HyperParameterTuningJobConfig"]["ParameterRanges"]
    for kind in ("ContinuousParameterRanges", "IntegerParameterRanges"):
        for r in ranges.get(kind, []):
            hps[r["Name"]] = str(r["MinValue"])
    for r in ranges.get("CategoricalParameterRanges", []):
        hps[r["Name"]] = r["Values"][0]
    hps["_tuning_objective_metric"] = request["HyperParameterTuningJobConfig"]["HyperParameterTuningJobObjective"][
        "MetricName"
    ]
    return hps


def main(image: str, metric_definitions: list[dict], hyperparameters: dict) -> dict:
    client = RecordingSageMakerClient()
    session = Session(
        boto_session=boto3.Session(region_name="us-east-1", aws_access_key_id="x", aws_secret_access_key="x"),
        sagemaker_client=client,
        default_bucket="any-bucket",
    )
    estimator = Estimator(
        image_uri=image,
        role=ROLE,
        instance_count=1,
        instance_type="ml.m5.large",
        output_path="s3://any-bucket/output",
        sagemaker_session=session,
        hyperparameters=hyperparameters,
        metric_definitions=metric_definitions,
    )
    tuner = HyperparameterTuner(
        estimator,
        objective_metric_name="evaluation_return_mean",
        objective_type="Maximize",
        hyperparameter_ranges={
            "rl.training.config.lr": ContinuousParameter(0.0001, 0.001, scaling_type="Logarithmic"),
            "rl.training.config.num_epochs": IntegerParameter(2, 4),
            "rl.training.config.minibatch_size": CategoricalParameter([100, 200]),
        },
        metric_definitions=metric_definitions,
        max_jobs=4,
        max_parallel_jobs=2,
    )
    # include_cls_metadata: the SDK adds the estimator class and module as hyperparameters, as
    # `HyperparameterTuner.attach` needs them (always so for framework estimators such as RLEstimator).
    tuner.fit(wait=False, include_cls_metadata=True)
    (request,) = client.requests
    return {"request": request, "training_job_hyperparameters": service_training_job_hyperparameters(request)}


if __name__ == "__main__":
    image, metrics, hps = sys.argv[1], json.loads(sys.argv[2]), json.loads(sys.argv[3])
    print("RESULT " + json.dumps(main(image, metrics, hps), default=str))
