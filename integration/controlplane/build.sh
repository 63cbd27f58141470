#!/usr/bin/env bash
# Builds the real control plane the integration tests run: etcd,
# kube-apiserver and kube-controller-manager, at the versions go.mod pins.
#
# Usage: integration/controlplane/build.sh
#
# The binaries land in
#   ${KMB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-metrics-bridge}/controlplane/<key>/bin/
# where <key> hashes go.mod, go.sum, this script, cmd/etcd/main.go and the Go
# version, so changing any of them builds a fresh set next to the old one (old
# sets are never deleted here; remove the directory to reclaim space). When
# the binaries are already there nothing is built. Go's own module and build
# caches are used as usual, so a rebuild after a small change is fast.
#
# Progress goes to stderr; the last line on stdout is the bin directory.
# Safe to run concurrently (a lock serialises builds of the same key).
#
# Environment: KMB_CACHE_DIR, XDG_CACHE_HOME (cache root), GO (go binary),
# plus anything `go build` honours (GOPROXY, GOMODCACHE, GOCACHE, GOFLAGS).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"

log() { printf 'controlplane/build.sh: %s\n' "$*" >&2; }

. ../cached-go-build.sh
find_go

binaries=(etcd kube-apiserver kube-controller-manager)
key=$({
    cat go.mod go.sum build.sh ../cached-go-build.sh cmd/etcd/main.go
    printf '%s\n' "$go_version"
} | sha256sum | cut -c1-16)
complete() {
    local b
    for b in "${binaries[@]}"; do
        [[ -x $bin/$b ]] || return 1
    done
}

cache_begin controlplane "$key"

k8s_version=$("$go" list -m -f '{{.Version}}' k8s.io/kubernetes)
etcd_version=$("$go" list -m -f '{{.Version}}' go.etcd.io/etcd/server/v3)
if [[ ! $k8s_version =~ ^v([0-9]+)\.([0-9]+)\. ]]; then
    log "unexpected k8s.io/kubernetes version '$k8s_version' in go.mod"
    exit 1
fi
major=${BASH_REMATCH[1]}
minor=${BASH_REMATCH[2]}

# What Kubernetes' hack/lib/version.sh stamps, so /version reports the real
# release instead of v0.0.0-master. buildDate stays fixed for reproducibility.
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$k8s_version"
    ldflags+=" -X $pkg.gitMajor=$major -X $pkg.gitMinor=$minor"
    ldflags+=" -X $pkg.gitTreeState=clean"
done

log "building kube-apiserver and kube-controller-manager $k8s_version, etcd $etcd_version with $go_version"
log "into $bin (cold: ~0.6 GB of modules to download and ~6 minutes on 2 cores)"
start=$(date +%s)
CGO_ENABLED=0 "$go" build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$tmp/" \
    k8s.io/kubernetes/cmd/kube-apiserver \
    k8s.io/kubernetes/cmd/kube-controller-manager \
    ./cmd/etcd >&2
elapsed=$(($(date +%s) - start))

for b in "${binaries[@]}"; do
    [[ -x $tmp/$b ]] || { log "go build did not produce $b"; exit 1; }
done
cache_finish "$(printf 'kubernetes %s\netcd %s\n%s\nbuilt %s in %ss' \
    "$k8s_version" "$etcd_version" "$go_version" "$(date -u +%FT%TZ)" "$elapsed")"
