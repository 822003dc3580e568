#!/usr/bin/env bash
# LAP on a local kind cluster, from the repository: creates the cluster (cluster.yaml beside
# this script) unless it exists, builds every image, loads them into the node, creates the
# Secrets once (bundled PostgreSQL and Redis), applies overlays/kind and waits for web.
# Run it again after changing code: it rebuilds, reloads and restarts the platform.
#
#   deploy/kind/up.sh            (KIND_CLUSTER_NAME, default lap)
#
# Needs docker (with BuildKit), kind v0.33.0 or newer (for the node image cluster.yaml
# pins), kubectl and python3.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
deploy=$(dirname "$here")
cluster=${KIND_CLUSTER_NAME:-lap}
context=kind-$cluster
# What overlays/kind's lap-config names: the images are loaded into the node, never pulled.
export LAP_K8S_IMAGE_REGISTRY=lap LAP_K8S_IMAGE_TAG=0.1.0

die() { echo "kind/up: $*" >&2; exit 1; }
for tool in docker kind kubectl python3; do
    command -v "$tool" >/dev/null || die "$tool is required (deploy/README.md, kind)"
done
kind_version=$(kind version | awk '{print $2}')
[[ $(printf '%s\n' v0.33.0 "$kind_version" | sort -V | head -n 1) == v0.33.0 ]] \
    || die "kind $kind_version is older than v0.33.0, which cluster.yaml's node image needs"

if ! kind get clusters 2>/dev/null | grep -qx "$cluster"; then
    kind create cluster --name "$cluster" --config "$here/cluster.yaml" --wait 180s
fi

"$deploy/build-images.sh"
images=()
while IFS= read -r image; do
    images+=("$LAP_K8S_IMAGE_REGISTRY/$image:$LAP_K8S_IMAGE_TAG")
done < <("$deploy/build-images.sh" --list)
kind load docker-image --name "$cluster" "${images[@]}"

"$deploy/create-secrets.sh" --bundled --context "$context"

k() { kubectl --context "$context" --namespace lap "$@"; }
# A Job's pod template cannot change: the previous migrations Job goes first.
k delete job lap-migrate --ignore-not-found
kubectl --context "$context" apply --kustomize "$deploy/kustomize/overlays/kind"
k wait --for=condition=complete job/lap-migrate --timeout=600s
# Same tags, new builds: restart so the platform runs the images just loaded.
k rollout restart deployment/lap-web deployment/lap-worker
k rollout status deployment/lap-web --timeout=600s
k rollout status deployment/lap-worker --timeout=600s

cat <<DONE
LAP is serving at http://127.0.0.1:8000/ (API docs at /api/docs/).
  master key:  kubectl --context $context -n lap get secret lap-keys -o jsonpath='{.data.LAP_MASTER_KEY}' | base64 -d
  admin user:  kubectl --context $context -n lap exec -it deploy/lap-web -- python manage.py createsuperuser
  remove:      kind delete cluster --name $cluster
DONE
