"""SageMaker Python SDK v3 ``ModelTrainer`` in local-container mode against our image.

Run with the SDK v3 venv's Python (``.venv-sdk3/bin/python``). Driven by
``tests/container/test_sagemaker_local.py``; prints one ``RESULT {json}`` line.

What the SDK v3 local container runs (sagemaker-train 1.27, ``sagemaker/train/local``): hosts
``algo-1..N`` on a compose network, config files under /opt/ml/input/config, and
  - without ``source_code``: the image's entrypoint with no command at all (SageMaker itself passes
    ``train``). Our entrypoint runs ``train`` when it finds resourceconfig.json, so the built-in
    experiment runs from the hyperparameters.
  - with ``source_code``: the entrypoint replaced by ``/bin/bash -c .../sm_drivers/sm_train.sh``,
    the SDK's own driver, which bypasses our entrypoint and runs ``source_code.command`` (e.g.
    ``train``). That driver exports every hyperparameter as ``SM_HP_<NAME>``, which fails in
    bash for names with dots (``rl.training.config.lr``, ``stop.training_iteration``), so with a
    COMMAND the hyperparameters are given in their dotless spelling (``rl__training__config__lr``),
    which the image reads as the dotted one.

    python sdk3_local.py IMAGE WORK_DIR INSTANCE_COUNT [COMMAND]    (COMMAND: use source_code)
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sagemaker.train import ModelTrainer
from sagemaker.train.configs import Compute, SourceCode
from sagemaker.train.model_trainer import Mode

ROLE = "arn:aws:iam::123456789012:role/SageMakerRole"  # never assumed in local mode
HYPERPARAMETERS = {"rl.training.config.lr": 0.0003, "stop.training_iteration": 2, "num_env_runners": 1}
#: The same settings, spelled for the SDK's driver script (``__`` for ``.``).
DOTLESS_HYPERPARAMETERS = {k.replace(".", "__"): v for k, v in HYPERPARAMETERS.items()}


def main(image: str, work: Path, instance_count: int, command: str | None) -> dict:
    root = work / "containers"
    root.mkdir(parents=True, exist_ok=True)
    trainer = ModelTrainer(
        training_image=image,
        training_mode=Mode.LOCAL_CONTAINER,
        role=ROLE,
        base_job_name="smrl-sdk3",
        compute=Compute(instance_type="local_cpu", instance_count=instance_count),
        source_code=SourceCode(command=command) if command else None,
        hyperparameters=DOTLESS_HYPERPARAMETERS if command else HYPERPARAMETERS,
        local_container_root=str(root),
    )
    trainer.train(wait=True, logs=True)
    return {"model_tar": str(root / "compressed_artifacts" / "model.tar.gz")}


if __name__ == "__main__":
    image, work, count = sys.argv[1], Path(sys.argv[2]), int(sys.argv[3])
    command = sys.argv[4] if len(sys.argv) > 4 else None
    print("RESULT " + json.dumps(main(image, work, count, command)), flush=True)
