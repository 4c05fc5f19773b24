"""Helpers shared by the tests: real /opt/ml trees in temp dirs (`write_job`, shared with the scripts
in scripts/devtools.py), and the `train` command run as the image's entrypoint runs it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from devtools import write_job

__all__ = ["BIN", "TrainingRun", "job_environ", "rllib_reference", "run_train", "train_policies", "write_job"]

BIN = Path(sys.executable).parent


def job_environ(base: Path, **extra: str) -> dict[str, str]:
    """The environment the image gives `train`: our training module and a base dir."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SM_", "SAGEMAKER_"))}
    env.update(
        SAGEMAKER_BASE_DIR=str(base),
        SAGEMAKER_TRAINING_MODULE="sagemaker_ray_rl.train:main",
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
    """`python -m sagemaker_ray_rl.contract.standalone && train`, as the image's entrypoint runs them."""
    env = job_environ(base, **extra)
    start = time.monotonic()
    subprocess.run([sys.executable, "-m", "sagemaker_ray_rl.contract.standalone"], env=env, check=True)
    proc = subprocess.run(
        [str(BIN / "train")], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, timeout=timeout
    )
    return TrainingRun(base, proc.returncode, proc.stdout, time.monotonic() - start)


def rllib_reference(checkpoint: Path, observations: list) -> dict[str, np.ndarray]:
    """Actions (to the env) and distribution inputs as RLlib's env runner computes them."""
    import torch
    from ray.rllib.connectors.env_to_module import EnvToModulePipeline
    from ray.rllib.connectors.module_to_env import ModuleToEnvPipeline
    from ray.rllib.core.columns import Columns
    from ray.rllib.core.rl_module.rl_module import RLModule
    from ray.rllib.env.single_agent_episode import SingleAgentEpisode

    e2m = EnvToModulePipeline.from_checkpoint(str(checkpoint / "env_runner" / "env_to_module_connector"))
    m2e = ModuleToEnvPipeline.from_checkpoint(str(checkpoint / "env_runner" / "module_to_env_connector"))
    for connector in e2m.connectors:
        if type(connector).__name__ == "MeanStdFilter":
            connector._update_stats = False
    module = RLModule.from_checkpoint(str(checkpoint / "learner_group" / "learner" / "rl_module" / "default_policy"))
    module.eval()
    episodes = [
        SingleAgentEpisode(
            observations=[obs], observation_space=e2m.input_observation_space, action_space=m2e.action_space
        )
        for obs in observations
    ]
    shared: dict = {}
    batch = e2m(rl_module=module, episodes=episodes, explore=False, shared_data=shared)
    with torch.no_grad():
        out = module.forward_inference(batch)
    out = m2e(rl_module=module, batch=out, episodes=episodes, explore=False, shared_data=shared)
    return {
        "action": np.asarray(out.get(Columns.ACTIONS_FOR_ENV, out[Columns.ACTIONS])),
        "action_dist_inputs": np.stack([np.asarray(x) for x in out[Columns.ACTION_DIST_INPUTS]]),
    }


def train_policies(out: Path, kinds: list[str]) -> dict[str, Path]:
    """Train tiny policies (tests/integration/train_policies.py) in a subprocess; kind -> checkpoint.

    Ray gets a fresh local instance (``address="local"``), never another job's found in /tmp/ray.
    """
    script = Path(__file__).parent / "integration" / "train_policies.py"
    env = {**os.environ, "RAY_USAGE_STATS_ENABLED": "0", "PYTHONUNBUFFERED": "1", "RAY_AUTH_MODE": "disabled"}
    env.pop("RAY_ADDRESS", None)
    log = out / "train.log"
    with log.open("w") as sink:  # a file, not a pipe: Ray's daemons may hold inherited pipes open
        proc = subprocess.run(
            [sys.executable, str(script), str(out), *kinds], env=env, stdout=sink, stderr=subprocess.STDOUT, timeout=600
        )
    assert proc.returncode == 0, log.read_text()[-4000:]
    return {kind: out / kind for kind in kinds}
