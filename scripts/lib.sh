# Shared helpers for scripts/*.sh (source it; it defines functions and sets DOCKER).
# shellcheck shell=bash

# A docker client that can build with BuildKit: `docker` when it has buildx, else Debian's
# /usr/bin/docker (20.10 builds with DOCKER_BUILDKIT=1 on its own); DOCKER overrides.
if [ -z "${DOCKER:-}" ]; then
    DOCKER=docker
    if ! docker buildx version >/dev/null 2>&1 && [ -x /usr/bin/docker ]; then
        DOCKER=/usr/bin/docker
    fi
fi
export DOCKER DOCKER_BUILDKIT=1

log() { printf '[%s] %s\n' "$(basename "$0")" "$*" >&2; }

# Exit with instructions unless a Docker engine answers.
require_docker_engine() {
    if ! command -v "$DOCKER" >/dev/null 2>&1 || ! "$DOCKER" info >/dev/null 2>&1; then
        log "no Docker engine answers ('$DOCKER info' failed)."
        log "Start one: scripts/ensure-docker.sh does it on Debian as root (apt-get install docker.io, dockerd &)."
        exit 2
    fi
}

# The version PACKAGE is pinned to in LOCK (default docker/requirements-cpu.txt), without a local
# label: `lock_pin torch` prints 2.13.0 for `torch==2.13.0+cpu \`. scripts/devtools.py's lock_pin
# is the same reading for Python.
lock_pin() {
    local package=$1 lock=${2:-$(dirname "${BASH_SOURCE[0]}")/../docker/requirements-cpu.txt}
    sed -n "s/^$package==\([^ +\\]*\).*/\1/p" "$lock"
}

image_version() { tr -d '[:space:]' < "$(dirname "${BASH_SOURCE[0]}")/../VERSION"; }

# Start `IMAGE serve` for the model dir MODEL on PORT (host network, read-only mount); prints the
# container id. The caller sets its cleanup trap, then calls wait_for_ping.
start_server() {
    local model=$1 port=$2 image=$3
    "$DOCKER" run -d --rm --network host -e SAGEMAKER_BIND_TO_PORT="$port" \
        -v "$model:/opt/ml/model:ro" "$image" serve
}

# Wait up to 60 s until the server in container ID answers 200 on http://127.0.0.1:PORT/ping.
wait_for_ping() {
    local id=$1 port=$2
    for _ in $(seq 120); do
        if "$DOCKER" exec "$id" python -c \
            "import urllib.request,sys; sys.exit(urllib.request.urlopen('http://127.0.0.1:$port/ping').status != 200)" \
            >/dev/null 2>&1; then
            return 0
        fi
        sleep 0.5
    done
    log "the server in container ${id:0:12} did not answer /ping within 60 s"
    return 1
}
