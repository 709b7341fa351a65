import { Type } from '@sinclair/typebox'
import type { FastifyInstance } from 'fastify'
import { VERSION } from '../src/version.js'
import type { ScopeCounts } from '../src/stores/session-store.js'

const StorageMode = Type.Union([Type.Literal('memory'), Type.Literal('redis')])
const Auth = Type.Union([Type.Literal('jwt'), Type.Literal('open'), Type.Literal('disabled')], { description: 'jwt: access tokens required; open: none, on loopback; disabled: none, by AUTH_DISABLED' })

const Ready = Type.Object({
  status: Type.Literal('ok'),
  version: Type.String(),
  nodeId: Type.String(),
  storageMode: StorageMode,
  auth: Auth,
  storage: Type.Literal('up'),
  sessions: Type.Integer({ description: 'Live sessions in the store' }),
  historyHandles: Type.Integer({ description: 'Live history handles in the store' }),
  cachedSessions: Type.Integer({ description: 'Sessions live on this node' }),
  uptimeSeconds: Type.Number()
})

const Unavailable = Type.Object({
  status: Type.Literal('unavailable'),
  version: Type.String(),
  nodeId: Type.String(),
  storageMode: StorageMode,
  auth: Auth,
  storage: Type.Literal('down'),
  reason: Type.String()
})

/**
 * `/health`: readiness, 503 when this node cannot serve because its storage does not answer.
 * `/health/live`: liveness, 200 while the process runs.
 */
export default async function healthRoutes (fastify: FastifyInstance) {
  const { sessionStore: store, sessionCache: cache, authorization, config } = fastify
  const about = () => ({ version: VERSION, nodeId: config.NODE_ID, storageMode: store.mode, auth: authorization.mode })

  fastify.get('/health', { schema: { response: { 200: Ready, 503: Unavailable } } }, async (_request, reply) => {
    let counts: ScopeCounts
    try {
      await store.ping()
      counts = await store.count()
    } catch {
      return reply.code(503).header('retry-after', '1').send({
        status: 'unavailable' as const, ...about(), storage: 'down' as const, reason: `${store.mode === 'redis' ? 'Redis' : 'storage'} is unreachable`
      })
    }
    return { status: 'ok' as const, ...about(), storage: 'up' as const, sessions: counts.sessions, historyHandles: counts.handles, cachedSessions: cache.size, uptimeSeconds: Math.round(process.uptime()) }
  })

  // Liveness must answer even while load is shed.
  fastify.get('/health/live', { config: { pressureHandler: () => undefined } }, async () => ({ status: 'ok', nodeId: config.NODE_ID }))
}
