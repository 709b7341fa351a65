import fp from 'fastify-plugin'
import fastifyMetricsModule from 'fastify-metrics'
import client from 'prom-client'
import type { ServerObserver } from '../src/observer.js'

// fastify-metrics is CommonJS: under ESM its plugin arrives as the default export's default.
const fastifyMetrics = fastifyMetricsModule.default

export interface McpMetrics {
  registry: client.Registry
  /** Feeds the server's own metrics; handed to the store, the transport and the sessions. */
  observer: ServerObserver
  sessionsCreated: client.Counter
  sessionsRebuilt: client.Counter
  sessionsDeleted: client.Counter
  rateLimited: client.Counter
  /** Reads the number of sessions live on this node; set by the transport cache. */
  cachedSessions: () => number
}

declare module 'fastify' {
  interface FastifyInstance {
    mcpMetrics: McpMetrics
  }
}

/**
 * Prometheus metrics: fastify-metrics' route histograms and process metrics, plus the server's
 * own, all in a registry of this instance (so several instances in one process never clash).
 * Registered before the store, which it observes; the live-session gauge reads the store lazily.
 */
export default fp(async function metrics (fastify) {
  const registry = new client.Registry()
  await fastify.register(fastifyMetrics, {
    endpoint: null,
    defaultMetrics: { enabled: true, register: registry },
    routeMetrics: {
      enabled: { histogram: true, summary: false },
      registeredRoutesOnly: true,
      routeBlacklist: ['/metrics'],
      overrides: { histogram: { registers: [registry] }, summary: { registers: [registry] } }
    }
  })

  // prom-client names three gauges like counters (_total); the same counts remain, per type, in
  // nodejs_active_handles, nodejs_active_requests and nodejs_active_resources.
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) {
    registry.removeSingleMetric(name)
  }

  const registers = [registry]
  const counter = <L extends string = never>(name: string, help: string, labelNames: readonly L[] = []) =>
    new client.Counter<L>({ name, help, labelNames, registers })

  const toolCalls = counter('mcp_tool_calls_total', 'Tool calls by tool and outcome', ['tool', 'outcome'])
  const toolDuration = new client.Histogram({ name: 'mcp_tool_call_duration_seconds', help: 'Tool call duration', labelNames: ['tool'] as const, buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5], registers })
  const calculations = counter('mcp_calculations_total', 'Calculations recorded, by operation', ['operation'])
  const expired = counter('mcp_sessions_expired_total', 'Sessions found expired (counted once, by the node that removed them)')
  const streams = new client.Gauge({ name: 'mcp_sse_streams_open', help: 'SSE streams open on this node', registers })
  const eventsStored = counter('mcp_sse_events_stored_total', 'SSE events stored for resumption')
  const eventsReplayed = counter('mcp_sse_events_replayed_total', 'SSE events replayed after Last-Event-ID')
  const bus = counter('mcp_bus_messages_total', 'Messages routed between nodes, by direction and kind', ['direction', 'kind'])
  const storageErrors = counter('mcp_storage_errors_total', 'Failed storage operations, by operation', ['operation'])

  const mcpMetrics: McpMetrics = {
    registry,
    observer: {
      toolCalled: (tool, outcome, seconds) => {
        toolCalls.inc({ tool, outcome })
        toolDuration.observe({ tool }, seconds)
      },
      calculated: operation => calculations.inc({ operation }),
      sessionsExpired: count => expired.inc(count),
      streamOpened: () => streams.inc(),
      streamClosed: () => streams.dec(),
      eventStored: () => eventsStored.inc(),
      eventsReplayed: count => eventsReplayed.inc(count),
      busMessage: (direction, kind) => bus.inc({ direction, kind }),
      storageError: operation => storageErrors.inc({ operation })
    },
    sessionsCreated: counter('mcp_sessions_created_total', 'Sessions initialized on this node'),
    sessionsRebuilt: counter('mcp_sessions_rebuilt_total', 'Sessions rebuilt on this node from the store'),
    sessionsDeleted: counter('mcp_sessions_deleted_total', 'Sessions ended by DELETE on this node'),
    rateLimited: counter('mcp_rate_limited_requests_total', 'Requests refused by the rate limit'),
    cachedSessions: () => 0
  }
  // eslint-disable-next-line no-new
  new client.Gauge({
    name: 'mcp_active_sessions',
    help: 'Live sessions in the session store (the whole cluster in Redis mode)',
    registers,
    async collect () { this.set(await fastify.sessionStore.count()) }
  })
  // eslint-disable-next-line no-new
  new client.Gauge({
    name: 'mcp_cached_sessions',
    help: 'Sessions live in this node\'s transport cache',
    registers,
    collect () { this.set(mcpMetrics.cachedSessions()) }
  })
  fastify.decorate('mcpMetrics', mcpMetrics)
}, { name: 'metrics' })
