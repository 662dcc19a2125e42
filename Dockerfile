# drucof-relay image: multi-stage, non-root, with a healthcheck.
# The relay runs its TypeScript through tsx, so the build stage only installs.
FROM node:20-bookworm-slim AS deps
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund

FROM node:20-bookworm-slim
ENV NODE_ENV=production RELAY_LISTEN=0.0.0.0:2525
WORKDIR /app
COPY --from=deps /app/node_modules ./node_modules
COPY package.json ./
COPY bin ./bin
COPY src ./src
COPY converters ./converters
COPY config ./config
RUN mkdir -p /app/var && chown node:node /app/var
USER node
EXPOSE 2525
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
  CMD node -e "const s=require('net').connect(2525,'127.0.0.1');s.once('data',d=>process.exit(String(d).startsWith('220')?0:1));s.once('error',()=>process.exit(1));setTimeout(()=>process.exit(1),4000)"
ENTRYPOINT ["node", "bin/drucof-relay.js"]
CMD ["start"]
