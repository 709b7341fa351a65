import fp from 'fastify-plugin'
import fastifyMetricsModule from 'fastify-metrics'
import client from 'prom-client'

// fastify-metrics is CommonJS: under ESM its plugin arrives as the default export's default.
const fastifyMetrics = fastifyMetricsModule.default

declare module 'fastify' {
  interface FastifyInstance {
    /** This instance's Prometheus registry: each plugin registers the metrics of the data it owns. */
    metricsRegistry: client.Registry
  }
}

/**
 * Prometheus metrics: fastify-metrics' route histograms and process metrics in a registry of this
 * instance (so several instances in one process never clash), which later plugins add their own to.
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
  fastify.decorate('metricsRegistry', registry)
}, { name: 'metrics' })

/** A counter in `registry`. */
export function counter<L extends string = never> (registry: client.Registry, name: string, help: string, labelNames: readonly L[] = []): client.Counter<L> {
  return new client.Counter<L>({ name, help, labelNames, registers: [registry] })
}
