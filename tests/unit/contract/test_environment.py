from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from helpers import write_job

from sagemaker_ray_rl.contract.environment import Environment, ResourceConfig, decode_hyperparameters
from sagemaker_ray_rl.contract.errors import ContractError


def test_decode_hyperparameters_follows_the_toolkit():
    decoded = decode_hyperparameters(
        {"lr": "0.0003", "env": "CartPole-v1", "n": "3", "cfg": '{"a": [1, 2]}', "flag": "true", "raw": 5}
    )
    assert decoded == {"lr": 0.0003, "env": "CartPole-v1", "n": 3, "cfg": {"a": [1, 2]}, "flag": True, "raw": 5}


def test_full_training_tree(job_dir: Path):
    write_job(
        job_dir,
        {"rl.training.config.lr": 0.0003, "env": "CartPole-v1", "sagemaker_program": "train.py"},
        resourceconfig={
            "current_host": "algo-2-xyz12",
            "hosts": ["algo-2-xyz12", "algo-1-ab3cd"],
            "network_interface_name": "ethwe",
            "current_instance_type": "ml.c5.xlarge",
            "current_group_name": "cpu",
            "instance_groups": [
                {"instance_group_name": "cpu", "instance_type": "ml.c5.xlarge", "hosts": ["algo-2-xyz12"]},
                {"instance_group_name": "gpu", "instance_type": "ml.g5.xlarge", "hosts": ["algo-1-ab3cd"]},
            ],
        },
        inputdataconfig={"train": {"TrainingInputMode": "File"}},
    )
    env = Environment.from_environ({"SAGEMAKER_BASE_DIR": str(job_dir), "SM_NUM_CPUS": "8", "SM_NUM_GPUS": "1"})

    assert env.base_dir == job_dir
    assert env.model_dir == job_dir / "model"
    assert env.output_data_dir == job_dir / "output" / "data"
    assert env.checkpoint_dir == job_dir / "checkpoints"
    assert env.failure_file == job_dir / "output" / "failure"
    assert env.hyperparameters["rl.training.config.lr"] == 0.0003
    assert env.user_entry_point == "train.py"
    rc = env.resource_config
    assert rc.hosts == ("algo-1-ab3cd", "algo-2-xyz12")
    assert rc.master_host == "algo-1-ab3cd" and not rc.is_master
    assert rc.network_interface_name == "ethwe"
    assert [g.name for g in rc.instance_groups] == ["cpu", "gpu"]
    assert rc.current_group_name == "cpu"
    assert env.channels == {"train": job_dir / "input" / "data" / "train"}
    assert (env.num_cpus, env.num_gpus) == (8, 1)
    assert env.serving.workers == 8  # default: one worker per CPU


def test_snapshot_is_read_only(job_dir: Path):
    write_job(job_dir, {"a": 1})
    env = Environment.from_environ({"SAGEMAKER_BASE_DIR": str(job_dir)})
    with pytest.raises(dataclasses.FrozenInstanceError):
        env.model_dir = Path("/elsewhere")  # type: ignore[misc]
    with pytest.raises(TypeError):
        env.hyperparameters["a"] = 2  # type: ignore[index]


def test_missing_files_mean_a_single_host_serving_or_local_run(job_dir: Path):
    env = Environment.from_environ({"SAGEMAKER_BASE_DIR": str(job_dir), "SM_CURRENT_HOST": "box"})
    assert env.hyperparameters == {}
    assert env.resource_config == ResourceConfig.single_host("box")
    assert env.resource_config.is_master
    assert env.user_entry_point is None
    assert env.serving.port == 8080 and env.serving.timeout_s == 60 and env.serving.max_payload_mb == 6


def test_sm_variables_override_paths_and_add_channels(job_dir: Path, tmp_path: Path):
    env = Environment.from_environ(
        {
            "SAGEMAKER_BASE_DIR": str(job_dir),
            "SM_MODEL_DIR": str(tmp_path / "m"),
            "SM_CHANNEL_OFFLINE": str(tmp_path / "data"),
            "SAGEMAKER_PROGRAM": "run.py",
        }
    )
    assert env.model_dir == tmp_path / "m"
    assert env.channels["offline"] == tmp_path / "data"
    assert env.user_entry_point == "run.py"


def test_serving_settings(job_dir: Path):
    env = Environment.from_environ(
        {
            "SAGEMAKER_BASE_DIR": str(job_dir),
            "SAGEMAKER_BIND_TO_PORT": "9000",
            "SAGEMAKER_MODEL_SERVER_WORKERS": "3",
            "SAGEMAKER_MODEL_SERVER_TIMEOUT": "120",
            "SAGEMAKER_MAX_PAYLOAD_IN_MB": "1.5",
            "SAGEMAKER_RAY_RL_MAX_BATCH_SIZE": "1",
            "SAGEMAKER_RAY_RL_MAX_RECORDS": "500",
            "SAGEMAKER_RAY_RL_MAX_REQUESTS": "0",
            "SAGEMAKER_RAY_SERVE_MAX_BATCH_SIZE": "8",
            "SAGEMAKER_RAY_SERVE_BATCH_WAIT_TIMEOUT_S": "0.005",
            "SAGEMAKER_RAY_RL_INFERENCE": " ONNX",
        }
    )
    assert env.serving.inference == "onnx"
    assert (env.serving.port, env.serving.workers, env.serving.timeout_s) == (9000, 3, 120)
    assert env.serving.max_payload_bytes == int(1.5 * 1024 * 1024)
    assert env.serving.max_batch_size == 1
    assert env.serving.max_records == 500
    assert env.serving.max_requests == 0
    assert (env.serving.ray_serve_max_batch_size, env.serving.ray_serve_batch_wait_timeout_s) == (8, 0.005)
    defaults = Environment.from_environ({"SAGEMAKER_BASE_DIR": str(job_dir)}).serving
    assert (defaults.max_records, defaults.max_requests) == (1_000_000, 100_000)
    unlimited = {"SAGEMAKER_BASE_DIR": str(job_dir), "SAGEMAKER_RAY_RL_MAX_RECORDS": "0"}
    assert Environment.from_environ(unlimited).serving.max_records == 0
    assert defaults.inference == "auto"
    assert (defaults.max_batch_size, defaults.ray_serve_max_batch_size, defaults.ray_serve_batch_wait_timeout_s) == (
        32,
        32,
        0.0,
    )


def test_multi_model_settings(job_dir: Path):
    def serving(**environ):
        return Environment.from_environ({"SAGEMAKER_BASE_DIR": str(job_dir), **environ}).serving

    assert (serving().multi_model, serving().mme_memory_mb) == (False, None)
    mme = serving(SAGEMAKER_MULTI_MODEL="True", SAGEMAKER_RAY_RL_MME_MEMORY_MB="512.5")
    assert (mme.multi_model, mme.mme_memory_mb) == (True, 512.5)
    assert serving(SAGEMAKER_MULTI_MODEL="false").multi_model is False
    with pytest.raises(ContractError, match="SAGEMAKER_MULTI_MODEL must be true or false, got 'yes please'"):
        serving(SAGEMAKER_MULTI_MODEL="yes please")
    with pytest.raises(ContractError, match="SAGEMAKER_RAY_RL_MME_MEMORY_MB must be a number"):
        serving(SAGEMAKER_RAY_RL_MME_MEMORY_MB="1GB")


@pytest.mark.parametrize(
    "files, environ, message",
    [
        ({"resourceconfig": {"hosts": ["a"]}}, {}, "current_host"),
        ({"resourceconfig": {"current_host": "c", "hosts": ["a", "b"]}}, {}, "not among hosts"),
        ({}, {"SAGEMAKER_BIND_TO_PORT": "http"}, "SAGEMAKER_BIND_TO_PORT must be an integer"),
        ({}, {"SAGEMAKER_MAX_PAYLOAD_IN_MB": "lots"}, "SAGEMAKER_MAX_PAYLOAD_IN_MB must be a number"),
        ({}, {"SAGEMAKER_RAY_SERVE_MAX_BATCH_SIZE": "many"}, "SAGEMAKER_RAY_SERVE_MAX_BATCH_SIZE must be an integer"),
        ({}, {"SAGEMAKER_RAY_RL_MAX_BATCH_SIZE": "2.5"}, "SAGEMAKER_RAY_RL_MAX_BATCH_SIZE must be an integer"),
        (
            {},
            {"SAGEMAKER_RAY_RL_INFERENCE": "tensorrt"},
            r"SAGEMAKER_RAY_RL_INFERENCE must be one of \['auto', 'onnx', 'torch'\], got 'tensorrt'",
        ),
    ],
)
def test_malformed_contract_names_what_was_expected(job_dir: Path, files, environ, message):
    write_job(job_dir, None, **files)
    with pytest.raises(ContractError, match=message):
        Environment.from_environ({"SAGEMAKER_BASE_DIR": str(job_dir), **environ})


def test_invalid_json_file(job_dir: Path):
    (job_dir / "input" / "config").mkdir(parents=True)
    (job_dir / "input" / "config" / "hyperparameters.json").write_text("{not json")
    with pytest.raises(ContractError, match="hyperparameters.json is not valid JSON"):
        Environment.from_environ({"SAGEMAKER_BASE_DIR": str(job_dir)})
