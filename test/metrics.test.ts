import { test } from 'tap'
import client from 'prom-client'
import { Counter, Histogram } from '../src/metrics.js'

interface Counted<L> { inc (labels: L, value?: number): void }
interface Observed<L> { observe (labels: L, value: number): void }

/** The same observations through prom-client's metrics and ours, each in a registry of its own. */
function both () {
  const theirs = new client.Registry()
  const ours = new client.Registry()
  const bounds = [0.001, 0.01, 0.1]
  return {
    theirs,
    ours,
    counters: [
      new client.Counter({ name: 'calls_total', help: 'Calls', labelNames: ['tool', 'outcome'], registers: [theirs] }),
      new Counter(ours, 'calls_total', 'Calls', ['tool', 'outcome'])
    ] as Array<Counted<{ tool: string, outcome: string }>>,
    plain: [
      new client.Counter({ name: 'events_total', help: 'Events', registers: [theirs] }),
      new Counter(ours, 'events_total', 'Events')
    ] as Array<{ inc (value?: number): void }>,
    histograms: [
      new client.Histogram({ name: 'duration_seconds', help: 'Duration', labelNames: ['route', 'status_code'], buckets: bounds, registers: [theirs] }),
      new Histogram(ours, 'duration_seconds', 'Duration', ['route', 'status_code'], bounds)
    ] as Array<Observed<{ route: string, status_code: number }>>
  }
}

test('the exposition is prom-client\'s, for counters with and without labels and for histograms', async t => {
  const { theirs, ours, counters, plain, histograms } = both()
  t.equal(await ours.metrics(), await theirs.metrics(), 'a labelless counter reads 0 before it is counted, the others are absent')
  for (const counter of counters) {
    counter.inc({ tool: 'calculate', outcome: 'success' })
    counter.inc({ tool: 'calculate', outcome: 'success' }, 2)
    counter.inc({ tool: 'calculate', outcome: 'error' })
    counter.inc({ tool: 'history', outcome: 'success' })
  }
  for (const counter of plain) {
    counter.inc()
    counter.inc(4)
  }
  for (const histogram of histograms) {
    // On a bound, between bounds, past the last one; the status code a number, as Fastify gives it.
    for (const value of [0.001, 0.0005, 0.05, 0.5, 2]) histogram.observe({ route: '/mcp', status_code: 200 }, value)
    histogram.observe({ route: '/mcp', status_code: 404 }, 0.002)
    histogram.observe({ route: '/health', status_code: 200 }, 0.02)
  }
  const text = await ours.metrics()
  t.equal(text, await theirs.metrics())
  t.match(text, /^calls_total\{tool="calculate",outcome="success"\} 3$/m)
  t.match(text, /^events_total 5$/m)
  t.match(text, /^duration_seconds_bucket\{le="0.001",route="\/mcp",status_code="200"\} 2$/m)
  t.match(text, /^duration_seconds_bucket\{le="\+Inf",route="\/mcp",status_code="200"\} 5$/m)
  t.match(text, /^duration_seconds_count\{route="\/health",status_code="200"\} 1$/m)
})

test('reset forgets every series, as prom-client\'s does', async t => {
  const { theirs, ours, counters, plain, histograms } = both()
  for (const counter of counters) counter.inc({ tool: 'calculate', outcome: 'success' })
  for (const counter of plain) counter.inc()
  for (const histogram of histograms) histogram.observe({ route: '/mcp', status_code: 200 }, 0.05)
  theirs.resetMetrics()
  ours.resetMetrics()
  t.equal(await ours.metrics(), await theirs.metrics())
  for (const histogram of histograms) histogram.observe({ route: '/mcp', status_code: 200 }, 0.05)
  t.equal(await ours.metrics(), await theirs.metrics(), 'counted again after the reset')
})
