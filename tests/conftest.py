"""Shared fixtures, the trained policies every layer of the suite serves, and how the suite runs in
parallel.

Trained models are made once per test run (`helpers.shared_once`: a directory made under a file
lock, shared by every module and every pytest-xdist worker). A new test that needs a trained model
takes one the suite already has: `policy_dirs` (tiny policies of each kind, saved as a user's
``algo.save()``), ``trained_job`` (tests/integration/conftest.py: a whole `train` job in this Python,
with metadata and ONNX export) or, in the image, ``container_job`` (tests/container/conftest.py).
A kind that does not exist yet is added to tests/integration/train_policies.py, which trains every
kind in one subprocess; training of its own is for a test whose subject is training.

``scripts/test.sh`` runs the whole suite on two pytest-xdist workers (``-n 2 --dist loadgroup``):
the tests of ``tests/integration`` are one group, run in order by one worker, because their `train`
jobs start a Ray head on this machine's port 6379 (one at a time); each other module is a group of
its own (its module-scoped fixtures are made once). The integration group is scheduled first, being
the longest.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import shared_once, train_policies

#: Policy kinds trained by tests/integration/train_policies.py, all in one subprocess.
KINDS = ("cartpole", "cartpole_good", "pendulum", "meanstd", "dict_obs", "multi_agent", "lstm")
#: The pytest-xdist group of the tests that run Ray heads and `train` jobs on this machine.
HOST_GROUP = "integration"


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    """An empty base dir (what SAGEMAKER_BASE_DIR points at)."""
    base = tmp_path / "opt_ml"
    base.mkdir()
    return base


@pytest.fixture(scope="session")
def policy_dirs(tmp_path_factory) -> dict[str, Path]:
    """kind -> a checkpoint saved with ``algo.save()`` (no metadata.json), trained once per run for
    every kind in `KINDS`. Tests serve and read them; none may write into them."""
    out = shared_once(tmp_path_factory, "policies", lambda directory: train_policies(directory, list(KINDS)))
    return {kind: out / kind for kind in KINDS}


@pytest.hookimpl(tryfirst=True)  # before pytest-xdist reads the groups
def pytest_collection_modifyitems(config, items) -> None:
    """Each test's pytest-xdist group (see the module docstring), the integration group first."""
    tests = Path(__file__).parent
    groups = {}
    for item in items:
        module = item.path.relative_to(tests)
        groups[item] = HOST_GROUP if module.parts[0] == "integration" else module.as_posix()
        item.add_marker(pytest.mark.xdist_group(groups[item]))
    items.sort(key=lambda item: groups[item] != HOST_GROUP)
