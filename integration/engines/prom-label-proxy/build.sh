#!/usr/bin/env bash
# Builds prom-label-proxy (github.com/prometheus-community/prom-label-proxy, its main package
# is the module root, at the version go.mod pins) from the Go module proxy, as its promu
# config does (a plain `go build`; the version its .promu.yml stamps into prometheus/common
# is not linked into this binary, which has no version flag: BUILD-INFO next to it says
# which it is): the label enforcer some backend tests put between kube-metrics-bridge and
# Prometheus.
#
# Usage: integration/engines/prom-label-proxy/build.sh
#
# The binary lands in
#   ${KMB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-metrics-bridge}/engines/prom-label-proxy-<key>/bin/prom-label-proxy
# where <key> hashes go.mod, go.sum, this script, integration/cached-go-build.sh and the Go version, so changing any of them
# builds a fresh one next to the old (old ones are never deleted here). When the binary is
# already there nothing is built. Go's own module and build caches are used as usual.
#
# Progress goes to stderr; the last line on stdout is the binary's path.
# Safe to run concurrently (a lock serialises builds of the same key).
#
# Environment: KMB_CACHE_DIR, XDG_CACHE_HOME (cache root), GO (go binary),
# plus anything `go build` honours (GOPROXY, GOMODCACHE, GOCACHE, GOFLAGS).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"

log() { printf 'engines/prom-label-proxy/build.sh: %s\n' "$*" >&2; }

. ../../cached-go-build.sh
find_go

key=$({
    cat go.mod go.sum build.sh ../../cached-go-build.sh
    printf '%s\n' "$go_version"
} | sha256sum | cut -c1-16)
result=prom-label-proxy
complete() { [[ -x $bin/prom-label-proxy ]]; }
cache_begin engines "prom-label-proxy-$key"

mod=github.com/prometheus-community/prom-label-proxy
version=$("$go" list -m -f '{{.Version}}' "$mod")
log "building prom-label-proxy $version with $go_version into $bin"
log "(cold: ~35 MB of modules to download and ~1 minute on 2 cores)"
start=$(date +%s)
CGO_ENABLED=0 "$go" build -trimpath -buildvcs=false -o "$tmp/prom-label-proxy" "$mod" >&2
elapsed=$(($(date +%s) - start))

[[ -x $tmp/prom-label-proxy ]] || { log "go build did not produce prom-label-proxy"; exit 1; }
cache_finish "$(printf 'prom-label-proxy %s\n%s\nbuilt %s in %ss' \
    "$version" "$go_version" "$(date -u +%FT%TZ)" "$elapsed")"
