"""RLlib's own example scripts, copied unchanged from the Ray wheel, as SageMaker entry points in
the image: they train (small stop criteria passed as hyperparameters, which reach the script as
``--stop-iters 1`` etc.), the image exports the checkpoint their Tune run left
(`training.user_checkpoints`) with ``metadata.json`` and ONNX graphs, and ``serve`` answers
``/invocations`` with a valid action for the example's env.

One trained job per example serves both the export and the serving assertions: the multi-agent
and custom-RLModule examples on one host, the custom-env example on two (where the trial may run on
either host).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import ray.rllib.examples
import requests
from container.conftest import docker
from container.test_image import Server
from multihost_job import MultiHostJob

pytestmark = pytest.mark.container

#: RLlib's examples in the Ray wheel this test environment has (the image pins the same Ray).
EXAMPLES = Path(ray.rllib.examples.__file__).parent
#: Small stop criteria and one env runner (the CI runner has 2 cores); the rest is RLlib's defaults.
SMALL = {"stop-iters": "1", "num-env-runners": "1"}


def run_example(image: str, root: Path, example: str, hyperparameters: dict, hosts: int = 1) -> MultiHostJob:
    """Run `example` (a path under ray/rllib/examples) as the job's entry point on `hosts` hosts;
    returns the finished job (every host exited 0, else the assertion shows the logs)."""
    job = MultiHostJob(
        image,
        root,
        {**hyperparameters, "sagemaker_program": Path(example).name, "sagemaker_submit_directory": "/opt/ml/source"},
        ["homogeneousCluster"] * hosts,
    )
    for host in job.hosts:
        (host.base / "source").mkdir()
        shutil.copy(EXAMPLES / example, host.base / "source" / Path(example).name)
    try:
        job.start_all()
        codes = job.wait_all(timeout=420)
        (root / "logs.txt").write_text("\n".join(f"===== {h.name}\n{job.logs(h)}" for h in job.hosts))
        assert codes == {h.name: 0 for h in job.hosts}, job.all_logs()
    finally:
        job.cleanup()
    return job


def exported(model_dir: Path) -> tuple[dict, dict]:
    """``metadata.json`` and ``onnx/export.json`` of an exported model dir."""
    metadata = json.loads((model_dir / "metadata.json").read_text())
    report = json.loads((model_dir / "onnx" / "export.json").read_text())
    return metadata, report


def serve(image: str, model_dir: Path, body: dict) -> dict:
    """POST `body` to ``/invocations`` of ``serve`` on `model_dir`; the JSON answer (status 200).

    The server is removed afterwards without checking its exit status: a clean stop on SIGTERM is
    test_image.py's subject, and on a loaded machine gunicorn's 25 s graceful stop may outlast
    ``docker stop -t 30`` (exit 137), which says nothing about the example's model.
    """
    server = Server(image, model_dir)
    try:
        server.wait_until_healthy(timeout=120)
        answer = requests.post(f"{server.url}/invocations", json=body, timeout=30)
        assert answer.status_code == 200, (answer.text, server.logs()[-3000:])
        return answer.json()
    finally:
        docker("rm", "-f", server.container, timeout=120)


@pytest.fixture(scope="module")
def multi_agent(image: str, tmp_path_factory) -> MultiHostJob:
    hyperparameters = {**SMALL, "num-agents": "2"}
    return run_example(
        image, tmp_path_factory.mktemp("multi_agent"), "multi_agent/multi_agent_cartpole.py", hyperparameters
    )


def test_multi_agent_example_trains_exports_and_serves_each_agent(image: str, multi_agent: MultiHostJob):
    model_dir = multi_agent.hosts[0].base / "model"
    metadata, report = exported(model_dir)
    assert metadata["module_ids"] == ["p0", "p1"]
    assert report["exported"] == {"p0": "p0.onnx", "p1": "p1.onnx"}
    # Agents 0 and 1 of MultiAgentCartPole go to p0 and p1 by the script's own policy_mapping_fn.
    answer = serve(image, model_dir, {"agents": {"0": [0.01, -0.02, 0.03, 0.04], "1": [0.1, 0.5, -0.1, -0.5]}})
    assert set(answer["agents"]) == {"0", "1"}
    assert all(answer["agents"][agent]["action"] in (0, 1) for agent in ("0", "1"))


def test_custom_rl_module_example_trains_exports_and_serves_with_its_state(image: str, tmp_path: Path):
    job = run_example(image, tmp_path, "rl_modules/custom_lstm_rl_module.py", SMALL)
    model_dir = job.hosts[0].base / "model"
    metadata, report = exported(model_dir)
    assert metadata["modules"]["default_policy"]["class"].endswith("LSTMContainingRLModule")
    # An RNN's actions depend on a state carried between calls: no ONNX graph, the reason recorded.
    assert report["exported"] == {} and "stateful" in report["not_exported"]["default_policy"]
    answer = serve(image, model_dir, {"instances": [[0.01, 0.02], [0.1, -0.1]]})
    predictions = answer["predictions"]
    assert [p["action"] in (0, 1) for p in predictions] == [True, True]
    assert all("state_out" in p for p in predictions)


def test_custom_env_example_on_two_hosts_exports_the_checkpoint_wherever_its_trial_ran(image: str, tmp_path: Path):
    job = run_example(image, tmp_path, "envs/custom_gym_env.py", SMALL, hosts=2)
    master, worker = job.hosts
    metadata, report = exported(master.base / "model")
    assert metadata["algorithm"] == "PPO" and metadata["module_ids"] == ["default_policy"]
    assert metadata["env"] == "<class '__main__.SimpleCorridor'>" and metadata["env_config"] == {"corridor_length": 10}
    assert metadata["modules"]["default_policy"]["observation_space"] == "Box(0.0, 10.0, (1,), float32)"
    assert metadata["metrics"]["training_iteration"] == 1
    assert report["exported"] == {"default_policy": "default_policy.onnx"}
    assert not (worker.base / "model" / "metadata.json").exists()
    answer = serve(image, master.base / "model", {"observation": [2.0]})
    assert answer["predictions"][0]["action"] in (0, 1)
