import { setTimeout as sleep } from 'node:timers/promises'
import { test } from 'tap'
import { startRedis } from './helpers/processes.js'
import { startNode } from './helpers/nodes.js'
import { callTool, initialize } from './helpers/raw-client.js'
import { MCP_HEADERS, rawCall, rawSession, startServer } from './helpers/server.js'
import { logDigest } from '../plugins/request-log.js'
import { needs } from './helpers/needs.js'

test('in Redis mode one rate limit holds across nodes', { skip: needs('redis-server') }, async t => {
  const redis = await startRedis()
  const env = { USE_REDIS: 'true', REDIS_URL: redis.url, RATE_LIMIT_MAX: '10', RATE_LIMIT_WINDOW_MS: '60000' }
  const a = await startNode('limit-a', env)
  const b = await startNode('limit-b', env)
  t.teardown(async () => {
    await Promise.all([a.kill(), b.kill()])
    await redis.stop()
  })
  // initialize counts for the address; notifications/initialized is the session's first request.
  const sessionId = await initialize(a.mcpUrl)
  const statuses: number[] = []
  let refused: Awaited<ReturnType<typeof callTool>> | undefined
  for (let i = 0; i < 11; i++) {
    const answer = await callTool((i % 2 === 0 ? a : b).mcpUrl, sessionId, 'calculate', { a: i, b: 1, op: 'add' })
    statuses.push(answer.status)
    if (answer.status === 429) refused = answer
  }
  t.same(statuses, [200, 200, 200, 200, 200, 200, 200, 200, 200, 429, 429], 'ten requests in the window, whichever node served them')
  t.equal(refused?.messages[0].error.code, -32000)
  t.ok(Number(refused?.headers.get('retry-after')) > 0, 'Retry-After')
  t.equal(refused?.headers.get('ratelimit-limit'), '10', 'RateLimit headers')
  t.equal((await fetch(`${b.url}/health`)).status, 200, '/health is exempt')
  t.equal((await fetch(`${b.url}/metrics`)).status, 200, '/metrics is exempt')
  const metrics = await (await fetch(`${b.url}/metrics`)).text()
  t.match(metrics, /^mcp_rate_limited_requests_total [1-9]/m)
})

test('RateLimit headers come with a 429 only, unless RATE_LIMIT_HEADERS=always', async t => {
  for (const setting of ['refused', 'always']) {
    // The default is 'refused'.
    const server = await startServer({ RATE_LIMIT_MAX: '3', ...(setting === 'always' && { RATE_LIMIT_HEADERS: setting }) })
    t.teardown(() => server.close())
    const session = await rawSession(server.app)
    const call = (id: number) => server.app.inject({
      method: 'POST',
      url: '/mcp',
      headers: { ...MCP_HEADERS, 'mcp-session-id': session },
      payload: { jsonrpc: '2.0', id, method: 'tools/call', params: { name: 'calculate', arguments: { a: id, b: 1, op: 'add' } } }
    })
    const served = await call(1)
    t.equal(served.statusCode, 200)
    const names = ['ratelimit-limit', 'ratelimit-remaining', 'ratelimit-reset']
    // notifications/initialized was the session's first request, this call its second.
    t.same(names.map(name => served.headers[name]), setting === 'always' ? ['3', '1', '60'] : [undefined, undefined, undefined], `${setting}: a served request`)
    t.equal((await call(2)).statusCode, 200)
    const refused = await call(3)
    t.equal(refused.statusCode, 429, `${setting}: the session's fourth request is refused`)
    t.equal(refused.headers['ratelimit-limit'], '3', `${setting}: a refusal has them`)
    t.ok(Number(refused.headers['retry-after']) > 0)
  }
})

test('an event loop stalled past MAX_EVENT_LOOP_DELAY_MS sheds requests with 503 and Retry-After', async t => {
  const server = await startServer({ MAX_EVENT_LOOP_DELAY_MS: '5' })
  t.teardown(() => server.close())
  const session = await rawSession(server.app)
  // A loop that keeps stalling for 30 ms at a time, for longer than a sampling interval.
  const until = Date.now() + 800
  while (Date.now() < until) {
    const stall = Date.now() + 30
    while (Date.now() < stall) { /* busy */ }
    await new Promise(resolve => setImmediate(resolve))
  }
  const shed = await server.app.inject({ method: 'POST', url: '/mcp', headers: { ...MCP_HEADERS, 'mcp-session-id': session }, payload: { jsonrpc: '2.0', id: 1, method: 'ping' } })
  t.equal(shed.statusCode, 503)
  t.equal(shed.headers['retry-after'], '1')
  t.match(shed.json(), { jsonrpc: '2.0', error: { code: -32000, message: /overloaded/ }, id: null })
  const live = await server.app.inject({ method: 'GET', url: '/health/live' })
  t.equal(live.statusCode, 200, 'liveness still answers')
  await sleep(1000)
  t.equal((await rawCall(server.app, session, 2, 'get_history', {})).status, 200, 'served again once the loop recovers')
})

test('one log line per request, with request and node ids and a session digest, and no arguments or secrets', async t => {
  const lines: any[] = []
  const server = await startServer({ NODE_ID: 'log-node' }, { write: line => { lines.push(JSON.parse(line)) } })
  t.teardown(() => server.close())
  const session = await rawSession(server.app)
  lines.length = 0
  await server.app.inject({
    method: 'POST',
    url: '/mcp',
    headers: { ...MCP_HEADERS, 'mcp-session-id': session, authorization: 'Bearer secret-token', cookie: 'sid=secret-cookie' },
    payload: { jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'calculate', arguments: { a: 123456789, b: 1, op: 'add' } } }
  })
  const completed = lines.filter(l => l.msg === 'request completed')
  t.equal(completed.length, 1, 'one line for the request')
  t.match(completed[0], { reqId: /.+/, sessionId: logDigest(session), node: 'log-node', method: 'POST', url: '/mcp', statusCode: 200, level: 30 })
  const text = JSON.stringify(lines)
  t.notMatch(text, /secret-token|secret-cookie/, 'no secrets')
  t.notOk(text.includes(session), 'no session id, only its digest')
  t.notMatch(text, /123456789/, 'no tool arguments')
})
