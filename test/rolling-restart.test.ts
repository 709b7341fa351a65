import { setTimeout as sleep } from 'node:timers/promises'
import { test } from 'tap'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { startRedis, waitUntil } from './helpers/processes.js'
import { startTopology } from './helpers/nodes.js'
import { needs } from './helpers/needs.js'

type Structured = Record<string, any>

const CLIENTS = 4

interface LoadClient {
  client: Client
  acknowledged: string[]
  failures: string[]
  resumed: number
  updates: number
}

test('restarting every node in turn under load fails no call and loses no entry', { skip: needs('redis-server', 'nginx') }, async t => {
  const redis = await startRedis()
  const env = { USE_REDIS: 'true', REDIS_URL: redis.url, SSE_RETRY_MS: '200', KEEPALIVE_MS: '1000', HISTORY_LIMIT: '100000' }
  const topology = await startTopology(['roll-a', 'roll-b', 'roll-c'], env)
  const { nodes, lb } = topology
  t.teardown(async () => {
    await topology.stop()
    await redis.stop()
  })

  const clients: LoadClient[] = []
  for (let i = 0; i < CLIENTS; i++) {
    const load: LoadClient = { client: new Client({ name: `load-${i}`, version: '1.0.0' }), acknowledged: [], failures: [], resumed: 0, updates: 0 }
    const transport = new StreamableHTTPClientTransport(lb.mcpUrl, {
      fetch: async (input, init) => {
        const response = await fetch(input, init)
        const headers = new Headers(init?.headers)
        if (init?.method === 'GET' && headers.has('last-event-id') && response.ok) load.resumed++
        return response
      }
    })
    load.client.fallbackNotificationHandler = async notification => {
      if (notification.method === 'notifications/resources/updated') load.updates++
    }
    await load.client.connect(transport)
    await load.client.subscribeResource({ uri: 'calculator://history' })
    clients.push(load)
  }
  t.teardown(() => Promise.all(clients.map(c => c.client.close())))

  const state = { running: true }
  let made = 0
  const loops = clients.map(async (load, c) => {
    for (let i = 0; state.running; i++) {
      made++
      try {
        const result = await load.client.callTool({ name: 'calculate', arguments: { a: c, b: i, op: 'add' } })
        if (result.isError === true) load.failures.push(JSON.stringify(result.content))
        else load.acknowledged.push((result.structuredContent as Structured).calculationId)
      } catch (error) {
        load.failures.push(String(error))
      }
    }
  })

  await sleep(500)
  const shutdowns: number[] = []
  for (const node of nodes) {
    const started = performance.now()
    await node.kill('SIGTERM')
    shutdowns.push(Math.round(performance.now() - started))
    t.equal(node.process.exitCode, 0, `${node.id} shut down cleanly`)
    await sleep(300)
    await node.start()
    await sleep(500)
  }
  state.running = false
  await Promise.all(loops)

  const failures = clients.flatMap(c => c.failures)
  const acknowledged = clients.reduce((n, c) => n + c.acknowledged.length, 0)
  const resumed = clients.reduce((n, c) => n + c.resumed, 0)
  t.comment(`rolling restart: ${made} tool calls made, ${acknowledged} acknowledged, ${failures.length} failed, ${resumed} GET streams resumed with Last-Event-ID; shutdowns took ${shutdowns.join(', ')} ms`)
  t.same(failures, [], 'no tool call failed')
  t.ok(acknowledged > 50, 'the load kept running')
  t.ok(resumed >= 3, 'GET streams ended by the stopping nodes were resumed')

  for (const load of clients) {
    const { contents } = await load.client.readResource({ uri: 'calculator://history' })
    const ids = JSON.parse((contents[0] as { text: string }).text).map((e: Structured) => e.id)
    t.equal(new Set(ids).size, ids.length, 'no entry twice')
    t.same([...ids].sort(), [...load.acknowledged].sort(), 'exactly the acknowledged calculations are in the history')
    const before = load.updates
    await load.client.callTool({ name: 'calculate', arguments: { a: 1, b: 1, op: 'add' } })
    await waitUntil('an update on the resumed stream', async () => load.updates > before, 5000)
  }
  t.pass('every client\'s GET stream delivers again after the restarts')
})
