import { Type } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import { VERSION } from '../src/version.js'

const Health = Type.Object({
  status: Type.Union([Type.Literal('ok'), Type.Literal('unavailable')]),
  version: Type.String(),
  nodeId: Type.String(),
  storageMode: Type.Union([Type.Literal('memory'), Type.Literal('redis')]),
  sessions: Type.Integer({ description: 'Live sessions in the store' }),
  cachedSessions: Type.Integer({ description: 'Sessions live on this node' }),
  uptimeSeconds: Type.Number()
})

/** Readiness: whether this node can serve, with its storage and session counts. */
export default async function healthRoutes (fastify: FastifyInstance) {
  fastify.get('/health', { schema: { response: { 200: Health } } }, async () => ({
    status: 'ok' as const,
    version: VERSION,
    nodeId: fastify.config.NODE_ID,
    storageMode: fastify.sessionStore.mode,
    sessions: await fastify.sessionStore.count(),
    cachedSessions: fastify.sessionCache.size,
    uptimeSeconds: Math.round(process.uptime())
  }))
}
