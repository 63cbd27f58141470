#!/usr/bin/env bash
# Installs kube-metrics-bridge into the cluster of the current kubeconfig (namespace
# custom-metrics) from the kustomize base, with a serving certificate whose CA goes into the
# three APIServices' caBundle. Re-running keeps the certificate; --renew rotates it.
#
#   hack/deploy.sh [--renew] [--cert-dir DIR] [-- kubectl apply args]
#
# Everything it applies is what `deploy/render.sh base` prints plus the Secret
# kube-metrics-bridge-tls; hack/remove.sh deletes exactly that. The image is
# kube-metrics-bridge:0.1.0 (see deploy/README.md to point it at your registry).
set -euo pipefail
cd "$(dirname "$0")/.."
exec bash deploy/install.sh "$@"
