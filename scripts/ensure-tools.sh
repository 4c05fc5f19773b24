#!/usr/bin/env bash
# Install the tools the release tests and the build's audit use, once; fast when already there.
#
#   scripts/ensure-tools.sh [audit] [publish] [sdk]     (default: all three)
#
#   audit    .venv-tools: pip-audit (scripts/audit.sh)
#   publish  .venv-tools: the AWS CLI and moto's server (the ECR API stand-in), and Debian's
#            docker-registry (the registry stand-in) for tests/container/test_publish.py
#   sdk      Debian's docker-compose (SageMaker SDK v2 local mode runs it), .venv-sdk2 with the
#            SageMaker Python SDK v2 (sagemaker<3) and .venv-sdk3 with v3, kept apart from .venv
#            (they pin their own boto3, numpy, ...); for tests/container/test_sagemaker_local.py
#
# Each venv records what it was made from; it is remade only when that changes. apt packages are
# installed only when their command is missing (as root on Debian; elsewhere it says what to do).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh
python=${PYTHON:-python3.11}

TOOLS_REQUIREMENTS=(pip-audit==2.10.1 awscli==1.46.2 "moto[server]==5.2.5")
SDK2_REQUIREMENTS=("sagemaker==2.257.7")
SDK3_REQUIREMENTS=("sagemaker==3.27.0")

# ensure_venv DIR REQUIREMENT... : DIR has exactly these requirements installed.
ensure_venv() {
    local dir=$1; shift
    local want="$*"
    if [ -x "$dir/bin/python" ] && [ "$(cat "$dir/.requirements" 2>/dev/null)" = "$want" ]; then
        return 0
    fi
    log "making $dir ($want)"
    rm -rf "$dir"
    "$python" -m venv "$dir"
    "$dir/bin/pip" install --quiet --disable-pip-version-check "$@" 2> >(grep -v "is ignored: it is neither" >&2)
    echo "$want" > "$dir/.requirements"
}

# ensure_apt COMMAND PACKAGE
ensure_apt() {
    command -v "$1" >/dev/null 2>&1 && return 0
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        log "$1 is missing: install Debian's $2 (apt-get install $2) or an equivalent"
        exit 2
    fi
    log "installing $2"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "$2" >/dev/null
}

what=("$@")
[ ${#what[@]} -gt 0 ] || what=(audit publish sdk)
for item in "${what[@]}"; do
    case "$item" in
        audit | publish) ensure_venv .venv-tools "${TOOLS_REQUIREMENTS[@]}" ;;&
        publish)
            ensure_apt docker-registry docker-registry
            # The Debian package starts a registry service on :5000 where an init system runs;
            # the tests start their own on a free loopback port instead.
            ;;
        sdk)
            ensure_apt docker-compose docker-compose
            ensure_venv .venv-sdk2 "${SDK2_REQUIREMENTS[@]}"
            ensure_venv .venv-sdk3 "${SDK3_REQUIREMENTS[@]}"
            ;;
        audit) ;;
        *) log "unknown tool set '$item' (audit, publish, sdk)"; exit 2 ;;
    esac
done
