#!/usr/bin/env bash
# Make sure a Docker engine answers. On a Debian machine without one (this project's machines and
# CI), as root: install Debian's docker.io (and debootstrap, which scripts/build.sh uses when no
# base image can be pulled), start dockerd in the background and wait for it. Elsewhere it says
# what to do and exits 2. Used by scripts/demo.sh, scripts/test.sh and .ci/run.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

if "$DOCKER" info >/dev/null 2>&1; then
    exit 0
fi
if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null 2>&1; then
        log "no Docker engine answers and this is not a Debian root shell: install and start Docker"
        log "(https://docs.docker.com/engine/install/), then run this again"
        exit 2
    fi
    log "installing docker.io and debootstrap"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io debootstrap >/dev/null
fi
if ! pgrep -x dockerd >/dev/null; then
    log "starting dockerd (log: /var/log/dockerd.log)"
    nohup dockerd >/var/log/dockerd.log 2>&1 &
fi
unset DOCKER
source scripts/lib.sh
for _ in $(seq 60); do
    if "$DOCKER" info >/dev/null 2>&1; then
        log "Docker engine $("$DOCKER" version -f '{{.Server.Version}}') is up"
        exit 0
    fi
    sleep 1
done
log "dockerd did not answer within 60 s; last lines of its log:"
tail -n 20 /var/log/dockerd.log >&2
exit 2
