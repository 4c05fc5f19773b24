#!/usr/bin/env bash
# Set up what the tests need and run them.
#
#   scripts/test.sh [pytest arguments]     (default: all of tests/)
#
# Creates .venv (Python 3.11) with torch's CPU build, the locked dependencies and this package,
# checks the tree with ruff and import-linter (pyproject.toml), and runs pytest. For the whole suite (no arguments) it also makes sure a Docker engine answers
# (scripts/ensure-docker.sh: starts Debian's as root), installs the release tools once
# (scripts/ensure-tools.sh: the SageMaker SDK v2/v3 venvs, docker-compose, docker-registry, the AWS
# CLI and moto) and builds the CPU image once (scripts/build.sh) for the whole run; the CUDA image
# is not built here (buildspec.yml builds it). Without an engine the container
# tests are skipped, except under CI (CI=true), where that fails the run. The whole suite runs on two
# pytest-xdist workers (tests/conftest.py groups the tests). TORCH_INDEX_URL: an index with torch's CPU wheels (e.g.
# https://download.pytorch.org/whl/cpu) where the default index would give the CUDA build.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

python=${PYTHON:-python3.11}
if [ ! -x .venv/bin/python ]; then
    log "creating .venv with $python"
    "$python" -m venv .venv
fi
torch_version=$(lock_pin torch)
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
    log "installing torch $torch_version"
    .venv/bin/pip install --quiet --disable-pip-version-check "torch==$torch_version" \
        ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"}
fi
log "installing the package and test dependencies (versions from docker/requirements-cpu.txt)"
constraints=$(mktemp)
sed -n 's/^\([A-Za-z0-9_.-]*==[^ ]*\).*/\1/p' docker/requirements-cpu.txt > "$constraints"  # the pins, no hashes
.venv/bin/pip install --quiet --disable-pip-version-check -c "$constraints" -e '.[test]'
rm -f "$constraints"

log "ruff (lint and format) and import-linter (the package's layers)"
.venv/bin/ruff check --quiet .
.venv/bin/ruff format --check --quiet .
PYTHONPATH=src .venv/bin/lint-imports --no-cache >/dev/null || { PYTHONPATH=src .venv/bin/lint-imports --no-cache; exit 1; }

if [ $# -eq 0 ]; then
    scripts/ensure-docker.sh || true
    unset DOCKER
    source scripts/lib.sh
    if "$DOCKER" info >/dev/null 2>&1; then
        scripts/ensure-tools.sh publish sdk
        SAGEMAKER_RAY_RL_IMAGE=$(scripts/build.sh --variant cpu)
        export SAGEMAKER_RAY_RL_IMAGE
    elif [ "${CI:-}" = true ]; then
        log "CI=true and no Docker engine answers: the container tests must run (see scripts/ensure-docker.sh)"
        exit 2
    else
        log "no Docker engine answers: the container tests will be skipped"
    fi
    # Two pytest-xdist workers, one unit of work each at a time (tests/conftest.py says which).
    set -- -n 2 --dist loadscope tests
fi
exec .venv/bin/python -m pytest "$@"
