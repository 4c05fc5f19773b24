"""buildspec.yml: valid CodeBuild (version 0.2) YAML, and every command it runs is a script of
scripts/ that exists and is executable, so that the same steps run on any machine."""

from __future__ import annotations

import os
import re
import shlex
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
BUILDSPEC = yaml.safe_load((REPO / "buildspec.yml").read_text())
PHASES = ("install", "pre_build", "build", "post_build")
COMMANDS = [(phase, c) for phase in PHASES for c in BUILDSPEC["phases"][phase]["commands"]]


def executable(command: str) -> str:
    """The program a buildspec command runs: after `VAR=value` prefixes, or inside `VAR=$(...)`."""
    whole = re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=\$\((.*)\)", command)
    if whole:
        command = whole.group(1)
    words = shlex.split(command)
    while words and re.match(r"[A-Za-z_][A-Za-z0-9_]*=", words[0]):
        words.pop(0)
    return words[0]


def test_codebuild_shape():
    assert BUILDSPEC["version"] == 0.2
    assert set(BUILDSPEC["phases"]) == set(PHASES)
    assert BUILDSPEC["env"]["shell"] == "bash"
    # A failed build must not reach post_build (tests and push).
    for phase in ("install", "pre_build", "build"):
        assert BUILDSPEC["phases"][phase]["on-failure"] == "ABORT"


@pytest.mark.parametrize("phase, command", COMMANDS)
def test_every_command_is_an_executable_script(phase, command):
    program = executable(command)
    assert program.startswith("scripts/"), f"{phase}: {command!r} runs {program!r}, not a script of scripts/"
    path = REPO / program
    assert path.is_file() and os.access(path, os.X_OK), f"{phase}: {program} is missing or not executable"
    for word in shlex.split(command):
        if word.startswith("tests/"):
            assert (REPO / word).exists(), f"{phase}: {command!r} names {word}, which does not exist"


def test_builds_both_variants_with_cache_and_pushes_last():
    build = " ".join(BUILDSPEC["phases"]["build"]["commands"])
    assert "--variant cpu --cache-from" in build and "--variant cuda --cache-from" in build
    post = BUILDSPEC["phases"]["post_build"]["commands"]
    assert executable(post[-1]) == "scripts/publish.sh"
    assert all("test.sh" in executable(c) for c in post[:-1])
    assert executable(BUILDSPEC["phases"]["pre_build"]["commands"][0]) == "scripts/publish.sh"


def test_executable_parses_the_command_forms_used():
    assert executable('CPU_IMAGE=$(scripts/build.sh --variant cpu --cache-from "$X:latest-cpu")') == "scripts/build.sh"
    assert executable("SAGEMAKER_RAY_RL_IMAGE=$CPU_IMAGE scripts/test.sh tests/x.py") == "scripts/test.sh"
    assert executable("scripts/ensure-docker.sh") == "scripts/ensure-docker.sh"
