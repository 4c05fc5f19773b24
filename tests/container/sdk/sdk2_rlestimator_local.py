"""SageMaker Python SDK v2 ``RLEstimator`` in local mode against our image: a user entry point trains,
the model is deployed, a `Predictor` made by hand predicts, and a batch transform runs.

Run with the SDK v2 venv's Python (``.venv-sdk2/bin/python``). Driven by
``tests/container/test_sagemaker_local.py``; prints one ``RESULT {json}`` line. Nothing is mocked:
the SDK's LocalSession runs our image with ``train`` and ``serve``; no AWS call is made.

What ``RLEstimator`` does with ``image_uri`` (sagemaker 2.x, ``sagemaker/rl/estimator.py``):
``toolkit``, ``toolkit_version`` and ``framework`` are not needed (given, they are ignored with a
warning); ``entry_point`` is required (a `Framework` estimator): the toolkit runs it as
``sagemaker_program``. ``deploy``/``create_model`` build a plain ``FrameworkModel``, whose
``predictor_cls`` is None, so ``deploy`` returns None and the endpoint is reached with a
`sagemaker.predictor.Predictor` made from its name. The serving container gets ``SAGEMAKER_PROGRAM``
(the training script) and ``SAGEMAKER_SUBMIT_DIRECTORY`` (its source dir); ``serve`` ignores both
and answers from the checkpoint in ``/opt/ml/model``.

    python sdk2_rlestimator_local.py IMAGE WORK_DIR SERVING_PORT LABEL
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import boto3
from sagemaker.deserializers import JSONDeserializer
from sagemaker.local import LocalSession
from sagemaker.predictor import Predictor
from sagemaker.rl import RLEstimator
from sagemaker.serializers import JSONSerializer

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"  # never assumed in local mode
OBS = [[0.01, -0.02, 0.03, 0.04], [0.1, 0.5, -0.1, -0.5]]
ENTRY_POINT = Path(__file__).resolve().parent / "rl_cartpole.py"
CODE_LOCATION = "s3://smrl-local-mode-unused/code"


def main(image: str, work: Path, serving_port: int, label: str) -> dict:
    session = LocalSession(boto_session=boto3.Session(region_name="us-east-1"))
    key, _, value = label.partition("=")
    session.config = {
        "local": {
            "local_code": True,
            "serving_port": serving_port,
            "container_root": str(work / "containers"),
            "container_config": {"labels": {key: value}},
        }
    }
    (work / "containers").mkdir(parents=True, exist_ok=True)
    result: dict = {}

    estimator = RLEstimator(
        entry_point=str(ENTRY_POINT),
        image_uri=image,
        role=ROLE,
        instance_count=1,
        instance_type="local",
        output_path=f"file://{work / 'output'}",
        # Never written to in local mode with local code, but without it the model's code staging
        # asks STS for the account's default bucket (an AWS call) before it finds that out.
        code_location=CODE_LOCATION,
        base_job_name="smrl-rlestimator",
        sagemaker_session=session,
        hyperparameters={"rl.training.config.lr": 0.0003, "stop.training_iteration": 2},
    )
    estimator.fit(wait=True, logs=True)
    result["model_data"] = estimator.model_data

    endpoint_name = "smrl-rlestimator-endpoint"
    deployed = estimator.deploy(initial_instance_count=1, instance_type="local", endpoint_name=endpoint_name)
    result["deploy_returned"] = repr(deployed)
    predictor = Predictor(
        endpoint_name, sagemaker_session=session, serializer=JSONSerializer(), deserializer=JSONDeserializer()
    )
    try:
        result["serving_env"] = {
            k: v
            for k, v in session.sagemaker_client.describe_model(ModelName=_model_name(session, endpoint_name))[
                "PrimaryContainer"
            ]["Environment"].items()
            if k in ("SAGEMAKER_PROGRAM", "SAGEMAKER_SUBMIT_DIRECTORY")
        }
        result["predict"] = predictor.predict({"instances": OBS})
    finally:
        predictor.delete_endpoint()

    inputs = work / "transform-in"
    inputs.mkdir(exist_ok=True)
    lines = [json.dumps(o) for o in OBS * 3]
    (inputs / "observations.jsonl").write_text("\n".join(lines) + "\n")
    transformer = estimator.transformer(
        instance_count=1,
        instance_type="local",
        strategy="MultiRecord",
        assemble_with="Line",
        accept="application/jsonlines",
        output_path=f"file://{work / 'transform-out'}",
    )
    # logs=False: LocalSession does not override logs_for_transform_job, which reads CloudWatch.
    transformer.transform(
        f"file://{inputs}", content_type="application/jsonlines", split_type="Line", wait=True, logs=False
    )
    out = (work / "transform-out" / "observations.jsonl.out").read_text()
    result["transform_input_lines"] = len(lines)
    result["transform_output"] = [json.loads(line) for line in out.splitlines() if line.strip()]
    return result


def _model_name(session: LocalSession, endpoint_name: str) -> str:
    """The model behind a local endpoint (endpoint -> endpoint config -> its one production variant)."""
    client = session.sagemaker_client
    config_name = client.describe_endpoint(EndpointName=endpoint_name)["EndpointConfigName"]
    return client.describe_endpoint_config(EndpointConfigName=config_name)["ProductionVariants"][0]["ModelName"]


if __name__ == "__main__":
    image, work, port, label = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
    print("RESULT " + json.dumps(main(image, work, port, label)), flush=True)
