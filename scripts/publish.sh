#!/usr/bin/env bash
# Push built images to Amazon ECR: create the repository when it is missing, log Docker in, push
# every tag given.
#
#   scripts/publish.sh IMAGE:TAG...   e.g. sagemaker-ray-rl:0.1.0-cpu-py311 sagemaker-ray-rl:latest-cpu
#   scripts/publish.sh --login        only the repository and the login; prints <registry>/<repository>
#
# Each IMAGE:TAG is pushed as <registry>/<ECR_REPOSITORY>:TAG and the pushed references are printed,
# one per line.
#
# Environment:
#   ECR_REPOSITORY   repository name (default sagemaker-ray-rl)
#   AWS_DEFAULT_REGION, credentials: as for any AWS CLI call (CodeBuild's service role)
#   REGISTRY         push to this registry host instead of the repository's own
#                    (<account>.dkr.ecr.<region>.amazonaws.com); the tests point it at a local
#                    registry, and AWS_ENDPOINT_URL_ECR (the AWS CLI's own setting) at a local ECR
#                    API, so that this script runs unchanged against stand-ins
#   AWS              the AWS CLI command (default aws)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib.sh

[ $# -gt 0 ] || { sed -n '2,19p' "$0" >&2; exit 2; }
login_only=false
if [ "$1" = --login ]; then login_only=true; shift; fi
repository=${ECR_REPOSITORY:-sagemaker-ray-rl}
aws=${AWS:-aws}
for image in "$@"; do
    "$DOCKER" image inspect "$image" >/dev/null 2>&1 || { log "no local image $image"; exit 2; }
done

# 1. The repository: found, or created (scan on push, as ECR recommends).
if uri=$("$aws" ecr describe-repositories --repository-names "$repository" \
        --query 'repositories[0].repositoryUri' --output text 2>/dev/null); then
    log "ECR repository $repository exists: $uri"
else
    uri=$("$aws" ecr create-repository --repository-name "$repository" \
        --image-scanning-configuration scanOnPush=true \
        --query 'repository.repositoryUri' --output text)
    log "created ECR repository $repository: $uri"
fi
registry=${REGISTRY:-${uri%%/*}}

# 2. Docker login with a 12-hour ECR token.
"$aws" ecr get-login-password | "$DOCKER" login --username AWS --password-stdin "$registry" >/dev/null
log "logged in to $registry"
if $login_only; then
    echo "$registry/$repository"
    exit 0
fi

# 3. Tag and push.
for image in "$@"; do
    target="$registry/$repository:${image##*:}"
    "$DOCKER" tag "$image" "$target"
    log "pushing $target"
    "$DOCKER" push "$target" >/dev/null
    echo "$target"
done
