# syntax=docker/dockerfile:1
# convd container image: multi-stage release build with a cached dependency layer
# (cargo-chef), a minimal non-root runtime, and a HEALTHCHECK that needs no shell tools.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS chef
RUN cargo install cargo-chef --locked --version ^0.1
WORKDIR /app

FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /app/recipe.json recipe.json
# Dependencies only: this layer is reused until Cargo.toml/Cargo.lock change.
RUN cargo chef cook --release --recipe-path recipe.json
COPY . .
RUN cargo build --release --locked --bin convd \
 && install -D target/release/convd /out/convd

# distroless/cc: glibc + libgcc, no shell, runs as uid 65532 ("nonroot").
FROM gcr.io/distroless/cc-debian12:nonroot AS runtime
LABEL org.opencontainers.image.title="convd" \
      org.opencontainers.image.description="HTTP microservice for exact, fast 2-D convolution on images and tensors" \
      org.opencontainers.image.licenses="MIT OR Apache-2.0"
COPY --from=builder /out/convd /usr/local/bin/convd
USER nonroot:nonroot
# Every setting can be overridden with CONVD_* variables (see README "Configuration").
ENV CONVD_BIND=0.0.0.0:8080 \
    CONVD_LOG_FORMAT=json
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
  CMD ["/usr/local/bin/convd", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/convd"]
