import fp from 'fastify-plugin'
import client from 'prom-client'
import { Dispatcher } from '../src/mcp/dispatcher.js'
import { randomBytes } from 'node:crypto'
import { ScopeHandles } from '../src/mcp/features.js'
import { ModernServer } from '../src/mcp/modern.js'
import { RequestStateCodec } from '../src/mcp/request-state.js'
import { Listeners } from '../src/transport/listeners.js'
import { IdSequence } from '../src/mcp/protocol.js'
import { SessionCache } from '../src/transport/session-cache.js'
import { StreamBudget } from '../src/transport/session-transport.js'
import { VERSION } from '../src/version.js'
import { Histogram } from '../src/metrics.js'
import { counter } from './metrics.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** The live sessions of this node, rebuilt just in time from the store. */
    sessionCache: SessionCache
    /** The 2026-07-28 revision's requests, each served on its own. */
    modernServer: ModernServer
    /** The subscriptions/listen streams of this node. */
    listeners: Listeners
  }
}

/** Where the requestState key lives in Redis: made once by whichever node needs it first, shared by all. */
const REQUEST_STATE_KEY = 'mcp:request-state-key'
/** How long a client may take to answer an input_required result. */
const REQUEST_STATE_TTL_MS = 10 * 60_000

/**
 * The sessions of this node: the MCP dispatcher over the feature registry, and the transport cache
 * that holds live sessions and rebuilds any session of the store just in time. Registers the
 * metrics of sessions, tool calls, streams and the bus. On shutdown, GET streams end first (their
 * clients resume elsewhere), then live sessions close once the server has stopped.
 */
export default fp(async function mcpSessions (fastify) {
  const { config, sessionStore: store, messageBus: bus, metricsRegistry: registry } = fastify
  const registers = [registry]
  const toolCalls = counter(registry, 'mcp_tool_calls_total', 'Tool calls by tool and outcome', ['tool', 'outcome'])
  const toolDuration = new Histogram(registry, 'mcp_tool_call_duration_seconds', 'Tool call duration', ['tool'], [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5])
  const created = counter(registry, 'mcp_sessions_created_total', 'Sessions initialized on this node')
  const rebuilt = counter(registry, 'mcp_sessions_rebuilt_total', 'Sessions rebuilt on this node from the store')
  const deleted = counter(registry, 'mcp_sessions_deleted_total', 'Sessions ended by DELETE on this node')
  const streams = new client.Gauge({ name: 'mcp_sse_streams_open', help: 'SSE streams open on this node', registers })
  const eventsStored = counter(registry, 'mcp_sse_events_stored_total', 'SSE events stored for resumption')
  const eventsReplayed = counter(registry, 'mcp_sse_events_replayed_total', 'SSE events replayed after Last-Event-ID')
  const busMessages = counter(registry, 'mcp_bus_messages_total', 'Messages routed between nodes, by direction and kind', ['direction', 'kind'])

  const logError = (err: unknown, message: string) => fastify.log.error({ err }, message)
  const handles = new ScopeHandles(store, client => fastify.sessionLimits.sessionCreation(client))
  const serverInfo = { name: 'calculator-mcp-server', version: VERSION }
  const streamBudget = new StreamBudget(config.MAX_STREAMS)
  const listeners = new Listeners(bus, streamBudget, config.KEEPALIVE_MS, config.LISTEN_STREAMS_PER_CLIENT)
  const resourceUpdated = (uri: string) => listeners.resourceUpdated(uri)
  const dispatcher = new Dispatcher({
    features: fastify.mcpFeatures,
    handles,
    resourceUpdated,
    serverInfo,
    onToolCall: (tool, outcome, seconds) => {
      toolCalls.inc({ tool, outcome })
      toolDuration.observe({ tool }, seconds)
    },
    logError
  })
  const cache = new SessionCache({
    dispatcher,
    store,
    requestIds: new IdSequence(bus.address),
    logError
  }, serverInfo, {
    store,
    bus,
    streamIds: new IdSequence(bus.address),
    retryMs: config.SSE_RETRY_MS,
    keepAliveMs: config.KEEPALIVE_MS,
    streams: streamBudget,
    batchAnswerMaxBytes: config.BATCH_ANSWER_MAX_BYTES,
    observer: {
      streamOpened: () => streams.inc(),
      streamClosed: () => streams.dec(),
      eventStored: () => eventsStored.inc(),
      eventsReplayed: count => eventsReplayed.inc(count),
      busMessage: (direction, kind) => busMessages.inc({ direction, kind })
    },
    onError: (err, message) => fastify.log.warn({ err }, message)
  }, {
    max: config.SESSION_CACHE_MAX,
    maxBytes: config.SESSION_CACHE_MAX_BYTES,
    idleMs: config.SESSION_TTL_SECONDS * 1000,
    onCreated: () => created.inc(),
    onRebuilt: () => rebuilt.inc(),
    onDeleted: () => deleted.inc()
  })
  // eslint-disable-next-line no-new
  new client.Gauge({ name: 'mcp_cached_sessions', help: 'Sessions live in this node\'s transport cache', registers, collect () { this.set(cache.size) } })
  fastify.decorate('sessionCache', cache)

  const requestStateKey = async (): Promise<Buffer> => {
    if (config.REQUEST_STATE_KEY !== '') return Buffer.from(config.REQUEST_STATE_KEY)
    if (!config.USE_REDIS) return randomBytes(32)
    await fastify.redis.set(REQUEST_STATE_KEY, randomBytes(32).toString('base64url'), 'NX')
    return Buffer.from((await fastify.redis.get(REQUEST_STATE_KEY))!)
  }
  fastify.decorate('modernServer', new ModernServer({
    dispatcher,
    features: fastify.mcpFeatures,
    handles,
    requestState: new RequestStateCodec(requestStateKey, REQUEST_STATE_TTL_MS),
    serverInfo,
    resourceUpdated
  }))
  fastify.decorate('listeners', listeners)

  // Node closes the connections that are idle when the server stops listening; a keep-alive
  // connection whose response ends later would hold the shutdown up until its timeout.
  let reaper: NodeJS.Timeout | undefined
  fastify.addHook('preClose', async () => {
    cache.endStreams()
    listeners.close()
    reaper = setInterval(() => fastify.server.closeIdleConnections(), 50)
    fastify.log.info('shutting down: GET streams ended, finishing requests in flight')
  })
  fastify.addHook('onClose', async () => {
    clearInterval(reaper)
    cache.close()
    fastify.log.info('shut down: requests finished, live sessions closed (sessions stay in the store)')
  })
}, { name: 'mcp-sessions', dependencies: ['config', 'metrics', 'session-store', 'mcp-features', 'rate-limit'] })
