import type { FastifyInstance } from 'fastify'

/** Prometheus text exposition of this node's metrics. */
export default async function metricsRoutes (fastify: FastifyInstance) {
  const registry = fastify.metricsRegistry
  fastify.get('/metrics', async (_request, reply) => {
    reply.type(registry.contentType)
    return registry.metrics()
  })
}
