import { test, type Test } from 'tap'
import type { LightMyRequestResponse } from 'fastify'
import { INITIALIZE, MCP_HEADERS, rawCall, rawSession, startServer } from './helpers/server.js'
import { MemorySessionStore } from '../src/stores/memory-session-store.js'

function rpcError (t: Test, response: LightMyRequestResponse, status: number, code: number, message?: RegExp) {
  t.equal(response.statusCode, status, `status ${status}`)
  const body = response.json()
  t.equal(body.jsonrpc, '2.0')
  t.equal(body.id, null)
  t.equal(body.error.code, code, `code ${code}`)
  if (message !== undefined) t.match(body.error.message, message)
}

test('every malformed request gets its documented status and a JSON-RPC error, and harms nobody', async t => {
  const server = await startServer({ BODY_LIMIT_BYTES: '2048' })
  t.teardown(() => server.close())
  const { app } = server
  server.app.log.level = 'silent'

  // An unrelated session with history, checked at the end.
  const bystander = await rawSession(app)
  await rawCall(app, bystander, 1, 'calculate', { a: 20, b: 22, op: 'add' })
  const session = await rawSession(app)
  const post = (payload: string | object, headers: Record<string, string> = {}) =>
    app.inject({ method: 'POST', url: '/mcp', headers: { ...MCP_HEADERS, 'mcp-session-id': session, ...headers }, payload })

  await t.test('400 parse error', async t => rpcError(t, await post('{"jsonrpc": "2.0", "id": 1,'), 400, -32700))
  await t.test('400 empty body', async t => rpcError(t, await post(''), 400, -32700))
  await t.test('400 not JSON-RPC', async t => {
    rpcError(t, await post({ hello: 'world' }), 400, -32600)
    rpcError(t, await post({ jsonrpc: '1.0', id: 1, method: 'ping' }), 400, -32600)
    rpcError(t, await post({ jsonrpc: '2.0', id: { nested: true }, method: 'ping' }), 400, -32600)
    rpcError(t, await post({ jsonrpc: '2.0', id: 1, method: 'ping', params: [1, 2] }), 400, -32600)
    rpcError(t, await post('"just a string"'), 400, -32600)
    rpcError(t, await post('[]'), 400, -32600, /empty batch/)
    rpcError(t, await post(Array.from({ length: 101 }, (_, i) => ({ jsonrpc: '2.0', method: 'notifications/x', params: { i } }))), 413, -32000)
  })
  await t.test('400 initialize in a batch', async t => rpcError(t, await post([INITIALIZE, { jsonrpc: '2.0', id: 5, method: 'ping' }]), 400, -32600, /alone/))
  await t.test('400 missing session id', async t => {
    const response = await app.inject({ method: 'POST', url: '/mcp', headers: MCP_HEADERS, payload: { jsonrpc: '2.0', id: 1, method: 'tools/list' } })
    rpcError(t, response, 400, -32000, /Mcp-Session-Id/)
  })
  await t.test('400 unsupported protocol version', async t => rpcError(t, await post({ jsonrpc: '2.0', id: 1, method: 'ping' }, { 'mcp-protocol-version': '1999-01-01' }), 400, -32000, /unsupported MCP-Protocol-Version/))
  await t.test('403 disallowed Origin', async t => {
    rpcError(t, await post({ jsonrpc: '2.0', id: 1, method: 'ping' }, { origin: 'http://evil.example.com' }), 403, -32000)
    const local = await post({ jsonrpc: '2.0', id: 1, method: 'ping' }, { origin: 'http://localhost:6274' })
    t.equal(local.statusCode, 200, 'a local origin on any port is allowed by default')
  })
  await t.test('404 unknown session', async t => {
    rpcError(t, await post({ jsonrpc: '2.0', id: 1, method: 'ping' }, { 'mcp-session-id': 'no-such-session' }), 404, -32001)
    rpcError(t, await post({ jsonrpc: '2.0', id: 1, method: 'ping' }, { 'mcp-session-id': 'x'.repeat(5000) }), 404, -32001)
    const get = await app.inject({ method: 'GET', url: '/mcp', headers: { accept: 'text/event-stream', 'mcp-session-id': 'no-such-session' } })
    rpcError(t, get, 404, -32001)
    const del = await app.inject({ method: 'DELETE', url: '/mcp', headers: { 'mcp-session-id': 'no-such-session' } })
    rpcError(t, del, 404, -32001)
  })
  await t.test('404 unknown path', async t => rpcError(t, await app.inject({ method: 'GET', url: '/nowhere' }), 404, -32601))
  await t.test('405 other methods', async t => {
    for (const method of ['PUT', 'PATCH', 'HEAD'] as const) {
      const response = await app.inject({ method, url: '/mcp', headers: MCP_HEADERS })
      t.equal(response.statusCode, 405, method)
      t.equal(response.headers.allow, 'GET, POST, DELETE')
    }
  })
  await t.test('406 wrong Accept', async t => {
    rpcError(t, await post({ jsonrpc: '2.0', id: 1, method: 'ping' }, { accept: 'application/json' }), 406, -32000)
    rpcError(t, await post({ jsonrpc: '2.0', id: 1, method: 'ping' }, { accept: 'text/html' }), 406, -32000)
    const get = await app.inject({ method: 'GET', url: '/mcp', headers: { accept: 'application/json', 'mcp-session-id': session } })
    rpcError(t, get, 406, -32000)
  })
  await t.test('413 body too large', async t => rpcError(t, await post({ jsonrpc: '2.0', id: 1, method: 'ping', params: { pad: 'x'.repeat(4096) } }), 413, -32000))
  await t.test('415 wrong Content-Type', async t => {
    rpcError(t, await post('{"jsonrpc":"2.0","id":1,"method":"ping"}', { 'content-type': 'text/plain' }), 415, -32000)
  })
  await t.test('400 missing session id on DELETE and GET', async t => {
    rpcError(t, await app.inject({ method: 'DELETE', url: '/mcp' }), 400, -32000)
    rpcError(t, await app.inject({ method: 'GET', url: '/mcp', headers: { accept: 'text/event-stream' } }), 400, -32000)
  })
  await t.test('a response to a request id that does not exist is accepted and ignored', async t => {
    const response = await post({ jsonrpc: '2.0', id: 424242, result: {} })
    t.equal(response.statusCode, 202)
  })
  await t.test('invalid params get -32602, not an internal error', async t => {
    const response = await post({ jsonrpc: '2.0', id: 9, method: 'tools/call', params: {} })
    t.equal(response.statusCode, 200)
    t.equal(response.json().error.code, -32602)
  })
  await t.test('unknown methods get -32601', async t => {
    const response = await post({ jsonrpc: '2.0', id: 10, method: 'no/such/method' })
    t.equal(response.json().error.code, -32601)
  })

  const health = await app.inject({ method: 'GET', url: '/health' })
  t.equal(health.statusCode, 200, 'the server is alive')
  const history = await rawCall(app, bystander, 2, 'get_history', {})
  t.same(history.body.result.structuredContent.entries.map((e: { expression: string }) => e.expression), ['20 + 22 = 42'], 'the unrelated session is intact')
})

test('429 when the rate limit is exceeded, with Retry-After', async t => {
  const server = await startServer({ RATE_LIMIT_MAX: '3', RATE_LIMIT_WINDOW_MS: '60000' })
  t.teardown(() => server.close())
  const statuses = []
  let last: LightMyRequestResponse | undefined
  for (let i = 0; i < 5; i++) {
    last = await server.app.inject({ method: 'POST', url: '/mcp', headers: { ...MCP_HEADERS, 'mcp-session-id': 'limited' }, payload: { jsonrpc: '2.0', id: i, method: 'ping' } })
    statuses.push(last.statusCode)
  }
  t.same(statuses, [404, 404, 404, 429, 429])
  rpcError(t, last!, 429, -32000, /Too Many Requests/)
  t.ok(Number(last!.headers['retry-after']) > 0)
  const health = await server.app.inject({ method: 'GET', url: '/health' })
  t.equal(health.statusCode, 200, '/health is not limited')
})

test('an unexpected error becomes a generic 500; the detail stays in the log', async t => {
  // A store whose touch has a bug stands in for a bug anywhere below the route.
  let broken = false
  class BuggyStore extends MemorySessionStore {
    override async touch (id: string) {
      if (broken) throw new Error('secret internal detail')
      return super.touch(id)
    }
  }
  const store = new BuggyStore({ ttlSeconds: 60 })
  const server = await startServer({}, undefined, store)
  t.teardown(async () => { await server.close(); await store.close() })
  const response = await fetch(new URL('/mcp', server.url), { method: 'POST', headers: { ...MCP_HEADERS, 'mcp-session-id': 'x' }, body: '{"jsonrpc":"2.0","id":1,"method":"ping"}' })
  t.equal(response.status, 404)
  broken = true
  const failed = await fetch(new URL('/mcp', server.url), { method: 'POST', headers: { ...MCP_HEADERS, 'mcp-session-id': 'x' }, body: '{"jsonrpc":"2.0","id":1,"method":"ping"}' })
  t.equal(failed.status, 500)
  const body = await failed.json()
  t.same(body, { jsonrpc: '2.0', error: { code: -32603, message: 'Internal server error' }, id: null })
})

test('a second GET stream on one session gets 409', async t => {
  const server = await startServer()
  t.teardown(() => server.close())
  const session = await rawSession(server.app)
  const headers = { accept: 'text/event-stream', 'mcp-session-id': session }
  const controller = new AbortController()
  const first = await fetch(server.mcpUrl, { headers, signal: controller.signal })
  t.equal(first.status, 200)
  t.equal(first.headers.get('content-type'), 'text/event-stream')
  t.equal(first.headers.get('x-accel-buffering'), 'no')
  const second = await fetch(server.mcpUrl, { headers })
  t.equal(second.status, 409)
  controller.abort()
})
