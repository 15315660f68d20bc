# claw-authz: a static-ish release binary on a distroless, non-root runtime image.
#   docker build -t claw-authz:0.1.0 .
# Build stage: the Rust toolchain pinned to the project's minimum version.
FROM rust:1.89-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin claw-authz \
 && strip target/release/claw-authz

# Runtime: glibc and CA certificates only, no shell, user 65532 (nonroot).
FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /src/target/release/claw-authz /usr/local/bin/claw-authz
USER 65532:65532
# 9001 ext_authz gRPC, 9901 admin (/healthz, /readyz, /metrics, /v1/time).
EXPOSE 9001 9901
ENTRYPOINT ["/usr/local/bin/claw-authz"]
CMD ["serve", "--config", "/etc/claw-authz/config/config.yaml"]
