"""Jobs as SageMaker users start them: a tuning job's training jobs, and user entry points written
the way people write them (argparse, their own ``ray.init``, their own Tune runs), all through the
toolkit's real `train` command with real Ray, RLlib and Tune."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
from helpers import run_train, write_job

pytestmark = pytest.mark.integration

FLOAT = r"([-+]?[0-9]*[.]?[0-9]+([eE][-+]?[0-9]+)?)"

#: A tuning job's training job, as the SDK v2 HyperparameterTuner and the tuning service write its
#: hyperparameters.json (tests/unit/training/sdk2_tuning_job.py builds the same with the real SDK).
TUNING_JOB_HYPERPARAMETERS = {
    "stop.training_iteration": "1",
    "evaluation_episodes": "2",
    "num_env_runners": "1",
    "rl.training.config.train_batch_size_per_learner": "500",
    "sagemaker_estimator_class_name": '"Estimator"',
    "sagemaker_estimator_module": '"sagemaker.estimator"',
    "rl.training.config.lr": "0.0001",
    "rl.training.config.minibatch_size": "100",
    "_tuning_objective_metric": "evaluation_return_mean",
}


def user_job(tmp_path: Path, script: str, hyperparameters: dict, **files: str) -> Path:
    """A job dir whose entry point is `script` (in a code dir with `files`)."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "entry.py").write_text(textwrap.dedent(script))
    for name, text in files.items():
        (code / name).write_text(textwrap.dedent(text))
    return write_job(
        tmp_path / "opt_ml",
        {"sagemaker_program": "entry.py", "sagemaker_submit_directory": str(code), **hyperparameters},
    )


def test_a_tuning_jobs_training_job_trains_and_exports(tmp_path: Path):
    base = write_job(tmp_path, TUNING_JOB_HYPERPARAMETERS)
    run = run_train(base, timeout=600)
    assert run.returncode == 0, run.output[-4000:]
    # The tuner's objective is printed in the form its metric definition matches.
    assert re.search(rf"^evaluation_return_mean: {FLOAT}$", run.output, re.M)
    metadata = json.loads((base / "model" / "metadata.json").read_text())
    assert metadata["algorithm"] == "PPO" and metadata["metrics"]["training_iteration"] == 1
    params = next((base / "checkpoints").glob("experiment/PPO_*/params.json"))
    config = json.loads(params.read_text())
    assert config["lr"] == 0.0001 and config["minibatch_size"] == 100
    assert not any(key.startswith("_tuning") for key in config)
