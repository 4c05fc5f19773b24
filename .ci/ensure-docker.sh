#!/usr/bin/env bash
# Make sure a Docker engine answers. On a Debian machine without one (this project's CI), as
# root: install Debian's docker.io (and debootstrap, which scripts/build.sh uses when no base
# image can be pulled), start dockerd in the background and wait for it.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

if "$DOCKER" info >/dev/null 2>&1; then
    exit 0
fi
if ! command -v dockerd >/dev/null 2>&1 || ! command -v debootstrap >/dev/null 2>&1; then
    [ "$(id -u)" = 0 ] || { log "not root: cannot install docker.io; start a Docker engine first"; exit 2; }
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
