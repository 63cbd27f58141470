#!/usr/bin/env bash
# Usage: hack/bench.sh [compare|discovery] [cargo bench args...]
#
# compare (the default): benchmarks kube-metrics-bridge against prometheus-adapter v0.12.0 in the same run: the same
# Prometheus, the same control plane, the same pods, rule and request mix (benches/compare.rs;
# hack/bench/README.md says what is measured). Prints tables and writes the figures as JSON to
# $CARGO_TARGET_DIR/bench/compare-<time>.json. Takes ~3.5 minutes on 2 cores once the caches are
# warm (the first prometheus-adapter build adds ~1.5); not part of hack/test-all.sh.
#
# Knobs (environment):
#   KMB_BENCH_PODS=200            pods in namespace `bench` (plus a quarter as many in `bench-other`)
#   KMB_BENCH_DURATION=3          seconds of each timed phase
#   KMB_BENCH_WARMUP=1            seconds of warm-up before each phase
#   KMB_BENCH_CONCURRENCY=1,8,32  concurrency levels
#   KMB_BENCH_VARIANTS=1          0: only the two servers as shipped, not also prometheus-adapter
#                                 without its client throttle and the bridge without its cache
#   KMB_BENCH_HTTP=2              1: HTTP/1.1 (a connection per concurrent request) instead of HTTP/2
#   KMB_BENCH_ADAPTER_ARGS=       extra prometheus-adapter flags, e.g. "--client-qps=100 --client-burst=200"
#   KMB_BENCH_ADAPTER_BIN=        a prometheus-adapter binary to use instead of building one
#
# discovery: series discovery of both servers at 100,000 and 1,000,000 matching series, same
# Prometheus (benches/discovery.rs): time to list every metric, CPU, peak RSS, what Prometheus
# sent. Writes $CARGO_TARGET_DIR/bench/discovery-<time>.json. About 2 minutes warm; Prometheus
# holds the million series in about 2 GiB.
#   KMB_BENCH_SERIES=100000,1000000  matching series at each step
#   KMB_BENCH_METRICS=50             distinct metric names among them
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

ensure_rust
ensure_prometheus
use_build_cache
ensure_controlplane
ensure_adapter

bench=compare
case "${1:-}" in
  compare|discovery) bench=$1; shift ;;
esac
echo "== cargo bench --bench $bench"
cargo bench --locked --bench "$bench" "$@"
