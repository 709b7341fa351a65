import { createHash } from 'node:crypto'
import fp from 'fastify-plugin'
import type { FastifyRequest } from 'fastify'

/**
 * The session a request names, as the log shows it: a short one-way digest, since the id itself is
 * a bearer credential. Lines of one session share it.
 */
export function sessionIdForLog (request: FastifyRequest): string | undefined {
  const sessionId = request.headers['mcp-session-id']
  return typeof sessionId === 'string' ? logDigest(sessionId) : undefined
}

/** 12 characters of a SHA-256 digest: enough to tell sessions apart in a log, useless to reuse one. */
export function logDigest (secret: string): string {
  return createHash('sha256').update(secret).digest('base64url').slice(0, 12)
}

/**
 * Every response names the node that served it (X-Served-By). One log line per request, when it
 * completes, with the request id, a digest of the session id and this node's id (every line of
 * this process carries the node id; the error boundary adds the session digest to
 * its lines). Fastify's own two lines per request are turned off in the server options, and no
 * per-request child logger is made on the hot path. Tool arguments and headers are never logged.
 */
export default fp(async function requestLog (fastify) {
  // pino's setBindings and isLevelEnabled, which Fastify's logger type does not declare; absent when logging is off.
  const log = fastify.log as typeof fastify.log & { setBindings?: (bindings: object) => void, isLevelEnabled?: (level: string) => boolean }
  const { NODE_ID } = fastify.config
  log.setBindings?.({ node: NODE_ID })
  // Which node answered, for operators behind a load balancer.
  fastify.addHook('onRequest', (_request, reply, done) => {
    reply.header('x-served-by', NODE_ID)
    done()
  })
  // The level is fixed at start: below info, no hook runs at all.
  if (log.isLevelEnabled?.('info') === false) return
  fastify.addHook('onResponse', (request, reply, done) => {
    request.log.info({
      sessionId: sessionIdForLog(request),
      method: request.method,
      url: request.url.slice(0, 200),
      statusCode: reply.statusCode,
      ms: Math.round(reply.elapsedTime * 10) / 10
    }, 'request completed')
    done()
  })
}, { name: 'request-log', dependencies: ['config'] })
