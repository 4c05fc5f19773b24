"""ONNX export (`sagemaker_ray_rl.inference.onnx_export`) against the served policy: 1,000
observations per module through ONNX Runtime alone (a subprocess that imports only numpy and
onnxruntime) give the actions `Policy.compute` serves (Discrete identical, Box within 1e-5)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_onnx_serves_like_policy, onnx_observations, run_ort_only, run_train, write_job
from integration.conftest import free_port

pytestmark = pytest.mark.integration

N = 1000
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def exports(policy_dirs, tmp_path_factory):
    """kind -> (export report, loaded Policy), each exported to a temp dir (the shared
    checkpoints stay as trained)."""
    from sagemaker_ray_rl.inference.onnx_export import export_onnx
    from sagemaker_ray_rl.inference.policy import Policy

    done = {}
    for kind, path in policy_dirs.items():
        report = export_onnx(path, tmp_path_factory.mktemp(f"onnx-{kind}"))
        done[kind] = (report, Policy.load(path))
    return done


@pytest.mark.parametrize(
    ("kind", "module_id"),
    [
        ("cartpole", "default_policy"),
        ("pendulum", "default_policy"),
        ("meanstd", "default_policy"),
        ("dict_obs", "default_policy"),
        ("multi_agent", "p0"),
        ("multi_agent", "p1"),
    ],
)
def test_onnx_runtime_alone_gives_the_served_greedy_actions(exports, kind, module_id, tmp_path):
    import tree
    from ray.rllib.utils.spaces.space_utils import get_base_struct_from_space

    report, policy = exports[kind]
    assert report.not_exported == {}, report.not_exported
    model = report.exported[module_id]
    sidecar = json.loads(model.with_suffix(".json").read_text())
    pipeline = policy.pipeline(module_id)
    leaves = onnx_observations(pipeline.observation_space, N, seed=7)
    feed = {spec["name"]: leaf.astype(spec["dtype"]) for spec, leaf in zip(sidecar["inputs"], leaves, strict=True)}
    got = run_ort_only(model, feed, tmp_path)

    struct = get_base_struct_from_space(pipeline.observation_space)
    batch = leaves[0] if len(leaves) == 1 else tree.unflatten_as(struct, leaves)
    want = policy.compute(batch, module_id=module_id, outputs=("action_logp", "action_prob", "action_dist_inputs"))
    assert got["action"].shape == np.asarray(want["action"]).shape
    if sidecar["outputs"][0]["dtype"] == "int64":
        assert got["action"].dtype == np.int64
        np.testing.assert_array_equal(got["action"], want["action"])
    else:
        np.testing.assert_allclose(got["action"], want["action"], rtol=0, atol=1e-5)
        assert np.all(got["action"] >= pipeline.action_space.low)
        assert np.all(got["action"] <= pipeline.action_space.high)
    np.testing.assert_allclose(got["action_dist_inputs"], want["action_dist_inputs"], rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(got["action_logp"], want["action_logp"])
    np.testing.assert_array_equal(got["action_prob"], want["action_prob"])
    assert "vf_preds" in got  # PPO modules have a value function


@pytest.mark.parametrize("kind", ["pendulum", "meanstd"])
def test_box_actions_are_unsquashed_and_clipped_in_the_graph(exports, kind, tmp_path):
    """Far-out observations drive the Gaussian mean beyond [-1, 1]: the graph's actions still
    lie within the env's bounds, equal to the server's after unsquash and clip."""
    report, policy = exports[kind]
    model = report.exported["default_policy"]
    rng = np.random.default_rng(3)
    obs = (rng.normal(size=(N, 3)) * 50).astype(np.float32)
    got = run_ort_only(model, {"obs": obs}, tmp_path)
    want = policy.compute(obs, outputs=("action_dist_inputs",))
    np.testing.assert_allclose(got["action"], want["action"], rtol=0, atol=1e-5)
    assert got["action"].min() >= -2.0 and got["action"].max() <= 2.0
    sidecar = json.loads(model.with_suffix(".json").read_text())
    assert sidecar["action_postprocessing"]["normalize_actions"] is True
    assert "unsquash + clip" in sidecar["connectors"]["in_graph"]
    if kind == "meanstd":
        assert sidecar["connectors"]["in_graph"][0].startswith("MeanStdFilter (frozen")


def test_dict_observations_are_flattened_in_the_graph(exports):
    report, _ = exports["dict_obs"]
    sidecar = json.loads(report.exported["default_policy"].with_suffix(".json").read_text())
    # RLlib's CartPoleWithDictObservationSpace: nested Dict and Tuple, a Discrete leaf (one-hot in the graph).
    assert [(i["name"], i["dtype"], i["shape"]) for i in sidecar["inputs"]] == [
        ("obs.angular-pos.some_random_stuff", "int64", ["batch"]),
        ("obs.angular-pos.value", "float32", ["batch"]),
        ("obs.velocs.0", "float32", ["batch", 1]),
        ("obs.velocs.1", "float32", ["batch"]),
        ("obs.x-pos", "float32", ["batch", 1]),
    ]
    assert "FlattenObservations" in sidecar["connectors"]["in_graph"]
    assert sidecar["exporter"] == "torch.onnx.export(dynamo=True)"
    assert isinstance(sidecar["opset"], int) and sidecar["opset"] >= 18
    assert {"torch", "onnx", "onnxruntime", "onnxscript"} <= set(sidecar["versions"])


def test_stateful_module_is_reported_not_exported(exports):
    report, _ = exports["lstm"]
    assert report.exported == {}
    assert "stateful (RNN)" in report.not_exported["default_policy"]
    written = json.loads((report.out_dir / "export.json").read_text())
    assert written["exported"] == {}
    assert "stateful (RNN)" in written["not_exported"]["default_policy"]
    assert not (report.out_dir / "default_policy.onnx").exists()


def test_cli_exports_a_checkpoint_and_names_a_missing_one(policy_dirs, tmp_path):
    out = tmp_path / "cli"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "sagemaker_ray_rl.inference.onnx_export",
            str(policy_dirs["cartpole"]),
            "--out",
            str(out),
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert f"exported default_policy: {out / 'default_policy.onnx'}" in proc.stdout
    assert json.loads((out / "export.json").read_text())["exported"] == {"default_policy": "default_policy.onnx"}

    proc = subprocess.run(
        [sys.executable, "-m", "sagemaker_ray_rl.inference.onnx_export", str(tmp_path / "nothing")],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr


@pytest.fixture(scope="module")
def builtin_job(tmp_path_factory):
    """The `train` command, built-in PPO on CartPole-v1 for one small iteration (its own GCS port:
    other jobs may hold Ray's default one on this machine)."""
    base = write_job(
        tmp_path_factory.mktemp("onnx-job"),
        {
            "stop.training_iteration": "1",
            "num_env_runners": "1",
            "rl.training.config.train_batch_size_per_learner": "400",
            "rl.training.config.minibatch_size": "100",
            "ray.gcs_port": str(free_port()),
            "ray.include_dashboard": "false",
        },
    )
    run = run_train(base)
    assert run.returncode == 0, run.output[-4000:]
    return run


def test_built_in_job_writes_onnx_next_to_the_checkpoint(builtin_job, tmp_path):
    """The `train` command (built-in PPO CartPole) exports onnx/ into the model dir with parity."""
    model_dir = builtin_job.base / "model"
    assert f"ONNX: exported module default_policy to {model_dir / 'onnx' / 'default_policy.onnx'}" in (
        builtin_job.output
    )
    assert_onnx_serves_like_policy(model_dir, tmp_path)


def test_edge_example_plays_cartpole_with_onnxruntime_only(builtin_job):
    """examples/edge_inference.py on the built-in job's model: episodes played, no torch/Ray imported."""
    script = (
        "import runpy, sys; "
        "sys.argv = ['edge_inference.py', sys.argv[1], '--episodes', '2']; "
        "runpy.run_path('examples/edge_inference.py', run_name='__main__'); "
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'ray', 'sagemaker_ray_rl')); "
        "print('heavy', heavy)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", script, str(builtin_job.base / "model")],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=REPO,
    )
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "episode 1: return" in proc.stdout
    assert "mean return over 2 episodes:" in proc.stdout
    assert "heavy []" in proc.stdout
