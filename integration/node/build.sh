#!/usr/bin/env bash
# Builds what a test node runs: kubelet, kube-proxy and kube-scheduler from
# ../controlplane's module (the same k8s.io/kubernetes as kube-apiserver), and
# containerd, its runc shim, ctr and runc from this directory's go.mod; plus the
# pause image's binary from the C source that k8s.io/kubernetes ships
# (build/pause/linux/pause.c), linked statically.
#
# Usage: integration/node/build.sh
#
# The binaries land in
#   ${KMB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-metrics-bridge}/node/<key>/bin/
# where <key> hashes both modules, this script and the Go version (old keys are
# kept). runc is the one cgo binary: it links libseccomp (Debian's
# libseccomp-dev, which hack/lib.sh's ensure_node installs), because the chart's
# pods ask for the RuntimeDefault seccomp profile and a runc built without
# seccomp refuses any container that has one.
#
# Progress goes to stderr; the last line on stdout is the bin directory.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
cd "$here"

log() { printf 'node/build.sh: %s\n' "$*" >&2; }

. ../cached-go-build.sh
find_go

binaries=(kubelet kube-proxy kube-scheduler containerd containerd-shim-runc-v2 ctr runc pause)
key=$({
    cat go.mod go.sum build.sh ../cached-go-build.sh ../controlplane/go.mod ../controlplane/go.sum
    printf '%s\n' "$go_version"
} | sha256sum | cut -c1-16)
complete() {
    local b
    for b in "${binaries[@]}"; do
        [[ -x $bin/$b ]] || return 1
    done
}

cache_begin node "$key"

k8s_version=$("$go" -C ../controlplane list -m -f '{{.Version}}' k8s.io/kubernetes)
if [[ ! $k8s_version =~ ^v([0-9]+)\.([0-9]+)\. ]]; then
    log "unexpected k8s.io/kubernetes version '$k8s_version' in ../controlplane/go.mod"
    exit 1
fi
ldflags="-s -w"
for pkg in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X $pkg.gitVersion=$k8s_version"
    ldflags+=" -X $pkg.gitMajor=${BASH_REMATCH[1]} -X $pkg.gitMinor=${BASH_REMATCH[2]}"
    ldflags+=" -X $pkg.gitTreeState=clean"
done
containerd_version=$("$go" list -m -f '{{.Version}}' github.com/containerd/containerd/v2)
runc_version=$("$go" list -m -f '{{.Version}}' github.com/opencontainers/runc)

log "building kubelet, kube-proxy, kube-scheduler $k8s_version, containerd $containerd_version, runc $runc_version with $go_version"
log "into $bin (cold: ~5 minutes on 2 cores after the control plane's build)"
start=$(date +%s)
CGO_ENABLED=0 "$go" -C ../controlplane build -trimpath -buildvcs=false -ldflags "$ldflags" -o "$tmp/" \
    k8s.io/kubernetes/cmd/kubelet k8s.io/kubernetes/cmd/kube-proxy k8s.io/kubernetes/cmd/kube-scheduler >&2
# The version stamp makes `containerd --version` and the node's containerRuntimeVersion
# name the release instead of "+unknown".
CGO_ENABLED=0 "$go" build -trimpath -buildvcs=false -tags "no_btrfs no_devmapper no_zfs" \
    -ldflags "-s -w -X github.com/containerd/containerd/v2/version.Version=$containerd_version" -o "$tmp/" \
    github.com/containerd/containerd/v2/cmd/containerd \
    github.com/containerd/containerd/v2/cmd/containerd-shim-runc-v2 \
    github.com/containerd/containerd/v2/cmd/ctr >&2
CGO_ENABLED=1 "$go" build -trimpath -buildvcs=false -tags seccomp \
    -ldflags "-s -w -X main.version=${runc_version#v}" -o "$tmp/" github.com/opencontainers/runc >&2
pause_c=$("$go" -C ../controlplane list -m -f '{{.Dir}}' k8s.io/kubernetes)/build/pause/linux/pause.c
"${CC:-gcc}" -Os -static -DVERSION="$k8s_version" -o "$tmp/pause" "$pause_c" >&2
elapsed=$(($(date +%s) - start))

for b in "${binaries[@]}"; do
    [[ -x $tmp/$b ]] || { log "the build did not produce $b"; exit 1; }
done
cache_finish "$(printf 'kubernetes %s\ncontainerd %s\nrunc %s\n%s\nbuilt %s in %ss' \
    "$k8s_version" "$containerd_version" "$runc_version" "$go_version" "$(date -u +%FT%TZ)" "$elapsed")"
