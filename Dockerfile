# syntax=docker/dockerfile:1
#
# Pavilion policy sidecar image (helm/pavilion-sidecar runs it beside the broker).
#
# NOT BUILDABLE ON THE DEVELOPMENT MACHINES OR IN CI: they reach package registries (npm,
# Go, …) but no container registry, so the base image node:20-bookworm-slim cannot be
# pulled there. Build it on a machine or pipeline that can reach Docker Hub or a mirror:
#
#   docker build -t ghcr.io/example/pavilion-sidecar:0.1.0 .
#   # behind a mirror, and pinned by digest for a reproducible build:
#   docker build --build-arg NODE_IMAGE=mirror.example.com/library/node:20-bookworm-slim@sha256:<digest> \
#     -t ghcr.io/example/pavilion-sidecar:0.1.0 .
#   # try it: the embedded defaults serve every tenant found under /app/bundles/.build
#   docker run --rm -p 127.0.0.1:8181:8181 -e PAVILION_HTTP_HOST=0.0.0.0 \
#     -v "$PWD/bundles/.build:/app/bundles/.build:ro" ghcr.io/example/pavilion-sidecar:0.1.0
#
# What is in it: the sidecar compiled to JavaScript (dist/, from `npm run build`), the
# production npm dependencies (pkcs11js compiled for this base image), a non-root user 10001. Policy
# bundles are not: they are built from Rego with `opa build` (a build-time tool, not in
# this image either) and reach the sidecar at run time (bundle directory / distribution).
# In Kubernetes the chart adds the config (PAVILION_CONFIG), a writable data volume at
# /var/lib/pavilion and an emptyDir at /tmp (the root filesystem is read-only), and the
# probes; so there is no HEALTHCHECK here.

ARG NODE_IMAGE=node:20-bookworm-slim

# ---- build: all dependencies, typecheck and compile to dist/ -----------------------------
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY sidecar ./sidecar
RUN npx tsc -p tsconfig.build.json

# ---- deps: production dependencies only, versions from package-lock.json ------------------
# pkcs11js (optional dependency, the PKCS#11 signer of hsm.enabled) is a native add-on: it is
# compiled here, on the same base image as the runtime, with the toolchain node-gyp needs. Only
# its build runs: every other package's install scripts stay off (--ignore-scripts). A build
# that does not load fails the image build instead of a pod with hsm.enabled at run time
# ("the optional dependency pkcs11js is not installed").
FROM ${NODE_IMAGE} AS deps
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 make g++ \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /app
COPY package.json package-lock.json ./
# node-gyp compiles against the headers of the image's own node when they are there (no
# download from nodejs.org), else it fetches them.
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund \
 && if [ -f /usr/local/include/node/node.h ]; then export npm_config_nodedir=/usr/local; fi \
 && npm rebuild pkcs11js \
 && node -e "require('pkcs11js')" \
 && npm cache clean --force

# ---- runtime ------------------------------------------------------------------------------
FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app
RUN groupadd --system --gid 10001 pavilion \
 && useradd --system --uid 10001 --gid 10001 --home-dir /nonexistent --no-create-home \
      --shell /usr/sbin/nologin pavilion \
 && mkdir -p /etc/pavilion /var/lib/pavilion/bundles /app/var /app/bundles/.build \
 && chown -R 10001:10001 /var/lib/pavilion /app/var
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
# the add-on built in `deps` loads on the runtime image (same base, no toolchain here)
RUN node -e "require('pkcs11js')"
COPY --from=build /app/dist ./dist
COPY sidecar/proto ./sidecar/proto
USER 10001:10001
EXPOSE 8181 9191
CMD ["node", "dist/sidecar/src/main.js"]
