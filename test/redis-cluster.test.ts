import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { test } from 'tap'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { redisCli, startRedis, waitUntil, type RedisServer } from './helpers/processes.js'
import { startTopology } from './helpers/nodes.js'
import { callTool, initialize, openStream, request } from './helpers/raw-client.js'
import { needs } from './helpers/needs.js'

type Structured = Record<string, any>

test('three nodes on a three-master Redis Cluster', { skip: needs('redis-server', 'redis-cli', 'nginx') }, async t => {
  const dir = await mkdtemp(join(tmpdir(), 'mcp-cluster-'))
  const masters: RedisServer[] = []
  for (let i = 0; i < 3; i++) {
    masters.push(await startRedis(['--cluster-enabled', 'yes', '--cluster-config-file', `nodes-${i}.conf`, '--cluster-node-timeout', '2000'], dir))
  }
  t.teardown(() => Promise.all(masters.map(m => m.stop())))
  await redisCli(['--cluster', 'create', ...masters.map(m => `127.0.0.1:${m.port}`), '--cluster-replicas', '0', '--cluster-yes'])
  await waitUntil('the cluster to be ready', async () => {
    const states = await Promise.all(masters.map(m => redisCli(['-p', String(m.port), 'cluster', 'info'])))
    return states.every(s => s.includes('cluster_state:ok'))
  }, 20_000)

  const env = { REDIS_CLUSTER_NODES: masters.map(m => `127.0.0.1:${m.port}`).join(',') }
  const topology = await startTopology(['cluster-a', 'cluster-b', 'cluster-c'], env)
  const { nodes, lb } = topology
  t.teardown(() => topology.stop())

  const health = await (await fetch(`${nodes[0]!.url}/health`)).json()
  t.match(health, { status: 'ok', storageMode: 'redis' })

  await t.test('the lifecycle through nginx with the official SDK client', async t => {
    const client = new Client({ name: 'cluster-client', version: '1.0.0' })
    const transport = new StreamableHTTPClientTransport(lb.mcpUrl)
    await client.connect(transport)
    t.teardown(() => client.close())
    for (let i = 1; i <= 6; i++) {
      const result = await client.callTool({ name: 'calculate', arguments: { a: i, b: i, op: 'multiply' } })
      t.equal((result.structuredContent as Structured).result, i * i)
    }
    const history = await client.callTool({ name: 'get_history', arguments: {} })
    t.same((history.structuredContent as Structured).entries.map((e: Structured) => e.result), [1, 4, 9, 16, 25, 36])
    const one = await client.readResource({ uri: 'calculator://history/2' })
    t.equal(JSON.parse((one.contents[0] as { text: string }).text).result, 4)
    await client.subscribeResource({ uri: 'calculator://history' })
    await client.setLoggingLevel('debug')
    t.ok((await client.listPrompts()).prompts.length > 0)
    await transport.terminateSession()
    const gone = await callTool(nodes[1]!.mcpUrl, transport.sessionId ?? 'x', 'get_history', {})
    t.equal(gone.status, 404)
  })

  await t.test('10 clients x 50 concurrent calls on one session: exactly 500 entries', async t => {
    const sessionId = await initialize(lb.mcpUrl)
    const calls = []
    for (let i = 0; i < 500; i++) calls.push(callTool(nodes[i % 3]!.mcpUrl, sessionId, 'calculate', { a: i, b: 0, op: 'add' }))
    const answers = await Promise.all(calls)
    t.equal(answers.filter(a => a.status === 200).length, 500)
    const info = JSON.parse((await request(nodes[0]!.mcpUrl, sessionId, 'resources/read', { uri: 'session://info' })).messages[0].result.contents[0].text)
    t.equal(info.calculationCount, 500)
    const history = await callTool(nodes[2]!.mcpUrl, sessionId, 'get_history', { limit: 1000 })
    t.equal(history.messages[0].result.structuredContent.entries.length, 500)
  })

  await t.test('notifications cross nodes over the cluster\'s pub/sub', async t => {
    const sessionId = await initialize(nodes[0]!.mcpUrl)
    await request(nodes[1]!.mcpUrl, sessionId, 'resources/subscribe', { uri: 'calculator://history' })
    const stream = await openStream(nodes[0]!.mcpUrl, sessionId)
    t.teardown(() => stream.close())
    await callTool(nodes[2]!.mcpUrl, sessionId, 'calculate', { a: 1, b: 1, op: 'add' })
    await stream.until(es => es.some(e => e.message?.method === 'notifications/resources/updated'))
    t.pass('the GET stream on one node received the update from another')
  })
})
