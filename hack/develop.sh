#!/usr/bin/env bash
# The development loop: registers the metrics APIs in the cluster of the current kubeconfig,
# pointing at a bridge built from this checkout and running on this host, and rebuilds and
# restarts it whenever src/ changes. Ctrl-C stops it (the registration stays; hack/remove.sh
# or `kubectl delete apiservice ...` removes it).
#
#   hack/develop.sh [RULES_FILE]           default rules/demo.toml
#
# Environment:
#   KMB_DEV_PORT   port on this host (default 8443)
#   KMB_DEV_HOST   address kube-apiserver reaches this host at (default 127.0.0.1, right for a
#                  control plane on this machine; for kind use the docker bridge gateway)
#   KMB_PROMETHEUS_URL   overrides the rules file's [prometheus] url
#   KMB_BRIDGE_BIN  run this binary instead of building (no rebuild loop; used by the tests)
# The bridge runs as your kubeconfig's user, which needs TokenReview/SubjectAccessReview
# rights and read access to what the rules name (cluster-admin does).
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh
if [ -z "${KMB_BRIDGE_BIN:-}" ]; then ensure_rust; use_build_cache; fi

rules="${1:-rules/demo.toml}"
port="${KMB_DEV_PORT:-8443}"
host="${KMB_DEV_HOST:-127.0.0.1}"
kubectl="${KUBECTL:-kubectl}"
certs="${XDG_CACHE_HOME:-$HOME/.cache}/kube-metrics-bridge/dev-certs"
svc_dns=kube-metrics-bridge.custom-metrics.svc
bin="${KMB_BRIDGE_BIN:-$CARGO_TARGET_DIR/debug/kube-metrics-bridge}"

build() { [ -n "${KMB_BRIDGE_BIN:-}" ] || cargo build --quiet --bin kube-metrics-bridge; }
# The bridge dies with this script even if the script is killed outright (setpriv).
deathsig=()
if command -v setpriv >/dev/null 2>&1; then deathsig=(setpriv --pdeathsig TERM); fi
start() {
  "${deathsig[@]}" "$bin" serve --config "$rules" --secure-port "$port" --bind-address "$host" \
    --cert-dir "$certs" --tls-sans "$svc_dns" --metrics-bind-address "" &
  pid=$!
}
stop() { [ -z "${pid:-}" ] || { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; pid=""; }; }
trap 'stop; exit 0' INT TERM
trap stop EXIT

echo "== building"
build
# Generate (or reuse) the serving pair and CA before registering, so the caBundle is known.
start
for _ in $(seq 1 50); do [ -s "$certs/ca.crt" ] && break; sleep 0.2; done
[ -s "$certs/ca.crt" ] || { echo "the bridge did not create $certs/ca.crt" >&2; exit 1; }
ca=$(base64 -w0 < "$certs/ca.crt")

echo "== registering the APIs for https://$host:$port"
{
  cat <<YAML
apiVersion: v1
kind: Namespace
metadata: {name: custom-metrics}
---
apiVersion: v1
kind: Service
metadata: {name: kube-metrics-bridge, namespace: custom-metrics}
spec: {type: ExternalName, externalName: "$host", ports: [{name: https, port: $port}]}
YAML
  for gv in v1beta1:custom.metrics.k8s.io:100 v1beta2:custom.metrics.k8s.io:200 v1beta1:external.metrics.k8s.io:100; do
    IFS=: read -r version group priority <<<"$gv"
    cat <<YAML
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {name: $version.$group}
spec:
  group: $group
  version: $version
  service: {namespace: custom-metrics, name: kube-metrics-bridge, port: $port}
  caBundle: $ca
  groupPriorityMinimum: 100
  versionPriority: $priority
YAML
  done
} | "$kubectl" apply -f -

echo "== running; edit src/ to rebuild and restart (Ctrl-C stops)"
stamp=$(mktemp)
while sleep 1; do
  if [ -z "${KMB_BRIDGE_BIN:-}" ] && [ -n "$(find src Cargo.toml -newer "$stamp" -print -quit 2>/dev/null)" ]; then
    touch "$stamp"
    echo "== change detected: rebuilding"
    if build; then stop; start; else echo "== build failed; the previous binary keeps running"; fi
  fi
  if [ -n "${pid:-}" ] && ! kill -0 "$pid" 2>/dev/null; then
    echo "== the bridge exited; restarting in 2s"; pid=""; sleep 2; start
  fi
done
