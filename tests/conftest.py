"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def job_dir(tmp_path: Path) -> Path:
    """An empty base dir (what SAGEMAKER_BASE_DIR points at)."""
    base = tmp_path / "opt_ml"
    base.mkdir()
    return base
