"""Several trials in one job (Tune grid search from a hyperparameter), the best one exported, and the
files users look at: trials.csv, Tune's progress.csv/result.json/params.json, the training-curve PNG
and TensorBoard event files."""

from __future__ import annotations

import csv
import json

import pytest
from helpers import TrainingRun, run_train, write_job

from sagemaker_ray_rl.checkpoint import pickled_algorithm_config

LRS = [0.0003, 0.00001]


@pytest.fixture(scope="module")
def grid_job(tmp_path_factory) -> TrainingRun:
    base = write_job(
        tmp_path_factory.mktemp("grid"),
        {
            "rl.training.config.lr": json.dumps({"grid_search": LRS}),
            "stop.training_iteration": "3",
            "num_env_runners": "1",
            "training.train_batch_size_per_learner": "1000",
            "training.minibatch_size": "250",
        },
    )
    run = run_train(base)
    assert run.returncode == 0, run.output[-4000:]
    return run


def test_one_trial_per_value_ranked_by_return(grid_job: TrainingRun):
    rows = list(csv.DictReader((grid_job.base / "output" / "data" / "trials.csv").open()))
    assert sorted(float(r["lr"]) for r in rows) == sorted(LRS)
    returns = [float(r["episode_return_mean"]) for r in rows]
    assert returns == sorted(returns, reverse=True)
    assert [r["rank"] for r in rows] == ["1", "2"]
    assert all(r["training_iteration"] == "3" and r["timesteps_total"] == "3000" for r in rows)
    assert "trial: " in grid_job.output  # metric blocks say which trial they belong to


def test_the_best_trial_is_the_exported_model(grid_job: TrainingRun):
    best = next(csv.DictReader((grid_job.base / "output" / "data" / "trials.csv").open()))
    metadata = json.loads((grid_job.base / "model" / "metadata.json").read_text())
    assert metadata["metrics"]["episode_return_mean"] == pytest.approx(float(best["episode_return_mean"]))
    # The exported checkpoint's own constructor config (RLlib's side) holds the best trial's lr.
    assert pickled_algorithm_config(grid_job.base / "model")["lr"] == pytest.approx(float(best["lr"]))


def test_tune_files_curve_and_tensorboard(grid_job: TrainingRun):
    data = grid_job.base / "output" / "data"
    for name in ("progress.csv", "result.json", "params.json"):
        assert (data / name).stat().st_size > 0, name
    progress = list(csv.DictReader((data / "progress.csv").open()))
    assert [int(r["training_iteration"]) for r in progress] == [1, 2, 3]
    for column in (
        "env_runners/episode_return_min",
        "env_runners/episode_return_mean",
        "env_runners/episode_return_max",
    ):
        values = [float(r[column]) for r in progress]
        assert all(v > 0 for v in values), column
    assert all(
        float(r["env_runners/episode_return_min"])
        <= float(r["env_runners/episode_return_mean"])
        <= float(r["env_runners/episode_return_max"])
        for r in progress
    )
    png = data / "training_curve.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and png.stat().st_size > 10_000
    events = list((grid_job.base / "output" / "tensorboard").glob("*/events.out.tfevents.*"))
    assert len({e.parent.name for e in events}) == len(LRS), events
