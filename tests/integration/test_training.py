"""Training through the toolkit's real `train` command, with real RLlib and Tune."""

from __future__ import annotations

import json
import re
import textwrap
from pathlib import Path

import pytest
from helpers import TrainingRun, run_train, write_job

pytestmark = pytest.mark.integration

FLOAT = r"([-+]?[0-9]*[.]?[0-9]+([eE][-+]?[0-9]+)?)"


def test_metric_lines_for_every_iteration(trained_job: TrainingRun):
    iterations = re.findall(r"^training_iteration: (\d+)$", trained_job.output, re.M)
    assert iterations == ["1", "2"]
    assert len(re.findall(rf"^episode_reward_mean: {FLOAT}$", trained_job.output, re.M)) == 2
    assert re.search(rf"^episode_return_mean: {FLOAT}$", trained_job.output, re.M)


def test_evaluation_episodes_every_k_iterations_print_metric_lines(trained_job: TrainingRun):
    # evaluation.evaluation_interval=2: RLlib's evaluation ran in iteration 2 only, over 3 episodes.
    block = trained_job.output.split("Evaluation of the exported policy")[0]
    evals = re.findall(rf"^evaluation_return_mean: {FLOAT}$", block, re.M)
    assert len(evals) == 1
    assert re.search(rf"^evaluation_len_mean: {FLOAT}$", trained_job.output, re.M)


def test_the_exported_policy_is_evaluated_at_the_end(trained_job: TrainingRun):
    assert "Evaluation of the exported policy over 4 episode(s):" in trained_job.output
    evals = re.findall(rf"^evaluation_return_mean: {FLOAT}$", trained_job.output, re.M)
    assert len(evals) == 2  # iteration 2 (evaluation_interval) and the end
    metadata = json.loads((trained_job.base / "model" / "metadata.json").read_text())
    assert metadata["metrics"]["evaluation_return_mean"] == float(evals[-1][0])
    assert metadata["metrics"]["evaluation_len_mean"] > 0


def test_the_learning_rate_reached_rllib(trained_job: TrainingRun):
    # What the learner's optimizer reported, not what we were given.
    assert re.findall(r"^learning_rate: (\S+)$", trained_job.output, re.M) == ["0.0003", "0.0003"]
    params = next((trained_job.base / "checkpoints").glob("experiment/PPO_*/params.json"))
    assert json.loads(params.read_text())["lr"] == 0.0003


def test_model_dir_holds_a_loadable_checkpoint_and_metadata(trained_job: TrainingRun):
    from ray.rllib.core.rl_module.rl_module import RLModule

    model = trained_job.base / "model"
    assert (model / "rllib_checkpoint.json").is_file()
    module = RLModule.from_checkpoint(str(model / "learner_group/learner/rl_module/default_policy"))
    assert module.action_space.n == 2

    metadata = json.loads((model / "metadata.json").read_text())
    assert metadata["algorithm"] == "PPO" and metadata["env"] == "CartPole-v1"
    assert metadata["module_ids"] == ["default_policy"]
    assert metadata["modules"]["default_policy"]["action_space"] == "Discrete(2)"
    assert metadata["metrics"]["training_iteration"] == 2
    assert metadata["metrics"]["episode_return_mean"] > 0
    assert metadata["hyperparameters"]["rl.training.config.lr"] == 0.0003
    assert set(metadata["versions"]) >= {"python", "ray", "torch", "gymnasium", "sagemaker_ray_rl"}
    assert not (trained_job.base / "output" / "failure").exists()
    assert (trained_job.base / "output" / "success").exists()  # the toolkit's own marker


def test_the_job_log_holds_no_known_harmless_noise(trained_job: TrainingRun):
    # What a user reads: our lines, Tune's table, RLlib's warnings that ask something of them.
    for noise in (
        "ERROR",
        " E ",
        "Deprecation",
        "gputil",
        "Ray runtime started",
        "new API stack",
        "onnx_ir",
        "LeafSpec",
        # A SystemExit from Ray's SIGTERM handler in a dying env runner (graceful_stop.wait_for_env_runners_at_stop).
        "Exception ignored in",
    ):
        assert noise not in trained_job.output, noise
    assert "[progress] iter 2/2" in trained_job.output


def test_unknown_hyperparameter_fails_before_ray_starts(tmp_path: Path):
    base = write_job(tmp_path, {"rl.training.config.lrr": "0.1"})
    run = run_train(base, timeout=120)
    assert run.returncode != 0
    failure = (base / "output" / "failure").read_text()
    assert "Unknown hyperparameter 'rl.training.config.lrr'" in failure
    assert "Did you mean 'lr'" in failure
    assert "Started a local Ray instance" not in run.output


def test_a_bad_model_config_fails_before_ray_starts(tmp_path: Path):
    # RLlib accepts any model_config at config time; our preflight builds the RLModule.
    base = write_job(tmp_path, {"rl_module.model_config": {"fcnet_activation": "no_such_activation"}})
    run = run_train(base, timeout=120)
    assert run.returncode != 0
    failure = (base / "output" / "failure").read_text()
    assert "Unknown activation (no_such_activation)" in failure
    assert "Started a local Ray instance" not in run.output


def test_user_entry_point_with_the_public_api(tmp_path: Path):
    code = tmp_path / "code"
    code.mkdir()
    (code / "train_custom.py").write_text(
        textwrap.dedent(
            """
            import argparse
            import gymnasium as gym
            from sagemaker_ray_rl import (
                Environment, build_config, build_metadata, export_model, register_env, run_experiment,
            )

            parser = argparse.ArgumentParser()
            parser.add_argument("--episode-limit", type=int)
            args, _ = parser.parse_known_args()

            register_env("short-cartpole", lambda cfg: gym.make("CartPole-v1", max_episode_steps=cfg["limit"]))
            environment = Environment.from_environ()
            config = build_config(env="short-cartpole", ignore=["episode-limit"])
            config.environment(env_config={"limit": args.episode_limit})
            result = run_experiment(config, stop={"training_iteration": 1}, storage_dir=environment.checkpoint_dir)
            metadata = build_metadata(result.checkpoint_dir, algorithm="PPO", env="short-cartpole",
                                      env_config={"limit": args.episode_limit}, metrics=result.metrics)
            export_model(result.checkpoint_dir, environment.model_dir, metadata)
            print("user script episode_return_max", result.metrics["episode_return_max"])
            """
        )
    )
    base = write_job(
        tmp_path / "opt_ml",
        {
            "sagemaker_program": "train_custom.py",
            "sagemaker_submit_directory": str(code),
            "episode-limit": 20,
            "rl.training.config.train_batch_size_per_learner": 500,
            "rl.training.config.minibatch_size": 100,
        },
    )
    run = run_train(base, timeout=300)
    assert run.returncode == 0, run.output[-4000:]
    # The episode limit passed as a command-line argument reached the env: no return above 20.
    assert float(re.search(r"user script episode_return_max (\S+)", run.output).group(1)) <= 20
    metadata = json.loads((base / "model" / "metadata.json").read_text())
    assert metadata["env"] == "short-cartpole" and metadata["env_config"] == {"limit": 20}
    # export_model's checkpoint also gets its ONNX graph (train.py exports after the entry point).
    assert json.loads((base / "model" / "onnx" / "export.json").read_text())["exported"] == {
        "default_policy": "default_policy.onnx"
    }


def test_the_stopped_head_leaves_no_address_for_a_later_ray_init(trained_job: TrainingRun):
    # `ray start --head` writes its address to Ray's ray_current_cluster file, and a later bare
    # ray.init() on the machine would try to join that (dead) cluster.
    from ray._common.utils import get_ray_address_file

    ip = re.search(r"master \S+ \(([\d.]+)\): starting the Ray head", trained_job.output).group(1)
    path = Path(get_ray_address_file(None))
    assert not path.exists() or path.read_text().strip() != f"{ip}:6379"


def test_stop_on_the_greedy_evaluation_return(tmp_path: Path):
    # Any CartPole policy lasts 8 steps: the first iteration's greedy evaluation stops the run,
    # long before stop.training_iteration, and the exported checkpoint is the one evaluated.
    base = write_job(
        tmp_path,
        {"stop.evaluation_return_mean": "8", "stop.training_iteration": "5", "num_env_runners": "1"},
    )
    run = run_train(base)
    assert run.returncode == 0, run.output[-4000:]
    assert "evaluation_return_mean:" in run.output
    metadata = json.loads((base / "model" / "metadata.json").read_text())
    assert metadata["metrics"]["training_iteration"] == 1
    assert metadata["metrics"]["evaluation_return_mean"] >= 8
