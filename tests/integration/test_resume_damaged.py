"""A restarted job whose newest checkpoint (module state) or experiment state file is cut short fails
within 60 s with a failure file naming the file and what to delete, instead of failing the same
way, slowly, on every spot restart."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from helpers import run_train, write_job
from integration.conftest import free_port

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def stopped_job(tmp_path_factory) -> Path:
    """A job that checkpointed iterations 1 and 2; its experiment stays in /opt/ml/checkpoints, where
    a restarted job finds it."""
    base = write_job(
        tmp_path_factory.mktemp("job"),
        {
            "stop.training_iteration": "2",
            "checkpoint_frequency": "1",
            "num_env_runners": "1",
            "training.train_batch_size_per_learner": "500",
            "training.minibatch_size": "250",
            "ray.gcs_port": free_port(),
        },
    )
    run = run_train(base)
    assert run.returncode == 0, run.output[-4000:]
    return base


def restart(stopped_job: Path, tmp_path: Path, damage) -> tuple[object, Path]:
    base = tmp_path / "job"
    shutil.copytree(stopped_job, base)
    shutil.rmtree(base / "model", ignore_errors=True)
    (base / "output" / "failure").unlink(missing_ok=True)
    experiment = base / "checkpoints" / "experiment"
    damaged = damage(experiment)
    return run_train(base, timeout=120), damaged


def truncate(file: Path) -> Path:
    file.write_bytes(file.read_bytes()[: file.stat().st_size // 2])
    return file


def newest_checkpoint(experiment: Path) -> Path:
    (trial,) = [d for d in experiment.iterdir() if d.is_dir()]
    return max(trial.glob("checkpoint_*"))


@pytest.mark.parametrize("what", ["module state", "experiment state"])
def test_a_damaged_resume_fails_fast_naming_the_file(stopped_job, tmp_path, what):
    def damage(experiment: Path) -> Path:
        if what == "module state":
            return truncate(
                newest_checkpoint(experiment) / "learner_group/learner/rl_module/default_policy/module_state.pkl"
            )
        return truncate(max(experiment.glob("experiment_state-*.json")))

    run, damaged = restart(stopped_job, tmp_path, damage)
    assert run.returncode == 1, run.output[-4000:]
    assert run.seconds < 60, f"took {run.seconds:.0f} s"
    print(f"damaged {what}: train failed in {run.seconds:.1f} s")
    failure = (tmp_path / "job" / "output" / "failure").read_text()
    assert failure.startswith("TrainingError: cannot resume the experiment in"), failure
    experiment = tmp_path / "job" / "checkpoints" / "experiment"
    named = damaged.relative_to(experiment) if what == "module state" else damaged.name
    assert f"{named} " in failure and "is damaged" in failure
    assert f"Delete {experiment} (the experiment/ prefix under checkpoint_s3_uri) to start over" in failure
    if what == "module state":
        assert "the previous checkpoint" in failure and "is whole" in failure
