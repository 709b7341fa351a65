import fp from 'fastify-plugin'
import rateLimit from '@fastify/rate-limit'
import { RateLimitedError } from '../src/errors.js'

/**
 * Rate limiting for the routes that opt in with `config.rateLimit` (only /mcp): one budget per
 * session, or per client address before a session exists.
 */
export default fp(async function rateLimitPlugin (fastify) {
  const { RATE_LIMIT_MAX, RATE_LIMIT_WINDOW_MS } = fastify.config
  await fastify.register(rateLimit, {
    global: false,
    max: RATE_LIMIT_MAX,
    timeWindow: RATE_LIMIT_WINDOW_MS,
    keyGenerator: request => {
      const session = request.headers['mcp-session-id']
      return typeof session === 'string' ? `session:${session}` : `ip:${request.ip}`
    },
    onExceeded: () => fastify.mcpMetrics.rateLimited.inc(),
    errorResponseBuilder: (_request, context) => new RateLimitedError(Math.max(1, Math.ceil(context.ttl / 1000)))
  })
}, { name: 'rate-limit', dependencies: ['config', 'metrics'] })
