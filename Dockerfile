# syntax=docker/dockerfile:1
#
# shardbridge container image: a Debian bookworm build stage, and a small bookworm-slim runtime
# that runs the binary as a numeric non-root user (10001:10001).
#
#   docker build -t shardbridge:0.1.0 .
#   docker run --rm -v "$PWD/connectors.toml:/etc/shardbridge/connectors.toml:ro" \
#     shardbridge:0.1.0 validate
#
# The configuration is read from /etc/shardbridge/connectors.toml (SHARDBRIDGE_CONFIG); the Helm
# chart in helm/shardbridge mounts it from a ConfigMap. /metrics, /healthz and /readyz listen on
# 9464. The build needs BuildKit (the default builder of Docker 23 and later) for its caches.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

# ---- build ------------------------------------------------------------------------------------
FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS build

# librdkafka is built from source by rdkafka-sys (its ./configure and make: gcc, g++, make,
# perl); OpenSSL and zlib are linked from the system (pkg-config finds them). Debian's versions
# are not pinned: the security updates of the release are wanted.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      gcc g++ make perl pkg-config libssl-dev zlib1g-dev \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src
# .dockerignore keeps the context to the crate: Cargo.toml, Cargo.lock, src/, tests/, benches/,
# examples/ (the manifest names targets in tests/ and benches/).
COPY . .
RUN --mount=type=cache,id=shardbridge-cargo-registry,target=/usr/local/cargo/registry \
    --mount=type=cache,id=shardbridge-cargo-git,target=/usr/local/cargo/git \
    --mount=type=cache,id=shardbridge-target,target=/src/target \
    cargo build --release --locked --bin shardbridge \
 && install -D -m 0755 target/release/shardbridge /out/shardbridge

# ---- runtime ----------------------------------------------------------------------------------
FROM debian:${DEBIAN_RELEASE}-slim

# libssl3 (rdkafka's SSL), zlib1g, and ca-certificates for TLS to AWS and Kafka brokers.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 shardbridge \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin shardbridge

COPY --from=build /out/shardbridge /usr/local/bin/shardbridge

ENV SHARDBRIDGE_CONFIG=/etc/shardbridge/connectors.toml \
    RUST_LOG=info
EXPOSE 9464
# Numeric, so Kubernetes' runAsNonRoot can check it without reading /etc/passwd.
USER 10001:10001
ENTRYPOINT ["/usr/local/bin/shardbridge"]
CMD ["run"]
