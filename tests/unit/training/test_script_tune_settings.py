"""What the image sets for a user script's Tune runs (`training.user_checkpoints.script_environment`)
and the checkpoint-at-end callback (`training.tune_callbacks.CheckpointAtEnd`)."""

from __future__ import annotations

from pathlib import Path

from sagemaker_ray_rl.contract.environment import Environment
from sagemaker_ray_rl.training.tune_callbacks import SHOULD_CHECKPOINT, CheckpointAtEnd
from sagemaker_ray_rl.training.user_checkpoints import IMAGE_TUNE_CALLBACKS, script_environment, storage_roots

CONTRACT = Environment.from_environ({"SAGEMAKER_BASE_DIR": "/opt/ml"})


def test_tune_storage_defaults_to_the_checkpoint_dir_and_the_callbacks_are_added():
    env = script_environment(CONTRACT, environ={})
    assert env == {"RAY_STORAGE": "/opt/ml/checkpoints", "RAY_TUNE_CALLBACKS": ",".join(IMAGE_TUNE_CALLBACKS)}


def test_the_jobs_own_storage_and_callbacks_are_kept():
    env = script_environment(CONTRACT, environ={"RAY_STORAGE": "/data/tune", "RAY_TUNE_CALLBACKS": "my.Callback"})
    assert "RAY_STORAGE" not in env
    assert env["RAY_TUNE_CALLBACKS"].split(",") == ["my.Callback", *IMAGE_TUNE_CALLBACKS]


def test_storage_roots_are_ray_storage_the_checkpoint_dir_and_ray_results():
    roots = storage_roots(CONTRACT, environ={"RAY_STORAGE": "file:///data/tune"})
    assert roots == [Path("/data/tune"), Path("/opt/ml/checkpoints"), Path.home() / "ray_results"]
    assert storage_roots(CONTRACT, environ={"RAY_STORAGE": "s3://bucket/x"})[0] == Path("/opt/ml/checkpoints")


def test_an_algorithm_trials_last_result_asks_tune_for_a_checkpoint_and_others_do_not():
    from ray.rllib.algorithms.ppo import PPO
    from ray.tune.experiment import Trial

    callback = CheckpointAtEnd()
    trial = Trial(PPO.__name__)  # Tune's own Trial (no Ray actor until Tune starts one)
    running, last = {"training_iteration": 1}, {"training_iteration": 2, "done": True}
    for result in (running, last):
        callback.on_trial_result(iteration=0, trials=[trial], trial=trial, result=result)
    assert SHOULD_CHECKPOINT not in running
    assert last[SHOULD_CHECKPOINT] is True


def test_a_function_trainables_trial_is_left_to_its_own_checkpoints():
    from ray import tune
    from ray.tune.experiment import Trial

    def train_fn(config):
        tune.report({"score": 1})

    tune.register_trainable("h14_function_trainable", train_fn)
    trial = Trial("h14_function_trainable")
    last = {"training_iteration": 1, "done": True}
    CheckpointAtEnd().on_trial_result(iteration=0, trials=[trial], trial=trial, result=last)
    assert SHOULD_CHECKPOINT not in last
