# Shared helpers for hack/ scripts. Source it; it defines functions only.

# apt_install_missing COMMAND:PACKAGE...: installs each Debian PACKAGE whose COMMAND is missing.
apt_install_missing() {
  local pair missing=()
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || [ -x "/usr/sbin/${pair%%:*}" ] || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} -gt 0 ] || return 0
  echo "== installing Debian packages: ${missing[*]}" >&2
  local sudo=""
  [ "$(id -u)" = 0 ] || sudo="sudo"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# Installs Debian's prometheus package when no prometheus binary is found.
ensure_prometheus() {
  apt_install_missing prometheus:prometheus
}

# Rust toolchain: rustup's cargo on PATH, with rustfmt and clippy.
ensure_rust() {
  if ! command -v cargo >/dev/null 2>&1 && [ -x "$HOME/.cargo/bin/cargo" ]; then
    export PATH="$HOME/.cargo/bin:$PATH"
  fi
  command -v cargo >/dev/null 2>&1 || { echo "cargo not found: install Rust with rustup" >&2; return 1; }
}

# Cargo's target dir outside the checkout, so clean clones (CI) reuse earlier builds. One per
# checkout path: cargo stores source paths relative to the workspace, so a build made in one
# checkout looks fresh in another whose files are older, while `env!("CARGO_MANIFEST_DIR")`
# in it still names the first checkout (tests then read fixtures from the wrong place).
use_build_cache() {
  local key
  key=$(pwd -P | sha256sum | cut -c1-8)
  export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-metrics-bridge/target-$key}"
  mkdir -p "$CARGO_TARGET_DIR"
}

# wait_http URL SECONDS [curl args...]: polls until URL answers 2xx.
wait_http() {
  local url=$1 secs=$2; shift 2
  local deadline=$(( $(date +%s) + secs ))
  until curl -fsS -o /dev/null --max-time 2 "$@" "$url" 2>/dev/null; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "timed out waiting for $url" >&2
      return 1
    fi
    sleep 0.5
  done
}

# Go for building the test control plane (the machine's Go; /usr/local/go when not on PATH).
ensure_go() {
  if ! command -v go >/dev/null 2>&1 && [ -x /usr/local/go/bin/go ]; then
    export PATH="/usr/local/go/bin:$PATH"
  fi
  command -v go >/dev/null 2>&1 || { echo "go not found: the test control plane is built from source with Go" >&2; return 1; }
}

# Builds (once, cached) etcd, kube-apiserver and kube-controller-manager; exports their dir.
ensure_controlplane() {
  ensure_go
  echo "== control plane (etcd, kube-apiserver, kube-controller-manager; cached after the first build)"
  KMB_CONTROLPLANE_BIN=$(bash integration/controlplane/build.sh)
  export KMB_CONTROLPLANE_BIN
}

# Builds the Dockerfile into an image archive (hack/image.sh; cached) and exports its path.
ensure_image() {
  echo "== container image (Dockerfile via buildah; cached builder and cargo caches)"
  KMB_IMAGE_ARCHIVE=$(bash hack/image.sh)
  export KMB_IMAGE_ARCHIVE
}

# Builds (once, cached) the Go checker of integration/protobuf.rs (k8s.io/metrics' real types
# decoding and re-encoding our protobuf); exports its path.
ensure_protobuf_golden() {
  ensure_go
  echo "== protobuf-golden (the Go checker of integration/protobuf.rs; cached after the first build)"
  KMB_PROTOBUF_GOLDEN_BIN=$(bash integration/protobuf-golden/build.sh)
  export KMB_PROTOBUF_GOLDEN_BIN
}

# Builds (once, cached) cert-manager's controller and CA injector and copies its CRDs, for the
# Helm chart's certManager test (integration/certmanager/); exports their dir.
ensure_certmanager() {
  ensure_go
  echo "== cert-manager (controller, cainjector, CRDs; cached after the first build)"
  KMB_CERTMANAGER_BIN=$(bash integration/certmanager/build.sh)
  export KMB_CERTMANAGER_BIN
}

# Builds (once, cached) prometheus-adapter v0.12.0 (hack/bench/adapter/), the other side of
# integration/adapter_parity.rs and the baseline of hack/bench.sh; exports its path.
ensure_adapter() {
  ensure_go
  echo "== prometheus-adapter v0.12.0 (hack/bench/adapter; cached after the first build)"
  KMB_BENCH_ADAPTER_BIN=${KMB_BENCH_ADAPTER_BIN:-$(bash hack/bench/adapter/build.sh)}
  export KMB_BENCH_ADAPTER_BIN
}

# Builds (once, cached) the Go programs of the backend tests (integration/engines/) and exports
# their paths (each kept when already set): prom-label-proxy (integration/tenants.rs),
# single-node VictoriaMetrics and Thanos (integration/engines.rs). Cold: ~365 MB of modules and
# ~6 minutes on 2 cores, Thanos most of it.
ensure_engines() {
  ensure_go
  echo "== backend engines: prom-label-proxy, VictoriaMetrics, Thanos (integration/engines; cached after the first build)"
  KMB_PROM_LABEL_PROXY_BIN=${KMB_PROM_LABEL_PROXY_BIN:-$(bash integration/engines/prom-label-proxy/build.sh)}
  KMB_VICTORIAMETRICS_BIN=${KMB_VICTORIAMETRICS_BIN:-$(bash integration/engines/victoriametrics/build.sh)}
  KMB_THANOS_BIN=${KMB_THANOS_BIN:-$(bash integration/engines/thanos/build.sh)}
  export KMB_PROM_LABEL_PROXY_BIN KMB_VICTORIAMETRICS_BIN KMB_THANOS_BIN
}
