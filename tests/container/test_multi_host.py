"""One Ray cluster over several containers of the image: joining, placement, and failures.

Each test runs real containers on a user-defined docker network, with SageMaker-local-mode host
names and one resourceconfig.json per host, and checks what Ray itself reports (``cluster.json`` is
written from Ray's state API by the master).
"""

from __future__ import annotations

import json
import time

import pytest
from multihost_job import MultiHostJob

pytestmark = pytest.mark.container

#: Short PPO iterations: the cluster is what is under test.
FAST = {"training.train_batch_size_per_learner": "1000", "training.minibatch_size": "250"}


@pytest.fixture
def make_job(image: str, tmp_path):
    jobs: list[MultiHostJob] = []

    def make(hyperparameters: dict, groups: list[str], heterogeneous: bool = False) -> MultiHostJob:
        job = MultiHostJob(image, tmp_path, {**FAST, **hyperparameters}, groups, heterogeneous)
        jobs.append(job)
        return job

    yield make
    for job in jobs:
        job.cleanup()


def test_three_hosts_train_one_policy(make_job):
    job = make_job({"stop.training_iteration": "2", "num_env_runners": "3"}, ["homogeneousCluster"] * 3)
    job.start_all()
    codes = job.wait_all(timeout=420)
    assert codes == {h.name: 0 for h in job.hosts}, job.all_logs()

    master, *workers = job.hosts
    summary = master.summary
    assert summary["hosts"] == [h.name for h in job.hosts]
    runners = summary["actors"]["SingleAgentEnvRunner"]
    assert sum(runners.values()) == 3
    assert len(runners) >= 2, f"env runners all on one host: {runners}"
    assert summary["actors"]["PPO"] == {master.name: 1}
    # The model is written once, by the master.
    assert (master.base / "model" / "metadata.json").exists()
    assert (master.base / "model" / "rllib_checkpoint.json").exists()
    for worker in workers:
        assert not any((worker.base / "model").iterdir()), f"{worker.name} wrote model files"
        assert not any((worker.base / "checkpoints").glob("*")), f"{worker.name} wrote checkpoints"
        assert "the master says the job is over (succeeded: True)" in job.logs(worker)
    # No worker outlives the master's exit by more than 30 s (the master itself exports after the
    # workers are released, so it may well be the last to exit).
    master_done = job.finished_at(master)
    late = {w.name: job.finished_at(w) - master_done for w in workers}
    assert all(seconds <= 30 for seconds in late.values()), late


def test_instance_groups_place_learner_and_env_runners_and_a_late_host_joins(make_job):
    """Heterogeneous cluster: the learner group's host starts 20 s after the others and still joins;
    the learner runs there, the env runners on the other group, the main process on the master."""
    job = make_job(
        {
            "stop.training_iteration": "1",
            "num_env_runners": "2",
            "ray.learner_group": "learner",
            "ray.env_runner_groups": "rollout",
        },
        ["rollout", "learner", "rollout"],
        heterogeneous=True,
    )
    master, learner_host, other = job.hosts
    job.start(master)
    job.start(other)
    time.sleep(20)
    job.start(learner_host)
    codes = job.wait_all(timeout=420)
    assert codes == {h.name: 0 for h in job.hosts}, job.all_logs()

    actors = master.summary["actors"]
    assert actors["PPO"] == {master.name: 1}
    assert actors.get("Learner") == {learner_host.name: 1}, actors
    runners = actors["SingleAgentEnvRunner"]
    assert sum(runners.values()) == 2
    assert set(runners) <= {master.name, other.name}, runners


def _long_job(make_job) -> MultiHostJob:
    job = make_job(
        {"stop.training_iteration": "10000", "num_env_runners": "2", "ray.head_lost_timeout_s": "10"},
        ["homogeneousCluster"] * 2,
    )
    job.start_all()
    master = job.hosts[0]
    assert job.wait_for_log(master, "training_iteration: 1\n", timeout=300), job.all_logs()
    return job


@pytest.mark.parametrize("lost", ["worker", "master"])
def test_a_lost_host_ends_the_others_within_60_s_naming_it(make_job, lost):
    """(a) a worker killed mid-training: the master fails; (b) the master killed: the worker stops.
    Either way the survivor exits non-zero within 60 s with a failure file naming the lost host."""
    from container.conftest import docker

    job = _long_job(make_job)
    master, worker = job.hosts
    gone, survivor = (worker, master) if lost == "worker" else (master, worker)
    docker("kill", gone.container, check=True)
    killed = time.time()
    code = job.wait(survivor, timeout=90)
    assert code not in (None, 0), job.logs(survivor)[-4000:]
    took = job.finished_at(survivor) - killed
    print(f"{lost} killed: {survivor.name} exited {code} after {took:.1f} s")
    assert took <= 60
    assert survivor.failure is not None and gone.name in survivor.failure, survivor.failure


def test_a_host_that_never_comes_fails_after_the_join_timeout(make_job):
    job = make_job({"stop.training_iteration": "1", "ray.join_timeout_s": "15"}, ["homogeneousCluster"] * 2)
    master, missing = job.hosts
    started = time.time()
    job.start(master)
    code = job.wait(master, timeout=180)
    assert code == 1, job.logs(master)[-4000:]
    took = job.finished_at(master) - started
    assert 15 <= took <= 90, took
    assert master.failure is not None
    assert missing.name in master.failure and "ray.join_timeout_s" in master.failure, master.failure
    assert "its name does not resolve" in master.failure


DRIVER = """
import json, os, socket, sys
import ray

ray.init()  # RAY_ADDRESS, set by the launcher
nodes = [n for n in ray.nodes() if n["Alive"]]
with open(f"/opt/ml/model/driver_ran_on_{socket.gethostname()}.json", "w") as f:
    json.dump({"alive_nodes": len(nodes), "argv": sys.argv[1:]}, f)
"""


def test_launch_runs_a_users_own_driver_once_on_the_cluster(make_job):
    """`python -m sagemaker_ray_rl.launch -- CMD` (the path for SDK v3 ModelTrainer drivers): the
    command runs on the master only, with both hosts in its Ray cluster."""
    job = make_job({}, ["homogeneousCluster"] * 2)
    for host in job.hosts:
        (host.base / "code").mkdir()
        (host.base / "code" / "driver.py").write_text(DRIVER)
    job.start_all("python", "-m", "sagemaker_ray_rl.launch", "--", "python", "/opt/ml/code/driver.py", "--x", "1")
    codes = job.wait_all(timeout=300)
    assert codes == {h.name: 0 for h in job.hosts}, job.all_logs()
    master, worker = job.hosts
    ran = json.loads((master.base / "model" / f"driver_ran_on_{master.name}.json").read_text())
    assert ran == {"alive_nodes": 2, "argv": ["--x", "1"]}
    assert not list((worker.base / "model").glob("driver_ran_on_*")), "the driver ran on a worker"


def test_a_user_entry_points_own_modules_load_on_every_host(make_job):
    """examples/newsvendor.py on 2 hosts: its env class lives in the source dir's newsvendor_env.py,
    which env runners on the worker host import too (the worker fetches the source dir as the master
    does). The source dir is a local path here, an S3 tarball on SageMaker."""
    import shutil

    from container.conftest import REPO

    job = make_job(
        {
            "sagemaker_program": "newsvendor.py",
            "sagemaker_submit_directory": "/opt/ml/source",
            "stop.training_iteration": "1",
            "num_env_runners": "3",
            "evaluation_episodes": "2",
        },
        ["homogeneousCluster"] * 2,
    )
    for host in job.hosts:
        shutil.copytree(REPO / "examples", host.base / "source", ignore=shutil.ignore_patterns("__pycache__"))
    job.start_all()
    codes = job.wait_all(timeout=420)
    assert codes == {h.name: 0 for h in job.hosts}, job.all_logs()[-6000:]
    master, worker = job.hosts
    runners = master.summary["actors"]["SingleAgentEnvRunner"]
    assert runners.get(worker.name, 0) >= 1, f"no env runner on the worker host: {runners}"
    # The trial (it writes the checkpoints to the master's /opt/ml/checkpoints) ran on the master.
    assert master.summary["actors"]["PPO"] == {master.name: 1}
    assert (worker.base / "code" / "newsvendor_env.py").is_file()
    assert (master.base / "output" / "data" / "newsvendor_evaluation.json").is_file()
    assert not (worker.base / "model" / "rllib_checkpoint.json").exists()
