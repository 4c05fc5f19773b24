#!/usr/bin/env bash
# Build the image, one variant: prints the version tag on stdout (the only thing it prints there).
#   cpu   sagemaker-ray-rl:<VERSION>-cpu-py311 and :latest-cpu     (docker/requirements-cpu.txt)
#   cuda  sagemaker-ray-rl:<VERSION>-cu<XYZ>-py311 and :latest-cuda (docker/requirements-cuda.txt;
#         XYZ from the lock's CUDA runtime, e.g. cu130)
#
#   scripts/build.sh [--variant cpu|cuda] [--base-image IMAGE] [--cache-from IMAGE]...
#                    [--audit required|if-reachable|off]
#
# First the variant's lock is audited (scripts/audit.sh): the build fails when the lock has a known
# vulnerability with a fix. Where the vulnerability service cannot be reached, `if-reachable` (the
# default; AUDIT overrides) logs a WARNING that the lock was not audited and goes on; `required`
# (buildspec.yml) fails. --cache-from: images built by this script before (they carry BuildKit's
# inline cache), e.g. the registry's :latest-<variant>.
#
# Environment:
#   PIP_CERT         CA bundle passed to pip inside the build as a BuildKit secret (when set)
#   TORCH_INDEX_URL  where the build finds torch's CPU wheel (default: PyTorch's CPU index);
#                    a local CPU wheel in docker/wheels/ (fetched here with pip when pip can) wins
#   IMAGE_NAME       repository name (default sagemaker-ray-rl)
#   BASE_IMAGE       the base (default: the Dockerfile's ARG BASE_IMAGE, debian:bookworm-slim by digest)
# When the base can neither be found locally nor pulled (e.g. no access to Docker Hub), an equivalent
# Debian bookworm base is made with debootstrap (which checks the packages against the archive's
# signed Release file where debian-archive-keyring is installed) and imported as sagemaker-ray-rl-base:bookworm; the build then logs that
# its base is that local one, not the digest.
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

variant=cpu
audit=${AUDIT:-if-reachable}
cache_from=()
# The Dockerfile's default base (one place names the digest).
default_base=$(sed -n 's/^ARG BASE_IMAGE=//p' docker/Dockerfile)
base_image=${BASE_IMAGE:-$default_base}
while [ $# -gt 0 ]; do
    case "$1" in
        --variant) variant=$2; shift 2 ;;
        --base-image) base_image=$2; shift 2 ;;
        --cache-from) cache_from+=(--cache-from "$2"); shift 2 ;;
        --audit) audit=$2; shift 2 ;;
        -h | --help) sed -n '2,28p' "$0"; exit 0 ;;
        *) log "unknown argument: $1 (see --help)"; exit 2 ;;
    esac
done
case "$variant" in cpu | cuda) ;; *) log "unknown variant '$variant': cpu or cuda"; exit 2 ;; esac
case "$audit" in required | if-reachable | off) ;; *) log "--audit: required, if-reachable or off"; exit 2 ;; esac
require_docker_engine

name=${IMAGE_NAME:-sagemaker-ray-rl}
version=$(image_version)
lock=docker/requirements-$variant.txt
ray_version=$(lock_pin ray "$lock")
torch_version=$(lock_pin torch "$lock")
cuda_version=none
variant_tag=$variant
if [ "$variant" = cuda ]; then
    runtime=$(lock_pin nvidia-cuda-runtime "$lock")    # e.g. 13.0.96 -> CUDA 13.0 -> cu130
    [ -n "$runtime" ] || { log "$lock pins no nvidia-cuda-runtime: cannot tell the CUDA version"; exit 2; }
    cuda_version=$(echo "$runtime" | cut -d. -f1,2)
    variant_tag=cu$(echo "$cuda_version" | tr -d .)
fi

# 0. The lock's vulnerabilities.
case "$audit" in
    off) log "WARNING: --audit off: $lock was NOT audited for vulnerabilities" ;;
    if-reachable) scripts/audit.sh "$lock" --if-reachable ;;
    required) scripts/audit.sh "$lock" ;;
esac

# 1. The base image: local, pulled, or made here.
if ! "$DOCKER" image inspect "$base_image" >/dev/null 2>&1; then
    if timeout 120 "$DOCKER" pull "$base_image" >/dev/null 2>&1; then
        log "pulled $base_image"
    else
        local_base=sagemaker-ray-rl-base:bookworm
        if ! "$DOCKER" image inspect "$local_base" >/dev/null 2>&1; then
            log "$base_image cannot be pulled: making an equivalent Debian bookworm base with debootstrap"
            command -v debootstrap >/dev/null || { log "debootstrap is missing: apt-get install -y debootstrap"; exit 2; }
            mirror=$(sed -n 's/^URIs: *//p' /etc/apt/sources.list.d/debian.sources 2>/dev/null | head -n1)
            mirror=${mirror:-http://deb.debian.org/debian}
            root=$(mktemp -d)
            trap 'rm -rf "$root"' EXIT
            debootstrap --variant=minbase bookworm "$root" "$mirror" >/dev/null
            rm -rf "$root"/var/lib/apt/lists/* "$root"/var/cache/apt/archives/*.deb
            tar -C "$root" -c . | "$DOCKER" import - "$local_base" >/dev/null
            log "made $local_base from $mirror"
        else
            log "$base_image cannot be pulled: using the local Debian bookworm base $local_base (not digest-pinned)"
        fi
        base_image=$local_base
    fi
fi

# 2. torch's CPU wheel: a local one when pip here can fetch it (no outside index needed then).
torch_index=${TORCH_INDEX_URL-https://download.pytorch.org/whl/cpu}
if [ "$variant" = cpu ] && ! ls docker/wheels/torch-"$torch_version"+cpu-*.whl >/dev/null 2>&1; then
    tmp=$(mktemp -d)
    if python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.11 \
            --platform manylinux_2_28_x86_64 -d "$tmp" "torch==$torch_version" >/dev/null 2>&1 \
        && ls "$tmp"/torch-*+cpu-*.whl >/dev/null 2>&1; then
        mv "$tmp"/torch-*+cpu-*.whl docker/wheels/
    fi
    rm -rf "$tmp"
fi
if [ "$variant" = cpu ] && ls docker/wheels/torch-"$torch_version"+cpu-*.whl >/dev/null 2>&1; then
    log "using the local torch wheel $(basename docker/wheels/torch-*+cpu-*.whl)"
    torch_index=
fi

# 3. Build.
secret=()
if [ -n "${PIP_CERT:-}" ] && [ -s "$PIP_CERT" ]; then secret=(--secret "id=pip_cert,src=$PIP_CERT"); fi
tag="$name:$version-$variant_tag-py311"
log "building $tag (base $base_image, ray $ray_version, torch $torch_version, CUDA $cuda_version)"
start=$(date +%s)
"$DOCKER" build -f docker/Dockerfile --target "$variant" \
    --build-arg "VARIANT=$variant" \
    --build-arg BUILDKIT_INLINE_CACHE=1 \
    "${cache_from[@]}" \
    --build-arg "BASE_IMAGE=$base_image" \
    --build-arg "TORCH_INDEX_URL=$torch_index" \
    --build-arg "VERSION=$version" \
    --build-arg "RAY_VERSION=$ray_version" \
    --build-arg "TORCH_VERSION=$torch_version" \
    --build-arg "CUDA_VERSION=$cuda_version" \
    --build-arg "PYTHON_VERSION=3.11" \
    "${secret[@]}" \
    -t "$tag" -t "$name:latest-$variant" . >&2
size=$("$DOCKER" image inspect -f '{{.Size}}' "$tag")
log "built $tag and $name:latest-$variant in $(( $(date +%s) - start )) s, $(( size / 1000000 )) MB"
echo "$tag"
