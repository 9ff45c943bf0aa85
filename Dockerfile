# The image deploy/k8s references (ghcr.io/tracesift/tracesift). Multi-stage: build with the
# toolchain the crate pins (rust-version 1.88 or later), run on a minimal Debian with only the
# shared libraries the binary links (libssl3 for librdkafka's TLS, zlib, libgcc) and CA
# certificates, as a non-root user. Not built in this project's CI (no image registry or Docker
# daemon on its machines): deploy/README.md says so; tests/deploy.rs checks that the manifests and
# the unit agree with the binary this file builds (its arguments, paths and port).
#
#   docker build -t ghcr.io/tracesift/tracesift:0.1.0 .

FROM rust:1-bookworm AS build
RUN apt-get update \
 && apt-get install -y --no-install-recommends libssl-dev pkg-config \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN cargo build --release --locked --bin tracesift \
 && install -D -m 0755 target/release/tracesift /out/tracesift

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libssl3 zlib1g \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 65532 tracesift \
 && useradd --system --uid 65532 --gid 65532 --home-dir /var/lib/tracesift --create-home tracesift
COPY --from=build /out/tracesift /usr/local/bin/tracesift
USER 65532:65532
WORKDIR /var/lib/tracesift
# /metrics, /healthz, /readyz (telemetry.listen in the configuration the manifests mount)
EXPOSE 9464
ENTRYPOINT ["/usr/local/bin/tracesift"]
CMD ["run", "--config", "/etc/tracesift/config.yaml"]
