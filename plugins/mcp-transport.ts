import fp from 'fastify-plugin'
import type { FastifyReply, FastifyRequest } from 'fastify'
import type { JSONRPCRequest } from '@modelcontextprotocol/sdk/types.js'
import { ForbiddenOriginError, InvalidRequestError, MissingSessionIdError, SessionNotFoundError, ShuttingDownError } from '../src/errors.js'
import { originMatcher } from '../src/origins.js'
import type { SessionRecord } from '../src/stores/session-store.js'
import { SessionCache, type LiveSession } from '../src/transport/session-cache.js'
import { checkProtocolVersion, readMessages, requireAccept } from '../src/transport/http-rules.js'
import { sseHeaders } from '../src/transport/sse.js'
import { VERSION } from '../src/version.js'

/** The Streamable HTTP endpoint's handlers, called by the thin route file. */
export interface McpEndpoint {
  post (request: FastifyRequest, reply: FastifyReply): Promise<unknown>
  get (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply>
  delete (request: FastifyRequest, reply: FastifyReply): Promise<FastifyReply>
  /** onRequest hook: a present Origin that is not allowed gets 403. */
  verifyOrigin (request: FastifyRequest, reply: FastifyReply, done: (error?: Error) => void): void
  /**
   * onRequest hook, before the rate limiter's: starts the store round trip of the session the
   * request names, so that it runs alongside the rate limiter's instead of after it.
   */
  touchSession (request: FastifyRequest, reply: FastifyReply, done: () => void): void
}

declare module 'fastify' {
  interface FastifyInstance {
    mcp: McpEndpoint
    sessionCache: SessionCache
  }
  interface FastifyRequest {
    /** The session's record being read by `touchSession`. */
    sessionTouched?: Promise<SessionRecord | undefined>
  }
}

const POST_ACCEPT = ['application/json', 'text/event-stream'] as const
const GET_ACCEPT = ['text/event-stream'] as const
/** Longer ids were never minted here; they are refused without a store lookup. */
const MAX_SESSION_ID_LENGTH = 128
const STREAMED = Symbol('streamed')

function sessionIdOf (request: FastifyRequest): string {
  const id = request.headers['mcp-session-id']
  if (typeof id !== 'string' || id === '') throw new MissingSessionIdError()
  return id
}

/**
 * Starts an SSE response (with the headers hooks already set, such as CORS). A GET stream sends
 * its headers at once; a POST's leave with its first events.
 */
function openSse (reply: FastifyReply, sessionId: string, flush: boolean) {
  reply.hijack()
  // Copied one by one: spreading both into one literal took V8's slow path.
  const headers = reply.getHeaders() as Record<string, string>
  const sse = sseHeaders(sessionId)
  for (const name in sse) headers[name] = sse[name]!
  reply.raw.writeHead(200, headers)
  if (flush) reply.raw.flushHeaders()
  return reply.raw
}

/**
 * The Streamable HTTP transport of the server: the HTTP rules of the specification, the transport
 * cache with just-in-time rebuilding, and the choice of JSON or SSE per request.
 */
export default fp(async function mcpTransport (fastify) {
  const { config, sessionStore: store, mcpMetrics: metrics } = fastify
  const cache = new SessionCache({
    features: fastify.mcpFeatures,
    store,
    serverInfo: { name: 'calculator-mcp-server', version: VERSION },
    observer: metrics.observer,
    logError: (err, message) => fastify.log.error({ err }, message)
  }, {
    store,
    bus: fastify.messageBus,
    nodeId: config.NODE_ID,
    retryMs: config.SSE_RETRY_MS,
    keepAliveMs: config.KEEPALIVE_MS,
    observer: metrics.observer,
    onError: (err, message) => fastify.log.warn({ err }, message)
  }, {
    max: config.SESSION_CACHE_MAX,
    idleMs: config.SESSION_TTL_SECONDS * 1000,
    onRebuilt: () => metrics.sessionsRebuilt.inc()
  })
  metrics.cachedSessions = () => cache.size
  const originAllowed = originMatcher(config.ALLOWED_ORIGINS)
  let shuttingDown = false

  /**
   * Runs `use` on the session the request names, live on this node and leased until `use` has
   * handed over the request (so a cache eviction meanwhile cannot close it under the request).
   */
  async function withSession<T> (request: FastifyRequest, use: (live: LiveSession) => T | Promise<T>): Promise<T> {
    const id = sessionIdOf(request)
    const live = id.length > MAX_SESSION_ID_LENGTH ? undefined : await cache.acquire(id, request.sessionTouched)
    if (live === undefined) throw new SessionNotFoundError()
    try {
      return await use(live)
    } finally {
      live.transport.release()
    }
  }

  const endpoint: McpEndpoint = {
    async post (request, reply) {
      requireAccept(request.headers.accept, POST_ACCEPT)
      checkProtocolVersion(request.headers['mcp-protocol-version'])
      const { messages, batch } = readMessages(request.body)
      const initialize = messages.find(m => 'method' in m && m.method === 'initialize')
      if (initialize !== undefined) {
        if (messages.length > 1 || !('id' in initialize)) throw new InvalidRequestError('initialize must be sent alone, as a request')
        const { sessionId, response } = await cache.initialize(initialize as JSONRPCRequest)
        if (sessionId !== undefined) {
          reply.header('mcp-session-id', sessionId)
          metrics.sessionsCreated.inc()
        }
        return batch ? [response] : response
      }
      const answer = await withSession(request, live => new Promise<unknown>(resolve => {
        const answered = live.transport.post(messages, batch, {
          json: resolve,
          stream: () => {
            const raw = openSse(reply, live.transport.sessionId, false)
            resolve(STREAMED)
            return raw
          }
        })
        if (!answered) resolve(undefined)
      }))
      if (answer === STREAMED) return reply
      if (answer === undefined) return reply.code(202).send()
      return answer
    },

    async get (request, reply) {
      // A stream opened now would hold the shutdown up; the client reconnects to another node.
      if (shuttingDown) throw new ShuttingDownError()
      requireAccept(request.headers.accept, GET_ACCEPT)
      checkProtocolVersion(request.headers['mcp-protocol-version'])
      const lastEventId = request.headers['last-event-id']
      await withSession(request, live => live.transport.openStream(() => openSse(reply, live.transport.sessionId, true), typeof lastEventId === 'string' && lastEventId !== '' ? lastEventId : undefined))
      return reply
    },

    async delete (request, reply) {
      checkProtocolVersion(request.headers['mcp-protocol-version'])
      const id = sessionIdOf(request)
      const existed = id.length <= MAX_SESSION_ID_LENGTH && await store.delete(id)
      cache.drop(id)
      if (!existed) throw new SessionNotFoundError()
      metrics.sessionsDeleted.inc()
      return reply.code(200).send()
    },

    verifyOrigin (request, _reply, done) {
      const origin = request.headers.origin
      done(origin !== undefined && !originAllowed(origin) ? new ForbiddenOriginError() : undefined)
    },

    touchSession (request, _reply, done) {
      const id = request.headers['mcp-session-id']
      if (request.method === 'POST' && typeof id === 'string' && id !== '' && id.length <= MAX_SESSION_ID_LENGTH) {
        request.sessionTouched = cache.touch(id)
        // Awaited by the handler; a request refused before it (429, 406) leaves it unread.
        request.sessionTouched.catch(() => {})
      }
      done()
    }
  }

  fastify.decorateRequest('sessionTouched', undefined)
  fastify.decorate('mcp', endpoint)
  fastify.decorate('sessionCache', cache)
  fastify.addHook('onRequest', (_request, reply, done) => {
    reply.header('x-served-by', config.NODE_ID)
    done()
  })
  // GET streams end as shutdown begins, so clients resume them elsewhere and close() does not wait
  // on them; requests in flight finish; live sessions close only after the server has stopped.
  // Node closes the connections that are idle when the server stops listening; a keep-alive
  // connection whose response ends later would hold the shutdown up until its timeout.
  let reaper: NodeJS.Timeout | undefined
  fastify.addHook('preClose', async () => {
    shuttingDown = true
    cache.endStreams()
    reaper = setInterval(() => fastify.server.closeIdleConnections(), 50)
    fastify.log.info('shutting down: GET streams ended, finishing requests in flight')
  })
  fastify.addHook('onClose', async () => {
    clearInterval(reaper)
    cache.close()
    fastify.log.info('shut down: requests finished, live sessions closed (sessions stay in the store)')
  })
}, { name: 'mcp-transport', dependencies: ['config', 'session-store', 'metrics', 'calculator', 'conformance-fixtures'] })
