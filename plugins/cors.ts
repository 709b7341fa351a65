import fp from 'fastify-plugin'
import cors from '@fastify/cors'
import { originMatcher } from '../src/origins.js'

/**
 * CORS for browser clients such as the MCP Inspector. Allowed origins are CORS_ORIGIN when set,
 * else the same rule as the Origin check. Requests without an Origin (every non-browser client)
 * get no CORS headers.
 */
export default fp(async function corsPlugin (fastify) {
  const { CORS_ORIGIN, ALLOWED_ORIGINS } = fastify.config
  const allowed = originMatcher(CORS_ORIGIN === '' ? ALLOWED_ORIGINS : CORS_ORIGIN)
  await fastify.register(cors, {
    origin: (origin, callback) => callback(null, origin !== undefined && allowed(origin)),
    methods: ['GET', 'POST', 'DELETE', 'OPTIONS'],
    allowedHeaders: ['content-type', 'accept', 'authorization', 'mcp-session-id', 'mcp-protocol-version', 'last-event-id', 'mcp-method', 'mcp-name'],
    exposedHeaders: ['mcp-session-id', 'mcp-protocol-version', 'x-served-by', 'retry-after'],
    maxAge: 600
  })
}, { name: 'cors', dependencies: ['config'] })
