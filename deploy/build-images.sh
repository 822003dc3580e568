#!/usr/bin/env bash
# Builds every LAP image from the repository root, as the Kubernetes driver names them:
# {registry}/platform, {registry}/runner-base, {registry}/harness-<id> (one per harness, FROM
# runner-base), {registry}/vault, all tagged {tag}.
#
#   deploy/build-images.sh            build them all
#   deploy/build-images.sh --push     build, then push each to the registry
#   deploy/build-images.sh --list     print the image names (without registry and tag)
#
# LAP_K8S_IMAGE_REGISTRY (default lap) and LAP_K8S_IMAGE_TAG (default 0.1.0) are the same
# settings the platform reads, so what is built here is what the driver asks for. Extra
# `docker build` options go in DOCKER_BUILD_OPTS (e.g. "--platform linux/amd64 --pull").
# Each image has its own Dockerfile.dockerignore beside its Dockerfile: BuildKit is required.
set -euo pipefail

# runner-base first: the harness images are built FROM it.
IMAGES=(
    platform
    runner-base
    harness-shell
    harness-claude-code
    harness-codex
    harness-opencode
    harness-claude-agent-sdk
    vault
)

push=false
case "${1:-}" in
    --list) printf '%s\n' "${IMAGES[@]}"; exit 0 ;;
    --push) push=true ;;
    "") ;;
    *) echo "usage: $0 [--push | --list]" >&2; exit 2 ;;
esac

root=$(cd "$(dirname "$0")/.." && pwd)
registry=${LAP_K8S_IMAGE_REGISTRY:-lap}
tag=${LAP_K8S_IMAGE_TAG:-0.1.0}
read -r -a extra <<< "${DOCKER_BUILD_OPTS:-}"
export DOCKER_BUILDKIT=1

for image in "${IMAGES[@]}"; do
    args=()
    if [[ $image == harness-* ]]; then
        args+=(--build-arg "RUNNER_BASE=$registry/runner-base:$tag")
    fi
    echo "== $registry/$image:$tag"
    # ${a[@]+"${a[@]}"}: an empty array under `set -u` in bash 3.2 (macOS) too.
    docker build ${extra[@]+"${extra[@]}"} ${args[@]+"${args[@]}"} \
        --file "$root/deploy/docker/$image/Dockerfile" \
        --tag "$registry/$image:$tag" \
        "$root"
done

if $push; then
    for image in "${IMAGES[@]}"; do
        docker push "$registry/$image:$tag"
    done
fi
