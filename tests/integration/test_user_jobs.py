"""Jobs as SageMaker users start them: a tuning job's training jobs, and user entry points written
the way people write them (argparse, their own ``ray.init``, their own Tune runs), all through the
toolkit's real `train` command with real Ray, RLlib and Tune."""

from __future__ import annotations

import json
import re
import socket
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


def free_port() -> int:
    """A free TCP port for the job's Ray head (``ray.gcs_port``): other jobs may run on this machine."""
    with socket.socket() as s:
        s.bind(("", 0))
        return s.getsockname()[1]


def user_job(tmp_path: Path, script: str, hyperparameters: dict, **files: str) -> Path:
    """A job dir whose entry point is `script` (in a code dir with `files`), its Ray head on a free port."""
    code = tmp_path / "code"
    code.mkdir()
    (code / "entry.py").write_text(textwrap.dedent(script))
    for name, text in files.items():
        (code / name).write_text(textwrap.dedent(text))
    return write_job(
        tmp_path / "opt_ml",
        {
            "sagemaker_program": "entry.py",
            "sagemaker_submit_directory": str(code),
            "ray.gcs_port": free_port(),
            **hyperparameters,
        },
    )


def test_a_tuning_jobs_training_job_trains_and_exports(tmp_path: Path):
    base = write_job(tmp_path, {**TUNING_JOB_HYPERPARAMETERS, "ray.gcs_port": free_port()})
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


def test_a_failing_entry_point_names_its_exception_in_the_failure_file(tmp_path: Path):
    base = user_job(
        tmp_path,
        """
        import ray

        def check(settings):
            if settings["num_env_runners"] < 1:
                raise ValueError(f"num_env_runners must be at least 1, got {settings['num_env_runners']}")

        ray.init()
        check({"num_env_runners": 0})
        """,
        {},
    )
    run = run_train(base, timeout=300)
    assert run.returncode == 1, run.output[-4000:]
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith(
        "ValueError: num_env_runners must be at least 1, got 0 (entry point entry.py, exit code 1); "
        "traceback, last lines: "
    ), failure
    assert "line 6, in check | raise ValueError(" in failure
    assert len(failure.strip()) <= 1024
    # The job log still has the whole traceback, its lines as the script wrote them.
    assert '  File "' in run.output and "    raise ValueError(" in run.output


def test_an_argparse_script_gets_no_image_hyperparameters_as_arguments(tmp_path: Path):
    base = user_job(
        tmp_path,
        """
        import argparse, json, os, sys

        parser = argparse.ArgumentParser()
        parser.add_argument("--lr", type=float, required=True)
        parser.add_argument("--env", default="CartPole-v1")
        args = parser.parse_args()  # strict: any --ray.* argument would fail here
        print("ARGV", json.dumps(sys.argv[1:]))
        print("SM_HPS", os.environ["SM_HPS"])
        """,
        {"lr": 0.01, "ray.join_timeout_s": 60, "_tuning_objective_metric": "episode_return_mean"},
    )
    run = run_train(base, timeout=300)
    assert run.returncode == 0, run.output[-4000:]
    assert json.loads(re.search(r"^ARGV (.*)$", run.output, re.M).group(1)) == ["--lr", "0.01"]
    # The image's own hyperparameters stay where a script can read them.
    hps = json.loads(re.search(r"^SM_HPS (.*)$", run.output, re.M).group(1))
    assert hps["ray.join_timeout_s"] == 60 and "ray.gcs_port" in hps and hps["lr"] == 0.01


def test_ray_init_with_num_cpus_in_a_script_works_on_one_host(tmp_path: Path):
    # The seed-000 pattern: the script starts Ray with the host's CPUs and GPUs itself (Ray refuses
    # num_cpus/num_gpus when joining a running cluster, so the image starts none on one host).
    base = user_job(
        tmp_path,
        """
        import os
        import ray
        from ray.rllib.algorithms.ppo import PPOConfig

        ray.init(num_cpus=int(os.environ["SM_NUM_CPUS"]), num_gpus=int(os.environ["SM_NUM_GPUS"]))
        print("RAY_CPUS", int(ray.cluster_resources()["CPU"]), "SM_NUM_CPUS", os.environ["SM_NUM_CPUS"])
        config = (
            PPOConfig()
            .environment("CartPole-v1")
            .env_runners(num_env_runners=1)
            .training(train_batch_size_per_learner=500, minibatch_size=100, num_epochs=1)
        )
        algo = config.build_algo()
        algo.train()
        algo.save(os.environ["SM_MODEL_DIR"])
        """,
        {},
    )
    run = run_train(base, timeout=300)
    assert run.returncode == 0, run.output[-4000:]
    cpus, sm_cpus = re.search(r"^RAY_CPUS (\d+) SM_NUM_CPUS (\d+)$", run.output, re.M).groups()
    assert cpus == sm_cpus
    assert (base / "model" / "rllib_checkpoint.json").is_file()


def test_a_tune_run_that_cannot_be_placed_fails_within_a_minute_naming_cpus(tmp_path: Path):
    # RLlib's defaults sized for a bigger machine: more env runners than the host has CPUs.
    base = user_job(
        tmp_path,
        """
        import ray
        from ray import tune
        from ray.rllib.algorithms.ppo import PPOConfig

        ray.init()
        cpus = int(ray.cluster_resources()["CPU"])
        print("SCRIPT_CPUS", cpus, flush=True)
        config = PPOConfig().environment("CartPole-v1").env_runners(num_env_runners=cpus + 3)
        tune.Tuner("PPO", param_space=config, run_config=tune.RunConfig(stop={"training_iteration": 1})).fit()
        """,
        {},
    )
    run = run_train(base, timeout=300)
    assert run.returncode == 1, run.output[-4000:]
    cpus = int(re.search(r"^SCRIPT_CPUS (\d+)$", run.output, re.M).group(1))
    failure = (base / "output" / "failure").read_text()
    assert failure.startswith(
        f"The Tune run of entry point entry.py cannot be placed: a trial asks for {cpus + 4} CPU(s) and 0 GPU(s), "
        f"the Ray cluster has {cpus} CPU(s) and 0 GPU(s)"
    ), failure
    assert run.seconds < 90, run.seconds  # Tune checks after 20 s without a running trial


def test_run_experiment_asking_too_much_fails_at_once_and_a_foreign_current_host_does_not_hang(tmp_path: Path):
    # A hand-written job dir for `docker run`: resourceconfig.json names a host that is not this
    # machine's host name. The script's run_experiment asks for more CPUs than there are, then for
    # what fits.
    base = user_job(
        tmp_path,
        """
        import ray
        from ray.rllib.algorithms.ppo import PPOConfig
        from sagemaker_ray_rl import Environment, run_experiment
        from sagemaker_ray_rl.contract.errors import ClusterError

        environment = Environment.from_environ()
        config = (
            PPOConfig()
            .environment("CartPole-v1")
            .training(train_batch_size_per_learner=500, minibatch_size=100, num_epochs=1)
        )
        try:
            run_experiment(config.env_runners(num_env_runners=64), stop={"training_iteration": 1},
                           storage_dir=environment.checkpoint_dir, name="too-big")
        except ClusterError as exc:
            print("REFUSED", exc, flush=True)
        result = run_experiment(config.env_runners(num_env_runners=1), stop={"training_iteration": 1},
                                storage_dir=environment.checkpoint_dir)
        print("ITERATIONS", result.metrics["training_iteration"], flush=True)
        """,
        {},
    )
    (base / "input" / "config" / "resourceconfig.json").write_text(
        json.dumps({"current_host": "algo-1", "hosts": ["algo-1"], "network_interface_name": "eth0"})
    )
    run = run_train(base, timeout=400)
    assert run.returncode == 0, run.output[-4000:]
    refused = re.search(r"^REFUSED (.*)$", run.output, re.M).group(1)
    assert re.search(r"CPU: 6[45] asked, \d+ in the cluster", refused), refused
    assert re.search(r"^ITERATIONS 1$", run.output, re.M)
