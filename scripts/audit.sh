#!/usr/bin/env bash
# Audit a lock with pip-audit: fail on any known vulnerability that has a fixed version.
#
#   scripts/audit.sh LOCK [--if-reachable]
#
# Every pinned package of LOCK (docker/requirements-<variant>.txt) is looked up in PyPI's
# vulnerability data (pip-audit's default service, https://pypi.org/pypi/NAME/VERSION/json).
#   - a vulnerability with a fix version     -> exit 1 (upgrade it: edit requirements.in, scripts/lock.sh)
#   - a vulnerability without a fix version  -> listed as a warning
#   - the service does not answer, or a pinned package could not be audited
#                                            -> exit 1, or with --if-reachable a WARNING that the
#                                               lock was NOT audited and exit 0 (machines whose
#                                               package index is a mirror without that API)
# Local version labels (torch's +cpu) are audited as their public version.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

lock=${1:?usage: scripts/audit.sh LOCK [--if-reachable]}
if_reachable=false
[ "${2:-}" = --if-reachable ] && if_reachable=true
service=${PIP_AUDIT_SERVICE_URL:-https://pypi.org/pypi}

unaudited() {
    if $if_reachable; then
        log "WARNING: $lock was NOT audited for vulnerabilities: $*"
        exit 0
    fi
    log "$lock cannot be audited: $* (--if-reachable turns this into a warning)"
    exit 1
}

scripts/ensure-tools.sh audit
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
sed -n 's/^\([A-Za-z0-9_.-]*\)==\([^ +]*\).*/\1==\2/p' "$lock" > "$work/pins.txt"
probe=$(head -n 1 "$work/pins.txt" | sed 's|==|/|')
if ! .venv-tools/bin/python -c "import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=20)" \
        "$service/$probe/json" 2>/dev/null; then
    unaudited "the vulnerability service does not answer ($service/$probe/json)"
fi
status=0
.venv-tools/bin/pip-audit --requirement "$work/pins.txt" --no-deps --disable-pip --progress-spinner off \
    --format json --output "$work/report.json" 2>"$work/stderr" || status=$?
if [ ! -s "$work/report.json" ]; then
    cat "$work/stderr" >&2
    unaudited "pip-audit failed (exit $status)"
fi
.venv-tools/bin/python scripts/audit_report.py "$work/report.json" "$lock" "$if_reachable"
