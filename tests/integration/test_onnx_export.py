"""ONNX export (`sagemaker_ray_rl.inference.onnx_export`) against the served policy: 1,000
observations per module through ONNX Runtime alone (a subprocess that imports only numpy and
onnxruntime) give the actions `Policy.compute` serves (Discrete identical, Box within 1e-5)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest
from helpers import assert_onnx_serves_like_policy, onnx_observations, run_ort_only, run_train, write_job
from integration.conftest import free_port

from sagemaker_ray_rl.checkpoint import (
    ONNX_EXPORT_REPORT,
    ONNX_SUBDIR,
    onnx_dir,
    onnx_graph_path,
    onnx_sidecar_path,
    rl_module_dir,
)

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
    sidecar = json.loads(onnx_sidecar_path(model).read_text())
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
    sidecar = json.loads(onnx_sidecar_path(model).read_text())
    assert sidecar["action_postprocessing"]["normalize_actions"] is True
    assert "unsquash + clip" in sidecar["connectors"]["in_graph"]
    if kind == "meanstd":
        assert sidecar["connectors"]["in_graph"][0].startswith("MeanStdFilter (frozen")


def test_dict_observations_are_flattened_in_the_graph(exports):
    report, _ = exports["dict_obs"]
    sidecar = json.loads(onnx_sidecar_path(report.exported["default_policy"]).read_text())
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
    written = json.loads((report.out_dir / ONNX_EXPORT_REPORT).read_text())
    assert written["exported"] == {}
    assert "stateful (RNN)" in written["not_exported"]["default_policy"]
    assert not onnx_graph_path(report.out_dir, "default_policy").exists()


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
    assert f"exported default_policy: {onnx_graph_path(out, 'default_policy')}" in proc.stdout
    assert json.loads((out / ONNX_EXPORT_REPORT).read_text())["exported"] == {"default_policy": "default_policy.onnx"}

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
    assert f"ONNX: exported module default_policy to {onnx_graph_path(onnx_dir(model_dir), 'default_policy')}" in (
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


def _job(base, hyperparameters, **config):
    """A job dir on a free Ray GCS port (other jobs may hold Ray's default one on this machine)."""
    return write_job(
        base, {**hyperparameters, "ray.gcs_port": str(free_port()), "ray.include_dashboard": "false"}, **config
    )


def test_user_entry_point_saving_with_algo_save_gets_onnx(tmp_path):
    """A user script that only calls ``algo.save(SM_MODEL_DIR)`` (no export_model, no metadata)."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "save_only.py").write_text(
        textwrap.dedent(
            """
            import os
            import ray
            from ray.rllib.algorithms.ppo import PPOConfig

            ray.init()
            config = (
                PPOConfig().environment("Pendulum-v1").env_runners(num_env_runners=0)
                .training(train_batch_size_per_learner=200, minibatch_size=100, num_epochs=1)
            )
            algo = config.build_algo()
            algo.train()
            algo.save(os.environ["SM_MODEL_DIR"])
            algo.stop()
            """
        )
    )
    base = _job(tmp_path / "opt_ml", {"sagemaker_program": "save_only.py", "sagemaker_submit_directory": str(code)})
    run = run_train(base, timeout=600)
    assert run.returncode == 0, run.output[-4000:]
    assert "ONNX: exported module default_policy" in run.output
    assert_onnx_serves_like_policy(base / "model", tmp_path)


def test_offline_discrete_cql_job_gets_onnx(tmp_path):
    """``mode=collect`` then ``mode=offline`` (DiscreteCQL): the selected checkpoint's graph gives the
    served greedy actions (the module computes its actions itself: no action_dist_inputs output)."""
    env = {"env": "CartPole-v1", "env_config": {"max_episode_steps": 100}}
    collect = _job(tmp_path / "collect", {"mode": "collect", **env, "offline.num_episodes": 40, "offline.num_envs": 8})
    run = run_train(collect)
    assert run.returncode == 0, run.output[-4000:]
    assert "ONNX" not in run.output  # collecting leaves no checkpoint to export
    offline = _job(
        tmp_path / "offline",
        {
            "mode": "offline",
            **env,
            "offline.num_updates": 100,
            "offline.evaluate_every": 100,
            "offline.num_runs": 1,
            "offline.fqe_updates": 50,
            "offline.model_updates": 50,
            "offline.eval_episodes": 1,
        },
        inputdataconfig={"train": {}},
    )
    shutil.copytree(collect / "output" / "data" / "dataset", offline / "input" / "data" / "train")
    run = run_train(offline)
    assert run.returncode == 0, run.output[-4000:]
    assert "ONNX: exported module default_policy" in run.output
    assert_onnx_serves_like_policy(offline / "model", tmp_path)
    sidecar = json.loads(onnx_sidecar_path(onnx_graph_path(onnx_dir(offline / "model"), "default_policy")).read_text())
    assert [o["name"] for o in sidecar["outputs"]] == ["action", "action_logp", "action_prob"]


@pytest.fixture(scope="module")
def exported_model_dirs(policy_dirs, tmp_path_factory):
    """kind -> a copy of the trained checkpoint with onnx/ exported into it (as a job leaves it)."""
    from sagemaker_ray_rl.inference.onnx_export import export_onnx

    dirs = {}
    for kind in ("cartpole", "pendulum", "meanstd", "dict_obs", "multi_agent"):
        model_dir = tmp_path_factory.mktemp(f"model-{kind}") / "model"
        shutil.copytree(policy_dirs[kind], model_dir)
        assert export_onnx(model_dir).not_exported == {}
        dirs[kind] = model_dir
    return dirs


def _instances(space, n: int, seed: int) -> list:
    """`n` JSON observations of `space`."""
    import tree
    from ray.rllib.utils.spaces.space_utils import get_base_struct_from_space

    leaves = onnx_observations(space, n, seed)
    struct = get_base_struct_from_space(space)
    if len(leaves) == 1:
        return leaves[0].tolist()
    return [
        tree.map_structure(lambda x: x.tolist(), tree.unflatten_as(struct, [leaf[i] for leaf in leaves]))
        for i in range(n)
    ]


@pytest.mark.parametrize("kind", ["cartpole", "pendulum", "meanstd", "dict_obs", "multi_agent"])
def test_serve_answers_greedy_requests_from_onnx_as_from_torch(exported_model_dirs, kind, tmp_path):
    """`serve` with SAGEMAKER_RAY_RL_INFERENCE=onnx and =torch on the same model: /ping says which,
    1,000 greedy observations get the same answers over HTTP (Discrete identical, floats within
    1e-5), and exploring requests are still answered (through torch)."""
    import requests
    from integration.conftest import ServeProcess

    from sagemaker_ray_rl.inference.policy import Policy

    model_dir = exported_model_dirs[kind]
    policy = Policy.load(model_dir)
    answers = {}
    # Both servers start at once: their imports and model loads overlap on the machine's cores.
    servers = {}
    for backend in ("onnx", "torch"):
        (tmp_path / backend).mkdir()
        servers[backend] = ServeProcess(model_dir, tmp_path / backend, SAGEMAKER_RAY_RL_INFERENCE=backend)
    try:
        for backend, server in servers.items():
            server.wait_until_healthy(timeout=180)
            ping = requests.get(f"{server.url}/ping", timeout=10).json()
            assert ping == {"status": "healthy", "inference": {m: backend for m in policy.module_ids}}
            for module_id in policy.module_ids:
                body = {
                    "instances": _instances(policy.pipeline(module_id).observation_space, N, seed=5),
                    "outputs": ["action_prob", "action_logp", "action_dist_inputs", "vf_preds"],
                }
                if len(policy.module_ids) > 1:
                    body["module_id"] = module_id
                response = requests.post(f"{server.url}/invocations", json=body, timeout=120)
                assert response.status_code == 200, response.text[:2000]
                answers[backend, module_id] = response.json()["predictions"]
                explore = requests.post(
                    f"{server.url}/invocations",
                    json={**body, "instances": body["instances"][:8], "explore": True},
                    timeout=60,
                )
                assert explore.status_code == 200, explore.text[:2000]
    finally:
        codes = {backend: server.stop() for backend, server in servers.items()}
    for backend, code in codes.items():
        assert code == 0, servers[backend].log.read_text()[-4000:]
    for module_id in policy.module_ids:
        onnx, torch = answers["onnx", module_id], answers["torch", module_id]
        assert len(onnx) == len(torch) == N
        for name in ("action", "action_prob", "action_logp", "action_dist_inputs", "vf_preds"):
            got, want = np.array([p[name] for p in onnx]), np.array([p[name] for p in torch])
            if name == "action" and np.issubdtype(want.dtype, np.integer):
                np.testing.assert_array_equal(got, want)
            else:
                np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=name)


@pytest.mark.parametrize("kind", ["cartpole", "pendulum", "dict_obs", "multi_agent"])
def test_each_set_of_outputs_is_answered_by_its_subgraph_as_by_the_whole_graph(exported_model_dirs, kind):
    """`OnnxGraph.run` runs only the nodes the requested outputs need: for every subset of the
    extra outputs the answers are the whole graph's, bit for bit, and the action's subgraph (the
    common request) leaves out the value function."""
    import itertools

    import onnx
    import tree
    from ray.rllib.utils.spaces.space_utils import get_base_struct_from_space

    from sagemaker_ray_rl.inference.policy import Policy

    policy = Policy.load(exported_model_dirs[kind], engine="onnx")
    for module_id, graph in policy.onnx_graphs.items():
        space = policy.pipeline(module_id).observation_space
        leaves = onnx_observations(space, N, seed=3)
        batch = leaves[0] if len(leaves) == 1 else tree.unflatten_as(get_base_struct_from_space(space), leaves)
        feed = {spec["name"]: leaf.astype(spec["dtype"]) for spec, leaf in zip(graph.sidecar["inputs"], leaves)}
        whole = dict(zip(graph.outputs, graph.session().run(list(graph.outputs), feed)))
        extra = [name for name in graph.outputs if name != "action"]
        for size in range(len(extra) + 1):
            for outputs in itertools.combinations(extra, size):
                got = graph.run(batch, outputs)
                assert list(got) == ["action", *outputs]
                for name, value in got.items():
                    np.testing.assert_array_equal(value, whole[name], err_msg=f"{module_id} {outputs} {name}")
        action_only = onnx.load_from_string(graph.subgraph(("action",)))
        assert len(action_only.graph.node) < len(onnx.load(str(graph.path)).graph.node)
        assert [o.name for o in action_only.graph.output] == ["action"]
        assert graph.subgraph(tuple(graph.outputs)) is None  # everything asked: the whole graph


def test_graphs_of_another_checkpoint_are_never_used(exported_model_dirs, tmp_path):
    """A stale onnx/ (exported from another checkpoint) is refused by 'onnx' with the reason and
    ignored by 'auto'."""
    from sagemaker_ray_rl.contract.errors import ModelLoadError
    from sagemaker_ray_rl.inference.policy import Policy

    model_dir = tmp_path / "model"
    shutil.copytree(exported_model_dirs["cartpole"], model_dir, ignore=shutil.ignore_patterns(ONNX_SUBDIR))
    shutil.copytree(onnx_dir(exported_model_dirs["pendulum"]), onnx_dir(model_dir))
    with pytest.raises(ModelLoadError, match="exported from another checkpoint"):
        Policy.load(model_dir, engine="onnx")
    assert Policy.load(model_dir, engine="auto").engines == {"default_policy": "torch"}
    assert Policy.load(exported_model_dirs["cartpole"], engine="auto").engines == {"default_policy": "onnx"}


def test_a_module_the_exporter_refuses_is_reported_and_the_others_exported(policy_dirs, tmp_path):
    """Multi-agent checkpoint whose p0 branches on tensor values (torch.export refuses it): p0 is
    listed with the exporter's reason, p1 is exported, and `serve`'s 'auto' answers p0 with torch."""
    from branchy_module import BranchyPPOModule
    from ray.rllib.algorithms.ppo.ppo_catalog import PPOCatalog
    from ray.rllib.core.rl_module.rl_module import RLModule

    from sagemaker_ray_rl.contract.errors import ModelLoadError
    from sagemaker_ray_rl.inference.onnx_export import export_onnx_safely
    from sagemaker_ray_rl.inference.policy import Policy

    model_dir = tmp_path / "model"
    shutil.copytree(policy_dirs["multi_agent"], model_dir)
    module_dir = rl_module_dir(model_dir, "p0")
    trained = RLModule.from_checkpoint(str(module_dir))
    branchy = BranchyPPOModule(
        observation_space=trained.observation_space,
        action_space=trained.action_space,
        inference_only=False,
        model_config=trained.model_config,
        catalog_class=PPOCatalog,
    )
    branchy.set_state(trained.get_state())
    shutil.rmtree(module_dir)
    branchy.save_to_path(str(module_dir))

    report = export_onnx_safely(model_dir)
    assert list(report.exported) == ["p1"]
    assert report.not_exported["p0"].startswith("the exporter failed: TorchExportError:")
    assert "data-dependent" in report.not_exported["p0"]
    assert not onnx_graph_path(onnx_dir(model_dir), "p0").exists()
    written = json.loads((onnx_dir(model_dir) / ONNX_EXPORT_REPORT).read_text())
    assert written["not_exported"] == {"p0": report.not_exported["p0"]}

    assert Policy.load(model_dir, engine="auto").engines == {"p0": "torch", "p1": "onnx"}
    with pytest.raises(ModelLoadError, match=r"\['p0'\] have none \(p0: not exported: the exporter failed"):
        Policy.load(model_dir, engine="onnx")


def test_a_corrupt_graph_is_refused_at_load(exported_model_dirs, tmp_path):
    from sagemaker_ray_rl.contract.errors import ModelLoadError
    from sagemaker_ray_rl.inference.policy import Policy

    model_dir = tmp_path / "model"
    shutil.copytree(exported_model_dirs["pendulum"], model_dir)
    onnx_graph_path(onnx_dir(model_dir), "default_policy").write_bytes(b"not a graph")
    with pytest.raises(ModelLoadError, match="ONNX Runtime cannot load .*default_policy.onnx"):
        Policy.load(model_dir, engine="onnx")
    assert Policy.load(model_dir, engine="auto").engines == {"default_policy": "torch"}
