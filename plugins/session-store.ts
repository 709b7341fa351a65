import fp from 'fastify-plugin'
import { MemorySessionStore } from '../src/stores/memory-session-store.js'
import type { SessionStore } from '../src/stores/session-store.js'
import { LocalBus, type MessageBus } from '../src/transport/bus.js'

declare module 'fastify' {
  interface FastifyInstance {
    sessionStore: SessionStore
    /** How nodes sharing the store pass session messages to each other. */
    messageBus: MessageBus
  }
}

/** Chooses where sessions live, once, and closes it on shutdown. Shutting down never deletes sessions. */
export default fp(async function sessionStore (fastify) {
  const { config } = fastify
  if (config.USE_REDIS) throw new Error('USE_REDIS=true needs the Redis session store, which this build does not include yet')
  const store = new MemorySessionStore({ ttlSeconds: config.SESSION_TTL_SECONDS, historyLimit: config.HISTORY_LIMIT, eventLimit: config.EVENTS_PER_SESSION })
  const bus = new LocalBus()
  fastify.log.info('session storage: in-memory (one node; sessions end when the process stops)')
  fastify.decorate('sessionStore', store)
  fastify.decorate('messageBus', bus)
  fastify.addHook('onClose', async () => {
    await bus.close()
    await store.close()
  })
}, { name: 'session-store', dependencies: ['config'] })
