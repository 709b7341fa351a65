import fp from 'fastify-plugin'
import client from 'prom-client'
import { MemorySessionStore } from '../src/stores/memory-session-store.js'
import { RedisSessionStore } from '../src/stores/redis-session-store.js'
import type { ScopeCounts, SessionStore, SessionStoreOptions } from '../src/stores/session-store.js'
import { LocalBus, type MessageBus } from '../src/transport/bus.js'
import { RedisBus } from '../src/transport/redis-bus.js'
import { counter } from './metrics.js'

declare module 'fastify' {
  interface FastifyInstance {
    sessionStore: SessionStore
    /** How nodes sharing the store pass session messages to each other. */
    messageBus: MessageBus
  }
}

export interface SessionStorePluginOptions {
  /** A store to use instead of the one the configuration chooses (tests give theirs); not closed here. */
  store?: SessionStore
}

/**
 * Chooses where sessions live, once: memory (one node, zero set-up) or Redis (any number of nodes),
 * unless a store is given. Registers the metrics of storage. Shutting down never deletes sessions.
 */
export default fp<SessionStorePluginOptions>(async function sessionStore (fastify, opts) {
  const { config, metricsRegistry: registry } = fastify
  const sessionsExpired = counter(registry, 'mcp_sessions_expired_total', 'Sessions found expired (each counted once, by the node that removed it)')
  const handlesExpired = counter(registry, 'mcp_history_handles_expired_total', 'History handles found expired (each counted once, by the node that removed it)')
  const storageErrors = counter(registry, 'mcp_storage_errors_total', 'Failed storage operations, by operation', ['operation'])
  const options: SessionStoreOptions = {
    ttlSeconds: config.SESSION_TTL_SECONDS,
    eventLimit: config.EVENTS_PER_SESSION,
    eventLogMaxBytes: config.EVENT_LOG_MAX_BYTES,
    eventMaxBytes: config.EVENT_MAX_BYTES,
    rateWindowMs: config.RATE_LIMIT_WINDOW_MS,
    observer: {
      scopesExpired: ({ sessions, handles }) => {
        if (sessions > 0) sessionsExpired.inc(sessions)
        if (handles > 0) handlesExpired.inc(handles)
      },
      storageError: operation => storageErrors.inc({ operation })
    }
  }
  let store: SessionStore
  let bus: MessageBus
  if (config.USE_REDIS) {
    store = opts.store ?? new RedisSessionStore(fastify.redis, options)
    const redisBus = new RedisBus(fastify.redis, fastify.redisSubscriber, config.REDIS_CLUSTER_NODES !== '')
    await redisBus.start()
    bus = redisBus
  } else {
    store = opts.store ?? new MemorySessionStore(options)
    bus = new LocalBus()
    fastify.log.info('session storage: in-memory (one node; sessions end when the process stops)')
  }
  // One count of the store for both gauges, whichever a scrape collects first.
  let counting: Promise<ScopeCounts> | undefined
  const counts = () => {
    counting ??= store.count().finally(() => { counting = undefined })
    return counting
  }
  for (const [name, help, kind] of [
    ['mcp_active_sessions', 'Live sessions in the session store (the whole cluster in Redis mode)', 'sessions'],
    ['mcp_active_history_handles', 'Live history handles in the session store (the whole cluster in Redis mode)', 'handles']
  ] as const) {
    // eslint-disable-next-line no-new
    new client.Gauge({ name, help, registers: [registry], async collect () { this.set((await counts())[kind]) } })
  }
  fastify.decorate('sessionStore', store)
  fastify.decorate('messageBus', bus)
  fastify.addHook('onClose', async () => {
    await bus.close()
    if (opts.store === undefined) await store.close()
  })
}, { name: 'session-store', dependencies: ['config', 'redis', 'metrics'] })
