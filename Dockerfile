# pgveil container image. Built by docker-compose.yml; on its own:
#   docker build -t pgveil .
#   docker run --rm pgveil --help
#
# Stage 1: build the release binary with the toolchain the workspace requires (rust-version 1.85).
FROM rust:1.85-bookworm AS builder
WORKDIR /src
COPY . .
RUN cargo build --release --locked -p pgveil \
 && install -D -m 0755 target/release/pgveil /out/pgveil

# Stage 2: a small runtime. TLS uses rustls, so no OpenSSL; ca-certificates for upstream
# verify-full against the system roots.
FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/pgveil --shell /usr/sbin/nologin pgveil \
 && install -d -o pgveil -g pgveil -m 0700 /var/lib/pgveil /var/lib/pgveil/keys /var/log/pgveil \
 && install -d -m 0755 /etc/pgveil
COPY --from=builder /out/pgveil /usr/local/bin/pgveil
USER pgveil
WORKDIR /var/lib/pgveil
# 6432: PostgreSQL clients; 9187: /metrics, /healthz, /readyz.
EXPOSE 6432 9187
ENTRYPOINT ["/usr/local/bin/pgveil"]
CMD ["serve", "--config", "/etc/pgveil/pgveil.yaml"]
