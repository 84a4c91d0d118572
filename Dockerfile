# syntax=docker/dockerfile:1
# convd container image.
#   docker build -t convd:0.1.0 .
#   docker run --rm -p 8080:8080 --read-only --cap-drop ALL -e CONVD_THREADS=2 convd:0.1.0
#
# - multi-stage: cargo-chef compiles the dependencies in a layer of their own, reused until
#   Cargo.toml/Cargo.lock change, so an edit to src/ rebuilds only convd itself;
# - runtime: distroless/cc (glibc + libgcc, no shell, no package manager), uid/gid 65532;
# - read-only root file system friendly: convd writes no files (bodies are kept in memory,
#   logs go to stdout), so `--read-only` / readOnlyRootFilesystem needs no volume;
# - HEALTHCHECK runs `convd healthcheck` (GET /healthz on the configured port) — the image
#   has no shell, curl or wget.

ARG RUST_VERSION=1.95
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS chef
RUN cargo install cargo-chef --locked --version ^0.1
WORKDIR /app

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /app/recipe.json recipe.json
# Dependencies only (mimalloc's C sources included: the slim image has gcc).
RUN cargo chef cook --release --locked --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bin convd \
 && install -D -m 0755 target/release/convd /out/convd \
 && /out/convd --help >/dev/null

# Same Debian release as the builder, so the glibc the binary was linked against is there.
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
ARG VERSION=0.1.0
ARG REVISION=unknown
LABEL org.opencontainers.image.title="convd" \
      org.opencontainers.image.description="HTTP microservice for exact, fast 2-D convolution on images and tensors" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0" \
      org.opencontainers.image.base.name="gcr.io/distroless/cc-debian12:nonroot"
COPY --from=builder /out/convd /usr/local/bin/convd
# Numeric uid:gid (distroless "nonroot"), so Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
# Every setting can be overridden with CONVD_* variables (README "Operating convd"). Change
# the port through CONVD_BIND, not --bind: the HEALTHCHECK reads the environment only.
ENV CONVD_BIND=0.0.0.0:8080 \
    CONVD_LOG_FORMAT=json
EXPOSE 8080/tcp
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=4s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/convd", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/convd"]
