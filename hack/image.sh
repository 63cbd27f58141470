#!/usr/bin/env bash
# Builds the repository's Dockerfile into an image archive without a Docker engine.
#
#   hack/image.sh [--tag NAME:TAG] [--output FILE]
#
# With Docker available, `docker build -t kube-metrics-bridge:0.1.0 .` does the same job; this
# script exists so CI (which has no Docker engine and cannot pull from Docker Hub) builds and
# tests the very same Dockerfile:
#   * buildah (Debian's package) runs the Dockerfile, daemonless, as root;
#   * the Dockerfile's RUST_IMAGE build argument gets a builder image assembled here instead of
#     docker.io/library/rust: Debian bookworm from debootstrap (gcc, libc6-dev,
#     ca-certificates) plus this machine's Rust toolchain, with this machine's CA bundle so cargo
#     reaches crates.io through the same TLS setup as the host.
# The result is written as a docker-archive (default
# target/image/kube-metrics-bridge-<version>.tar), which `docker load`, `podman load` and
# `kind load image-archive` accept. The archive's path is the last line on stdout; progress goes
# to stderr.
#
# Caches (kept across runs, never required): the builder rootfs, buildah's storage and the
# Dockerfile's cargo cache mounts, under ${KMB_CACHE_DIR:-~/.cache/kube-metrics-bridge}/image.
# Environment: KMB_DEBIAN_MIRROR (default http://deb.debian.org/debian), KMB_BUILDAH_DRIVER
# (overlay, falling back to vfs when overlay mounts are not allowed).
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

log() { printf 'image.sh: %s\n' "$*" >&2; }

version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -n1)
tag="localhost/kube-metrics-bridge:$version"
output=""
while [ $# -gt 0 ]; do
  case $1 in
    --tag) tag=$2; shift 2 ;;
    --output) output=$2; shift 2 ;;
    -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
    *) log "unknown argument: $1"; exit 2 ;;
  esac
done
[ -n "$output" ] || output="${CARGO_TARGET_DIR:-target}/image/kube-metrics-bridge-$version.tar"

[ "$(id -u)" = 0 ] || { log "buildah without a daemon needs root here (rootless needs subuid maps)"; exit 1; }
apt_install_missing buildah:buildah debootstrap:debootstrap
ensure_rust

cache=${KMB_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-metrics-bridge}/image
mkdir -p "$cache/tmp"
# buildah keeps RUN --mount=type=cache directories under $TMPDIR: keep them in the cache too.
export TMPDIR="$cache/tmp"

buildah_in() { # DRIVER ARGS...: buildah with storage of its own under the cache
  local driver=$1; shift
  buildah --storage-driver "$driver" --root "$cache/storage-$driver" --runroot "$cache/run-$driver" "$@"
}

driver=${KMB_BUILDAH_DRIVER:-}
if [ -z "$driver" ]; then
  driver=vfs
  if probe=$(buildah_in overlay from scratch 2>/dev/null); then
    buildah_in overlay mount "$probe" >/dev/null 2>&1 && driver=overlay
    buildah_in overlay rm "$probe" >/dev/null 2>&1 || true
  fi
fi
log "buildah $(buildah --version | awk '{print $3}'), storage driver $driver"
b() { buildah_in "$driver" "$@"; }

# --- the builder image: Debian bookworm + this machine's Rust toolchain -----------------------
mirror=${KMB_DEBIAN_MIRROR:-http://deb.debian.org/debian}
packages=gcc,libc6-dev,ca-certificates
sysroot=$(rustc --print sysroot)
rust_version=$(rustc --version)
builder_key=$( { echo "$packages $mirror"; echo "$rust_version"; sha256sum /etc/ssl/certs/ca-certificates.crt; } \
  | sha256sum | cut -c1-16)
builder="localhost/kmb-rust-builder:$builder_key"

if ! b inspect --type image "$builder" >/dev/null 2>&1; then
  log "assembling builder image $builder ($rust_version, Debian bookworm from $mirror)"
  rootfs="$cache/builder-rootfs"
  rm -rf "$rootfs"
  debootstrap --variant=minbase --include="$packages" bookworm "$rootfs" "$mirror" >"$cache/debootstrap.log" 2>&1 \
    || { tail -n 20 "$cache/debootstrap.log" >&2; log "debootstrap failed (log: $cache/debootstrap.log)"; exit 1; }
  mkdir -p "$rootfs/usr/local/rust"
  cp -a "$sysroot/bin" "$sysroot/lib" "$rootfs/usr/local/rust/"
  [ -d "$sysroot/libexec" ] && cp -a "$sysroot/libexec" "$rootfs/usr/local/rust/"
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/etc/ssl/certs/ca-certificates.crt"
  tar -C "$rootfs" -cf "$cache/builder-rootfs.tar" .
  rm -rf "$rootfs"
  ctr=$(b from scratch)
  b add "$ctr" "$cache/builder-rootfs.tar" / >/dev/null
  b config --env PATH=/usr/local/rust/bin:/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    --env CARGO_HOME=/usr/local/cargo "$ctr"
  b commit --rm "$ctr" "$builder" >/dev/null 2>&1
  rm -f "$cache/builder-rootfs.tar"
fi

# --- the Dockerfile, as written ----------------------------------------------------------------
log "building $tag from Dockerfile (RUST_IMAGE=$builder)"
b bud --isolation chroot --layers=false --build-arg "RUST_IMAGE=$builder" -t "$tag" . >&2
mkdir -p "$(dirname "$output")"
rm -f "$output"
b push "$tag" "docker-archive:$output:$tag" >/dev/null 2>&1 \
  || { b push "$tag" "docker-archive:$output:$tag" >&2; exit 1; }
# Earlier builds of the tag are left untagged: drop them so the cache does not grow per build.
b rmi --prune >/dev/null 2>&1 || true
log "wrote $output ($(du -h "$output" | cut -f1))"
printf '%s\n' "$output"
