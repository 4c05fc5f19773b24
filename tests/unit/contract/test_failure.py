"""`failure.write_failure`: the reason reaches the failure file, or at least stderr; it never raises."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from sagemaker_ray_rl.contract.environment import Environment
from sagemaker_ray_rl.contract.failure import FAILURE_REASON_LIMIT, write_failure


def environment(base: Path) -> Environment:
    return Environment.from_environ({"SAGEMAKER_BASE_DIR": str(base)})


def test_the_reason_is_written_once_first_writer_wins(tmp_path, capsys):
    env = environment(tmp_path)
    assert write_failure(env, "HyperparameterError:   hyperparameter 'lr': expected a number,\n got 'x'" + "!" * 2000)
    assert write_failure(env, "a later, less specific reason")
    text = env.failure_file.read_text()
    assert text.startswith("HyperparameterError: hyperparameter 'lr': expected a number, got 'x'")
    assert len(text) == FAILURE_REASON_LIMIT + 1
    assert "Training failed: a later, less specific reason" in capsys.readouterr().err


def test_an_unwritable_output_dir_does_not_raise_and_stderr_says_why(tmp_path, capsys):
    (tmp_path / "output").write_text("a file where the output dir should be")
    env = environment(tmp_path)
    assert write_failure(env, "ClusterError: host algo-2 did not join") is False
    err = capsys.readouterr().err
    assert "Training failed: ClusterError: host algo-2 did not join" in err
    assert f"Could not write the failure file {env.failure_file}" in err


@pytest.fixture
def full_disk(tmp_path):
    """A 16 KB tmpfs filled to the last byte (needs the right to mount: root, as in the image)."""
    mount = tmp_path / "opt_ml"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mount)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    try:
        (mount / "output").mkdir()
        with open(mount / "filler", "wb", buffering=0) as filler:
            try:
                while True:
                    filler.write(b"x" * 512)
            except OSError:  # ENOSPC: full
                pass
        yield mount
    finally:
        subprocess.run(["umount", str(mount)], check=False)


def test_a_full_disk_does_not_raise_and_keeps_what_it_could_write(full_disk, capsys):
    env = environment(full_disk)
    # The file exists (tmpfs has inodes left, no bytes): the toolkit sees it and does not try to
    # write its own, which would raise in its handler and exit 0.
    assert write_failure(env, "TrainingError: " + "the trial failed " * 50) is True
    err = capsys.readouterr().err
    assert "Training failed: TrainingError: the trial failed" in err
    assert "Could not write the failure file" in err and "No space left on device" in err
    assert env.failure_file.exists()
