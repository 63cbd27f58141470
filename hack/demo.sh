#!/usr/bin/env bash
# The local demo: Debian's Prometheus on loopback scraping the demo exporter, the bridge in
# --standalone mode with rules/demo.toml, and real answers from every kind of route.
#
#   hack/demo.sh            run, print the answers, stop everything
#   hack/demo.sh --keep     leave it running (Ctrl-C stops it)
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

KEEP=false
[ "${1:-}" = "--keep" ] && KEEP=true

ensure_rust
ensure_prometheus
use_build_cache

PROM_PORT=19090 EXPORTER_PORT=19100 BRIDGE_PORT=16443 METRICS_PORT=19464
WORK=$(mktemp -d -t kmb-demo.XXXXXX)
PIDS=()
cleanup() {
  for pid in "${PIDS[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT INT TERM

echo "== building"
cargo build --quiet --bins
BIN="$CARGO_TARGET_DIR/debug"

echo "== starting the demo exporter on 127.0.0.1:$EXPORTER_PORT"
"$BIN/demo-exporter" --listen "127.0.0.1:$EXPORTER_PORT" >"$WORK/exporter.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$EXPORTER_PORT/metrics" 20

echo "== starting Prometheus on 127.0.0.1:$PROM_PORT"
cat >"$WORK/prometheus.yml" <<YAML
global: {scrape_interval: 2s, evaluation_interval: 2s}
scrape_configs:
  - job_name: demo
    static_configs: [{targets: ["127.0.0.1:$EXPORTER_PORT"]}]
YAML
PROM=$(command -v prometheus || echo /usr/bin/prometheus)
"$PROM" --config.file="$WORK/prometheus.yml" --storage.tsdb.path="$WORK/data" \
  --web.listen-address="127.0.0.1:$PROM_PORT" >"$WORK/prometheus.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$PROM_PORT/-/ready" 60

echo "== starting kube-metrics-bridge --standalone on https://127.0.0.1:$BRIDGE_PORT"
"$BIN/kube-metrics-bridge" serve --standalone --config rules/demo.toml \
  --secure-port "$BRIDGE_PORT" --cert-dir "$WORK/certs" \
  --metrics-bind-address "127.0.0.1:$METRICS_PORT" >"$WORK/bridge.log" 2>&1 &
PIDS+=($!)
wait_http "http://127.0.0.1:$METRICS_PORT/readyz" 60

# A rate over [30s] reads low until the series is 30s old; wait until web-1 (3 requests/s)
# reads at least 2.7 so the numbers below look like the steady state.
echo "== waiting for discovery and a full 30s rate window"
API="https://127.0.0.1:$BRIDGE_PORT/apis"
for _ in $(seq 1 90); do
  value=$(curl -fsk "$API/custom.metrics.k8s.io/v1beta2/namespaces/demo/pods/web-1/http_requests_per_second" 2>/dev/null |
    python3 -c 'import json,sys
s=json.load(sys.stdin)["items"][0]["value"]
m={"n":1e-9,"u":1e-6,"m":1e-3,"k":1e3}
print(float(s[:-1])*m[s[-1]] if s[-1] in m else float(s))' 2>/dev/null || echo 0)
  if python3 -c "import sys; sys.exit(0 if float('$value') >= 2.7 else 1)"; then break; fi
  sleep 1
done

show() {
  echo
  echo "\$ curl -k '$1'"
  curl -sk "$1" | python3 -m json.tool
}
show "$API/custom.metrics.k8s.io/v1beta2"
show "$API/custom.metrics.k8s.io/v1beta2/namespaces/demo/pods/%2A/http_requests_per_second"
show "$API/custom.metrics.k8s.io/v1beta1/namespaces/demo/metrics/namespace_active_sessions"
show "$API/custom.metrics.k8s.io/v1beta2/namespaces/demo/ingresses.networking.k8s.io/web/ingress_requests_per_second"
show "$API/external.metrics.k8s.io/v1beta1/namespaces/demo/queue_messages_ready"
show "$API/external.metrics.k8s.io/v1beta1/namespaces/demo/queue_messages_ready?labelSelector=queue%3Dorders"
echo
echo "\$ kube-metrics-bridge explain --config rules/demo.toml 'namespaces/demo/pods/*/http_requests_per_second'"
"$BIN/kube-metrics-bridge" explain --config rules/demo.toml 'namespaces/demo/pods/*/http_requests_per_second'
echo
echo "\$ curl http://127.0.0.1:$METRICS_PORT/metrics | grep cache_lookups"
curl -s "http://127.0.0.1:$METRICS_PORT/metrics" | grep '^kube_metrics_bridge_cache_lookups' || true

if $KEEP; then
  echo
  echo "== running: API https://127.0.0.1:$BRIDGE_PORT, Prometheus http://127.0.0.1:$PROM_PORT, exporter http://127.0.0.1:$EXPORTER_PORT (Ctrl-C stops)"
  wait
fi
