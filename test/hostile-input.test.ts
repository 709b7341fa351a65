import { setFlagsFromString } from 'node:v8'
import { runInNewContext } from 'node:vm'
import { test, type Test } from 'tap'
import fc from 'fast-check'
import { startRedis } from './helpers/processes.js'
import { rawRequest, type RawResponse } from './helpers/raw-http.js'
import { startServer, type TestServer } from './helpers/server.js'
import { callTool, initialize, request } from './helpers/raw-client.js'
import { needs } from './helpers/needs.js'

setFlagsFromString('--expose-gc')
const gc = runInNewContext('gc') as () => void

const SEED = Number(process.env.FUZZ_SEED ?? 20261126)
const RUNS = Number(process.env.FUZZ_RUNS ?? 2500)
const BODY_LIMIT = 65_536
/** Every status the README documents for /mcp; 503 only with Retry-After. */
const DOCUMENTED = new Set([200, 202, 400, 403, 404, 405, 406, 409, 413, 415, 429, 431, 503])

interface HostileRequest {
  method: string
  path: string
  headers: Array<[string, string]>
  body: Buffer
}

const ACCEPTS = ['application/json, text/event-stream', 'application/json', 'text/event-stream', '*/*', 'text/html', '', 'application/json;q=0, text/event-stream;q=0']
const TYPES = ['application/json', 'application/json; charset=utf-8', 'text/plain', 'application/x-www-form-urlencoded', 'multipart/form-data; boundary=x', '', 'application/jsonx']
const VERSIONS = ['2025-11-25', '2025-06-18', '2025-03-26', '2024-11-05', '2026-07-28', '1999-01-01', 'latest', '', '2025-11-25, 2025-06-18']
const METHODS = ['initialize', 'notifications/initialized', 'ping', 'tools/list', 'tools/call', 'resources/list', 'resources/read',
  'resources/templates/list', 'resources/subscribe', 'resources/unsubscribe', 'prompts/list', 'prompts/get', 'completion/complete',
  'logging/setLevel', 'notifications/cancelled', 'notifications/progress', 'sampling/createMessage', 'no/such/method', '', 'rpc.discover']
const TOOLS = ['calculate', 'batch_calculate', 'advanced_calculate', 'demo_progress', 'get_history', 'clear_history', 'nope', '']

/** Numbers as JSON text, including ones JSON.parse turns into Infinity, -0 or a rounded integer. */
const numberText = fc.oneof(
  fc.double().filter(Number.isFinite).map(String),
  fc.constantFrom('1e400', '-1e400', '1e-400', '-0', '123456789012345678901234567890', '0.1e-5', '9007199254740993', '170', '171', '-1')
)

const oddString = fc.oneof(
  fc.string({ unit: 'binary', maxLength: 40 }),
  fc.constantFrom('\ud800', '\udfff', '\u0000', '\u202e', '𝔘𝔫𝔦𝔠𝔬𝔡𝔢', 'a'.repeat(20_000), '__proto__', 'constructor', '../../etc/passwd', '%00')
)

function hostile (sessions: string[]): fc.Arbitrary<HostileRequest> {
  const sessionId = fc.oneof(
    { weight: 8, arbitrary: fc.constantFrom(...sessions) },
    fc.uuid(),
    fc.string({ minLength: 129, maxLength: 3000 }),
    fc.string({ unit: 'binary-ascii', maxLength: 60 }).map(s => s.replace(/[\r\n]/g, '')),
    fc.constantFrom('', 'ÿÿÿé', '\u00a0', 'null', '0')
  )
  const id = fc.oneof(fc.integer(), fc.string({ maxLength: 20 }), fc.constantFrom(null, 1.5, true, [], {}, 2 ** 60))
  const params = fc.oneof(
    fc.record({ name: fc.constantFrom(...TOOLS), arguments: fc.dictionary(fc.constantFrom('a', 'b', 'op', 'value', 'operation', 'base', 'steps', 'limit', 'calculations', 'stream', 'x'), fc.anything({ maxDepth: 3 })) }),
    fc.record({ uri: fc.oneof(fc.constantFrom('calculator://history', 'calculator://history/1', 'calculator://history/-1', 'calculator://history/99999999999999999999', 'session://info', 'calculator://stats'), oddString) }),
    fc.record({ level: fc.oneof(fc.constantFrom('debug', 'info', 'emergency'), oddString) }),
    fc.record({ protocolVersion: fc.constantFrom(...VERSIONS), capabilities: fc.anything({ maxDepth: 4 }), clientInfo: fc.anything({ maxDepth: 2 }) }),
    fc.record({ ref: fc.anything({ maxDepth: 2 }), argument: fc.anything({ maxDepth: 2 }) }),
    fc.anything({ maxDepth: 4 })
  )
  const message = fc.oneof(
    fc.record({ jsonrpc: fc.constant('2.0'), id, method: fc.constantFrom(...METHODS), params }, { requiredKeys: ['jsonrpc', 'method'] }),
    fc.record({ jsonrpc: fc.constantFrom('2.0', '1.0', 2), id, result: fc.anything({ maxDepth: 2 }) }, { requiredKeys: ['jsonrpc'] }),
    fc.record({ jsonrpc: fc.constant('2.0'), id, error: fc.record({ code: fc.integer(), message: fc.string() }) }),
    fc.anything({ maxDepth: 3 })
  )
  const calculation = fc.tuple(numberText, numberText, fc.constantFrom('add', 'subtract', 'multiply', 'divide', 'power', 'modulo', 'root'))
    .map(([a, b, op]) => `{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"calculate","arguments":{"a":${a},"b":${b},"op":"${op}"}}}`)
  const body = fc.oneof(
    { weight: 4, arbitrary: message.map(m => JSON.stringify(m) ?? 'null') },
    { weight: 2, arbitrary: fc.array(message, { maxLength: 130 }).map(ms => JSON.stringify(ms)) },
    { weight: 2, arbitrary: calculation },
    { weight: 1, arbitrary: message.chain(m => { const text = JSON.stringify(m) ?? ''; return fc.nat(text.length).map(n => text.slice(0, n)) }) },
    { weight: 1, arbitrary: fc.integer({ min: 1, max: 30_000 }).map(depth => '['.repeat(depth) + ']'.repeat(depth)) },
    { weight: 1, arbitrary: fc.integer({ min: 1, max: 5_000 }).map(depth => `{"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25","clientInfo":{"name":"deep","version":"1"},"capabilities":${'{"a":'.repeat(depth)}1${'}'.repeat(depth)}}}`) },
    { weight: 1, arbitrary: oddString.map(s => `{"jsonrpc":"2.0","id":"${s}","method":"tools/call","params":{"name":"${s}"}}`) },
    { weight: 1, arbitrary: fc.uint8Array({ maxLength: 300 }).map(bytes => Buffer.from(bytes).toString('latin1')) },
    { weight: 1, arbitrary: fc.integer({ min: BODY_LIMIT - 10, max: BODY_LIMIT * 3 }).map(n => `{"jsonrpc":"2.0","id":1,"method":"ping","params":{"pad":"${'x'.repeat(n)}"}}`) }
  ).map(text => Buffer.from(text, 'latin1'))
  const header = (name: string, values: fc.Arbitrary<string>, weight = 1) => fc.oneof(
    { weight: 2, arbitrary: fc.constant(undefined) },
    { weight, arbitrary: values.map(v => [name, v] as [string, string]) }
  )
  return fc.record({
    method: fc.constantFrom('POST', 'POST', 'POST', 'POST', 'GET', 'DELETE', 'PUT', 'PATCH', 'HEAD', 'OPTIONS'),
    path: fc.constantFrom('/mcp', '/mcp', '/mcp', '/mcp?x=1', '/MCP', '/mcp/', '/health', '/metrics', '/%', '/' + 'a'.repeat(3000)),
    accept: header('Accept', fc.constantFrom(...ACCEPTS), 6),
    type: header('Content-Type', fc.constantFrom(...TYPES), 6),
    version: header('MCP-Protocol-Version', fc.constantFrom(...VERSIONS)),
    session: header('Mcp-Session-Id', sessionId, 6),
    lastEvent: header('Last-Event-ID', fc.oneof(fc.string({ maxLength: 80 }), fc.constantFrom('get.1', 'get.0-0', 'x.99999999999999-0', '.'))),
    origin: header('Origin', fc.constantFrom('http://localhost:6274', 'http://evil.example.com', 'null', 'file://', '')),
    huge: fc.oneof({ weight: 20, arbitrary: fc.constant(undefined) }, { weight: 1, arbitrary: fc.integer({ min: 1, max: 40_000 }).map(n => ['X-Padding', 'p'.repeat(n)] as [string, string]) }),
    body
  }).map(({ method, path, body, ...headers }) => ({
    method,
    path,
    headers: Object.values(headers).filter((h): h is [string, string] => h !== undefined),
    body: method === 'GET' || method === 'HEAD' ? Buffer.alloc(0) : body
  }))
}

function send (port: number, r: HostileRequest): Promise<RawResponse> {
  const lines = [`${r.method} ${r.path} HTTP/1.1`, `Host: 127.0.0.1:${port}`, 'Connection: close', ...r.headers.map(([k, v]) => `${k}: ${v}`), `Content-Length: ${r.body.length}`]
  return rawRequest(port, Buffer.from(`${lines.join('\r\n')}\r\n\r\n`, 'latin1'), r.body)
}

/** The invariants every answer must keep; returns what is wrong, or undefined. */
function violation (r: HostileRequest, response: RawResponse): string | undefined {
  if (response.truncated) return 'the response was cut short'
  if (!DOCUMENTED.has(response.status) && !(r.path !== '/mcp' && !r.path.startsWith('/mcp?'))) return `undocumented status ${response.status}`
  if (response.status >= 500 && response.status !== 503) return `server error ${response.status}`
  if (response.status === 503 && response.headers['retry-after'] === undefined) return '503 without Retry-After'
  if (response.status === 202 && response.body.length > 0) return '202 with a body'
  const type = response.headers['content-type'] ?? ''
  if (response.body.length === 0 || !type.startsWith('application/json')) return undefined
  let body: any
  try { body = JSON.parse(response.body.toString()) } catch { return `a body that is not JSON: ${response.body.toString().slice(0, 100)}` }
  if (r.path.startsWith('/health') || r.path === '/metrics') return undefined
  if (response.status >= 400) {
    if (body?.jsonrpc !== '2.0' || !Number.isInteger(body?.error?.code) || typeof body?.error?.message !== 'string') return `not a JSON-RPC error: ${response.body.toString().slice(0, 200)}`
    return undefined
  }
  for (const message of Array.isArray(body) ? body : [body]) {
    if (message?.jsonrpc !== '2.0' || !('result' in message || 'error' in message)) return `not a JSON-RPC response: ${JSON.stringify(message).slice(0, 200)}`
    if ('error' in message && message.error.code === -32603 && message.error.message !== 'Internal error') return `an internal error leaked detail: ${message.error.message.slice(0, 200)}`
  }
  return undefined
}

async function bystanderState (server: TestServer, sessionId: string) {
  const info = JSON.parse((await request(server.mcpUrl, sessionId, 'resources/read', { uri: 'session://info' })).messages[0].result.contents[0].text)
  const history = (await callTool(server.mcpUrl, sessionId, 'get_history', { limit: 1000 })).messages[0].result.structuredContent
  const stats = JSON.parse((await request(server.mcpUrl, sessionId, 'resources/read', { uri: 'calculator://stats' })).messages[0].result.contents[0].text)
  return { calculationCount: info.calculationCount, logLevel: info.logLevel, subscriptions: info.subscriptions, history, stats }
}

async function hostileRun (t: Test, env: Record<string, string>) {
  const server = await startServer({ BODY_LIMIT_BYTES: String(BODY_LIMIT), RATE_LIMIT_MAX: '100000000', MAX_EVENT_LOOP_DELAY_MS: '0', ...env })
  t.teardown(() => server.close())
  const port = Number(new URL(server.url).port)

  const bystander = await initialize(server.mcpUrl)
  await callTool(server.mcpUrl, bystander, 'calculate', { a: 6, b: 7, op: 'multiply' })
  await request(server.mcpUrl, bystander, 'logging/setLevel', { level: 'warning' })
  await request(server.mcpUrl, bystander, 'resources/subscribe', { uri: 'calculator://history' })
  const before = await bystanderState(server, bystander)
  const victims = [await initialize(server.mcpUrl), await initialize(server.mcpUrl)]

  gc()
  const heapBefore = process.memoryUsage().heapUsed
  const statuses = new Map<number, number>()
  const created: string[] = []
  const started = Date.now()
  const outcome = await fc.check(fc.asyncProperty(hostile(victims), async r => {
    const response = await send(port, r)
    statuses.set(response.status, (statuses.get(response.status) ?? 0) + 1)
    const session = response.headers['mcp-session-id']
    if (session !== undefined && r.method === 'POST') created.push(session)
    const problem = violation(r, response)
    if (problem !== undefined) throw new Error(`${problem} -- request: ${r.method} ${r.path} ${JSON.stringify(r.headers).slice(0, 300)} ${r.body.toString('latin1').slice(0, 300)}`)
  }), { seed: SEED, numRuns: RUNS, interruptAfterTimeLimit: 120_000, markInterruptAsFailure: false })
  // The counterexample can be megabytes of JSON: report its start.
  t.notOk(outcome.failed, outcome.failed ? `seed ${SEED}, path ${outcome.counterexamplePath}: ${String(outcome.errorInstance).slice(0, 1500)}` : 'every answer kept the invariants')
  t.comment(`${RUNS} hostile requests in ${Date.now() - started} ms (seed ${SEED}); statuses ${JSON.stringify(Object.fromEntries(statuses))}`)
  t.ok(statuses.size >= 8, 'the run reached many different answers')

  t.equal((await fetch(`${server.url}/health`)).status, 200, 'the server is alive and ready')
  t.same(await bystanderState(server, bystander), before, 'the unrelated session\'s history, counters and settings are unchanged')

  for (const id of [...created, ...victims]) await fetch(server.mcpUrl, { method: 'DELETE', headers: { 'mcp-session-id': id } })
  gc()
  const grown = (process.memoryUsage().heapUsed - heapBefore) / 1024 / 1024
  t.comment(`heap after the run: ${grown.toFixed(1)} MiB over its start`)
  t.ok(grown < 25, `memory is back near its start (${grown.toFixed(1)} MiB)`)
}

test('hostile input in memory mode', async t => hostileRun(t, {}))

test('hostile input in Redis mode', { skip: needs('redis-server') }, async t => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  await hostileRun(t, { USE_REDIS: 'true', REDIS_URL: redis.url })
})
