# syntax=docker/dockerfile:1
# The Hookyard image: the `hookyard` CLI (receiver, dispatcher, dev, send) as the dist/ bundle on Node 24.
#   docker build -t hookyard:dev .
# The final stage holds Node and dist/, nothing else: no sources, no node_modules. It runs as 65532, the
# runAsUser of the Deployments the operator renders, and writes nothing, so a read-only root filesystem suits it.
# Node is PID 1: every command handles SIGTERM itself (src/cli.ts), so it needs no init.

FROM node:24-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
# `npm install` rather than `npm ci`, as in the Makefile: the lock file lacks other platforms' optional biome
# packages, which `npm ci` insists on. The lock file still pins every version.
RUN --mount=type=cache,target=/root/.npm npm install --no-audit --no-fund
COPY tsconfig.json ./
COPY scripts/build.ts scripts/
COPY src/ src/
RUN npm run build

FROM gcr.io/distroless/nodejs24-debian12:nonroot
LABEL org.opencontainers.image.title="hookyard" \
      org.opencontainers.image.description="Kubernetes operator for webhook subscriptions: receiver, dispatcher, dev mode" \
      org.opencontainers.image.licenses="Apache-2.0"
COPY --from=build /src/dist/ /app/
USER 65532:65532
ENV NODE_ENV=production
# Node flags that bound memory (docs/benchmarks.md, the fuzz run): V8 grows the young generation to 128 MiB under
# load (64 MiB semi-spaces: Node is built without pointer compression), and --max-semi-space-size=16 holds it at
# 32 MiB; --heap-growing-percent=50 collects the old generation when it is 1.5 times its live size, instead of
# letting promoted garbage (decoded bodies, mostly) pile up to several times it. bin/hookyard passes the same flags.
# Dispatcher pods and the operator run the same node and CLI with flags of their own (src/operator/render.ts, the
# chart's operator.nodeFlags).
# --enable-source-maps costs 33 MiB: the source maps are in /app; set NODE_OPTIONS=--enable-source-maps when
# readable stack traces are worth that.
ENTRYPOINT ["/nodejs/bin/node", "--max-semi-space-size=16", "--heap-growing-percent=50", "/app/cli.mjs"]
