import fp from 'fastify-plugin'
import { MemorySessionStore } from '../src/stores/memory-session-store.js'
import { RedisSessionStore } from '../src/stores/redis-session-store.js'
import type { SessionStore } from '../src/stores/session-store.js'
import { LocalBus, type MessageBus } from '../src/transport/bus.js'
import { RedisBus } from '../src/transport/redis-bus.js'

declare module 'fastify' {
  interface FastifyInstance {
    sessionStore: SessionStore
    /** How nodes sharing the store pass session messages to each other. */
    messageBus: MessageBus
  }
}

/**
 * Chooses where sessions live, once: memory (one node, zero set-up) or Redis (any number of nodes).
 * Shutting down never deletes sessions.
 */
export default fp(async function sessionStore (fastify) {
  const { config } = fastify
  const options = { ttlSeconds: config.SESSION_TTL_SECONDS, historyLimit: config.HISTORY_LIMIT, eventLimit: config.EVENTS_PER_SESSION, observer: fastify.mcpMetrics.observer }
  let store: SessionStore
  let bus: MessageBus
  if (config.USE_REDIS) {
    store = new RedisSessionStore(fastify.redis, options)
    const redisBus = new RedisBus(fastify.redis, fastify.redisSubscriber)
    await redisBus.start()
    bus = redisBus
  } else {
    store = new MemorySessionStore(options)
    bus = new LocalBus()
    fastify.log.info('session storage: in-memory (one node; sessions end when the process stops)')
  }
  fastify.decorate('sessionStore', store)
  fastify.decorate('messageBus', bus)
  fastify.addHook('onClose', async () => {
    await bus.close()
    await store.close()
  })
}, { name: 'session-store', dependencies: ['config', 'redis', 'metrics'] })
