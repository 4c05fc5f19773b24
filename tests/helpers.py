"""Helpers shared by the tests: real /opt/ml trees in temp dirs, and the `train` command run as the
image's entrypoint runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BIN = Path(sys.executable).parent


def write_job(base: Path, hyperparameters: dict | None = None, **config_files: dict) -> Path:
    """Make a SageMaker-style base dir: input/config/hyperparameters.json (values as strings, as
    SageMaker writes them) plus any other config file given as name=content."""
    config = base / "input" / "config"
    config.mkdir(parents=True, exist_ok=True)
    if hyperparameters is not None:
        encoded = {k: v if isinstance(v, str) else json.dumps(v) for k, v in hyperparameters.items()}
        (config / "hyperparameters.json").write_text(json.dumps(encoded))
    for name, content in config_files.items():
        (config / f"{name}.json").write_text(json.dumps(content))
    return base
def job_environ(base: Path, **extra: str) -> dict[str, str]:
    """The environment the image gives `train`: our training module and a base dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "SAGEMAKER_"))}
    env.update(
        SAGEMAKER_BASE_DIR=str(base),
        SAGEMAKER_TRAINING_MODULE="sagemaker_ray_rl.training:main",
        RAY_USAGE_STATS_ENABLED="0",
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@dataclass
class TrainingRun:
    base: Path
    returncode: int
    output: str
    seconds: float


def run_train(base: Path, timeout: float = 600, **extra: str) -> TrainingRun:
    """`python -m sagemaker_ray_rl.standalone && train`, as the image's entrypoint runs them."""
    env = job_environ(base, **extra)
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "sagemaker_ray_rl.standalone"], env=env, check=True)
    proc = subprocess.run(
        [str(BIN / "train")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout
    )
    return TrainingRun(base, proc.returncode, proc.stdout, time.monotonic() - start)
