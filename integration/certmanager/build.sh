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

go=${GO:-}
if [[ -z $go ]]; then
    if command -v go >/dev/null 2>&1; then
        go=go
    elif [[ -x /usr/local/go/bin/go ]]; then
        go=/usr/local/go/bin/go
    else
        log "no Go toolchain found (set GO=/path/to/go or put go on PATH)"
        exit 1
    fi
fi

binaries=(cert-manager-controller cert-manager-cainjector)
crds=(
    cert-manager.io_certificaterequests.yaml
    cert-manager.io_certificates.yaml
    cert-manager.io_clusterissuers.yaml
    cert-manager.io_issuers.yaml
    acme.cert-manager.io_challenges.yaml
    acme.cert-manager.io_orders.yaml
)
go_version=$("$go" env GOVERSION)
key=$({
    cat go.mod go.sum build.sh cmd/*/*.go
    printf '%s\n' "$go_version"
} | sha256sum | cut -c1-16)
cache_root=${KMB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-metrics-bridge}
dest=$cache_root/certmanager/$key
bin=$dest/bin

complete() {
    local f
    for f in "${binaries[@]}"; do
        [[ -x $bin/$f ]] || return 1
    done
    for f in "${crds[@]}"; do
        [[ -s $bin/crds/$f ]] || return 1
    done
}

if complete; then
    log "up to date: $bin"
    printf '%s\n' "$bin"
    exit 0
fi

mkdir -p "$dest"
# Another build of the same key may be running (parallel test binaries).
exec 9>"$dest/.lock"
if ! flock -n 9; then
    log "waiting for another build of $key to finish"
    flock 9
fi
if complete; then
    log "built by a concurrent run: $bin"
    printf '%s\n' "$bin"
    exit 0
fi

# -mod=readonly: go.mod and go.sum must already be complete (`go mod tidy`).
version=$("$go" list -mod=readonly -m -f '{{.Version}}' github.com/cert-manager/cert-manager)
module_dir=$("$go" mod download -json "github.com/cert-manager/cert-manager@$version" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
if [[ -z $module_dir || ! -d $module_dir/deploy/crds ]]; then
    log "cannot find deploy/crds of github.com/cert-manager/cert-manager@$version (module dir '$module_dir')"
    exit 1
fi

tmp=$(mktemp -d "$dest/bin.tmp.XXXXXX")
trap 'rm -rf "$tmp"' EXIT

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
{
    printf 'cert-manager %s\n%s\nbuilt %s in %ss\n' \
        "$version" "$go_version" "$(date -u +%FT%TZ)" "$elapsed"
} >"$tmp/BUILD-INFO"
rm -rf "$bin"
mv "$tmp" "$bin"
trap - EXIT
log "built in ${elapsed}s: $bin"
printf '%s\n' "$bin"
