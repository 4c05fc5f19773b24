"""Jobs as users start them, in the image: a tuning job's training job, a built-in job with the old
notebooks' model settings, and user entry points written for one machine (argparse, their own
``ray.init(num_cpus=...)``, a ``requirements.txt`` pinning other versions), on one host and two.

The same cases run without Docker in tests/integration/test_user_jobs.py; here they run in real
containers, with SageMaker-local-mode host names (`container.multihost.MultiHostJob`).
"""

from __future__ import annotations

import json
import re
import textwrap
import time

import pytest
from multihost_job import MultiHostJob

pytestmark = pytest.mark.container

#: What a SageMaker tuning job writes to its training job's hyperparameters.json (the SDK v2 tuner
#: with include_cls_metadata, and the service's reserved `_tuning_objective_metric`).
TUNING = {
    "stop.training_iteration": "1",
    "evaluation_episodes": "2",
    "training.train_batch_size_per_learner": "1000",
    "training.minibatch_size": "250",
    "sagemaker_estimator_class_name": '"Estimator"',
    "sagemaker_estimator_module": '"sagemaker.estimator"',
    "rl.training.config.lr": "0.0001",
    "_tuning_objective_metric": "evaluation_return_mean",
}

ARGPARSE_SCRIPT = """
import argparse, json, os, sys
import ray

parser = argparse.ArgumentParser()
parser.add_argument("--lr", type=float, required=True)
args = parser.parse_args()  # strict: a --ray.* argument fails here
ray.init({init_args})
with open("/opt/ml/model/ran.json", "w") as f:
    json.dump({{"argv": sys.argv[1:], "cpus": ray.cluster_resources()["CPU"], "hps": json.loads(os.environ["SM_HPS"])}}, f)
"""


@pytest.fixture
def make_job(image: str, tmp_path):
    jobs: list[MultiHostJob] = []

    def make(hyperparameters: dict, hosts: int, script: str | None = None, files: dict | None = None) -> MultiHostJob:
        if script is not None:
            hyperparameters = {
                **hyperparameters,
                "sagemaker_program": "entry.py",
                "sagemaker_submit_directory": "/opt/ml/source",
            }
        job = MultiHostJob(image, tmp_path, hyperparameters, ["homogeneousCluster"] * hosts)
        for host in job.hosts:
            if script is not None:
                (host.base / "source").mkdir()
                (host.base / "source" / "entry.py").write_text(textwrap.dedent(script))
                for name, text in (files or {}).items():
                    (host.base / "source" / name).write_text(textwrap.dedent(text))
        jobs.append(job)
        return job

    yield make
    for job in jobs:
        job.cleanup()


def test_a_tuning_jobs_training_job_trains_and_exports(make_job):
    job = make_job(TUNING, hosts=1)
    job.start_all()
    (host,) = job.hosts
    assert job.wait(host, timeout=420) == 0, job.logs(host)[-6000:]
    assert re.search(r"^evaluation_return_mean: \S+$", job.logs(host), re.M)
    assert (host.base / "model" / "metadata.json").is_file()


def test_a_failing_entry_point_names_its_exception(make_job):
    job = make_job({}, hosts=1, script="import gym_that_is_not_installed\n")
    job.start_all()
    (host,) = job.hosts
    assert job.wait(host, timeout=180) == 1, job.logs(host)[-6000:]
    assert host.failure.startswith(
        "ModuleNotFoundError: No module named 'gym_that_is_not_installed' (entry point entry.py, exit code 1)"
    ), host.failure


@pytest.mark.parametrize("hosts", [1, 2])
def test_an_argparse_script_gets_no_ray_arguments(make_job, hosts: int):
    script = ARGPARSE_SCRIPT.format(init_args="")
    job = make_job({"lr": "0.01", "ray.join_timeout_s": "120"}, hosts=hosts, script=script)
    job.start_all()
    codes = job.wait_all(timeout=300)
    assert codes == {h.name: 0 for h in job.hosts}, job.all_logs()
    ran = json.loads((job.hosts[0].base / "model" / "ran.json").read_text())
    assert ran["argv"] == ["--lr", "0.01"]
    assert ran["hps"]["ray.join_timeout_s"] == 120


def test_ray_init_with_num_cpus_works_on_one_host(make_job):
    script = ARGPARSE_SCRIPT.format(init_args='num_cpus=int(os.environ["SM_NUM_CPUS"]), num_gpus=0')
    job = make_job({"lr": "0.01"}, hosts=1, script=script)
    job.start_all()
    (host,) = job.hosts
    assert job.wait(host, timeout=180) == 0, job.logs(host)[-6000:]
    assert (host.base / "model" / "ran.json").is_file()


def test_ray_init_with_num_cpus_on_two_hosts_fails_at_once_saying_what_to_change(make_job):
    script = ARGPARSE_SCRIPT.format(init_args="num_cpus=2, num_gpus=0")
    job = make_job({"lr": "0.01"}, hosts=2, script=script)
    job.start_all()
    master, worker = job.hosts
    assert job.wait_for_log(master, "Invoking script with the following command", timeout=180), job.all_logs()
    script_started = time.time()
    codes = job.wait_all(timeout=120)
    assert codes[master.name] == 1 and codes[worker.name] is not None, job.all_logs()
    assert job.finished_at(master) - script_started <= 30
    assert "call ray.init() without num_cpus and num_gpus" in master.failure, master.failure


UNPLACEABLE_TUNE_RUN = """
import ray
from ray import tune
from ray.rllib.algorithms.ppo import PPOConfig

ray.init()
cpus = int(ray.cluster_resources()["CPU"])
config = PPOConfig().environment("CartPole-v1").env_runners(num_env_runners=cpus + 3)
tune.Tuner("PPO", param_space=config, run_config=tune.RunConfig(stop={"training_iteration": 1})).fit()
"""


def test_an_unplaceable_tune_run_fails_within_60_s_naming_the_cpus(make_job):
    job = make_job({}, hosts=1, script=UNPLACEABLE_TUNE_RUN)
    started = job.start_all()
    (host,) = job.hosts
    assert job.wait(host, timeout=180) == 1, job.logs(host)[-6000:]
    assert job.finished_at(host) - started <= 60
    assert re.match(
        r"The Tune run of entry point entry\.py cannot be placed: a trial asks for \d+ CPU\(s\) and 0 GPU\(s\), "
        r"the Ray cluster has \d+ CPU\(s\)",
        host.failure,
    ), host.failure


def test_old_notebooks_free_log_std_on_cartpole_is_dropped_with_a_warning_and_the_job_trains(make_job):
    """AWS's CartPole notebooks set ``model: {"free_log_std": True}``, which RLlib's new stack refuses on
    a Discrete action space."""
    hyperparameters = {
        "stop.training_iteration": "1",
        "num_env_runners": "1",
        "rl.training.config.model": '{"free_log_std": true}',
        "rl.training.config.train_batch_size": "500",
        "rl.training.config.minibatch_size": "100",
    }
    job = make_job(hyperparameters, hosts=1)
    job.start_all()
    (host,) = job.hosts
    assert job.wait(host, timeout=420) == 0, job.logs(host)[-6000:]
    logs = job.logs(host)
    warnings = re.findall(r"^.*WARNING.*model setting free_log_std=True dropped: .*$", logs, re.M)
    assert len(warnings) == 1, logs[-6000:]
    assert "only continuous (Box) action spaces" in warnings[0] and "Discrete(2)" in warnings[0]
    assert (host.base / "model" / "metadata.json").is_file()
    assert list((host.base / "model" / "onnx").glob("*.onnx")), sorted((host.base / "model").rglob("*"))


@pytest.mark.parametrize("hosts", [1, 2])
def test_a_requirements_txt_pinning_another_ray_fails_at_once_before_pip_runs(make_job, hosts: int):
    job = make_job(
        {"ray.join_timeout_s": "120"},
        hosts=hosts,
        script="import ray\n",
        files={"requirements.txt": "numpy\nray==2.9.3  # from an old notebook\n"},
    )
    started = job.start_all()
    codes = job.wait_all(timeout=120)
    assert codes == {h.name: 1 for h in job.hosts}, job.all_logs()
    for host in job.hosts:
        assert job.finished_at(host) - started < 60, job.all_logs()
        assert host.failure.startswith("RequirementsError: "), host.failure
        assert "requirements.txt line 2: 'ray==2.9.3'" in host.failure, host.failure
        assert "the image has ray==2.60.0" in host.failure and "remove the pin" in host.failure, host.failure
        logs = job.logs(host)
        assert "[sagemaker-ray-rl] the source dir's requirements.txt would replace" in logs
        # pip never ran: neither the toolkit's install step nor pip's own output.
        assert "Installing dependencies from requirements.txt" not in logs and "Collecting ray" not in logs, logs


#: A source dir's requirements.txt the image's pins meet, plus a small package the image lacks (from
#: PyPI). The --trusted-host lines are for machines whose registry traffic passes a TLS-intercepting
#: gateway whose CA the image does not hold; they are harmless elsewhere.
COMPATIBLE_REQUIREMENTS = """\
--trusted-host pypi.org
--trusted-host files.pythonhosted.org
ray[rllib]>=2.40
numpy
gymnasium~=1.2
tabulate
"""


def test_a_requirements_txt_the_image_meets_installs_and_keeps_the_images_ray(make_job):
    script = """
    import os
    import gymnasium, numpy, ray, tabulate
    with open(os.path.join(os.environ["SM_MODEL_DIR"], "versions.txt"), "w") as f:
        f.write(f"{ray.__version__} {gymnasium.__version__}")
    """
    job = make_job({}, hosts=1, script=script, files={"requirements.txt": COMPATIBLE_REQUIREMENTS})
    job.start_all()
    (host,) = job.hosts
    assert job.wait(host, timeout=240) == 0, job.logs(host)[-6000:]
    logs = job.logs(host)
    assert "Installing dependencies from requirements.txt" in logs
    assert re.search(r"Requirement already satisfied: ray(\[rllib\])?>=2\.40 .*\(2\.60\.0\)", logs), logs[-6000:]
    assert re.search(r"Successfully installed tabulate-\S+", logs), logs[-6000:]
    assert (host.base / "model" / "versions.txt").read_text() == "2.60.0 1.2.2"


def test_pip_in_the_image_runs_with_the_images_pins_as_constraints(image: str):
    """``PIP_CONSTRAINT`` is set: any pip run in the image (the toolkit's included) keeps the pinned Ray."""
    import subprocess

    run = subprocess.run(
        ["docker", "run", "--rm", image, "pip", "install", "--dry-run", "--no-index", "ray==2.9.3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode != 0
    assert "The user requested (constraint) ray==2.60.0" in run.stdout + run.stderr, run.stdout + run.stderr


#: A source dir that is a Python package (a ``setup.py``): the toolkit runs ``pip install .`` with it.
#: Its requirements.txt holds only COMPATIBLE_REQUIREMENTS' ``--trusted-host`` lines (pip passes them on
#: to the build-isolation environment, which fetches setuptools).
PACKAGE_SETUP_PY = """\
from setuptools import setup

setup(name="user-rl-pkg", version="0.1", py_modules=["rewards"], install_requires={install_requires})
"""
PACKAGE_MODULE = """\
def shaped(x):
    return 2 * x
"""


def _package_job(make_job, install_requires: list[str]):
    script = """
    import os
    import ray, rewards
    with open(os.path.join(os.environ["SM_MODEL_DIR"], "ran.txt"), "w") as f:
        f.write(f"{ray.__version__} {rewards.shaped(21)}")
    """
    return make_job(
        {},
        hosts=1,
        script=script,
        files={
            "setup.py": PACKAGE_SETUP_PY.format(install_requires=install_requires),
            "rewards.py": PACKAGE_MODULE,
            "requirements.txt": "--trusted-host pypi.org\n--trusted-host files.pythonhosted.org\n",
        },
    )


def test_a_source_dir_with_setup_py_installs_under_the_images_pins(make_job):
    """The toolkit installs a package source dir with ``pip install .``; PIP_CONSTRAINT holds there
    too: its modules import, a requirement the image meets keeps the image's Ray."""
    job = _package_job(make_job, ["numpy", "ray[rllib]>=2.40"])
    job.start_all()
    (host,) = job.hosts
    assert job.wait(host, timeout=300) == 0, job.logs(host)[-6000:]
    logs = job.logs(host)
    assert "Installing module." in logs, logs[-6000:]
    assert re.search(r"Successfully installed user-rl-pkg-0\.1", logs), logs[-6000:]
    assert (host.base / "model" / "ran.txt").read_text() == "2.60.0 42"


def test_a_setup_py_pinning_another_ray_fails_naming_the_conflict_and_keeps_the_images_ray(make_job):
    """``install_requires=["ray==2.9.3"]`` cannot replace the image's Ray: pip's resolver refuses it
    (the image's pins are constraints) and the failure file says which pin conflicts."""
    job = _package_job(make_job, ["ray==2.9.3"])
    job.start_all()
    (host,) = job.hosts
    assert job.wait(host, timeout=300) == 1, job.logs(host)[-6000:]
    assert host.failure.startswith("pip could not install the source dir ("), host.failure
    assert "depends on ray==2.9.3 | The user requested (constraint) ray==2.60.0" in host.failure, host.failure
    assert "remove or relax the conflicting requirement in setup.py" in host.failure, host.failure
    logs = job.logs(host)
    assert "Successfully installed" not in logs and "Uninstalling ray" not in logs, logs[-6000:]
