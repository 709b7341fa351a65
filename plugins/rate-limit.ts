import fp from 'fastify-plugin'
import rateLimit from '@fastify/rate-limit'
import { RateLimitedError } from '../src/errors.js'

/**
 * Rate limiting for the routes that opt in with `config.rateLimit` (only /mcp): one budget per
 * session, or per client address before a session exists. In Redis mode the counters live in Redis,
 * so the limit holds for the whole cluster; if Redis cannot count, requests pass (the session store
 * answers 503 on its own).
 */
export default fp(async function rateLimitPlugin (fastify) {
  const { RATE_LIMIT_MAX, RATE_LIMIT_WINDOW_MS, USE_REDIS } = fastify.config
  await fastify.register(rateLimit, {
    global: false,
    ...(USE_REDIS && { redis: fastify.redis, nameSpace: 'mcp:ratelimit:', skipOnError: true }),
    enableDraftSpec: true,
    max: RATE_LIMIT_MAX,
    timeWindow: RATE_LIMIT_WINDOW_MS,
    keyGenerator: request => {
      const session = request.headers['mcp-session-id']
      return typeof session === 'string' ? `session:${session}` : `ip:${request.ip}`
    },
    onExceeded: () => fastify.mcpMetrics.rateLimited.inc(),
    errorResponseBuilder: (_request, context) => new RateLimitedError(Math.max(1, Math.ceil(context.ttl / 1000)))
  })
}, { name: 'rate-limit', dependencies: ['config', 'metrics', 'redis'] })
