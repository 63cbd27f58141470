#!/usr/bin/env bash
# Removes exactly what hack/deploy.sh created: every object of the kustomize base and the
# Secret kube-metrics-bridge-tls. Objects it did not create are left alone; deleting the
# Namespace custom-metrics (part of the base) also removes anything else in it.
#
#   hack/remove.sh [-- kubectl delete args]      KUBECTL overrides the kubectl binary
set -euo pipefail
cd "$(dirname "$0")/.."
kubectl="${KUBECTL:-kubectl}"
[ "${1:-}" != "--" ] || shift
# --wait=false: the Namespace finishes terminating in the background (its controller empties
# it); waiting here would block on that.
"$kubectl" delete --ignore-not-found --wait=false secret kube-metrics-bridge-tls -n custom-metrics "$@"
bash deploy/render.sh base | "$kubectl" delete --ignore-not-found --wait=false -f - "$@"
