# syntax=docker/dockerfile:1
# Both binaries, imagejob-operator and ims-sim, on a distroless base:
#   docker build -t imagejob-operator:0.1.0 .
#   docker run --rm imagejob-operator:0.1.0 --help
#   docker run --rm -p 8081:8081 --entrypoint /usr/local/bin/ims-sim imagejob-operator:0.1.0 --listen 0.0.0.0:8081

# The toolchain this repository is built and tested with (Cargo.toml's
# rust-version is the minimum for the crate itself, not for its locked deps).
ARG RUST_VERSION=1.95

FROM docker.io/library/rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /src
COPY . .
# Cache mounts keep the registry and target dir between builds; the binaries
# are copied out in the same step because the target mount is not in the image.
# cargo-auditable embeds each binary's crate list, which SBOM scanners read
# (as tests/cluster/release builds them), statically linked like the
# release tarballs.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo install --locked cargo-auditable@0.7.7 \
 && RUSTFLAGS="-C target-feature=+crt-static" \
    cargo auditable build --release --locked --bins --target x86_64-unknown-linux-gnu \
 && install -D -m 0755 target/x86_64-unknown-linux-gnu/release/imagejob-operator /out/imagejob-operator \
 && install -D -m 0755 target/x86_64-unknown-linux-gnu/release/ims-sim /out/ims-sim

# glibc, libgcc_s and CA certificates, no shell; same Debian release as the
# builder, so the glibc the binaries were linked against is there. Its
# /var/lib/dpkg/status.d/ names those packages for SBOM scanners (the
# daemonless build, tests/cluster/image, writes the same).
FROM gcr.io/distroless/cc-debian12:nonroot
LABEL org.opencontainers.image.title="imagejob-operator" \
      org.opencontainers.image.description="Open Telekom Cloud IMS jobs as Kubernetes ImageJob resources" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=builder /out/ /usr/local/bin/
# Numeric, so that Kubernetes can verify runAsNonRoot without a passwd lookup.
USER 65532:65532
# /metrics, /healthz, /readyz
EXPOSE 8080
ENTRYPOINT ["/usr/local/bin/imagejob-operator"]
CMD ["run"]
