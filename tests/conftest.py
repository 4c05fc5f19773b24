"""Shared fixtures, the trained policies every layer of the suite serves, and how the suite runs in
parallel.

Trained models are made once per test run (`helpers.shared_once`: a directory made under a file
lock, shared by every module and every pytest-xdist worker). A new test that needs a trained model
takes one the suite already has: `policy_dirs` (tiny policies of each kind, saved as a user's
``algo.save()``), ``trained_job`` (tests/integration/conftest.py: a whole `train` job in this Python,
with metadata and ONNX export) or, in the image, ``container_job`` (tests/container/conftest.py).
A kind that does not exist yet is added to tests/integration/train_policies.py, which trains every
kind in one subprocess; training of its own is for a test whose subject is training.

``scripts/test.sh`` runs the whole suite on two pytest-xdist workers (``-n 2 --dist loadscope``,
scheduled by `ModuleScheduling`): the tests of ``tests/integration`` are one unit of work, run in
order by one worker, because their `train` jobs start a Ray head on this machine's port 6379 (one at
a time); each other module is a unit of its own (its module-scoped fixtures are made once).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from helpers import shared_once, train_policies
from xdist.scheduler import LoadScopeScheduling

#: Policy kinds trained by tests/integration/train_policies.py, all in one subprocess.
KINDS = ("cartpole", "cartpole_good", "pendulum", "meanstd", "dict_obs", "multi_agent", "lstm")
#: The pytest-xdist unit of work of the tests that run Ray heads and `train` jobs on this machine.
HOST_GROUP = "tests/integration"


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


@pytest.hookimpl(optionalhook=True)  # pytest-xdist's hook: absent without the plugin
def pytest_xdist_make_scheduler(config, log):
    """pytest-xdist's scheduler for ``--dist loadscope``: each module is a unit of work sent whole to
    one worker, except that every module of ``tests/integration`` is in one unit (`HOST_GROUP`),
    which pytest-xdist schedules first, having the most tests. Why a scheduler of our own:
    ``--dist loadgroup`` groups by rewriting each test's node id (``item._nodeid``), which pytest
    9.2's node ids ignore (pytest-xdist 3.8.0), so its groups were split across the workers."""
    if config.getvalue("dist") != "loadscope":
        return None
    return ModuleScheduling(config, log)


class ModuleScheduling(LoadScopeScheduling):
    """`LoadScopeScheduling` by test module, the integration modules as one (see above)."""

    def _split_scope(self, nodeid: str) -> str:
        module = nodeid.split("::", 1)[0]
        return HOST_GROUP if module.startswith("tests/integration/") else module
