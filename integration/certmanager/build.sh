#!/usr/bin/env bash
# Builds the cert-manager parts the Helm chart's certManager test runs:
# cert-manager-controller and cert-manager-cainjector, our own small mains over
# the library packages of github.com/cert-manager/cert-manager at the version
# go.mod pins, and copies that release's CRDs (deploy/crds/*.yaml of the
# module) next to them.
#
# Usage: integration/certmanager/build.sh
#
# Output, in
#   ${KMB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-metrics-bridge}/certmanager/<key>/bin/
#     cert-manager-controller, cert-manager-cainjector, crds/*.yaml, BUILD-INFO
# where <key> hashes go.mod, go.sum, this script, cmd/*/*.go and the Go
# version, so changing any of them builds a fresh set next to the old one (old
# sets are never deleted here). When the set is already there nothing is
# built.
#
# Progress goes to stderr; the last line on stdout is the bin directory.
# Safe to run concurrently (a lock serialises builds of the same key).
#
# Environment: KMB_CACHE_DIR, XDG_CACHE_HOME (cache root), GO (go binary),
# plus anything `go build` honours (GOPROXY, GOMODCACHE, GOCACHE, GOFLAGS).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"

log() { printf 'certmanager/build.sh: %s\n' "$*" >&2; }

. ../cached-go-build.sh
find_go

binaries=(cert-manager-controller cert-manager-cainjector)
crds=(
    cert-manager.io_certificaterequests.yaml
    cert-manager.io_certificates.yaml
    cert-manager.io_clusterissuers.yaml
    cert-manager.io_issuers.yaml
    acme.cert-manager.io_challenges.yaml
    acme.cert-manager.io_orders.yaml
)
key=$({
    cat go.mod go.sum build.sh ../cached-go-build.sh cmd/*/*.go
    printf '%s\n' "$go_version"
} | sha256sum | cut -c1-16)
complete() {
    local f
    for f in "${binaries[@]}"; do
        [[ -x $bin/$f ]] || return 1
    done
    for f in "${crds[@]}"; do
        [[ -s $bin/crds/$f ]] || return 1
    done
}

cache_begin certmanager "$key"

# -mod=readonly: go.mod and go.sum must already be complete (`go mod tidy`).
version=$("$go" list -mod=readonly -m -f '{{.Version}}' github.com/cert-manager/cert-manager)
module_dir=$("$go" mod download -json "github.com/cert-manager/cert-manager@$version" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [[ -z $module_dir || ! -d $module_dir/deploy/crds ]]; then
    log "cannot find deploy/crds of github.com/cert-manager/cert-manager@$version (module dir '$module_dir')"
    exit 1
fi

log "building cert-manager-controller and cert-manager-cainjector from cert-manager $version with $go_version"
log "into $bin (cold: ~0.4 GB of modules to download and ~2 minutes on 2 cores)"
start=$(date +%s)
# The version stamp is what cert-manager's Makefile sets; it ends up in the
# user agent the components send.
CGO_ENABLED=0 "$go" build -mod=readonly -trimpath -buildvcs=false \
    -ldflags "-s -w -X github.com/cert-manager/cert-manager/pkg/util.AppVersion=$version" \
    -o "$tmp/" ./cmd/cert-manager-controller ./cmd/cert-manager-cainjector >&2
elapsed=$(($(date +%s) - start))

for f in "${binaries[@]}"; do
    [[ -x $tmp/$f ]] || { log "go build did not produce $f"; exit 1; }
done
mkdir "$tmp/crds"
for f in "${crds[@]}"; do
    cp "$module_dir/deploy/crds/$f" "$tmp/crds/$f"
done
chmod -R u+w "$tmp/crds" # the module cache is read-only
cache_finish "$(printf 'cert-manager %s\n%s\nbuilt %s in %ss' \
    "$version" "$go_version" "$(date -u +%FT%TZ)" "$elapsed")"
