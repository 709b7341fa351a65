import type { FastifyInstance } from 'fastify'
import { MethodNotAllowedError } from '../src/errors.js'

/**
 * The one MCP endpoint: POST (messages), GET (the server's stream), DELETE (end the session).
 * Bodies are JSON-RPC messages, checked by the transport's own compiled test rather than a route
 * schema, so the hot path parses once.
 */
export default async function mcpRoutes (fastify: FastifyInstance) {
  const { mcp, config } = fastify
  // Only JSON bodies reach the endpoint; any other Content-Type gets 415.
  fastify.removeAllContentTypeParsers()
  fastify.addContentTypeParser('application/json', { parseAs: 'string', bodyLimit: config.BODY_LIMIT_BYTES }, fastify.getDefaultJsonParser('error', 'error'))
  // The rate limiter appends its hook after these.
  const shared = {
    onRequest: [mcp.verifyOrigin, mcp.touchSession],
    config: { rateLimit: {} }
  }

  fastify.post('/mcp', { ...shared, bodyLimit: config.BODY_LIMIT_BYTES }, (request, reply) => mcp.post(request, reply))
  fastify.get('/mcp', { ...shared, exposeHeadRoute: false }, (request, reply) => mcp.get(request, reply))
  fastify.delete('/mcp', shared, (request, reply) => mcp.delete(request, reply))
  fastify.route({
    method: ['PUT', 'PATCH', 'HEAD'],
    url: '/mcp',
    // Refused before the body is read, whatever it holds.
    onRequest: async () => { throw new MethodNotAllowedError('GET, POST, DELETE') },
    handler: async () => {}
  })
}
