"""scripts/audit_report.py: the build's decision on a pip-audit JSON report."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[3] / "scripts" / "audit_report.py"
CLEAN = {"name": "flask", "version": "3.1.3", "vulns": []}
FIXABLE = {
    "name": "requests",
    "version": "2.19.0",
    "vulns": [{"id": "PYSEC-2018-28", "fix_versions": ["2.20.0"], "aliases": ["CVE-2018-18074"], "description": ""}],
}
UNFIXED = {"name": "ray", "version": "2.60.0", "vulns": [{"id": "GHSA-xxxx", "fix_versions": [], "aliases": []}]}
SKIPPED = {"name": "torch", "skip_reason": "Dependency not found on PyPI and could not be audited: torch (2.13.0)"}


def decide(tmp_path: Path, deps: list, if_reachable: bool = False) -> subprocess.CompletedProcess:
    report = tmp_path / "report.json"
    report.write_text(json.dumps({"dependencies": deps, "fixes": []}))
    return subprocess.run(
        [sys.executable, str(SCRIPT), str(report), "lock.txt", str(if_reachable).lower()],
        capture_output=True,
        text=True,
    )


def test_clean_report_passes(tmp_path):
    run = decide(tmp_path, [CLEAN])
    assert run.returncode == 0 and "1 packages, no known vulnerability with a fix" in run.stderr


@pytest.mark.parametrize("if_reachable", [False, True])
def test_a_vulnerability_with_a_fix_fails_always(tmp_path, if_reachable):
    run = decide(tmp_path, [CLEAN, FIXABLE, UNFIXED], if_reachable)
    assert run.returncode == 1
    assert "requests==2.19.0: PYSEC-2018-28 CVE-2018-18074 (fixed in 2.20.0)" in run.stderr


def test_a_vulnerability_without_a_fix_is_a_warning(tmp_path):
    run = decide(tmp_path, [CLEAN, UNFIXED])
    assert run.returncode == 0 and "warning, no fix released: ray==2.60.0: GHSA-xxxx" in run.stderr


def test_a_package_that_could_not_be_audited_fails_unless_if_reachable(tmp_path):
    strict = decide(tmp_path, [CLEAN, SKIPPED])
    assert strict.returncode == 1 and "cannot be audited: torch==?" in strict.stderr
    lenient = decide(tmp_path, [CLEAN, SKIPPED], if_reachable=True)
    assert lenient.returncode == 0 and "WARNING: not audited: torch" in lenient.stderr
