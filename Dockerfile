# Shoal's image: one static binary on an empty base.
#
#   docker build -t shoal .        (or: buildah bud -t shoal .)
#
# The builder stage compiles a statically linked binary (glibc, crt-static);
# the final stage is FROM scratch: no shell, no libc, no CA bundle (Shoal
# speaks plain HTTP to containerd and to its peers). Dockerfile.prebuilt makes
# the same final stage from a binary built on the host, for machines that
# cannot pull the builder image.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
ARG RUST_TARGET=x86_64-unknown-linux-gnu
# protoc: containerd-client generates its gRPC code at build time.
RUN apt-get update \
 && apt-get install -y --no-install-recommends 'protobuf-compiler=3.21.*' \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
# The target directory is a cache mount, so the binary is copied out in the
# same step, without its debug info (the release profile keeps line tables:
# 77 MB instead of 16; symbol names stay for backtraces). A binary with any
# NEEDED entry is not static: fail the build.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    RUSTFLAGS="-C target-feature=+crt-static" \
    cargo build --release --locked --bin shoal --target "${RUST_TARGET}" \
 && mkdir -p /rootfs/tmp \
 && chmod 1777 /rootfs/tmp \
 && strip --strip-debug -o /rootfs/shoal "target/${RUST_TARGET}/release/shoal" \
 && readelf -d /rootfs/shoal > /tmp/dynamic-section \
 && if grep NEEDED /tmp/dynamic-section; then echo "shoal is not statically linked" >&2; exit 1; fi

FROM scratch
LABEL org.opencontainers.image.title="shoal" \
      org.opencontainers.image.description="Peer-to-peer container image mirror for Kubernetes nodes" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /rootfs/ /
# Non-root by default. The Helm chart runs it as root, without any capability,
# because containerd's socket and content store are root-owned.
USER 65532:65532
ENTRYPOINT ["/shoal"]
CMD ["run"]
