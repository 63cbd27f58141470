#!/usr/bin/env bash
# Runs every test: formatting, lints, unit tests and the integration tests against a real
# Prometheus (installed here if missing) and a real Kubernetes control plane (built from
# source into a cache on first use, ~6-8 minutes cold), plus the container image built from
# the Dockerfile (hack/image.sh, ~5 minutes cold). `.ci/run` calls this.
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

ensure_rust
ensure_prometheus
use_build_cache
ensure_controlplane
ensure_image
ensure_certmanager

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --all-targets --locked -- -D warnings
echo "== cargo test"
cargo test --locked --all-targets --no-fail-fast 2>&1 | tee "${CARGO_TARGET_DIR}/last-test.log"
