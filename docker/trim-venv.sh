#!/bin/sh
# Remove what a runtime never imports from a venv (usage: trim-venv.sh /opt/venv): the packages'
# own test suites (`tests` directories, torch's `test` binaries) and Ray's Java jars (only Java and
# cross-language workers load them). Bytecode stays: shipping .pyc saves every process of a job
# its compile time (docs/benchmarks.md). The container tests import and run Ray, RLlib, Tune,
# Serve and torch after this.
set -eu
site=$(echo "$1"/lib/python3.*/site-packages)
before=$(du -sm "$1" | cut -f1)
find "$site" -depth -type d -name tests -not -path '*.dist-info/*' -exec rm -rf {} +
rm -rf "$site/torch/test" "$site/ray/jars"
echo "trim-venv.sh: $1 $before MB -> $(du -sm "$1" | cut -f1) MB"
