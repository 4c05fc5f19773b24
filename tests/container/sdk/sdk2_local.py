"""SageMaker Python SDK v2 local mode against our image: train, deploy + predict, batch transform.

Run with the SDK v2 venv's Python (``.venv-sdk2/bin/python``), not the project's: the SDK pins its
own boto3/numpy. Driven by ``tests/container/test_sagemaker_local.py``; prints one JSON line
(prefixed ``RESULT ``) with what it saw. Nothing is mocked: the SDK's own LocalSession writes the
docker-compose file and runs our image with ``train`` and ``serve``. No AWS call is made: local
code, file:// output and model paths, a role ARN given explicitly.

    python sdk2_local.py IMAGE WORK_DIR INSTANCE_COUNT SERVING_PORT LABEL

Every container the SDK starts carries the docker label LABEL (``key=value``, through the SDK's
``local.container_config``), so that the caller can remove them: the SDK leaves them exited.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import boto3
from sagemaker.deserializers import JSONDeserializer
from sagemaker.estimator import Estimator
from sagemaker.local import LocalSession
from sagemaker.serializers import JSONSerializer

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"  # never assumed in local mode
OBS = [[0.01, -0.02, 0.03, 0.04], [0.1, 0.5, -0.1, -0.5]]


def main(image: str, work: Path, instance_count: int, serving_port: int, label: str) -> dict:
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

    estimator = Estimator(
        image_uri=image,
        role=ROLE,
        instance_count=instance_count,
        instance_type="local",
        output_path=f"file://{work / 'output'}",
        base_job_name="smrl-sdk2",
        sagemaker_session=session,
        hyperparameters={"rl.training.config.lr": 0.0003, "stop.training_iteration": 2, "num_env_runners": 1},
    )
    estimator.fit(wait=True, logs=True)
    result["model_data"] = estimator.model_data

    predictor = estimator.deploy(
        initial_instance_count=1,
        instance_type="local",
        serializer=JSONSerializer(),
        deserializer=JSONDeserializer(),
    )
    try:
        result["predict"] = predictor.predict({"instances": OBS})
        result["predict_single"] = predictor.predict({"observation": OBS[0]})
    finally:
        predictor.delete_endpoint()

    # Batch transform over a JSON Lines file: one observation per line (SplitType=Line), several
    # records per request (MultiRecord) as application/jsonlines, outputs joined by lines.
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


if __name__ == "__main__":
    image, work, count, port, label = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
    print("RESULT " + json.dumps(main(image, work, count, port, label)), flush=True)
