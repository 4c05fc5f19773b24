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

image_version() { tr -d '[:space:]' < "$(dirname "${BASH_SOURCE[0]}")/../VERSION"; }
