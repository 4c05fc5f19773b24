"""Integration fixtures: one real (short) training job in this Python environment, shared."""

from __future__ import annotations

import pytest

from helpers import TrainingRun, run_train, write_job


@pytest.fixture(scope="session")
def trained_job(tmp_path_factory) -> TrainingRun:
    """PPO on CartPole-v1 for 2 iterations, lr from a seed-style hyperparameter, 3 evaluation
    episodes every 2 iterations, and 4 evaluation episodes of the exported policy at the end."""
    base = write_job(
        tmp_path_factory.mktemp("job"),
        {
            "rl.training.config.lr": "0.0003",
            "stop.training_iteration": "2",
            "num_env_runners": "1",
            "evaluation.evaluation_interval": "2",
            "evaluation.evaluation_duration": "3",
            "evaluation.evaluation_duration_unit": "episodes",
            "evaluation_episodes": "4",
        },
    )
    run = run_train(base)
    assert run.returncode == 0, run.output[-4000:]
    return run
