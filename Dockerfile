# syntax=docker/dockerfile:1
# kube-metrics-bridge: one statically linked binary on an empty (scratch) image, running as
# 65532:65532. Nothing else is in the image: no shell, no package manager, no libc.
#
#   docker build -t kube-metrics-bridge:0.1.0 .
#
# The binary is linked statically against glibc (`crt-static`), which needs nothing beyond the
# Rust image itself: no extra target to download, no musl-gcc. Name lookups still work without
# shared libraries: glibc >= 2.34 carries the `files` and `dns` resolvers inside libc, and those
# are all a container uses (/etc/hosts and /etc/resolv.conf come from the kubelet).
# hack/image.sh builds this file for real in CI (with buildah) and integration/image.rs runs
# the result; see deploy/README.md.

# Any image with cargo >= the crate's rust-version, gcc and glibc's static libraries
# (libc6-dev) will do; CI passes a locally assembled Debian bookworm one.
ARG RUST_IMAGE=docker.io/library/rust:1.95-bookworm

FROM ${RUST_IMAGE} AS build
WORKDIR /src
COPY . .
# Besides the binary, the image gets the CA bundle (read by the platform verifier when
# Prometheus is served over HTTPS without a `ca_file`), a writable /tmp, and passwd/group
# entries that name the 65532 user.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    set -eu; \
    target="$(uname -m)-unknown-linux-gnu"; \
    RUSTFLAGS="-C target-feature=+crt-static" CARGO_PROFILE_RELEASE_STRIP=debuginfo \
      cargo build --release --locked --target "$target" --bin kube-metrics-bridge; \
    root=/out/rootfs; \
    install -D -m 0755 "target/$target/release/kube-metrics-bridge" "$root/usr/local/bin/kube-metrics-bridge"; \
    "$root/usr/local/bin/kube-metrics-bridge" --version; \
    install -D -m 0644 /etc/ssl/certs/ca-certificates.crt "$root/etc/ssl/certs/ca-certificates.crt"; \
    mkdir -p "$root/tmp"; chmod 1777 "$root/tmp"; \
    printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' > "$root/etc/passwd"; \
    printf 'root:x:0:\nnonroot:x:65532:\n' > "$root/etc/group"

FROM scratch
COPY --from=build /out/rootfs/ /
USER 65532:65532
# 6443: the metrics APIs (HTTPS); 9464: /metrics, /healthz, /livez, /readyz (HTTP).
EXPOSE 6443 9464
ENTRYPOINT ["/usr/local/bin/kube-metrics-bridge"]
CMD ["serve", "--config", "/etc/kube-metrics-bridge/rules.toml"]
