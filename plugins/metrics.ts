import fp from 'fastify-plugin'
import fastifyMetricsModule from 'fastify-metrics'
import client from 'prom-client'

// fastify-metrics is CommonJS: under ESM its plugin arrives as the default export's default.
const fastifyMetrics = fastifyMetricsModule.default

export interface McpMetrics {
  registry: client.Registry
  sessionsCreated: client.Counter
  sessionsRebuilt: client.Counter
  sessionsDeleted: client.Counter
  toolCalls: client.Counter<'tool' | 'outcome'>
  toolDuration: client.Histogram<'tool'>
  calculations: client.Counter<'operation'>
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

  const store = fastify.sessionStore
  const registers = [registry]
  const mcpMetrics: McpMetrics = {
    registry,
    sessionsCreated: new client.Counter({ name: 'mcp_sessions_created_total', help: 'Sessions initialized on this node', registers }),
    sessionsRebuilt: new client.Counter({ name: 'mcp_sessions_rebuilt_total', help: 'Sessions rebuilt on this node from the store', registers }),
    sessionsDeleted: new client.Counter({ name: 'mcp_sessions_deleted_total', help: 'Sessions ended by DELETE on this node', registers }),
    toolCalls: new client.Counter({ name: 'mcp_tool_calls_total', help: 'Tool calls by tool and outcome', labelNames: ['tool', 'outcome'] as const, registers }),
    toolDuration: new client.Histogram({ name: 'mcp_tool_call_duration_seconds', help: 'Tool call duration', labelNames: ['tool'] as const, buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1, 5], registers }),
    calculations: new client.Counter({ name: 'mcp_calculations_total', help: 'Calculations recorded, by operation', labelNames: ['operation'] as const, registers }),
    rateLimited: new client.Counter({ name: 'mcp_rate_limited_requests_total', help: 'Requests refused by the rate limit', registers }),
    cachedSessions: () => 0
  }
  // eslint-disable-next-line no-new
  new client.Gauge({
    name: 'mcp_active_sessions',
    help: 'Live sessions in the session store',
    registers,
    async collect () { this.set(await store.count()) }
  })
  // eslint-disable-next-line no-new
  new client.Gauge({
    name: 'mcp_cached_sessions',
    help: 'Sessions live in this node\'s transport cache',
    registers,
    collect () { this.set(mcpMetrics.cachedSessions()) }
  })
  fastify.decorate('mcpMetrics', mcpMetrics)
}, { name: 'metrics', dependencies: ['session-store'] })
