# syntax=docker/dockerfile:1
#
# One image for both binaries: `statement-api serve` (the default command) and
# `statement-worker`. See docs/deployment.md.
#
#   docker build -t statement-export .
#   docker run --rm --env-file prod.env -p 8080:8080 statement-export
#   docker run --rm --env-file prod.env statement-export statement-worker

# ---------- build ----------
FROM rust:1.95-bookworm AS builder
WORKDIR /src
COPY . .
# rust-toolchain.toml asks for the `stable` channel (with rustfmt and clippy, for development);
# without it the build uses the toolchain this image pins instead of downloading another one.
# The migrations in sql/ are compiled into the binaries (refinery's embed_migrations! in
# shared/src/db.rs), so the runtime image needs no copy of them. Only the crate registry is
# cached between builds: a cached target/ could keep migrations from an older sql/.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    rm -f rust-toolchain.toml \
 && cargo build --release --locked --bin statement-api --bin statement-worker \
 && install -D -m 0755 -t /out target/release/statement-api target/release/statement-worker

# ---------- runtime ----------
FROM debian:bookworm-slim
# ca-certificates: TLS to S3. curl: the health checks (GET /ready, GET /metrics).
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 statement-export \
 && useradd --system --uid 10001 --gid statement-export --no-create-home \
      --home-dir /var/lib/statement-export --shell /usr/sbin/nologin statement-export \
 && install -d -o statement-export -g statement-export -m 0750 /var/lib/statement-export
COPY --from=builder /out/statement-api /out/statement-worker /usr/local/bin/

# Local-disk storage (STORAGE_BACKEND=local) lands in ./data/exports under this directory;
# mount a volume here if you use it.
WORKDIR /var/lib/statement-export
# Listen on every interface inside the container (the binaries default to 127.0.0.1).
ENV API_BIND=0.0.0.0:8080 \
    WORKER_METRICS_BIND=0.0.0.0:9464
USER 10001:10001
# 8080: the API (and its /metrics). 9464: the worker's /metrics.
EXPOSE 8080 9464
# Both binaries stop gracefully on SIGTERM (Docker's default stop signal) or SIGINT.
# No HEALTHCHECK here: the API and the worker answer on different ports, so the check belongs
# to whoever runs the container (compose.yaml has one per service).
CMD ["statement-api", "serve"]
