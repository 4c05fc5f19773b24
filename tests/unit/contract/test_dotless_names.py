"""The dotless spelling of hyperparameter names (``rl__training__config__lr`` for
``rl.training.config.lr``), for drivers that export hyperparameters as shell variables."""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import write_job

from sagemaker_ray_rl.contract.environment import (
    Environment,
    dotted_name,
    dotted_names,
    is_image_hyperparameter,
)
from sagemaker_ray_rl.contract.errors import HyperparameterError


def test_double_underscores_spell_dots_and_single_ones_stay():
    given = {
        "rl__training__config__train_batch_size_per_learner": 500,
        "stop__training_iteration": 2,
        "env_runners__num_envs_per_env_runner": 2,
        "num_env_runners": 1,
        "rl.training.config.lr": 0.0003,
    }
    assert list(dotted_names(given).items()) == [
        ("rl.training.config.train_batch_size_per_learner", 500),
        ("stop.training_iteration", 2),
        ("env_runners.num_envs_per_env_runner", 2),
        ("num_env_runners", 1),
        ("rl.training.config.lr", 0.0003),
    ]


def test_names_of_sagemaker_and_the_sdk_are_left_alone():
    for name in ("_tuning_objective_metric", "__private", "sagemaker_program", "sagemaker__x"):
        assert dotted_name(name) == name
    assert dotted_names({"_a__b": 1}) == {"_a__b": 1}


def test_both_spellings_of_one_setting_fail_naming_both_keys():
    with pytest.raises(HyperparameterError) as err:
        dotted_names({"rl.training.config.lr": 0.001, "rl__training__config__lr": 0.0003})
    message = str(err.value)
    assert "'rl.training.config.lr'" in message and "'rl__training__config__lr'" in message
    assert "give only one of them" in message


@pytest.mark.parametrize("name", ["rl__training__config___lr", "stop__", "a____b", "ray___gcs_port"])
def test_parts_that_cannot_be_told_apart_fail(name: str):
    with pytest.raises(HyperparameterError, match=f"Ambiguous hyperparameter name '{name}'"):
        dotted_names({name: 1})


def test_the_contract_reads_dotless_names_as_dotted(job_dir: Path):
    write_job(
        job_dir,
        {"rl__training__config__lr": "0.0003", "stop__training_iteration": "2", "sagemaker_program": "t.py"},
    )
    env = Environment.from_environ({"SAGEMAKER_BASE_DIR": str(job_dir)})
    assert dict(env.hyperparameters) == {
        "rl.training.config.lr": 0.0003,
        "stop.training_iteration": 2,
        "sagemaker_program": "t.py",
    }


def test_the_contract_refuses_one_setting_in_both_spellings(job_dir: Path):
    write_job(job_dir, {"ray.gcs_port": "6380", "ray__gcs_port": "6381"})
    with pytest.raises(HyperparameterError, match="'ray.gcs_port' and 'ray__gcs_port' both set 'ray.gcs_port'"):
        Environment.from_environ({"SAGEMAKER_BASE_DIR": str(job_dir)})


def test_image_hyperparameters_in_the_dotless_spelling_are_the_image_s():
    assert is_image_hyperparameter("ray__gcs_port") and is_image_hyperparameter("offline__num_episodes")
    assert not is_image_hyperparameter("rl__training__config__lr")


def test_the_built_in_experiment_applies_dotless_settings(job_dir: Path):
    from sagemaker_ray_rl.training.hyperparameters import parse_hyperparameters

    write_job(job_dir, {"rl__training__config__lr": "0.0003", "stop__training_iteration": "2", "ray__gcs_port": "1"})
    env = Environment.from_environ({"SAGEMAKER_BASE_DIR": str(job_dir)})
    spec = parse_hyperparameters(env.hyperparameters, num_cpus=2)
    assert [(o.section, o.name, o.value) for o in spec.overrides] == [("training", "lr", 0.0003)]
    assert spec.stop == {"training_iteration": 2}


def test_a_user_script_ignores_its_own_names_in_either_spelling():
    from sagemaker_ray_rl.training.hyperparameters import parse_hyperparameters

    spec = parse_hyperparameters({"my.option": 1, "lr": 0.1}, num_cpus=2, ignore=["my__option", "lr"])
    assert spec.overrides == ()


def test_train_reports_both_spellings_as_a_client_error(job_dir: Path, monkeypatch: pytest.MonkeyPatch):
    from sagemaker_training.errors import ClientError

    from sagemaker_ray_rl import train

    write_job(job_dir, {"stop.training_iteration": "2", "stop__training_iteration": "3"})
    monkeypatch.setenv("SAGEMAKER_BASE_DIR", str(job_dir))
    with pytest.raises(ClientError, match="^HyperparameterError: Hyperparameters 'stop.training_iteration' and"):
        train.main()
