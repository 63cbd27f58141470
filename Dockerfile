# syntax=docker/dockerfile:1
# kube-metrics-bridge: a static (musl) binary on distroless/static, running as 65532:65532.
#
#   docker build -t kube-metrics-bridge:0.1.0 .
#
# distroless/static (not scratch) because it carries /etc/ssl/certs, which reqwest's
# platform verifier reads when Prometheus is served over HTTPS without a `ca_file`, plus
# /etc/passwd with the nonroot user and tzdata. Rules come from the ConfigMap at run time
# (deploy/), so no rules file is baked in.

FROM rust:1-bookworm AS build
# ring compiles C and assembly: the musl target needs musl-gcc.
RUN apt-get update \
 && apt-get install -y --no-install-recommends musl-tools \
 && rm -rf /var/lib/apt/lists/*
# Native target of the build platform (x86_64 or aarch64), musl for a static binary.
RUN rustup target add "$(uname -m)-unknown-linux-musl"
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    target="$(uname -m)-unknown-linux-musl" \
 && cargo build --release --locked --target "$target" --bin kube-metrics-bridge \
 && install -D -m 0755 "target/$target/release/kube-metrics-bridge" /out/kube-metrics-bridge \
 && /out/kube-metrics-bridge --version

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/kube-metrics-bridge /usr/local/bin/kube-metrics-bridge
USER 65532:65532
# 6443: the metrics APIs (HTTPS); 9464: /metrics, /healthz, /livez, /readyz (HTTP).
EXPOSE 6443 9464
ENTRYPOINT ["/usr/local/bin/kube-metrics-bridge"]
CMD ["serve", "--config", "/etc/kube-metrics-bridge/rules.toml"]
