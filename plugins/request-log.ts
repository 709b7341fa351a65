import fp from 'fastify-plugin'

declare module 'fastify' {
  interface FastifyRequest {
    /** When the request arrived, for the completion log line. */
    startedAt: number
  }
}

/**
 * One log line per request, when it completes, carrying the request id, the session id and this
 * node's id; every other line logged about the request carries them too. Fastify's own two lines
 * per request are turned off in the server options. Tool arguments and headers are never logged.
 */
export default fp(async function requestLog (fastify) {
  const node = fastify.config.NODE_ID
  fastify.decorateRequest('startedAt', 0)
  fastify.addHook('onRequest', async request => {
    request.startedAt = performance.now()
    const sessionId = request.headers['mcp-session-id']
    request.log = request.log.child(typeof sessionId === 'string' ? { node, sessionId: sessionId.slice(0, 128) } : { node })
  })
  fastify.addHook('onResponse', async (request, reply) => {
    request.log.info({
      method: request.method,
      url: request.url.slice(0, 200),
      statusCode: reply.statusCode,
      ms: Math.round((performance.now() - request.startedAt) * 10) / 10
    }, 'request completed')
  })
}, { name: 'request-log', dependencies: ['config'] })
