#!/usr/bin/env bash
# A separate venv (.venv-d3rlpy) with d3rlpy 2.8.1 for the offline learner's cross-check
# (scripts/bench/crosscheck_d3rlpy.py). Separate because d3rlpy 2.8.1 pins gymnasium==1.0.0 and the
# image has gymnasium 1.2.2. torch as for scripts/test.sh (TORCH_INDEX_URL where the default index
# gives the CUDA build).
set -euo pipefail
cd "$(dirname "$0")/../.."
source scripts/lib.sh
python=${PYTHON:-python3.11}
torch_version=$(lock_pin torch)  # the bare version: no "+cpu", no line continuation
[ -x .venv-d3rlpy/bin/python ] || "$python" -m venv .venv-d3rlpy
log "installing torch $torch_version and d3rlpy 2.8.1 into .venv-d3rlpy"
.venv-d3rlpy/bin/pip install --quiet --disable-pip-version-check "torch==$torch_version" d3rlpy==2.8.1 \
    ${TORCH_INDEX_URL:+--extra-index-url "$TORCH_INDEX_URL"}
