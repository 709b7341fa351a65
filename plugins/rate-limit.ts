import fp from 'fastify-plugin'
import type { FastifyRequest } from 'fastify'
import rateLimit from '@fastify/rate-limit'
import { RateLimitedError } from '../src/errors.js'
import type { SessionStore, Touched } from '../src/stores/session-store.js'
import { counter } from './metrics.js'

/** Limits the /mcp handlers apply once they know what a request holds. */
export interface SessionLimits {
  /**
   * Counts a session or history handle that `client` (clientKey: its principal, or its address)
   * creates. @throws {RateLimitedError} past INITIALIZE_RATE_LIMIT_MAX this window.
   */
  sessionCreation (client: string): Promise<void>
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

/** How often a node adds the requests it counted to the shared count, in Redis mode. */
export const RECONCILE_MS = 100

/**
 * Requests per key counted on this node and added to the store's shared count every RECONCILE_MS:
 * a request without a session waits for no round trip. A node's decision sees the shared count as
 * of the last reconciliation plus what it counted since, so across nodes a key can go past the
 * limit by what the other nodes counted in one interval, no more.
 */
class ReconciledCounts {
  readonly #store: SessionStore
  readonly #windowMs: number
  /** Counted here and not yet sent; sent and not yet answered. */
  #pending = new Map<string, number>()
  readonly #sending = new Map<string, number>()
  /** The shared count of a key as the store last answered, until its window ends. */
  readonly #shared = new Map<string, { hits: number, resetAt: number }>()
  readonly #timer: NodeJS.Timeout

  constructor (store: SessionStore, windowMs: number) {
    this.#store = store
    this.#windowMs = windowMs
    this.#timer = setInterval(() => { this.#reconcile() }, RECONCILE_MS).unref()
  }

  count (key: string): { current: number, ttl: number } {
    const now = Date.now()
    const shared = this.#shared.get(key)
    const known = shared !== undefined && shared.resetAt > now ? shared : undefined
    const pending = (this.#pending.get(key) ?? 0) + 1
    this.#pending.set(key, pending)
    return { current: (known?.hits ?? 0) + (this.#sending.get(key) ?? 0) + pending, ttl: known === undefined ? this.#windowMs : known.resetAt - now }
  }

  #reconcile (): void {
    const now = Date.now()
    for (const [key, { resetAt }] of this.#shared) if (resetAt <= now) this.#shared.delete(key)
    const batch = this.#pending
    this.#pending = new Map()
    for (const [key, count] of batch) {
      this.#sending.set(key, (this.#sending.get(key) ?? 0) + count)
      // The shared count and what is on its way change together, so no request is counted twice.
      const settle = (answer?: { hits: number, resetMs: number }) => {
        if (answer !== undefined) this.#shared.set(key, { hits: answer.hits, resetAt: Date.now() + answer.resetMs })
        const left = this.#sending.get(key)! - count
        if (left === 0) this.#sending.delete(key)
        else this.#sending.set(key, left)
      }
      this.#store.hit(key, count).then(settle, () => settle())
    }
  }

  close (): void { clearInterval(this.#timer) }
}

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

  // In memory mode the store counts in this process anyway.
  const reconciled = store.mode === 'redis' ? new ReconciledCounts(store, config.RATE_LIMIT_WINDOW_MS) : undefined
  if (reconciled !== undefined) fastify.addHook('onClose', async () => reconciled.close())
  const countClient = (key: string, done: Counted) => {
    if (reconciled !== undefined) return done(null, reconciled.count(key))
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
    // On every answer they cost about a tenth of a warm call's throughput (three more headers for
    // Node to check and write), and MCP clients do not read them: by default only a 429 has them.
    ...(config.RATE_LIMIT_HEADERS === 'refused' && { addHeadersOnExceeding: { 'ratelimit-limit': false, 'ratelimit-remaining': false, 'ratelimit-reset': false } }),
    max: config.RATE_LIMIT_MAX,
    timeWindow: config.RATE_LIMIT_WINDOW_MS,
    keyGenerator: (request: FastifyRequest) => {
      if (request.sessionTouched === undefined) return clientKey(request)
      const key = `rq:${request.id}`
      touches.set(key, { touched: request.sessionTouched, client: clientKey(request) })
      return key
    },
    onExceeded: () => rateLimited.inc(),
    errorResponseBuilder: (_request, context) => new RateLimitedError(context.ttl)
  })

  const refuse = (resetMs: number) => {
    rateLimited.inc()
    throw new RateLimitedError(resetMs)
  }
  fastify.decorate('sessionLimits', {
    async sessionCreation (client) {
      const { hits, resetMs } = await store.hit(`init:${client}`)
      if (hits > config.INITIALIZE_RATE_LIMIT_MAX) refuse(resetMs)
    },
    async batch (sessionId, messages) {
      if (messages < 2) return
      const counted = await store.hitSession(sessionId, messages - 1)
      if (counted !== undefined && counted.hits > config.RATE_LIMIT_MAX) refuse(counted.resetMs)
    }
  } satisfies SessionLimits)
}, { name: 'rate-limit', dependencies: ['config', 'metrics', 'session-store', 'connections'] })

/** Who a request without a live session is counted against: its principal when tokens are required, else its address. */
export const clientKey = (request: FastifyRequest) => request.principal === undefined ? `ip:${request.clientAddress}` : `pr:${request.principal.id}`
