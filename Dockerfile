# syntax=docker/dockerfile:1
# agentauth container image: docs/deployment.md (build, run, compose, Kubernetes).
#   docker build -t agentauth .
#   docker run -p 3000:3000 -e ISSUER=https://auth.example.com -v agentauth-data:/var/lib/agentauth agentauth
# Debian slim rather than Alpine: the secp256k1 binding agentauth loads ships glibc prebuilds.
ARG NODE_IMAGE=node:22-bookworm-slim

# Build stage: every dependency (TypeScript included), then the compiled server in /app/dist.
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
# --ignore-scripts: no dependency install script is needed (the secp256k1 binding is prebuilt; the `node` dev package
# is not: this image has Node 22), and the package's own `prepare` would build before the sources are copied.
RUN --mount=type=cache,target=/root/.npm npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY server ./server
COPY adapters ./adapters
COPY interactions ./interactions
COPY keys ./keys
RUN npm run build

# Final stage: production dependencies only, the compiled server, a non-root user, node as PID 1.
FROM ${NODE_IMAGE}
ENV NODE_ENV=production \
    PORT=3000 \
    AGENTAUTH_DATA_DIR=/var/lib/agentauth
WORKDIR /app
COPY package.json package-lock.json ./
RUN --mount=type=cache,target=/root/.npm npm ci --omit=dev --ignore-scripts --no-audit --no-fund
COPY --from=build /app/dist ./dist
# The SQLite store's data directory (unused with MONGODB_URI), writable by the server's user only.
RUN mkdir -p /var/lib/agentauth && chown node:node /var/lib/agentauth && chmod 0700 /var/lib/agentauth
VOLUME ["/var/lib/agentauth"]
# The node image's unprivileged user (uid 1000); the application files stay root-owned and read-only to it.
USER node
EXPOSE 3000
# Liveness of the process (/healthz); for readiness (storage and keys) use /readyz: docs/deployment.md.
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s --retries=3 CMD ["node", "dist/server/healthcheck.js", "/healthz"]
# Exec form, no npm, no shell: node is PID 1 and receives SIGTERM itself; agentauth drains in-flight requests for up
# to shutdownTimeoutMs (default 10 s) and exits 0. Keep the runtime's stop grace period above that.
STOPSIGNAL SIGTERM
ENTRYPOINT ["node", "dist/server/cli.js"]
CMD ["start"]
