#!/usr/bin/env bash
# Builds single-node VictoriaMetrics (github.com/VictoriaMetrics/VictoriaMetrics/app/victoria-metrics
# at the version go.mod pins) from the Go module proxy, as its Makefile's
# `victoria-metrics-pure` does (`CGO_ENABLED=0 go build` with lib/buildinfo.Version
# stamped; pure Go zstd instead of cgo's): a MetricsQL backend of the backend tests.
#
# Usage: integration/engines/victoriametrics/build.sh
#
# The binary lands in
#   ${KMB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-metrics-bridge}/engines/victoriametrics-<key>/bin/victoria-metrics
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

log() { printf 'engines/victoriametrics/build.sh: %s\n' "$*" >&2; }

. ../../cached-go-build.sh
find_go

key=$({
    cat go.mod go.sum build.sh ../../cached-go-build.sh
    printf '%s\n' "$go_version"
} | sha256sum | cut -c1-16)
result=victoria-metrics
complete() { [[ -x $bin/victoria-metrics ]]; }
cache_begin engines "victoriametrics-$key"

mod=github.com/VictoriaMetrics/VictoriaMetrics
version=$("$go" list -m -f '{{.Version}}' "$mod")
# The shape their Makefile stamps (victoria-metrics-<date>-tags-<tag>-0-g<commit>, shown by
# -version and /api/v1/status/buildinfo) less the commit, which the module proxy does not
# give; the date is the release's, for reproducibility.
released=$("$go" list -m -f '{{.Time.UTC.Format "20060102-150405"}}' "$mod")
ldflags="-X $mod/lib/buildinfo.Version=victoria-metrics-$released-tags-$version"

log "building victoria-metrics $version with $go_version into $bin"
log "(cold: ~90 MB of modules to download and ~1 minute on 2 cores)"
start=$(date +%s)
CGO_ENABLED=0 "$go" build -trimpath -buildvcs=false -ldflags "$ldflags" \
    -o "$tmp/victoria-metrics" "$mod/app/victoria-metrics" >&2
elapsed=$(($(date +%s) - start))

[[ -x $tmp/victoria-metrics ]] || { log "go build did not produce victoria-metrics"; exit 1; }
cache_finish "$(printf 'victoria-metrics %s\n%s\nbuilt %s in %ss' \
    "$version" "$go_version" "$(date -u +%FT%TZ)" "$elapsed")"
