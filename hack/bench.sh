#!/usr/bin/env bash
# Usage: hack/bench.sh [compare|discovery|scale|hpas|smoke] [arguments for the bench binary...]
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
#
# hpas: real HPAs (benches/hpas.rs): at each count a third each of Pods, Object and External HPAs
# run by kube-controller-manager (15 s sync period) through kube-apiserver's aggregator, with
# prometheus-adapter and then the bridge as the APIServices' backend; per server its CPU and
# memory, PromQL queries and kube-apiserver requests per HPA sync, and HPAs that lost
# ScalingActive. Writes $CARGO_TARGET_DIR/bench/hpas-<time>.json. About 13.5 minutes warm.
#   KMB_BENCH_HPAS=100,500        HPA counts (ascending; each adds HPAs to the previous ones)
#   KMB_BENCH_HPA_SECONDS=180     seconds each server is measured at each count
#
# scale: compare at several cluster sizes, one control plane and Prometheus per size, both
# routes (direct and through kube-apiserver's aggregator as the HPA controller), the two
# servers as shipped; then the plot (docs/bench/scale.png) and per-size tables from the JSON.
#   KMB_BENCH_SIZES=1000:10,10000:100   total pods:namespaces at each step (`bench` holds
#                                       pods/namespaces of them; requests ask for that one)
#   KMB_BENCH_PLOT=docs/bench/scale.png where the plot goes ("" for none)
#   and compare's knobs (KMB_BENCH_DURATION, KMB_BENCH_CONCURRENCY, ...), applied at each size.
#
# compare's knobs for the cluster's shape (scale sets them per size):
#   KMB_BENCH_NAMESPACES=2        namespaces: `bench` and `bench-other-<k>`
#   KMB_BENCH_CLUSTER_PODS=       pods in all namespaces (default KMB_BENCH_PODS * 1.25)
#   KMB_BENCH_ROUTES=direct       comma-separated: direct, aggregated
#   KMB_BENCH_OUT=                where the JSON goes (default $CARGO_TARGET_DIR/bench/compare-<time>.json)
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
  compare|discovery|scale|hpas|smoke) bench=$1; shift ;;
esac

# run_bench NAME ARGS...: `cargo bench --bench NAME` (release); with KMB_BENCH_PROFILE=test the
# test profile's build of it (what `cargo test --all-targets` built already) with `--bench`.
run_bench() {
  local name=$1; shift
  if [ "${KMB_BENCH_PROFILE:-bench}" = test ]; then
    cargo test --locked --bench "$name" -- --bench "$@"
  else
    cargo bench --locked --bench "$name" -- "$@"
  fi
}

# smoke: every benchmark once at a tiny size, in the test profile, so the harness cannot rot
# (hack/test-all.sh runs it; the figures mean nothing).
if [ "$bench" = smoke ]; then
  smoke_dir=$(mktemp -d)
  trap 'rm -rf "$smoke_dir"' EXIT
  export KMB_BENCH_PROFILE=test KMB_BENCH_DURATION=0.5 KMB_BENCH_WARMUP=0.2 KMB_BENCH_CONCURRENCY=2
  KMB_BENCH_SIZES=24:3 KMB_BENCH_PLOT="$smoke_dir/scale.png" KMB_BENCH_SCALE_DIR="$smoke_dir" \
    bash "$0" scale
  test -s "$smoke_dir/scale.png"
  KMB_BENCH_HPAS=6 KMB_BENCH_HPA_SECONDS=30 run_bench hpas
  exit 0
fi

if [ "$bench" = scale ]; then
  stamp=$(date -u +%Y-%m-%dT%H-%M-%SZ)
  out_dir=${KMB_BENCH_SCALE_DIR:-$CARGO_TARGET_DIR/bench/scale-$stamp}
  mkdir -p "$out_dir"
  jsons=()
  sizes=${KMB_BENCH_SIZES:-1000:10,10000:100}
  for size in ${sizes//,/ }; do
    total=${size%%:*} namespaces=${size#*:}
    [ "$namespaces" != "$size" ] || namespaces=1
    json="$out_dir/compare-$total-pods.json"
    echo "== scale: $total pods in $namespaces namespaces"
    KMB_BENCH_PODS=$(( total / namespaces )) KMB_BENCH_CLUSTER_PODS=$total \
      KMB_BENCH_NAMESPACES=$namespaces KMB_BENCH_OUT=$json \
      KMB_BENCH_VARIANTS=${KMB_BENCH_VARIANTS:-0} KMB_BENCH_ROUTES=${KMB_BENCH_ROUTES:-direct,aggregated} \
      run_bench compare "$@"
    jsons+=("$json")
  done
  plot=${KMB_BENCH_PLOT-docs/bench/scale.png}
  if [ -n "$plot" ]; then
    # The plot's font (benches/shared/plot.rs; KMB_BENCH_FONT overrides it): a file, not a
    # command, so the package is named as its own "command".
    [ -f /usr/share/fonts/truetype/dejavu/DejaVuSans.ttf ] || apt_install_missing fonts-dejavu-core:fonts-dejavu-core
    mkdir -p "$(dirname "$plot")"
    run_bench plot "$plot" "${jsons[@]}"
  fi
  echo "== scale: figures in $out_dir"
  exit 0
fi
echo "== cargo bench --bench $bench"
run_bench "$bench" "$@"
