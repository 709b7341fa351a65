import { test } from 'tap'
import { startRedis } from './helpers/processes.js'
import { connect, startServer } from './helpers/server.js'
import { needs } from './helpers/needs.js'

type Recalled = { value: number | null, storedAt: string | null }

test('memory_store and memory_recall keep one number per session', async t => {
  const server = await startServer()
  t.teardown(() => server.close())
  const first = await connect(server.mcpUrl)
  const second = await connect(server.mcpUrl)
  t.teardown(async () => { await first.client.close(); await second.client.close() })

  const empty = await first.client.callTool({ name: 'memory_recall', arguments: {} })
  t.same(empty.structuredContent, { value: null, storedAt: null }, 'empty at first')
  await first.client.callTool({ name: 'memory_store', arguments: { value: 42 } })
  await first.client.callTool({ name: 'memory_store', arguments: { value: 7.5 } })
  const recalled = (await first.client.callTool({ name: 'memory_recall', arguments: {} })).structuredContent as Recalled
  t.equal(recalled.value, 7.5, 'the last stored number')
  t.type(recalled.storedAt, 'string')
  t.same((await second.client.callTool({ name: 'memory_recall', arguments: {} })).structuredContent, { value: null, storedAt: null }, 'another session has its own memory')
  const refused = await first.client.callTool({ name: 'memory_store', arguments: { value: 'x' } })
  t.equal(refused.isError, true, 'a value that is not a number is refused')
  t.equal(((await first.client.callTool({ name: 'memory_recall', arguments: {} })).structuredContent as Recalled).value, 7.5, 'and changes nothing')
})

test('in Redis mode any node recalls what another stored', { skip: needs('redis-server') }, async t => {
  const redis = await startRedis()
  const env = { USE_REDIS: 'true', REDIS_URL: redis.url }
  const a = await startServer(env)
  const b = await startServer(env)
  t.teardown(async () => {
    await a.close()
    await b.close()
    await redis.stop()
  })
  const client = await connect(a.mcpUrl)
  t.teardown(() => client.client.close())
  await client.client.callTool({ name: 'memory_store', arguments: { value: 3 } })
  const headers = { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-session-id': client.transport.sessionId! }
  const response = await fetch(b.mcpUrl, { method: 'POST', headers, body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'memory_recall', arguments: {} } }) })
  t.equal((await response.json()).result.structuredContent.value, 3)
})
