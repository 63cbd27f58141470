#!/usr/bin/env bash
# Copies prometheus-operator's ServiceMonitor and PrometheusRule CRDs (the real ones, from
# example/prometheus-operator-crd/ of the release's Go module, fetched through the Go module
# proxy) into the cache, for the Helm chart's serviceMonitor/prometheusRule test
# (integration/deploy.rs). Nothing is built: the module is only downloaded.
#
# Usage: integration/prometheus-operator/crds.sh
#
# Output, in
#   ${KMB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-metrics-bridge}/prometheus-operator/<key>/bin/
#     crds/monitoring.coreos.com_servicemonitors.yaml, crds/monitoring.coreos.com_prometheusrules.yaml,
#     BUILD-INFO
# where <key> hashes the version and this script. When they are already there nothing is
# fetched. The last line on stdout is the bin directory; progress goes to stderr.
#
# Environment: KMB_CACHE_DIR, XDG_CACHE_HOME (cache root), GO (go binary), plus what
# `go mod download` honours (GOPROXY, GOMODCACHE, GOFLAGS).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"

log() { printf 'prometheus-operator/crds.sh: %s\n' "$*" >&2; }

. ../cached-go-build.sh
find_go

# A release the module proxy serves here (v0.95.x is refused); the CRDs have been
# monitoring.coreos.com/v1 for years, so any recent one matches what clusters run.
version=v0.94.1
crds=(monitoring.coreos.com_servicemonitors.yaml monitoring.coreos.com_prometheusrules.yaml)
key=$({
    printf '%s\n' "$version"
    cat crds.sh ../cached-go-build.sh
} | sha256sum | cut -c1-16)
complete() {
    local f
    for f in "${crds[@]}"; do
        [[ -s $bin/crds/$f ]] || return 1
    done
}

cache_begin prometheus-operator "$key"

log "downloading github.com/prometheus-operator/prometheus-operator@$version (~5 MB)"
# Outside any module: `go mod download` of an explicit version needs no go.mod.
module_dir=$(cd "$tmp" && GOFLAGS=-mod=mod "$go" mod download -json \
    "github.com/prometheus-operator/prometheus-operator@$version" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
src=$module_dir/example/prometheus-operator-crd
if [[ -z $module_dir || ! -d $src ]]; then
    log "cannot find example/prometheus-operator-crd of prometheus-operator@$version (module dir '$module_dir')"
    exit 1
fi
mkdir "$tmp/crds"
for f in "${crds[@]}"; do
    cp "$src/$f" "$tmp/crds/$f"
done
chmod -R u+w "$tmp/crds" # the module cache is read-only
cache_finish "$(printf 'prometheus-operator %s CRDs\nfetched %s' "$version" "$(date -u +%FT%TZ)")"
