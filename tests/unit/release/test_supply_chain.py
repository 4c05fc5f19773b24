"""The image's supply chain, read from docker/Dockerfile and the locks: the base is named by digest,
every pip command installs from a hash-pinned lock with ``--require-hashes`` or has no index, nothing
is built with build isolation (which downloads an unpinned setuptools), and pip itself refuses a
lock entry whose hash was removed or changed (a hand-made wheel in a local folder, offline)."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
DOCKERFILE = ROOT / "docker" / "Dockerfile"
BUILD_LOCK = ROOT / "docker" / "requirements-build.txt"
LOCKS = [BUILD_LOCK, ROOT / "docker" / "requirements-cpu.txt", ROOT / "docker" / "requirements-cuda.txt"]


def instructions(text: str) -> list[str]:
    """The Dockerfile's instructions, continuation lines joined, comments dropped."""
    joined: list[str] = []
    current = ""
    for line in text.splitlines():
        if not current and (not line.strip() or line.lstrip().startswith("#")):
            continue
        current += line.rstrip().removesuffix("\\") + " "
        if not line.rstrip().endswith("\\"):
            joined.append(" ".join(current.split()))
            current = ""
    return joined


def pip_commands(text: str) -> list[str]:
    """Each ``pip install`` / ``pip wheel`` command of the Dockerfile's RUN instructions."""
    commands = []
    for instruction in instructions(text):
        if instruction.startswith("RUN "):
            for part in re.split(r"&&|;|\|\|", instruction):
                if re.search(r"\bpip3? (install|wheel|download)\b", part):
                    commands.append(part.strip())
    return commands


def supply_chain_problems(text: str) -> list[str]:
    """What in a Dockerfile's text breaks the image's supply-chain rules (empty: none)."""
    problems = []
    base = re.search(r"^ARG BASE_IMAGE=(\S+)$", text, re.M)
    if base is None or not re.fullmatch(r"debian:bookworm-slim@sha256:[0-9a-f]{64}", base.group(1)):
        problems.append(f"ARG BASE_IMAGE does not name debian:bookworm-slim by digest: {base and base.group(1)}")
    stages = set(re.findall(r"^FROM \S+ AS (\S+)$", text, re.M))
    for image in re.findall(r"^FROM (\S+)", text, re.M):
        if image != "${BASE_IMAGE}" and image not in stages and not re.fullmatch(r"deps-\$\{VARIANT\}", image):
            problems.append(f"FROM {image}: neither the digest-pinned base nor a stage of this file")
    commands = pip_commands(text)
    if not commands:
        problems.append("no pip command found")
    for command in commands:
        offline = "--no-index" in command
        if not offline and "--require-hashes" not in command:
            problems.append(f"neither --require-hashes nor --no-index: {command}")
        if not offline and "--no-build-isolation" not in command and "--only-binary=:all:" not in command:
            problems.append(f"may build with build isolation (an unpinned setuptools): {command}")
        if "-r " in command and not offline and "--require-hashes" not in command:
            problems.append(f"a lock installed without hash checking: {command}")
    return problems


def test_the_dockerfile_pins_its_base_by_digest_and_checks_every_build_dependency():
    assert supply_chain_problems(DOCKERFILE.read_text()) == []
    assert len(pip_commands(DOCKERFILE.read_text())) == 5  # build lock, cpu, cuda, our wheel, its install


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (("ARG BASE_IMAGE=debian:bookworm-slim@sha256:", "ARG BASE_IMAGE=debian:bookworm-slim#"), "by digest"),
        (("pip wheel --no-deps --no-index --no-build-isolation", "pip wheel --no-deps"), "neither --require-hashes"),
        (("--require-hashes --no-build-isolation -r", "--require-hashes -r"), "build isolation"),
        (("pip install --require-hashes --only-binary=:all:", "pip install"), "neither --require-hashes"),
        (("FROM ${BASE_IMAGE} AS base", "FROM debian:bookworm-slim AS base"), "FROM debian:bookworm-slim"),
    ],
)
def test_a_dockerfile_whose_build_dependencies_are_not_pinned_is_refused(change, problem):
    text = DOCKERFILE.read_text()
    assert change[0] in text
    problems = supply_chain_problems(text.replace(change[0], change[1], 1))
    assert any(problem in p for p in problems), problems


def lock_entries(path: Path) -> list[str]:
    """The lock's requirements, each with its ``--hash`` options joined to it."""
    text = re.sub(r"\s*\\\n\s*", " ", path.read_text())
    return [line for line in text.splitlines() if line.strip() and not line.startswith("#")]


@pytest.mark.parametrize("lock", LOCKS, ids=lambda p: p.name)
def test_every_lock_entry_is_pinned_with_a_sha256(lock):
    entries = lock_entries(lock)
    assert entries
    for entry in entries:
        assert re.fullmatch(r"[A-Za-z0-9_.\-\[\],]+==\S+( --hash=sha256:[0-9a-f]{64})+", entry), entry


def test_the_build_lock_is_the_pip_and_setuptools_the_variant_locks_pin():
    build = lock_entries(BUILD_LOCK)
    assert [entry.split("==")[0] for entry in build] == ["pip", "setuptools"]
    for lock in LOCKS[1:]:
        for entry in build:
            assert entry in lock_entries(lock), lock.name  # installing the variant lock changes neither


def make_wheel(folder: Path) -> Path:
    """A minimal pure-Python wheel, ``demo_pkg-1.0``, in `folder`."""
    path = folder / "demo_pkg-1.0-py3-none-any.whl"
    files = {
        "demo_pkg/__init__.py": b"",
        "demo_pkg-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: demo-pkg\nVersion: 1.0\n",
        "demo_pkg-1.0.dist-info/WHEEL": b"Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
    }
    record = []
    for name, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{name},sha256={digest},{len(data)}")
    record.append("demo_pkg-1.0.dist-info/RECORD,,")
    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(name, data)
        archive.writestr("demo_pkg-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    return path


@pytest.mark.parametrize("edit", ["intact", "hash removed", "hash changed"])
def test_pip_with_require_hashes_refuses_a_lock_entry_without_its_hash(tmp_path, edit):
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    digest = hashlib.sha256(make_wheel(wheels).read_bytes()).hexdigest()
    entry = {
        "intact": f"demo-pkg==1.0 \\\n    --hash=sha256:{digest}\n",
        "hash removed": "demo-pkg==1.0\n",
        "hash changed": f"demo-pkg==1.0 \\\n    --hash=sha256:{digest[::-1]}\n",
    }[edit]
    lock = tmp_path / "requirements-build.txt"
    lock.write_text(entry)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull  # no configured index or find-links: only `wheels`
    run = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--dry-run", "--ignore-installed", "--no-index"]
        + ["--find-links", str(wheels), "--require-hashes", "--only-binary=:all:", "-r", str(lock)],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    if edit == "intact":
        assert run.returncode == 0, run.stderr
        assert "Would install demo-pkg-1.0" in run.stdout
    else:
        assert run.returncode != 0
        assert ("Hashes are required" if edit == "hash removed" else "DO NOT MATCH THE HASHES") in run.stderr
