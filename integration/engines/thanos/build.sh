#!/usr/bin/env bash
# Builds Thanos (github.com/thanos-io/thanos/cmd/thanos at the version go.mod pins) from the
# Go module proxy, as its promu config does (build tags netgo and slicelabels, the
# prometheus/common version stamped): `thanos query` over `thanos sidecar`s next to
# Prometheus is a backend of the backend tests.
#
# Usage: integration/engines/thanos/build.sh
#
# The binary lands in
#   ${KMB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-metrics-bridge}/engines/thanos-<key>/bin/thanos
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

log() { printf 'engines/thanos/build.sh: %s\n' "$*" >&2; }

. ../../cached-go-build.sh
find_go

key=$({
    cat go.mod go.sum build.sh ../../cached-go-build.sh
    printf '%s\n' "$go_version"
} | sha256sum | cut -c1-16)
result=thanos
complete() { [[ -x $bin/thanos ]]; }
cache_begin engines "thanos-$key"

mod=github.com/thanos-io/thanos
version=$("$go" list -m -f '{{.Version}}' "$mod")
# What their .promu.yml stamps (`thanos --version`); the revision is not on the module
# proxy, and the build date is the release's, for reproducibility.
released=$("$go" list -m -f '{{.Time.UTC.Format "20060102-15:04:05"}}' "$mod")
ldflags=""
ldflags+=" -X github.com/prometheus/common/version.Version=${version#v}"
ldflags+=" -X github.com/prometheus/common/version.Branch=HEAD"
ldflags+=" -X github.com/prometheus/common/version.BuildUser=kube-metrics-bridge"
ldflags+=" -X github.com/prometheus/common/version.BuildDate=$released"

log "building thanos $version with $go_version into $bin"
log "(cold: ~240 MB of modules to download and ~4 minutes on 2 cores)"
start=$(date +%s)
# slicelabels: Prometheus' slice-backed labels.Labels, not the default stringlabels, as their
# releases and CI are built (their protobuf decoding reuses label strings with it).
CGO_ENABLED=0 "$go" build -trimpath -buildvcs=false -tags netgo,slicelabels -ldflags "$ldflags" \
    -o "$tmp/thanos" "$mod/cmd/thanos" >&2
elapsed=$(($(date +%s) - start))

[[ -x $tmp/thanos ]] || { log "go build did not produce thanos"; exit 1; }
cache_finish "$(printf 'thanos %s\n%s\nbuilt %s in %ss' \
    "$version" "$go_version" "$(date -u +%FT%TZ)" "$elapsed")"
