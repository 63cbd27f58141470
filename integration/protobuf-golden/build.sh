#!/usr/bin/env bash
# Builds protobuf-golden, the checker integration/protobuf.rs runs: it decodes our Kubernetes
# protobuf and JSON with the real Go types of k8s.io/metrics and k8s.io/apimachinery at the
# versions go.mod pins, and re-encodes them with Go's protobuf serializer (see main.go).
#
# Usage: integration/protobuf-golden/build.sh
#
# The binary lands in
#   ${KMB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-metrics-bridge}/protobuf-golden/<key>/bin/protobuf-golden
# where <key> hashes go.mod, go.sum, main.go, this script and the Go version, so changing any
# of them builds a fresh one next to the old (old ones are never deleted here). When it is
# already there nothing is built.
#
# Progress goes to stderr; the last line on stdout is the binary's path.
# Safe to run concurrently (a lock serialises builds of the same key).
#
# Environment: KMB_CACHE_DIR, XDG_CACHE_HOME (cache root), GO (go binary),
# plus anything `go build` honours (GOPROXY, GOMODCACHE, GOCACHE, GOFLAGS).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"

log() { printf 'protobuf-golden/build.sh: %s\n' "$*" >&2; }

. ../cached-go-build.sh
find_go

result=protobuf-golden
key=$({
    cat go.mod go.sum main.go build.sh ../cached-go-build.sh
    printf '%s\n' "$go_version"
} | sha256sum | cut -c1-16)
complete() {
    [[ -x $bin/$result ]]
}

cache_begin protobuf-golden "$key"

metrics_version=$("$go" list -mod=readonly -m -f '{{.Version}}' k8s.io/metrics)
log "building protobuf-golden against k8s.io/metrics $metrics_version with $go_version"
log "into $bin (cold: k8s.io/{metrics,apimachinery,api,client-go} and their dependencies to download first)"
start=$(date +%s)
# -mod=readonly: go.mod and go.sum must already be complete (`go mod tidy`).
CGO_ENABLED=0 "$go" build -mod=readonly -trimpath -buildvcs=false -ldflags "-s -w" \
    -o "$tmp/$result" . >&2
elapsed=$(($(date +%s) - start))

[[ -x $tmp/$result ]] || { log "go build did not produce $result"; exit 1; }
cache_finish "$(printf 'k8s.io/metrics %s\n%s\nbuilt %s in %ss' \
    "$metrics_version" "$go_version" "$(date -u +%FT%TZ)" "$elapsed")"
