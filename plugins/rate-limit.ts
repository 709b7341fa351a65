import fp from 'fastify-plugin'
import type { FastifyRequest } from 'fastify'
import rateLimit from '@fastify/rate-limit'
import { RateLimitedError } from '../src/errors.js'
import type { Touched } from '../src/stores/session-store.js'
import { counter } from './metrics.js'

/** Limits the /mcp handlers apply once they know what a request holds. */
export interface SessionLimits {
  /** @throws {RateLimitedError} when the client's address created INITIALIZE_RATE_LIMIT_MAX sessions this window. */
  sessionCreation (request: FastifyRequest): Promise<void>
  /** Counts the messages of a batch past its first. @throws {RateLimitedError} past RATE_LIMIT_MAX. */
  batch (sessionId: string, messages: number): Promise<void>
}

declare module 'fastify' {
  interface FastifyInstance {
    sessionLimits: SessionLimits
  }
  interface FastifyRequest {
    /**
     * The touch of the session the request names, started as it arrives (see routes/mcp.ts): it
     * counts the request in the session's rate-limit window in the same store round trip.
     */
    sessionTouched?: Promise<Touched | undefined>
  }
}

type Counted = (error: Error | null, result?: { current: number, ttl: number }) => void

/**
 * Rate limiting for the routes that opt in with `config.rateLimit` (only /mcp), through
 * @fastify/rate-limit with a store of ours: a request of a live session is counted against the
 * session by the session's own touch (no round trip of its own); any other request, including one
 * that names a session the store does not know, is counted against the client's address. Session
 * creation has its own limit per address, and each message of a batch counts. In Redis
 * mode every count lives in Redis, so the limit holds for the whole cluster; if Redis cannot count,
 * requests pass (the session store answers 503 on its own).
 */
export default fp(async function rateLimitPlugin (fastify) {
  const { config, sessionStore: store } = fastify
  const rateLimited = counter(fastify.metricsRegistry, 'mcp_rate_limited_requests_total', 'Requests refused by the rate limit')
  /** Requests between their key being made and counted, by key, with the key to count them against if their session is not found. */
  const touches = new Map<string, { touched: Promise<Touched | undefined>, client: string }>()

  const countClient = (key: string, done: Counted) => {
    store.hit(key).then(({ hits, resetMs }) => done(null, { current: hits, ttl: resetMs }), done)
  }

  class SessionRateStore {
    incr (key: string, done: Counted): void {
      const pending = touches.get(key)
      if (pending === undefined) return countClient(key, done)
      touches.delete(key)
      pending.touched.then(touched => {
        if (touched === undefined) countClient(pending.client, done)
        else done(null, { current: touched.hits, ttl: touched.resetMs })
      }, done)
    }

    child (): SessionRateStore { return this }
  }

  fastify.decorateRequest('sessionTouched', undefined)
  await fastify.register(rateLimit, {
    global: false,
    store: SessionRateStore,
    skipOnError: true,
    enableDraftSpec: true,
    max: config.RATE_LIMIT_MAX,
    timeWindow: config.RATE_LIMIT_WINDOW_MS,
    keyGenerator: (request: FastifyRequest) => {
      if (request.sessionTouched === undefined) return clientKey(request)
      const key = `rq:${request.id}`
      touches.set(key, { touched: request.sessionTouched, client: clientKey(request) })
      return key
    },
    onExceeded: () => rateLimited.inc(),
    errorResponseBuilder: (_request, context) => new RateLimitedError(retryAfter(context.ttl))
  })

  const refuse = (resetMs: number) => {
    rateLimited.inc()
    throw new RateLimitedError(retryAfter(resetMs))
  }
  fastify.decorate('sessionLimits', {
    async sessionCreation (request) {
      const { hits, resetMs } = await store.hit(`init:${clientKey(request)}`)
      if (hits > config.INITIALIZE_RATE_LIMIT_MAX) refuse(resetMs)
    },
    async batch (sessionId, messages) {
      if (messages < 2) return
      const counted = await store.hitSession(sessionId, messages - 1)
      if (counted !== undefined && counted.hits > config.RATE_LIMIT_MAX) refuse(counted.resetMs)
    }
  } satisfies SessionLimits)
}, { name: 'rate-limit', dependencies: ['config', 'metrics', 'session-store', 'connections'] })

const retryAfter = (ms: number) => Math.max(1, Math.ceil(ms / 1000))

/** Who a request without a live session is counted against: its principal when tokens are required, else its address. */
const clientKey = (request: FastifyRequest) => request.principal === undefined ? `ip:${request.clientAddress}` : `pr:${request.principal.id}`
