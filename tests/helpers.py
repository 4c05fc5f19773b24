"""Helpers shared by the tests: real /opt/ml trees in temp dirs (`write_job`, shared with the scripts
in scripts/devtools.py), and the `train` command run as the image's entrypoint runs it."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from devtools import job_environ, write_job
from filelock import FileLock

from sagemaker_ray_rl.checkpoint import (
    ENV_TO_MODULE_SUBDIR,
    MODULE_TO_ENV_SUBDIR,
    ONNX_EXPORT_REPORT,
    onnx_dir,
    onnx_sidecar_path,
    rl_module_dir,
)

__all__ = [
    "BIN",
    "TrainingRun",
    "job_environ",
    "rllib_reference",
    "run_train",
    "shared_once",
    "train_policies",
    "write_job",
]

BIN = Path(sys.executable).parent


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

    e2m = EnvToModulePipeline.from_checkpoint(str(checkpoint / ENV_TO_MODULE_SUBDIR))
    m2e = ModuleToEnvPipeline.from_checkpoint(str(checkpoint / MODULE_TO_ENV_SUBDIR))
    for connector in e2m.connectors:
        if type(connector).__name__ == "MeanStdFilter":
            connector._update_stats = False
    module = RLModule.from_checkpoint(str(rl_module_dir(checkpoint, "default_policy")))
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


#: Runs an exported ONNX graph with onnxruntime only, then lists any torch, Ray or package module imported.
ORT_ONLY = """
import json, sys
import numpy as np
import onnxruntime as ort

model, inputs, outputs = sys.argv[1:4]
session = ort.InferenceSession(model, providers=["CPUExecutionProvider"])
feed = dict(np.load(inputs))
names = [o.name for o in session.get_outputs()]
np.savez(outputs, **dict(zip(names, session.run(None, feed))))
heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "ray", "sagemaker_ray_rl"))
print(json.dumps({"heavy_modules": heavy}))
"""


def run_ort_only(model: Path, feed: dict[str, np.ndarray], tmp: Path) -> dict[str, np.ndarray]:
    """Outputs of the ONNX graph `model` for `feed`, computed in a subprocess that imports only
    numpy and onnxruntime (asserted: no torch, Ray or sagemaker_ray_rl module in sys.modules)."""
    inputs, outputs = tmp / f"{model.stem}-in.npz", tmp / f"{model.stem}-out.npz"
    np.savez(inputs, **feed)
    proc = subprocess.run(
        [sys.executable, "-c", ORT_ONLY, str(model), str(inputs), str(outputs)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == {"heavy_modules": []}
    with np.load(outputs) as data:
        return dict(data)


def onnx_observations(space, n: int, seed: int) -> list[np.ndarray]:
    """`n` observations sampled from `space`, as an exported graph's input leaves (tree.flatten order)."""
    import tree

    space.seed(seed)
    samples = [space.sample() for _ in range(n)]
    return [np.stack([np.asarray(x) for x in column]) for column in zip(*(tree.flatten(s) for s in samples))]


def assert_onnx_serves_like_policy(model_dir: Path, tmp: Path, n: int = 1000) -> None:
    """Every module exported under ``model_dir/onnx`` gives, through onnxruntime alone, the greedy
    actions `Policy.compute` serves for `n` observations sampled from its observation space."""
    import tree
    from ray.rllib.utils.spaces.space_utils import get_base_struct_from_space

    from sagemaker_ray_rl.inference.policy import Policy

    policy = Policy.load(model_dir)
    report = json.loads((onnx_dir(model_dir) / ONNX_EXPORT_REPORT).read_text())
    assert report["not_exported"] == {}, report
    assert sorted(report["exported"]) == policy.module_ids
    for module_id, name in report["exported"].items():
        model = onnx_dir(model_dir) / name
        sidecar = json.loads(onnx_sidecar_path(model).read_text())
        pipeline = policy.pipeline(module_id)
        leaves = onnx_observations(pipeline.observation_space, n, seed=11)
        feed = {spec["name"]: leaf.astype(spec["dtype"]) for spec, leaf in zip(sidecar["inputs"], leaves)}
        got = run_ort_only(model, feed, tmp)
        struct = get_base_struct_from_space(pipeline.observation_space)
        want = policy.compute(leaves[0] if len(leaves) == 1 else tree.unflatten_as(struct, leaves), module_id=module_id)
        if np.issubdtype(np.asarray(want["action"]).dtype, np.integer):
            np.testing.assert_array_equal(got["action"], want["action"])
        else:
            np.testing.assert_allclose(got["action"], want["action"], rtol=0, atol=1e-5)


def shared_once(tmp_path_factory, key: str, make: Callable[[Path], object]) -> Path:
    """The directory `key` of this test run, made once by ``make(directory)`` and shared by every
    module and every pytest-xdist worker (the workers' base temp dirs have one parent).

    The first caller makes it under a file lock; the others wait for the lock and reuse it. `key`
    must change with everything that changes what `make` makes (kinds, hyperparameters, image).
    A `make` that raises leaves its message in ``<key>.failed``: later callers fail at once with it
    instead of training again. Returns the directory.
    """
    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent
    target = root / "shared" / key
    target.parent.mkdir(parents=True, exist_ok=True)
    failed = target.with_name(f"{key}.failed")
    with FileLock(str(target.with_name(f"{key}.lock"))):
        if failed.exists():
            raise AssertionError(f"{key}: an earlier test could not make it:\n{failed.read_text()}")
        if not (target / ".complete").exists():
            shutil.rmtree(target, ignore_errors=True)
            target.mkdir()
            try:
                make(target)
            except BaseException as exc:
                failed.write_text(f"{type(exc).__name__}: {exc}"[-8000:])
                raise
            (target / ".complete").touch()
    return target
