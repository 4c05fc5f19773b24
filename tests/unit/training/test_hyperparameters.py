from __future__ import annotations

import pytest

from sagemaker_ray_rl.contract.errors import HyperparameterError
from sagemaker_ray_rl.training.algorithm_config import build_algorithm_config
from sagemaker_ray_rl.training.hyperparameters import (
    DEFAULT_TRAINING_ITERATIONS,
    STOP_EVALUATION_EPISODES,
    parse_hyperparameters,
)


def config_for(hps: dict, num_cpus: int = 4):
    return build_algorithm_config(parse_hyperparameters(hps, num_cpus=num_cpus))


def test_defaults():
    spec = parse_hyperparameters({}, num_cpus=4)
    assert (spec.algorithm, spec.env, spec.num_env_runners) == ("PPO", "CartPole-v1", 3)
    assert dict(spec.stop) == {"training_iteration": DEFAULT_TRAINING_ITERATIONS}
    assert parse_hyperparameters({}, num_cpus=1).num_env_runners == 1


def test_seed_style_override_reaches_the_rllib_config():
    config = config_for({"rl.training.config.lr": 0.0003, "rl.training.config.num_epochs": 6})
    assert config.lr == 0.0003 and config.num_epochs == 6


def test_section_style_and_other_builder_methods():
    config = config_for(
        {
            "env_runners.num_envs_per_env_runner": 2,
            "rl.training.config.rollout_fragment_length": 50,
            "rl_module.model_config": {"fcnet_hiddens": [32, 32]},
            "debugging.seed": 7,
        }
    )
    assert config.num_envs_per_env_runner == 2
    assert config.rollout_fragment_length == 50
    assert config.model_config["fcnet_hiddens"] == [32, 32]
    assert config.seed == 7


def test_top_level_keys_and_stop_criteria():
    spec = parse_hyperparameters(
        {
            "algorithm": "DQN",
            "env": "Acrobot-v1",
            "env_config": {"max_episode_steps": 100},
            "num_env_runners": 0,
            "stop.training_iteration": 5,
            "stop.episode_return_mean": -100,
            "stop.timesteps_total": 10000,
            "stop.time_total_s": 60,
        },
        num_cpus=2,
    )
    assert (spec.algorithm, spec.env, spec.num_env_runners) == ("DQN", "Acrobot-v1", 0)
    assert dict(spec.stop) == {
        "training_iteration": 5,
        "env_runners/episode_return_mean": -100,
        "num_env_steps_sampled_lifetime": 10000,
        "time_total_s": 60,
    }
    config = build_algorithm_config(spec)
    assert type(config).__name__ == "DQNConfig"
    assert config.env == "Acrobot-v1" and config.env_config == {"max_episode_steps": 100}


def test_cluster_keys_are_left_to_the_launcher_and_env_runner_counts_known_as_given():
    spec = parse_hyperparameters({"ray.join_timeout_s": 20, "ray.learner_group": "x"}, num_cpus=2)
    assert spec.overrides == () and not spec.num_env_runners_given
    assert parse_hyperparameters({"num_env_runners": 2}, num_cpus=2).num_env_runners_given
    assert parse_hyperparameters({"env_runners.num_env_runners": 2}, num_cpus=2).num_env_runners_given
    assert parse_hyperparameters({"rl.training.config.num_env_runners": 2}, num_cpus=2).num_env_runners_given


def test_sagemaker_keys_and_ignored_keys_are_skipped():
    spec = parse_hyperparameters(
        {"sagemaker_program": "train.py", "sagemaker_submit_directory": "/opt/ml/code", "my_flag": 1},
        num_cpus=2,
        ignore=["my_flag"],
    )
    assert spec.overrides == ()


@pytest.mark.parametrize(
    "hps, message",
    [
        ({"rl.training.config.lrr": 0.1}, r"Unknown hyperparameter 'rl.training.config.lrr'.*Did you mean 'lr'"),
        ({"learning_rate": 0.1}, r"Unknown hyperparameter 'learning_rate'.*Accepted: algorithm, env"),
        ({"training.num_env_runners": 2}, r"'num_env_runners' is not a setting of PPOConfig.training\(\)"),
        ({"algorithm": "A3C"}, r"unknown RLlib algorithm 'A3C'; expected one of \[.*'PPO'"),
        ({"env": "CartPole-v9"}, r"'CartPole-v9' is neither a registered Gymnasium id.*Did you mean"),
        ({"env": "no_such_module:Env-v0"}, r"cannot import 'no_such_module'"),
        ({"env_config": "[1]"}, r"'env_config': expected a JSON object, got '\[1\]'"),
        ({"num_env_runners": -1}, r"'num_env_runners': expected an integer >= 0, got -1"),
        ({"num_env_runners": 1.5}, r"'num_env_runners': expected an integer >= 0, got 1.5"),
        ({"stop.training_iteration": "ten"}, r"'stop.training_iteration': expected a number > 0, got 'ten'"),
        ({"stop.training_iteration": 0}, r"'stop.training_iteration': expected a number > 0, got 0"),
        ({"env": "CartPole-v1", "rl.training.config.env": "Pendulum-v1"}, r"already set to 'CartPole-v1'"),
    ],
)
def test_bad_hyperparameters_fail_with_a_message_naming_them(hps, message):
    with pytest.raises(HyperparameterError, match=message):
        parse_hyperparameters(hps, num_cpus=2)


@pytest.mark.parametrize(
    "hps, message",
    [
        ({"rl.training.config.lr": "fast"}, r"RLlib refused the configuration: Invalid `lr`"),
        ({"rl.training.config.train_batch_size_per_learner": 8}, r"minibatch_size"),
        ({"env_runners.num_rollout_workers": 2}, r"env_runners.num_rollout_workers=2 was refused by RLlib"),
        (
            {"env_config": {"no_such_option": 1}},
            r"gymnasium.make\('CartPole-v1', \*\*\{'no_such_option': 1\}\) failed: TypeError",
        ),
        (
            {"rl_module.model_config": {"fcnet_activation": "no_such_activation"}},
            r"cannot build the RLModule for 'CartPole-v1'.*Unknown activation \(no_such_activation\)",
        ),
    ],
)
def test_values_rllib_refuses_fail_before_ray_starts(hps, message):
    import ray

    with pytest.raises(HyperparameterError, match=message):
        config_for(hps)
    assert not ray.is_initialized()


def test_trial_error_summary_names_the_cause():
    from sagemaker_ray_rl.training.experiment import _trial_error_summary

    report = (
        "The actor died because of an error raised in its creation task, ray::PPO.__init__() (pid=1)\n"
        '  File "algorithm.py", line 806, in setup\n'
        "    spaces = self.foreach_env_runner(\n"
        "IndexError: list index out of range"
    )
    assert _trial_error_summary(RuntimeError(report)) == (
        "IndexError: list index out of range (an actor of the trial failed while starting, e.g. its env "
        "or RLModule could not be built)"
    )
    assert _trial_error_summary(ValueError("no traceback here")) == "ValueError: no traceback here"


@pytest.mark.parametrize("prefix", ["", "rl.training.config."])
def test_old_stack_keys_reach_rllib_under_their_new_names(prefix, caplog):
    hps = {
        f"{prefix}num_workers": 2,
        f"{prefix}num_sgd_iter": 7,
        f"{prefix}sgd_minibatch_size": 64,
        f"{prefix}train_batch_size": 1000,
        f"{prefix}model.fcnet_hiddens": [32, 32],
        f"{prefix}model": {"free_log_std": False, "fcnet_activation": "relu"},
        f"{prefix}num_gpus": 0,
        f"{prefix}observation_filter": "MeanStdFilter",
        f"{prefix}framework": "torch",
    }
    with caplog.at_level("WARNING", logger="sagemaker_ray_rl.training.legacy"):
        spec = parse_hyperparameters(hps, num_cpus=4)
        config = build_algorithm_config(spec)
    assert spec.num_env_runners_given
    assert config.num_env_runners == 2
    assert config.num_epochs == 7
    assert config.minibatch_size == 64
    assert config.train_batch_size_per_learner == 1000
    assert config.model_config["fcnet_hiddens"] == [32, 32]
    assert config.model_config["fcnet_activation"] == "relu"
    assert config.num_gpus_per_learner == 0
    import gymnasium as gym
    from ray.rllib.connectors.env_to_module import MeanStdFilter

    pipeline = config.build_env_to_module_connector(env=gym.make("CartPole-v1"))
    assert any(isinstance(piece, MeanStdFilter) for piece in pipeline.connectors)
    warned = caplog.text
    for old in (
        "num_workers",
        "num_sgd_iter",
        "sgd_minibatch_size",
        "train_batch_size",
        "model.fcnet_hiddens",
        "num_gpus",
        "observation_filter",
    ):
        assert f"{prefix}{old}" in warned, old


def test_num_gpus_reaches_the_learner():
    config = build_algorithm_config(parse_hyperparameters({"rl.training.config.num_gpus": 1}, num_cpus=2))
    assert config.num_gpus_per_learner == 1


@pytest.mark.parametrize("key", ["stop.episode_reward_mean", "rl.training.stop.episode_reward_mean"])
def test_old_stop_key_stops_on_the_episode_return(key, caplog):
    spec = parse_hyperparameters({key: 195, "rl.training.stop.training_iteration": 30}, num_cpus=2)
    assert dict(spec.stop) == {"env_runners/episode_return_mean": 195, "training_iteration": 30}
    assert key in caplog.text


@pytest.mark.parametrize(
    "hps, message",
    [
        ({"rl.training.config.framework": "tf2"}, "torch-only"),
        ({"framework": "tf"}, "torch-only"),
        ({"observation_filter": "ConcurrentMeanStdFilter"}, "'MeanStdFilter' or 'NoFilter'"),
        ({"rl.training.config.model": "big"}, "JSON object of model settings"),
        ({"stop.episode_reward_max": 3}, "unknown stop criterion 'stop.episode_reward_max'"),
    ],
)
def test_old_stack_values_without_a_new_stack_meaning_are_refused(hps, message):
    with pytest.raises(HyperparameterError, match=message):
        build_algorithm_config(parse_hyperparameters(hps, num_cpus=2))


def gpu_config(hps: dict, num_gpus: int):
    return build_algorithm_config(parse_hyperparameters(hps, num_cpus=4), num_gpus=num_gpus)


def test_no_gpus_leaves_learners_on_cpu():
    config = gpu_config({}, num_gpus=0)
    assert config.num_gpus_per_learner == 0 and config.num_learners == 0


def test_one_gpu_puts_the_learner_on_it_and_env_runners_on_cpu():
    config = gpu_config({}, num_gpus=1)
    assert config.num_gpus_per_learner == 1 and config.num_learners == 0  # the local learner
    assert config.num_gpus_per_env_runner == 0 and config.num_env_runners == 3


def test_several_gpus_get_one_learner_each():
    config = gpu_config({}, num_gpus=4)
    assert (config.num_learners, config.num_gpus_per_learner) == (4, 1)


@pytest.mark.parametrize(
    "hps, expected",
    [
        ({"learners.num_gpus_per_learner": 0}, (0, 0)),
        ({"rl.training.config.num_gpus_per_learner": 0.5, "learners.num_learners": 2}, (2, 0.5)),
        ({"learners.num_learners": 1}, (1, 1)),
    ],
)
def test_learner_placement_from_hyperparameters_wins(hps, expected):
    config = gpu_config(hps, num_gpus=4)
    assert (config.num_learners, config.num_gpus_per_learner) == expected


def test_the_jobs_gpu_count_comes_from_sm_num_gpus(monkeypatch):
    monkeypatch.setenv("SM_NUM_GPUS", "1")
    assert config_for({}).num_gpus_per_learner == 1
    monkeypatch.setenv("SM_NUM_GPUS", "0")
    assert config_for({}).num_gpus_per_learner == 0


def test_a_scripts_defaults_lie_beneath_the_jobs_hyperparameters():
    from sagemaker_ray_rl.training.api import build_experiment

    defaults = {
        "rl.training.config.lr": 0.0001,
        "rl.training.config.num_epochs": 30,
        "rl.training.stop.training_iteration": 300,
        "rl.training.stop.episode_return_mean": 500,
        "checkpoint_frequency": 5,
    }
    job = {"training.lr": 0.0005, "rl.training.stop.training_iteration": 2, "my_flag": 1}
    experiment = build_experiment(defaults, hyperparameters=job, env="CartPole-v1", num_cpus=2, ignore=["my_flag"])
    assert experiment.config.lr == 0.0005 and experiment.config.num_epochs == 30
    assert dict(experiment.stop) == {"training_iteration": 2, "env_runners/episode_return_mean": 500}
    assert (experiment.checkpoint_frequency, experiment.evaluation_episodes) == (5, 0)
    with pytest.raises(HyperparameterError, match="'rl.training.config.lrr'"):
        build_experiment({"rl.training.config.lrr": 0.1}, hyperparameters={}, num_cpus=2)


def test_stop_on_evaluation_return_evaluates_greedily_every_iteration():
    spec = parse_hyperparameters({"stop.evaluation_return_mean": 475}, num_cpus=2)
    assert dict(spec.stop) == {"evaluation/env_runners/episode_return_mean": 475}
    config = build_algorithm_config(spec)
    assert (config.evaluation_interval, config.evaluation_duration, config.evaluation_duration_unit) == (
        1,
        10,
        "episodes",
    )
    assert config.get_evaluation_config_object().explore is False
    assert config.explore is True  # training still explores


def test_stop_on_evaluation_return_keeps_the_users_evaluation_settings():
    hps = {"stop.evaluation_return_mean": -200, "evaluation.evaluation_interval": 5}
    config = build_algorithm_config(parse_hyperparameters(hps, num_cpus=2))
    assert config.evaluation_interval == 5
    assert config.get_evaluation_config_object().explore is False


def test_rllib_evaluation_is_greedy_as_served_unless_the_hyperparameters_say_otherwise():
    config = config_for({"evaluation.evaluation_interval": 2})
    assert config.get_evaluation_config_object().explore is False
    assert config.evaluation_interval == 2 and config.explore is True  # training still explores
    kept = config_for({"evaluation.evaluation_config": {"explore": True}})
    assert kept.get_evaluation_config_object().explore is True


def test_stop_on_the_greedy_evaluation_return_turns_evaluation_on():
    spec = parse_hyperparameters({"stop.evaluation_return_mean": 450, "evaluation_episodes": 30}, num_cpus=4)
    assert dict(spec.stop) == {"evaluation/env_runners/episode_return_mean": 450}
    config = build_algorithm_config(spec)
    assert (config.evaluation_interval, config.evaluation_duration, config.evaluation_duration_unit) == (
        1,
        30,
        "episodes",
    )
    assert config.get_evaluation_config_object().explore is False
    # Without evaluation_episodes: STOP_EVALUATION_EPISODES; RLlib settings given win.
    config = config_for(
        {
            "stop.evaluation_return_mean": 450,
            "evaluation.evaluation_interval": 5,
            "evaluation.evaluation_duration": 2000,
            "evaluation.evaluation_duration_unit": "timesteps",
        }
    )
    assert (config.evaluation_interval, config.evaluation_duration, config.evaluation_duration_unit) == (
        5,
        2000,
        "timesteps",
    )
    assert config_for({"stop.evaluation_return_mean": 450}).evaluation_duration == STOP_EVALUATION_EPISODES
