import { mkdtemp } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { test } from 'tap'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { ElicitRequestSchema } from '@modelcontextprotocol/sdk/types.js'
import { startRedis, waitUntil } from './helpers/processes.js'
import { recordingServedBy, startTopology, type ServerNode } from './helpers/nodes.js'
import { callTool, initialize, openStream, post, request, type SseEvent } from './helpers/raw-client.js'
import { needs } from './helpers/needs.js'

type Structured = Record<string, any>

test('three nodes behind nginx round-robin share every session through Redis', { skip: needs('redis-server', 'nginx') }, async t => {
  // Append-only persistence, so the Redis restart near the end keeps the sessions.
  const redis = await startRedis(['--appendonly', 'yes', '--appendfsync', 'always'], await mkdtemp(join(tmpdir(), 'mcp-redis-')))
  const env = { USE_REDIS: 'true', REDIS_URL: redis.url, KEEPALIVE_MS: '1000' }
  const topology = await startTopology(['node-a', 'node-b', 'node-c'], env)
  const { nodes, lb } = topology
  const [a, b, c] = nodes as [ServerNode, ServerNode, ServerNode]
  t.teardown(async () => {
    await topology.stop()
    await redis.stop()
  })

  await t.test('the official SDK client through nginx: every request works, on every node', async t => {
    const servedBy: string[] = []
    const transport = new StreamableHTTPClientTransport(lb.mcpUrl, { fetch: recordingServedBy(servedBy) })
    const client = new Client({ name: 'through-nginx', version: '1.0.0' })
    await client.connect(transport)
    t.teardown(() => client.close())
    const tools = await client.listTools()
    t.ok(tools.tools.length >= 6)
    for (let i = 0; i < 6; i++) {
      const result = await client.callTool({ name: 'calculate', arguments: { a: i, b: 10, op: 'multiply' } })
      t.equal((result.structuredContent as Structured).result, i * 10)
    }
    const history = await client.callTool({ name: 'get_history', arguments: { limit: 100 } })
    t.same((history.structuredContent as Structured).entries.map((e: Structured) => e.result), [0, 10, 20, 30, 40, 50])
    const { contents } = await client.readResource({ uri: 'session://info' })
    t.equal(JSON.parse((contents[0] as { text: string }).text).clientName, 'through-nginx')
    t.ok((await client.getPrompt({ name: 'explain-calculation', arguments: { operation: 'add' } })).messages.length > 0)
    t.same(new Set(servedBy), new Set(['node-a', 'node-b', 'node-c']), 'requests reached all three nodes')
    t.ok(servedBy.every((node, i) => i === 0 || node !== servedBy[i - 1]), `consecutive requests went to different nodes: ${servedBy.join(' ')}`)
    await transport.terminateSession()
  })

  await t.test('a client rotating nodes itself runs the whole lifecycle', async t => {
    const sessionId = await initialize(a.mcpUrl)
    const served: string[] = []
    let i = 0
    for (const node of [b, c, a, b, c]) {
      const answer = await callTool(node.mcpUrl, sessionId, 'calculate', { a: ++i, b: 1, op: 'add' })
      t.equal(answer.status, 200)
      t.equal(answer.messages[0].result.structuredContent.result, i + 1)
      served.push(answer.servedBy!)
    }
    t.same(served, ['node-b', 'node-c', 'node-a', 'node-b', 'node-c'])
    const read = await request(c.mcpUrl, sessionId, 'resources/read', { uri: 'calculator://history/3' })
    t.equal(JSON.parse(read.messages[0].result.contents[0].text).result, 4, 'an id made on one node resolves on another')
    const level = await request(b.mcpUrl, sessionId, 'logging/setLevel', { level: 'warning' })
    t.equal(level.status, 200)
    const info = await request(a.mcpUrl, sessionId, 'resources/read', { uri: 'session://info' })
    t.equal(JSON.parse(info.messages[0].result.contents[0].text).logLevel, 'warning', 'a log level set on one node holds on another')
  })

  await t.test('10 clients x 50 concurrent calls on one session over all nodes: exactly 500 entries', async t => {
    const sessionId = await initialize(lb.mcpUrl)
    const before = JSON.parse((await request(a.mcpUrl, sessionId, 'resources/read', { uri: 'session://info' })).messages[0].result.contents[0].text)
    const calls = []
    for (let client = 0; client < 10; client++) {
      for (let call = 0; call < 50; call++) {
        const node = nodes[(client + call) % 3]!
        calls.push(callTool(node.mcpUrl, sessionId, 'calculate', { a: client * 100 + call, b: 0, op: 'add' }))
      }
    }
    const answers = await Promise.all(calls)
    t.equal(answers.filter(x => x.status === 200 && x.messages[0].result.isError !== true).length, 500, 'all 500 calls succeeded')
    t.equal(new Set(answers.map(x => x.servedBy)).size, 3)
    const history = await callTool(b.mcpUrl, sessionId, 'get_history', { limit: 1000 })
    const entries = history.messages[0].result.structuredContent.entries as Structured[]
    t.equal(entries.length, 500)
    t.equal(new Set(entries.map(e => e.id)).size, 500, 'every entry has its own id')
    t.same(entries.map(e => e.result).sort((x, y) => x - y), answers.map((_, i) => i).map(i => Math.floor(i / 50) * 100 + (i % 50)).sort((x, y) => x - y))
    const info = JSON.parse((await request(c.mcpUrl, sessionId, 'resources/read', { uri: 'session://info' })).messages[0].result.contents[0].text)
    t.equal(info.calculationCount, 500)
    // The first read counted itself; then 500 calls, get_history and this read.
    t.equal(info.requestCount, before.requestCount + 500 + 1 + 1, 'the request counter is exact')
  })

  await t.test('a GET stream on node A receives the update caused by a call on node C', async t => {
    const sessionId = await initialize(b.mcpUrl)
    t.equal((await request(b.mcpUrl, sessionId, 'resources/subscribe', { uri: 'calculator://history' })).status, 200)
    const stream = await openStream(a.mcpUrl, sessionId)
    t.teardown(() => stream.close())
    t.equal(stream.status, 200)
    t.equal(stream.servedBy, 'node-a')
    await callTool(c.mcpUrl, sessionId, 'calculate', { a: 1, b: 2, op: 'add' })
    const events = await stream.until(es => es.some(e => e.message?.method === 'notifications/resources/updated'))
    t.same(events.find(e => e.message?.method === 'notifications/resources/updated')!.message.params, { uri: 'calculator://history' })
  })

  await t.test('a server request answered through another node resolves the waiting call', async t => {
    const servedBy: string[] = []
    const transport = new StreamableHTTPClientTransport(lb.mcpUrl, { fetch: recordingServedBy(servedBy) })
    const client = new Client({ name: 'eliciting', version: '1.0.0' }, { capabilities: { elicitation: {} } })
    let asked = 0
    client.setRequestHandler(ElicitRequestSchema, async () => { asked++; return { action: 'accept', content: { confirm: true } } })
    await client.connect(transport)
    t.teardown(() => client.close())
    await client.callTool({ name: 'calculate', arguments: { a: 1, b: 1, op: 'add' } })
    const cleared = await client.callTool({ name: 'clear_history', arguments: {} })
    t.equal(asked, 1, 'the client was asked to confirm')
    t.equal((cleared.structuredContent as Structured).cleared, 1)
    const callIndex = servedBy.length - 2
    t.not(servedBy[callIndex + 1], servedBy[callIndex], `the answer went to ${servedBy[callIndex + 1]}, the call ran on ${servedBy[callIndex]}`)
  })

  await t.test('DELETE on one node gives 404 on the others, even where the session is cached', async t => {
    const sessionId = await initialize(a.mcpUrl)
    for (const node of nodes) t.equal((await callTool(node.mcpUrl, sessionId, 'get_history', {})).status, 200)
    const deleted = await fetch(b.mcpUrl, { method: 'DELETE', headers: { 'mcp-session-id': sessionId } })
    t.equal(deleted.status, 200)
    for (const node of nodes) {
      const answer = await callTool(node.mcpUrl, sessionId, 'get_history', {})
      t.equal(answer.status, 404, `${node.id} answers 404`)
      t.equal(answer.messages[0].error.code, -32001)
    }
  })

  await t.test('after SIGKILL of the GET stream\'s node, Last-Event-ID on another node replays exactly the missed events', async t => {
    const sessionId = await initialize(b.mcpUrl)
    await request(b.mcpUrl, sessionId, 'resources/subscribe', { uri: 'calculator://history' })
    await request(b.mcpUrl, sessionId, 'logging/setLevel', { level: 'info' })
    const stream = await openStream(a.mcpUrl, sessionId)
    await callTool(b.mcpUrl, sessionId, 'calculate', { a: 1, b: 1, op: 'add' })
    const seen = await stream.until(es => es.filter(e => e.message !== undefined).length >= 2)
    const lastSeen = seen.filter(e => e.id !== undefined).at(-1)!
    await a.kill('SIGKILL')
    stream.close()
    const missedCalls = []
    for (let i = 2; i <= 4; i++) missedCalls.push((await callTool(c.mcpUrl, sessionId, 'calculate', { a: i, b: i, op: 'multiply' })).status)
    t.same(missedCalls, [200, 200, 200])
    const resumed = await openStream(b.mcpUrl, sessionId, lastSeen.id)
    t.teardown(() => resumed.close())
    const replayed = await resumed.until(es => es.filter((e: SseEvent) => e.message?.method === 'notifications/message').length >= 3)
    await sleep(300)
    const messages = replayed.filter(e => e.message !== undefined).map(e => e.message)
    t.same(messages.map(m => m.method), [
      'notifications/resources/updated', 'notifications/message',
      'notifications/resources/updated', 'notifications/message',
      'notifications/resources/updated', 'notifications/message'
    ], 'each missed event once, in order')
    t.same(messages.filter(m => m.method === 'notifications/message').map(m => m.params.data.result), [4, 9, 16])
    t.equal(new Set(replayed.map(e => e.id)).size, replayed.length, 'no event twice')
    await a.start()
  })

  await t.test('killing a node mid-run loses no acknowledged calculation', async t => {
    const sessionId = await initialize(lb.mcpUrl)
    const acknowledged: string[] = []
    let failed = 0
    const worker = async (w: number) => {
      for (let i = 0; i < 40; i++) {
        try {
          const answer = await callTool(lb.mcpUrl, sessionId, 'calculate', { a: w, b: i, op: 'add' })
          if (answer.status === 200 && answer.messages[0]?.result?.structuredContent !== undefined) acknowledged.push(answer.messages[0].result.structuredContent.calculationId)
          else failed++
        } catch { failed++ }
      }
    }
    const load = Promise.all([0, 1, 2, 3, 4].map(worker))
    await sleep(150)
    await b.kill('SIGKILL')
    await load
    const history = await callTool(a.mcpUrl, sessionId, 'get_history', { limit: 1000 })
    const ids = new Set((history.messages[0].result.structuredContent.entries as Structured[]).map(e => e.id))
    t.ok(acknowledged.length > 100, `${acknowledged.length} calls acknowledged, ${failed} failed`)
    t.same(acknowledged.filter(id => !ids.has(id)), [], 'every acknowledged calculation is in the history')
    await b.start()
  })

  await t.test('Redis paused behind nginx: every answer is JSON, the failures 503 with Retry-After', async t => {
    const sessionId = await initialize(lb.mcpUrl)
    redis.process.kill('SIGSTOP')
    let answers: Awaited<ReturnType<typeof callTool>>[]
    try {
      answers = await Promise.all(Array.from({ length: 12 }, (_, i) => callTool(lb.mcpUrl, sessionId, 'calculate', { a: i, b: 1, op: 'add' })))
    } finally {
      redis.process.kill('SIGCONT')
    }
    const statuses = answers.map(a => a.status)
    t.comment(`statuses while Redis was paused: ${JSON.stringify(statuses)}`)
    t.ok(answers.every(a => a.headers.get('content-type')?.startsWith('application/json')), 'no HTML page')
    t.ok(statuses.includes(503), 'the pause was felt')
    for (const answer of answers.filter(a => a.status === 503)) {
      t.equal(answer.messages[0].error.code, -32000)
      t.ok(Number(answer.headers.get('retry-after')) >= 1, 'Retry-After')
    }
    await waitUntil('the session to answer again', async () => (await callTool(lb.mcpUrl, sessionId, 'get_history', {})).status === 200, 15_000)
  })

  await t.test('Redis stopped for a few seconds: 503 with Retry-After, no crash, then recovery', async t => {
    const sessionId = await initialize(a.mcpUrl)
    await callTool(a.mcpUrl, sessionId, 'calculate', { a: 2, b: 3, op: 'add' })
    await redis.stop()
    const during = await callTool(b.mcpUrl, sessionId, 'calculate', { a: 1, b: 1, op: 'add' })
    t.equal(during.status, 503)
    t.equal(during.messages[0].error.code, -32000)
    t.ok(Number(during.headers.get('retry-after')) >= 1)
    const fresh = await post(c.mcpUrl, { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'x', version: '1' } } })
    t.equal(fresh.status, 503, 'initialize too')
    const health = await fetch(`${a.url}/health`)
    t.equal(health.status, 503)
    t.match(await health.json(), { status: 'unavailable', storage: 'down', reason: /Redis/ })
    t.equal((await fetch(`${a.url}/health/live`)).status, 200, 'the process is alive')
    await redis.start()
    await waitUntil('the nodes to reconnect', async () => {
      const answers = await Promise.all(nodes.map(n => fetch(`${n.url}/health`)))
      return answers.every(r => r.status === 200)
    }, 15_000)
    for (const node of nodes) {
      const answer = await callTool(node.mcpUrl, sessionId, 'get_history', {})
      t.equal(answer.status, 200, `${node.id} serves the session again`)
      t.same(answer.messages[0].result.structuredContent.entries.map((e: Structured) => e.result), [5], 'the data is intact')
    }
  })
})
