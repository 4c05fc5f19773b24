"""Ray token authentication of a multi-host job, seen from outside: a third container on the job's
docker network (the same image, without the job's /opt/ml) tries the master's Ray ports while the
job trains, then the job ends normally.

Each host derives the same token from the job's definition (`sagemaker_ray_rl.cluster.auth`); the
outsider has none, or a wrong one.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from container.conftest import docker
from multihost_job import MultiHostJob

pytestmark = pytest.mark.container

PROBE = Path(__file__).with_name("ray_auth_probe.py")
#: Short PPO iterations, and more of them than the probes need: the job is stopped once probed.
HYPERPARAMETERS = {
    "training.train_batch_size_per_learner": "500",
    "training.minibatch_size": "250",
    "stop.training_iteration": "1000",
    "num_env_runners": "1",
    "checkpoint_frequency": "1",
}


@pytest.fixture
def job(image: str, tmp_path):
    job = MultiHostJob(image, tmp_path, HYPERPARAMETERS, ["homogeneousCluster"] * 2)
    yield job
    job.cleanup()


def test_an_outsider_on_the_job_network_cannot_use_the_cluster(job: MultiHostJob, image: str):
    master, worker = job.hosts
    job.start_all()
    assert job.wait_for_log(master, "Ray cluster up", timeout=180), job.all_logs()
    assert "Ray token authentication on (token: derived from the job's definition" in job.logs(master)
    assert "Ray token authentication on (token: derived" in job.logs(worker)

    token_file = "/tmp/sagemaker_ray_rl/ray_auth_token"
    assert docker("exec", master.container, "stat", "-c", "%a", token_file).stdout.strip() == "600"
    token = docker("exec", master.container, "cat", token_file).stdout.strip()
    assert token == docker("exec", worker.container, "cat", token_file).stdout.strip() and len(token) == 64

    started = time.monotonic()
    probe = docker(
        "run",
        "--rm",
        "--network",
        job.network,
        "-v",
        f"{PROBE}:/probe.py:ro",
        image,
        "python",
        "/probe.py",
        master.name,
        "6379",
        token,
        timeout=300,
    )
    assert probe.returncode == 0, probe.stdout + probe.stderr
    results = json.loads(probe.stdout.strip().splitlines()[-1])
    print(f"probes took {time.monotonic() - started:.1f} s: {json.dumps(results, indent=1)}")

    # The GCS and the agent are there and answer the job's token (else the refusals prove nothing;
    # a Ray Client connection with the token is left out: on a busy machine the client server the
    # proxy starts for it does not start in time)...
    assert {6379, 10001, 52365} <= set(results["open_ports"]["detail"]), results
    assert results["gcs_with_token"]["ok"], results["gcs_with_token"]
    # (the agent has no /api/version: past authentication it answers 404)
    assert results["agent_version_with_token"].get("status") not in (None, 401, 403), results
    assert results["agent_version"].get("status") == 401, results
    # ...and nothing else.
    for name in ("ray_init_no_auth", "gcs_wrong_token", "ray_client", "agent_version"):
        assert not results[name]["ok"], f"{name} got in: {results[name]}"
    assert "InvalidAuthToken" in results["gcs_wrong_token"]["detail"], results["gcs_wrong_token"]
    # No job submission: the dashboard listens on 127.0.0.1 only, the agent wants the token.
    assert not results["job_submit_dashboard"]["ok"], results["job_submit_dashboard"]
    assert 8265 not in results["open_ports"]["detail"]
    agent = results["job_submit_agent"]
    assert not agent["ok"] and agent.get("status") in (401, 403), agent
    assert "pwned" not in docker("exec", master.container, "ls", "/tmp").stdout

    # The job itself trained through all of this, and ends as a stopped job does.
    assert job.wait_for_log(master, "training_iteration: 1", timeout=120), job.all_logs()
    docker("kill", "--signal", "TERM", master.container)
    codes = job.wait_all(timeout=150)
    assert codes == {h.name: 0 for h in job.hosts}, job.all_logs()
    assert any((master.base / "checkpoints").rglob("checkpoint_*")), "no checkpoint written"
    assert master.failure is None and worker.failure is None
    assert token not in job.all_logs()
