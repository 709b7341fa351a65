import { setTimeout as sleep } from 'node:timers/promises'
import { test } from 'tap'
import { CallToolResultSchema } from '@modelcontextprotocol/sdk/types.js'
import { MCP_HEADERS, connect, rawCall, rawSession, startServer } from './helpers/server.js'
import { callTool, modernPost } from './helpers/raw-client.js'
import { MemorySessionStore } from '../src/stores/memory-session-store.js'

type Structured = Record<string, any>

const metric = async (url: string, name: string) => {
  const text = await (await fetch(new URL('/metrics', url))).text()
  const line = text.split('\n').find(l => l.startsWith(`${name} `))
  return line === undefined ? undefined : Number(line.split(' ')[1])
}

test('an evicted session is rebuilt just in time with its state', async t => {
  const server = await startServer({ SESSION_CACHE_MAX: '1' })
  t.teardown(() => server.close())
  // Without a GET stream: a session holding one is not pushed out of the cache.
  const first = await connect(server.mcpUrl, { elicitation: {} }, 'first-client', { getStream: false })
  t.teardown(() => first.client.close())
  await first.client.setLoggingLevel('info')
  await first.client.subscribeResource({ uri: 'calculator://history' })
  await first.client.callTool({ name: 'calculate', arguments: { a: 1, b: 2, op: 'add' } })

  // A second session takes the only cache slot: the first one's server is closed on this node.
  const second = await connect(server.mcpUrl, {}, 'second-client')
  t.teardown(() => second.client.close())
  await second.client.callTool({ name: 'calculate', arguments: { a: 10, b: 10, op: 'multiply' } })
  t.equal(server.app.sessionCache.size, 1)

  const rebuiltBefore = await metric(server.url, 'mcp_sessions_rebuilt_total')
  const progress: number[] = []
  const result = await first.client.callTool({ name: 'calculate', arguments: { a: 3, b: 4, op: 'add', stream: true } }, CallToolResultSchema, { onprogress: p => progress.push(p.progress) })
  t.equal((result.structuredContent as Structured).result, 7)
  t.same(progress, [1, 2, 3], 'progress still reaches the client after the rebuild')
  t.equal(await metric(server.url, 'mcp_sessions_rebuilt_total'), rebuiltBefore! + 1, 'the session was rebuilt')

  const history = await first.client.callTool({ name: 'get_history', arguments: {} })
  t.same((history.structuredContent as Structured).entries.map((e: Structured) => e.result), [3, 7], 'history survived eviction')
  const { contents } = await first.client.readResource({ uri: 'session://info' })
  const info = JSON.parse((contents[0] as { text: string }).text)
  t.equal(info.clientName, 'first-client', 'client info survived')
  t.equal(info.logLevel, 'info', 'log level survived')
  t.same(info.subscriptions, ['calculator://history'], 'subscriptions survived')
})

test('two sessions stay isolated', async t => {
  const server = await startServer()
  t.teardown(() => server.close())
  const [a, b] = await Promise.all([connect(server.mcpUrl), connect(server.mcpUrl)])
  t.teardown(() => Promise.all([a.client.close(), b.client.close()]))
  await a.client.callTool({ name: 'calculate', arguments: { a: 1, b: 1, op: 'add' } })
  await b.client.callTool({ name: 'calculate', arguments: { a: 5, b: 5, op: 'multiply' } })
  await b.client.callTool({ name: 'clear_history', arguments: {} })
  const history = await a.client.callTool({ name: 'get_history', arguments: {} })
  t.same((history.structuredContent as Structured).entries.map((e: Structured) => e.expression), ['1 + 1 = 2'])
  const forged = await rawCall(server.app, 'not-' + a.transport.sessionId, 1, 'get_history', {})
  t.equal(forged.status, 404)
})

test('50 concurrent calls on one session leave exactly 50 history entries', async t => {
  const server = await startServer()
  t.teardown(() => server.close())
  const { client } = await connect(server.mcpUrl)
  t.teardown(() => client.close())
  const results = await Promise.all(Array.from({ length: 50 }, (_, i) =>
    client.callTool({ name: 'calculate', arguments: { a: i, b: 1, op: 'add' } })))
  const ids = new Set(results.map(r => (r.structuredContent as Structured).calculationId))
  t.equal(ids.size, 50, 'every calculation has its own id')
  const history = await client.callTool({ name: 'get_history', arguments: { limit: 1000 } })
  const entries = (history.structuredContent as Structured).entries as Structured[]
  t.equal(entries.length, 50)
  t.same(entries.map(e => e.result).sort((x, y) => x - y), Array.from({ length: 50 }, (_, i) => i + 1))
  t.equal((history.structuredContent as Structured).total, 50)
})

test('history is bounded by HISTORY_LIMIT, oldest dropped', async t => {
  const server = await startServer({ HISTORY_LIMIT: '3' })
  t.teardown(() => server.close())
  const session = await rawSession(server.app)
  for (let i = 1; i <= 5; i++) await rawCall(server.app, session, i, 'calculate', { a: i, b: 0, op: 'add' })
  const history = await rawCall(server.app, session, 9, 'get_history', { limit: 100 })
  t.same(history.body.result.structuredContent.entries.map((e: Structured) => e.result), [3, 4, 5])
  t.equal(history.body.result.structuredContent.total, 5)
})

test('an idle session expires and then answers 404', async t => {
  const server = await startServer({ SESSION_TTL_SECONDS: '1' })
  t.teardown(() => server.close())
  const session = await rawSession(server.app)
  t.equal((await rawCall(server.app, session, 1, 'calculate', { a: 1, b: 1, op: 'add' })).status, 200)
  await sleep(600)
  t.equal((await rawCall(server.app, session, 2, 'get_history', {})).status, 200, 'activity slides the expiry')
  await sleep(1200)
  const expired = await rawCall(server.app, session, 3, 'get_history', {})
  t.equal(expired.status, 404)
  t.equal(expired.body.error.code, -32001)
})

test('closing the server does not delete sessions from the store', async t => {
  const store = new MemorySessionStore({ ttlSeconds: 60 })
  t.teardown(() => store.close())
  const server = await startServer({}, undefined, store)
  const session = await rawSession(server.app)
  await server.close()
  t.ok(await store.get(session), 'the session is still in the store after shutdown')
})

test('/health and /metrics report sessions', async t => {
  const server = await startServer()
  t.teardown(() => server.close())
  const { client } = await connect(server.mcpUrl)
  t.teardown(() => client.close())
  await client.callTool({ name: 'calculate', arguments: { a: 2, b: 2, op: 'add' } })
  await client.callTool({ name: 'calculate', arguments: { a: 2, b: 0, op: 'divide' } })
  const health = await (await fetch(new URL('/health', server.url))).json()
  t.match(health, { status: 'ok', storageMode: 'memory', sessions: 1, historyHandles: 0, cachedSessions: 1 })
  t.type(health.uptimeSeconds, 'number')
  const text = await (await fetch(new URL('/metrics', server.url))).text()
  t.match(text, /^mcp_active_sessions 1$/m)
  t.match(text, /^mcp_active_history_handles 0$/m)
  t.match(text, /^mcp_sessions_created_total 1$/m)
  t.match(text, /^mcp_tool_calls_total\{tool="calculate",outcome="success"\} 1$/m)
  t.match(text, /^mcp_tool_calls_total\{tool="calculate",outcome="error"\} 1$/m)
  t.match(text, /^mcp_calculations_total\{operation="add"\} 1$/m)
  t.match(text, /^mcp_sessions_rebuilt_total 0$/m)
  t.match(text, /^http_request_duration_seconds_count\{method="GET",route="\/health",status_code="200"\} 1$/m, 'request durations per method, route and status')
  t.match(text, /^http_request_duration_seconds_count\{method="POST",route="\/mcp",status_code="200"\} [3-9]$/m)
  t.match(text, /^http_request_duration_seconds_bucket\{le="0.005",method="POST",route="\/mcp",status_code="200"\} \d+$/m)
  t.notMatch(text, /route="\/metrics"/, '/metrics itself is not timed')

  // A history handle lives in the store like a session, and is counted apart.
  const created = await modernPost(server.mcpUrl, 'tools/call', { name: 'create_history', arguments: {} })
  t.equal(created.status, 200)
  t.match(await (await fetch(new URL('/health', server.url))).json(), { sessions: 1, historyHandles: 1 })
  const after = await (await fetch(new URL('/metrics', server.url))).text()
  t.match(after, /^mcp_active_sessions 1$/m)
  t.match(after, /^mcp_active_history_handles 1$/m)
  t.match(text, /process_cpu_seconds_total/)
  const cors = await fetch(server.mcpUrl, { method: 'OPTIONS', headers: { origin: 'http://localhost:6274', 'access-control-request-method': 'POST', 'access-control-request-headers': 'mcp-session-id' } })
  t.equal(cors.status, 204)
  t.equal(cors.headers.get('access-control-allow-origin'), 'http://localhost:6274')
  t.match(cors.headers.get('access-control-allow-headers'), /mcp-session-id/)
  const post = await fetch(server.mcpUrl, { method: 'POST', headers: { ...MCP_HEADERS, origin: 'http://localhost:6274', 'mcp-session-id': 'x' }, body: '{"jsonrpc":"2.0","id":1,"method":"ping"}' })
  t.match(post.headers.get('access-control-expose-headers'), /mcp-session-id/)
})

test('a session evicted while answering a request still answers it', async t => {
  const server = await startServer({ SESSION_CACHE_MAX: '1' })
  t.teardown(() => server.close())
  const first = await connect(server.mcpUrl, {}, 'first-client', { getStream: false })
  t.teardown(() => first.client.close())
  const slow = first.client.callTool({ name: 'demo_progress', arguments: { steps: 6 } })
  await sleep(50)
  const second = await connect(server.mcpUrl)
  t.teardown(() => second.client.close())
  t.equal(server.app.sessionCache.size, 1)
  t.same((await slow).structuredContent, { steps: 6, completed: 6 })
})

test('concurrent requests on more sessions than cache slots all succeed', async t => {
  const server = await startServer({ SESSION_CACHE_MAX: '1' })
  t.teardown(() => server.close())
  const sessions = await Promise.all(Array.from({ length: 5 }, () => rawSession(server.app)))
  const calls = await Promise.all(Array.from({ length: 40 }, (_, i) =>
    callTool(server.mcpUrl, sessions[i % 5]!, 'calculate', { a: i, b: 1, op: 'add' })))
  t.same(calls.map(c => c.status), calls.map(() => 200))
  t.same(calls.map(c => c.messages[0].result.structuredContent.result), calls.map((_, i) => i + 1))
  t.ok(await metric(server.url, 'mcp_sessions_rebuilt_total') as number > 5, 'sessions were evicted and rebuilt meanwhile')
})

test('a replay the store cannot read ends the resumed stream with a retry delay instead of hanging', async t => {
  class UnreadableStore extends MemorySessionStore {
    override async eventsAfter (): Promise<never> { throw new Error('store down') }
  }
  const store = new UnreadableStore({ ttlSeconds: 60 })
  const server = await startServer({ SSE_RETRY_MS: '250' }, undefined, store)
  t.teardown(async () => { await server.close(); await store.close() })
  const session = await rawSession(server.app)
  const response = await fetch(server.mcpUrl, { headers: { accept: 'text/event-stream', 'mcp-session-id': session, 'last-event-id': 'get.1' } })
  t.equal(response.status, 200)
  t.equal(await response.text(), 'retry: 250\n\n', 'the stream ends at once, telling the client when to retry')
})
