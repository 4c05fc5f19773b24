"""`experiment.check_resumable`: a damaged state file or newest checkpoint fails the resume at once,
naming the file, the previous whole checkpoint and what to delete."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import numpy as np
import pytest

from sagemaker_ray_rl.contract.errors import TrainingError
from sagemaker_ray_rl.training.experiment import check_resumable, damaged_files, file_damage


def checkpoint(directory: Path, value: float) -> Path:
    """A checkpoint laid out as RLlib writes one (pickles and JSON, nested)."""
    module = directory / "learner_group" / "learner" / "rl_module" / "default_policy"
    module.mkdir(parents=True)
    (directory / "algorithm_state.pkl").write_bytes(pickle.dumps({"iteration": value}, protocol=5))
    (directory / "rllib_checkpoint.json").write_text(json.dumps({"checkpoint_version": "2.1"}))
    (module / "module_state.pkl").write_bytes(pickle.dumps({"w": np.full(1000, value, np.float32)}, protocol=5))
    (module / "metadata.json").write_text("{}")
    return directory


@pytest.fixture
def experiment(tmp_path) -> Path:
    root = tmp_path / "experiment"
    trial = root / "PPO_CartPole-v1_00000"
    for i in range(3):
        checkpoint(trial / f"checkpoint_{i:06d}", float(i))
    (trial / "progress.csv").write_text("a,b\n")
    (root / "tuner.pkl").write_bytes(pickle.dumps({"tuner": 1}))
    (root / "experiment_state-2026-01-01_00-00-00.json").write_text(json.dumps({"trial_data": []}))
    return root


def truncate(file: Path) -> None:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])


def test_a_whole_experiment_passes(experiment):
    check_resumable(experiment)
    assert damaged_files(experiment) == []


def test_a_truncated_module_state_in_the_newest_checkpoint_names_it_and_the_previous(experiment):
    newest = experiment / "PPO_CartPole-v1_00000" / "checkpoint_000002"
    bad = newest / "learner_group" / "learner" / "rl_module" / "default_policy" / "module_state.pkl"
    truncate(bad)
    with pytest.raises(TrainingError) as raised:
        check_resumable(experiment)
    message = str(raised.value)
    assert f"{bad.relative_to(experiment)} in its trial's newest checkpoint is damaged" in message
    assert f"Delete {experiment} (the experiment/ prefix under checkpoint_s3_uri) to start over" in message
    assert "the previous checkpoint PPO_CartPole-v1_00000/checkpoint_000001 is whole" in message


def test_an_empty_pickle_is_damaged_too(experiment):
    newest = experiment / "PPO_CartPole-v1_00000" / "checkpoint_000002"
    (newest / "algorithm_state.pkl").write_bytes(b"")
    with pytest.raises(TrainingError, match="algorithm_state.pkl in its trial's newest checkpoint"):
        check_resumable(experiment)


def test_only_the_newest_checkpoint_matters(experiment):
    truncate(experiment / "PPO_CartPole-v1_00000" / "checkpoint_000000" / "algorithm_state.pkl")
    check_resumable(experiment)


def test_a_truncated_experiment_state_file_is_named(experiment):
    state = next(experiment.glob("experiment_state-*.json"))
    truncate(state)
    with pytest.raises(TrainingError, match=f"its state file {state.name} is damaged"):
        check_resumable(experiment)


def test_a_truncated_tuner_pickle_is_named(experiment):
    truncate(experiment / "tuner.pkl")
    with pytest.raises(TrainingError, match="tuner.pkl is damaged"):
        check_resumable(experiment)


def test_other_files_are_not_judged(tmp_path):
    (tmp_path / "events.out.tfevents.1").write_bytes(b"\x00\x01")
    assert file_damage(tmp_path / "events.out.tfevents.1") is None
