#!/usr/bin/env bash
# Builds prometheus-adapter's own server binary (sigs.k8s.io/prometheus-adapter/cmd/adapter
# at the version go.mod pins) from the Go module proxy, as its Makefile does
# (`CGO_ENABLED=0 go build sigs.k8s.io/prometheus-adapter/cmd/adapter`): the baseline of
# hack/bench.
#
# Usage: hack/bench/adapter/build.sh
#
# The binary lands in
#   ${KMB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-metrics-bridge}/bench/<key>/bin/prometheus-adapter
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

log() { printf 'bench/adapter/build.sh: %s\n' "$*" >&2; }

. ../../../integration/cached-go-build.sh
find_go

key=$({
    cat go.mod go.sum build.sh ../../../integration/cached-go-build.sh
    printf '%s\n' "$go_version"
} | sha256sum | cut -c1-16)
result=prometheus-adapter
complete() { [[ -x $bin/prometheus-adapter ]]; }
cache_begin bench "$key"

version=$("$go" list -m -f '{{.Version}}' sigs.k8s.io/prometheus-adapter)
log "building prometheus-adapter $version with $go_version into $bin"
log "(cold: ~50 MB of modules to download and ~1.5 minutes on 2 cores)"
start=$(date +%s)
CGO_ENABLED=0 "$go" build -trimpath -buildvcs=false -o "$tmp/prometheus-adapter" \
    sigs.k8s.io/prometheus-adapter/cmd/adapter >&2
elapsed=$(($(date +%s) - start))

[[ -x $tmp/prometheus-adapter ]] || { log "go build did not produce prometheus-adapter"; exit 1; }
cache_finish "$(printf 'prometheus-adapter %s\n%s\nbuilt %s in %ss' \
    "$version" "$go_version" "$(date -u +%FT%TZ)" "$elapsed")"
