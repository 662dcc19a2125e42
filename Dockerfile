# drucof-relay image: multi-stage, non-root, with a healthcheck.
# The relay runs its TypeScript through tsx, so the build stage only installs.
FROM node:20-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
# `npm install`, not `npm ci` (as in .ci/run): the lockfile was made against a
# registry that lacks some other-platform builds of msgpackr-extract (optional, via
# bullmq), so it cannot list them, and `npm ci` refuses a lockfile that misses any
# optional dependency, whatever registry the build uses. `npm install` still
# installs exactly the locked versions (and only this platform's optional builds).
# Once the lockfile is regenerated against the public registry, use
# `npm ci --omit=dev --no-audit --no-fund` here.
RUN npm install --omit=dev --no-audit --no-fund

FROM node:20-bookworm-slim
ENV NODE_ENV=production RELAY_LISTEN=0.0.0.0:2525
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
COPY bin ./bin
COPY src ./src
COPY converters ./converters
COPY config ./config
# var/ is the relay's to write (a private Redis's files, a final hop's Maildirs);
# var/maildir exists so that a named volume mounted there starts out owned by `node`.
RUN mkdir -p /app/var/maildir && chown -R node:node /app/var
USER node
EXPOSE 2525 9025
# Healthy when the SMTP port (RELAY_LISTEN's, else 2525) greets with 220.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD node -e "const p=Number(String(process.env.RELAY_LISTEN||'').split(':').pop())||2525;const s=require('net').connect(p,'127.0.0.1');s.once('data',d=>process.exit(String(d).startsWith('220')?0:1));s.once('error',()=>process.exit(1));setTimeout(()=>process.exit(1),4000)"
ENTRYPOINT ["node", "bin/drucof-relay.js"]
CMD ["start"]
