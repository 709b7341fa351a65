import fp from 'fastify-plugin'
import type { FastifyRequest } from 'fastify'

/** The session id a request names, shortened for the log. */
export function sessionIdForLog (request: FastifyRequest): string | undefined {
  const sessionId = request.headers['mcp-session-id']
  return typeof sessionId === 'string' ? sessionId.slice(0, 128) : undefined
}

/**
 * Every response names the node that served it (X-Served-By). One log line per request, when it completes, with the request id, the session id and this node's
 * id (every line of this process carries the node id; the error boundary adds the session id to
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
