#!/usr/bin/env bash
# Runs every test: formatting, lints, unit tests and the integration tests against a real
# Prometheus (installed here if missing) and a real Kubernetes control plane (built from
# source into a cache on first use, ~6-8 minutes cold), plus the container image built from
# the Dockerfile (hack/image.sh, ~5 minutes cold), prometheus-adapter v0.12.0 for the
# side-by-side test (~1.5 minutes cold), prom-label-proxy, VictoriaMetrics and Thanos for the backend
# tests (~6 minutes cold), and a short run of every fuzz target
# (hack/fuzz.sh, its instrumented build cached). `.ci/run` calls this.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

ensure_rust
ensure_prometheus
use_build_cache
ensure_controlplane
ensure_image
ensure_certmanager
ensure_protobuf_golden
ensure_adapter
ensure_engines

echo "== cargo fmt --check"
cargo fmt --all -- --check
cargo fmt --manifest-path fuzz/Cargo.toml -- --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== fuzz smoke: every fuzz target ${KMB_FUZZ_SECONDS:-20} s (hack/fuzz.sh; a crash fails the run after cargo test)"
fuzz_status=0
bash hack/fuzz.sh "${KMB_FUZZ_SECONDS:-20}" || fuzz_status=$?
echo "== cargo test"
cargo test --locked --all-targets --no-fail-fast 2>&1 | tee "${CARGO_TARGET_DIR}/last-test.log"
echo "== benchmark smoke: every benchmark once at a tiny size, test profile (hack/bench.sh smoke; figures mean nothing)"
bash hack/bench.sh smoke
if [ "$fuzz_status" != 0 ]; then
  echo "fuzz smoke FAILED (its inputs and replay commands are printed above)" >&2
  exit "$fuzz_status"
fi
