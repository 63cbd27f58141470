#!/usr/bin/env bash
# Soak benchmark (benches/soak.rs): the release bridge at saturation for 10 minutes against a
# real control plane and Prometheus with pods churning; prints RSS, open fds, threads, runtime
# tasks and latency per window and the slope of each per hour, and writes JSON to
# $CARGO_TARGET_DIR/bench/soak-<time>.json. Not part of hack/test-all.sh.
#
# Knobs (environment): KMB_SOAK_SECONDS=600 KMB_SOAK_WINDOW=30 KMB_SOAK_PODS=200
# KMB_SOAK_CONCURRENCY=32 KMB_SOAK_CHURN=2 (seconds between pod replacements; 0 = none)
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

ensure_rust
ensure_prometheus
use_build_cache
ensure_controlplane
echo "== cargo bench --bench soak"
exec cargo bench --locked --bench soak
