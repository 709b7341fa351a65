// The attacks of the hardening issue, each performed as an attacker would (real HTTP, real server
// processes, real Redis, nginx running the shipped configuration), each asserting the bound that
// now holds. Every figure that matters is printed with t.comment. Everything listens on loopback;
// a few clients connect from other 127.x addresses to act as other machines.
import { randomBytes, randomUUID } from 'node:crypto'
import { readFile } from 'node:fs/promises'
import { request as httpRequest, type IncomingHttpHeaders } from 'node:http'
import { connect as netConnect } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'
import t, { test } from 'tap'
import { Redis } from 'ioredis'
import { RECONCILE_MS } from '../plugins/rate-limit.js'
import { logDigest } from '../plugins/request-log.js'
import { startNode, startTopology, type ServerNode } from './helpers/nodes.js'
import { ownRedis, type RedisServer } from './helpers/processes.js'
import { HEADERS, callTool, initialize, modernMeta, modernPost, openStream, post, request } from './helpers/raw-client.js'

// About 30 processes are started in all (18 server nodes, 9 Redis, nginx); the file takes 1.5 to 3
// minutes on a loaded 2-core machine.
t.setTimeout(6 * 60_000)

type Json = Record<string, any>

const MB = 1024 * 1024
const V2025_03_26 = { 'mcp-protocol-version': '2025-03-26' }
let nextId = 1_000_000

/** A Redis of this test's own, and a client for looking into it; both stopped at teardown. */
async function redisOf (tt: Tap): Promise<{ redis: RedisServer, client: Redis }> {
  const { redis, connect } = await ownRedis(tt)
  return { redis, client: connect() }
}

/** What a helper needs of a test: somewhere to put its teardown. */
interface Tap { teardown (fn: () => unknown): void }

/** A server node stopped at teardown; `logLevel` is what TEST_LOG_LEVEL gives startNode. */
async function node (tt: Tap, id: string, env: Record<string, string>, logLevel = 'warn'): Promise<ServerNode> {
  const saved = process.env.TEST_LOG_LEVEL
  process.env.TEST_LOG_LEVEL = logLevel
  try {
    const started = await startNode(id, env)
    tt.teardown(() => started.kill())
    return started
  } finally {
    if (saved === undefined) delete process.env.TEST_LOG_LEVEL
    else process.env.TEST_LOG_LEVEL = saved
  }
}

const redisEnv = (redis: RedisServer) => ({ USE_REDIS: 'true', REDIS_URL: redis.url })

/** VmRSS of a process, in bytes. */
async function rss (pid: number): Promise<number> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8')
  return Number(/VmRSS:\s+(\d+) kB/.exec(status)?.[1]) * 1024
}

/** The sum of every sample of one metric on a node's /metrics. */
async function metric (server: ServerNode, name: string): Promise<number> {
  const text = await (await fetch(`${server.url}/metrics`)).text()
  let sum = 0
  for (const line of text.split('\n')) {
    if (line.startsWith(name) && (line[name.length] === ' ' || line[name.length] === '{')) sum += Number(line.slice(line.lastIndexOf(' ') + 1))
  }
  return sum
}

const usedMemory = async (client: Redis) => Number(/used_memory:(\d+)/.exec(await client.info('memory'))?.[1])
const memoryUsage = async (client: Redis, key: string) => Number(await client.call('MEMORY', 'USAGE', key, 'SAMPLES', '0') ?? 0)
const mb = (bytes: number) => `${(bytes / MB).toFixed(1)} MB`
const kb = (bytes: number) => `${(bytes / 1024).toFixed(1)} KB`

/** Counts of each value, for comments: {"404":20,"429":10}. */
const tally = (values: Array<number | string | undefined>) => {
  const counts: Record<string, number> = {}
  for (const value of values) counts[String(value)] = (counts[String(value)] ?? 0) + 1
  return JSON.stringify(counts)
}

/** Runs `count` tasks, `concurrency` at a time. */
async function pool<T> (count: number, concurrency: number, run: (i: number) => Promise<T>): Promise<T[]> {
  const results: T[] = []
  let next = 0
  await Promise.all(Array.from({ length: Math.min(count, concurrency) }, async () => {
    while (next < count) {
      const i = next++
      results[i] = await run(i)
    }
  }))
  return results
}

interface Reply {
  status: number
  headers: IncomingHttpHeaders
  text: string
  json: any
  /** Whether the request's body left before the answer came (a body over 64 KiB waits for it). */
  bodySent: boolean
}

/** One HTTP request on a connection of its own, from `localAddress` when given. */
function send (url: URL | string, options: { method?: string, headers?: Record<string, string>, body?: string, localAddress?: string } = {}): Promise<Reply> {
  return new Promise((resolve, reject) => {
    let answered = false
    let bodySent = false
    const large = options.body !== undefined && options.body.length > 65_536
    const req = httpRequest(url, {
      method: options.method ?? 'POST',
      headers: { ...HEADERS, ...(large && { 'content-length': String(Buffer.byteLength(options.body!)) }), ...options.headers },
      agent: false,
      ...(options.localAddress !== undefined && { localAddress: options.localAddress })
    }, res => {
      answered = true
      const chunks: Buffer[] = []
      res.on('data', (chunk: Buffer) => chunks.push(chunk))
      res.on('error', reject)
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString()
        let json: any
        try { json = JSON.parse(text) } catch {}
        resolve({ status: res.statusCode!, headers: res.headers, text, json, bodySent })
      })
    })
    // Writing the rest of a body the server already refused fails (EPIPE): the answer counts.
    req.on('error', error => { if (!answered) reject(error) })
    if (large) {
      // A large body follows its headers only when no answer came within two seconds, as with
      // Expect: 100-continue: a server that refuses it by its Content-Length answers (and closes)
      // first, and writing to that closed connection would fail.
      req.flushHeaders()
      setTimeout(() => {
        if (answered) return
        bodySent = true
        req.end(options.body)
      }, 2000)
    } else {
      bodySent = true
      req.end(options.body)
    }
  })
}

const initializeMessage = (capabilities: Json = {}, protocolVersion = '2025-11-25') =>
  ({ jsonrpc: '2.0', id: nextId++, method: 'initialize', params: { protocolVersion, capabilities, clientInfo: { name: 'attacker', version: '1.0.0' } } })

/** Initializes a session from `localAddress` (and sends notifications/initialized); undefined with the status when refused. */
async function initializeFrom (url: URL | string, localAddress: string, headers: Record<string, string> = {}): Promise<{ reply: Reply, sessionId?: string }> {
  const reply = await send(url, { localAddress, headers, body: JSON.stringify(initializeMessage()) })
  const sessionId = reply.headers['mcp-session-id']
  if (reply.status !== 200 || typeof sessionId !== 'string') return { reply }
  await send(url, { localAddress, headers: { 'mcp-session-id': sessionId }, body: JSON.stringify({ jsonrpc: '2.0', method: 'notifications/initialized' }) })
  return { reply, sessionId }
}

interface RawStream {
  status: number
  headers: IncomingHttpHeaders
  /** The body of a refused GET; for a stream, what arrived so far. */
  text (): string
  /** When each chunk of a stream arrived (ms since the request), with its text. */
  chunks: Array<{ at: number, text: string }>
  open (): boolean
  ended: Promise<void>
  close (): void
}

/** A GET on /mcp on a connection of its own: a stream is kept open and read as it arrives; any other answer is read whole. */
function openGet (url: URL | string, sessionId: string, lastEventId?: string): Promise<RawStream> {
  return openRaw(url, 'GET', { accept: 'text/event-stream', 'mcp-session-id': sessionId, ...(lastEventId !== undefined && { 'last-event-id': lastEventId }) })
}

/** A request on a connection of its own, its answer read as openGet reads it. */
function openRaw (url: URL | string, method: string, headers: Record<string, string>, body?: string): Promise<RawStream> {
  const started = Date.now()
  return new Promise((resolve, reject) => {
    const req = httpRequest(url, { method, agent: false, headers }, res => {
      let text = ''
      let open = true
      const chunks: Array<{ at: number, text: string }> = []
      const ended = new Promise<void>(resolve => res.once('close', () => { open = false; resolve() }))
      res.setEncoding('utf8')
      res.on('data', (chunk: string) => { text += chunk; chunks.push({ at: Date.now() - started, text: chunk }) })
      res.on('error', () => {})
      const stream: RawStream = { status: res.statusCode!, headers: res.headers, text: () => text, chunks, open: () => open, ended, close: () => req.destroy() }
      if (res.statusCode === 200 && res.headers['content-type']?.startsWith('text/event-stream') === true) resolve(stream)
      else res.once('end', () => resolve(stream))
    })
    req.on('error', reject)
    req.end(body)
  })
}

/** Whether `promise` settles within `ms`. */
const settlesWithin = (promise: Promise<unknown>, ms: number) => Promise.race([promise.then(() => true, () => true), sleep(ms).then(() => false)])

/** Answers (not notifications) among the messages of a POST's answer. */
const answersOf = (messages: any[]): Json[] => messages.filter(m => m !== undefined && 'id' in m && !('method' in m))

test('1. initialize with ~900 KB of capabilities: refused before it is parsed, no session, no memory kept', async t => {
  // 900 properties of 1,000 characters: what an attacker would send for the store to keep.
  const capabilities = { experimental: Object.fromEntries(Array.from({ length: 900 }, (_, i) => [`k${i}`, `${i}`.padEnd(1000, 'x')])) }
  const bodyOf = () => JSON.stringify(initializeMessage(capabilities))
  t.comment(`each initialize body: ${kb(bodyOf().length)}`)
  const attack = async (target: ServerNode, count: number) => {
    const replies = await pool(count, 4, () => send(target.mcpUrl, { body: bodyOf() }))
    t.comment(`${target.id}: statuses ${tally(replies.map(r => r.status))}, JSON-RPC codes ${tally(replies.map(r => r.json?.error?.code))}`)
    // A POST without a session id may carry 64 KiB: the body is refused by its Content-Length, unread.
    t.ok(replies.every(r => r.status === 413 && r.json?.error?.code === -32000), `all ${count} refused with 413 before parsing`)
    t.ok(replies.every(r => !r.bodySent), 'each answered before its body was sent')
    t.ok(replies.every(r => /65536 bytes/.test(r.json?.error?.message)), 'the error names the bound')
    t.ok(replies.every(r => r.headers['mcp-session-id'] === undefined), 'no Mcp-Session-Id header')
    t.ok(replies.every(r => r.json?.result === undefined), 'no initialize result')
  }

  await t.test('capabilities over 8 KiB in a body under that bound: -32602 naming them, no session', async t => {
    const server = await node(t, 'h1-caps', {})
    const big = { experimental: { padding: 'x'.repeat(10_000) } }
    const reply = await send(server.mcpUrl, { body: JSON.stringify(initializeMessage(big)) })
    t.equal(reply.json?.error?.code, -32602)
    t.match(reply.json?.error?.message, /capabilities: larger than 8192 bytes/)
    t.equal(reply.headers['mcp-session-id'], undefined)
  })

  await t.test('memory mode: 100 attempts, RSS within 20 MB', async t => {
    // The session-creation limit (60 per minute) would refuse most with 429: raised, so the bound under test is the size.
    const server = await node(t, 'h1-memory', { INITIALIZE_RATE_LIMIT_MAX: '100000' })
    for (let i = 0; i < 5; i++) await callTool(server.mcpUrl, await initialize(server.mcpUrl), 'calculate', { a: i, b: 1, op: 'add' })
    const created = await metric(server, 'mcp_sessions_created_total')
    const before = await rss(server.process.pid!)
    let peak = before
    const sampler = setInterval(() => { rss(server.process.pid!).then(r => { peak = Math.max(peak, r) }, () => {}) }, 50)
    await attack(server, 100)
    clearInterval(sampler)
    await sleep(500)
    const after = await rss(server.process.pid!)
    t.comment(`RSS: ${mb(before)} before, ${mb(peak)} at peak during the attack, ${mb(after)} after (${mb(after - before)} kept); 100 stored sessions would hold ~${mb(100 * bodyOf().length)}`)
    t.ok(Math.max(peak, after) - before < 20 * MB, `RSS within 20 MB of its start, during and after the attack (+${mb(Math.max(peak, after) - before)})`)
    t.equal(await metric(server, 'mcp_sessions_created_total'), created, 'no session was created')
  })

  await t.test('Redis mode: 60 attempts add (almost) nothing to Redis', async t => {
    const { redis, client } = await redisOf(t)
    const server = await node(t, 'h1-redis', { ...redisEnv(redis), INITIALIZE_RATE_LIMIT_MAX: '100000' })
    await callTool(server.mcpUrl, await initialize(server.mcpUrl), 'calculate', { a: 1, b: 1, op: 'add' })
    const keysBefore = await client.dbsize()
    const memoryBefore = await usedMemory(client)
    await attack(server, 60)
    const keysAfter = await client.dbsize()
    const memoryAfter = await usedMemory(client)
    t.comment(`Redis: DBSIZE ${keysBefore} -> ${keysAfter}, used_memory ${kb(memoryBefore)} -> ${kb(memoryAfter)} (${kb(memoryAfter - memoryBefore)}); 60 stored sessions would add ~${mb(60 * bodyOf().length)}`)
    t.ok(keysAfter - keysBefore <= 1, `at most one key more (the address's session-creation count): ${keysAfter - keysBefore}`)
    t.ok(memoryAfter - memoryBefore < 256 * 1024, `used_memory grew by less than 256 KB (${kb(memoryAfter - memoryBefore)})`)
  })
})

test('2. the event log and batch answers stay bounded (Redis): huge progress tokens, batches of get_history', async t => {
  const EVENT_LOG_MAX_BYTES = 65_536
  const BATCH_ANSWER_MAX_BYTES = 100_000
  const { redis, client } = await redisOf(t)
  const server = await node(t, 'h2', { ...redisEnv(redis), EVENT_LOG_MAX_BYTES: String(EVENT_LOG_MAX_BYTES), BATCH_ANSWER_MAX_BYTES: String(BATCH_ANSWER_MAX_BYTES) })
  const sessionId = await initialize(server.mcpUrl, {}, '2025-03-26')
  const sessionKeys = ['s', 'e', 'f', 'c'].map(k => `mcp:{${sessionId}}:${k}`)
  const usage = async () => {
    const each = await Promise.all(sessionKeys.map(k => memoryUsage(client, k)))
    return { each, total: each.reduce((a, b) => a + b, 0) }
  }
  const describe = (u: { each: number[], total: number }) => `${u.each.map((b, i) => `:${'sefc'[i]} ${kb(b)}`).join(', ')}, total ${kb(u.total)}`

  // ~200 calculations: the history the get_history calls will read back.
  for (let round = 0; round < 2; round++) {
    const answer = await callTool(server.mcpUrl, sessionId, 'batch_calculate', { calculations: Array.from({ length: 100 }, (_, i) => ({ a: round * 100 + i, b: 1234.5678, op: 'multiply' })) })
    t.equal(answer.status, 200)
  }
  const history = await usage()
  t.comment(`the session with 200 calculations: ${describe(history)}`)

  await t.test('5 demo_progress calls with a 500 KiB progress token are refused', async t => {
    const token = 'p'.repeat(500 * 1024)
    const answers = await pool(5, 5, () => post(server.mcpUrl, {
      jsonrpc: '2.0', id: nextId++, method: 'tools/call', params: { name: 'demo_progress', arguments: { steps: 20 }, _meta: { progressToken: token } }
    }, sessionId, V2025_03_26))
    t.comment(`statuses ${tally(answers.map(a => a.status))}, codes ${tally(answers.map(a => a.messages[0]?.error?.code))}: ${answers[0]?.messages[0]?.error?.message}`)
    t.ok(answers.every(a => a.messages.length === 1 && a.messages[0].error?.code === -32602), 'each refused with -32602, nothing streamed')
    t.ok(answers.every(a => /progressToken/.test(a.messages[0]?.error?.message)), 'the error names the progress token')
    // The bound is 256 characters: one more is refused, 256 are served (the progress carries the token).
    const progressCall = (progressToken: string) => post(server.mcpUrl, {
      jsonrpc: '2.0', id: nextId++, method: 'tools/call', params: { name: 'demo_progress', arguments: { steps: 1 }, _meta: { progressToken } }
    }, sessionId, V2025_03_26)
    const over = await progressCall('q'.repeat(257))
    const at = await progressCall('q'.repeat(256))
    t.comment(`257 characters: ${over.messages[0]?.error?.code ?? 'served'}; 256 characters: ${at.messages.map(m => m.method ?? (m.result !== undefined ? 'result' : m.error?.code)).join(', ')}`)
    t.equal(over.messages[0]?.error?.code, -32602, 'a 257-character token is refused')
    t.ok(at.messages.some(m => m.method === 'notifications/progress' && m.params?.progressToken === 'q'.repeat(256)) && answersOf(at.messages)[0]?.result !== undefined, 'a 256-character token is served')
    const after = await usage()
    t.comment(`after them: ${describe(after)}; 5 x 20 progress events would hold ~${mb(5 * 20 * token.length)}`)
    t.ok(after.total - history.total < 10 * 1024, `the session's keys grew by less than 10 KB (${kb(after.total - history.total)})`)
  })

  await t.test('3 batches of demo_progress + 99 get_history {limit: 1000}', async t => {
    let peak = 0
    for (let round = 0; round < 3; round++) {
      const batch = [
        { jsonrpc: '2.0', id: nextId++, method: 'tools/call', params: { name: 'demo_progress', arguments: { steps: 2 }, _meta: { progressToken: `batch-${round}` } } },
        ...Array.from({ length: 99 }, () => ({ jsonrpc: '2.0', id: nextId++, method: 'tools/call', params: { name: 'get_history', arguments: { limit: 1000 } } }))
      ]
      const answer = await post(server.mcpUrl, batch as any, sessionId, V2025_03_26)
      const answers = answersOf(answer.messages)
      const bytes = answers.reduce((sum, a) => sum + JSON.stringify(a).length, 0)
      const refused = answers.filter(a => a.error?.code === -32603 && String(a.error.message).includes(String(BATCH_ANSWER_MAX_BYTES)))
      const full = answers.filter(a => a.result !== undefined)
      const fullBytes = full.reduce((sum, a) => sum + JSON.stringify(a).length, 0)
      const stored = await usage()
      peak = Math.max(peak, stored.total)
      t.comment(`batch ${round + 1}: HTTP ${answer.status} as ${answer.headers.get('content-type')}, ${answers.length} answers, ${full.length} full (${kb(fullBytes)}), ${refused.length} -32603 naming the bound, ${kb(bytes)} of answers in all; Redis ${describe(stored)}`)
      t.equal(answers.length, 100, 'every request of the batch is answered')
      t.ok(fullBytes <= BATCH_ANSWER_MAX_BYTES, `the full answers hold at most BATCH_ANSWER_MAX_BYTES (${fullBytes} bytes)`)
      t.equal(full.length + refused.length, 100, 'every other answer is a -32603 error naming the bound')
      t.ok(refused.length > 0, 'answers past the bound are -32603 errors naming it')
    }
    const after = await usage()
    t.comment(`after 3 batches: ${describe(after)}; beyond the history: ${kb(after.total - history.total)} (bound ${kb(EVENT_LOG_MAX_BYTES + 10 * 1024)}), peak seen ${kb(peak - history.total)}`)
    t.ok(after.total - history.total <= EVENT_LOG_MAX_BYTES + 10 * 1024, `the session's keys hold at most EVENT_LOG_MAX_BYTES + 10 KB beyond the history (${kb(after.total - history.total)})`)
  })
})

test('3. an invented Mcp-Session-Id buys no fresh rate-limit budget', async t => {
  const server = await node(t, 'h3', { RATE_LIMIT_MAX: '20' })
  // A live session, made from another address so that its initialize does not count against 127.0.0.1.
  const { sessionId } = await initializeFrom(server.mcpUrl, '127.0.0.2')
  t.ok(sessionId, 'a live session from 127.0.0.2')
  const statuses: number[] = []
  let last: Reply | undefined
  for (let i = 0; i < 30; i++) {
    last = await send(server.mcpUrl, { headers: { 'mcp-session-id': randomUUID() }, body: JSON.stringify({ jsonrpc: '2.0', id: i, method: 'tools/call', params: { name: 'calculate', arguments: { a: 1, b: 2, op: 'add' } } }) })
    statuses.push(last.status)
  }
  t.comment(`30 POSTs from 127.0.0.1, each with a fresh invented session id: ${statuses.join(' ')}`)
  t.same(statuses, [...Array(20).fill(404), ...Array(10).fill(429)], '404 for the first 20, then 429: counted against the address')
  t.ok(Number(last?.headers['retry-after']) >= 1, 'the 429 says when to retry')
  t.equal(last?.json?.error?.code, -32000, 'the 429 has a JSON-RPC error body')
  // The live session, used from the limited address, still has its own budget.
  const own: number[] = []
  for (let i = 0; i < 10; i++) own.push((await callTool(server.mcpUrl, sessionId!, 'calculate', { a: i, b: 2, op: 'add' })).status)
  t.comment(`the live session, from the same limited address: ${own.join(' ')}`)
  t.ok(own.every(s => s === 200), 'the live session is served from its own budget')
  const again = await send(server.mcpUrl, { headers: { 'mcp-session-id': randomUUID() }, body: JSON.stringify({ jsonrpc: '2.0', id: 99, method: 'ping' }) })
  t.equal(again.status, 429, 'the address is still limited')
})

test('4. rate-limit keys of any length: 1,500 requests with 15 KB invented session ids (Redis)', async t => {
  const { redis, client } = await redisOf(t)
  const server = await node(t, 'h4', redisEnv(redis))
  await callTool(server.mcpUrl, await initialize(server.mcpUrl), 'calculate', { a: 1, b: 1, op: 'add' })
  await sleep(3 * RECONCILE_MS)
  const keysBefore = await client.dbsize()
  const memoryBefore = await usedMemory(client)
  const hitsBefore = await client.keys('mcp:hits:*')
  const countedBefore = Number(await client.get('mcp:hits:ip:127.0.0.1'))
  const statuses = await pool(1500, 25, async i => {
    const answer = await fetch(server.mcpUrl, { method: 'POST', headers: { ...HEADERS, 'mcp-session-id': randomBytes(7500).toString('hex') }, body: JSON.stringify({ jsonrpc: '2.0', id: i, method: 'ping' }) })
    await answer.arrayBuffer()
    return answer.status
  })
  // The node adds what it counted to Redis every RECONCILE_MS.
  await sleep(3 * RECONCILE_MS)
  const keysAfter = await client.dbsize()
  const memoryAfter = await usedMemory(client)
  const hitKeys = await client.keys('mcp:hits:*')
  const longest = Math.max(...(await client.keys('*')).map(k => k.length))
  t.comment(`statuses ${tally(statuses)}; DBSIZE ${keysBefore} -> ${keysAfter}; used_memory ${kb(memoryBefore)} -> ${kb(memoryAfter)} (${kb(memoryAfter - memoryBefore)}); hit keys ${JSON.stringify(hitsBefore)} -> ${JSON.stringify(hitKeys)}; longest key ${longest} characters; 1,500 keys named by the ids would take ~${mb(1500 * 15_000)}`)
  t.ok(statuses.every(s => s === 404), 'every request is answered 404')
  t.ok(keysAfter - keysBefore <= 1, `at most one key more (${keysAfter - keysBefore})`)
  t.same(hitKeys.filter(k => !hitsBefore.includes(k)), [], 'no new hits key')
  t.ok(hitKeys.includes('mcp:hits:ip:127.0.0.1'), 'the hits of the address are one key')
  t.equal(Number(await client.get('mcp:hits:ip:127.0.0.1')) - countedBefore, 1500, 'all 1,500 counted against the address')
  t.ok(longest < 200, `no key longer than 200 characters (${longest})`)
  t.ok(memoryAfter - memoryBefore < 512 * 1024, `used_memory grew by less than 512 KB (${kb(memoryAfter - memoryBefore)})`)
})

test('5. behind the shipped nginx, each client has its own session-creation budget', async t => {
  const { redis } = await redisOf(t)
  const topology = await startTopology(['h5-a', 'h5-b'], { ...redisEnv(redis), TRUST_PROXY: '127.0.0.1', INITIALIZE_RATE_LIMIT_MAX: '5' })
  t.teardown(() => topology.stop())
  const url = topology.lb.mcpUrl
  // nginx lets 20 session creations per address through at once (then 10 r/s): 8 from A, 1 from B stay under it.
  const a: Reply[] = []
  // Bare initialize requests, so that nginx's round-robin sends them to the nodes in turn.
  for (let i = 0; i < 7; i++) a.push(await send(url, { localAddress: '127.0.0.2', body: JSON.stringify(initializeMessage()) }))
  t.comment(`client A (127.0.0.2) through nginx: ${a.map(r => `${r.status}@${r.headers['x-served-by'] ?? 'nginx'}`).join(' ')}`)
  t.same(a.map(r => r.status), [200, 200, 200, 200, 200, 429, 429], 'A creates 5 sessions, then 429')
  t.ok(a.every(r => r.headers['x-served-by'] !== undefined), 'every answer came from a node (not nginx\'s own limit)')
  t.ok(new Set(a.slice(0, 5).map(r => r.headers['x-served-by'])).size === 2, 'A\'s sessions were made on both nodes: the count is cluster-wide')
  const forged = await send(url, { localAddress: '127.0.0.2', headers: { 'x-forwarded-for': '1.2.3.4' }, body: JSON.stringify(initializeMessage()) })
  t.comment(`client A with its own X-Forwarded-For: 1.2.3.4: ${forged.status}@${forged.headers['x-served-by'] ?? 'nginx'}`)
  t.equal(forged.status, 429, 'a forged X-Forwarded-For does not escape the limit')
  const b = await initializeFrom(url, '127.0.0.3')
  t.comment(`client B (127.0.0.3) through nginx: ${b.reply.status}@${b.reply.headers['x-served-by'] ?? 'nginx'}`)
  t.equal(b.reply.status, 200, 'client B still creates its session')
  t.ok(b.sessionId, 'B got a session id')

  await t.test('directly against a node with TRUST_PROXY unset, X-Forwarded-For is ignored', async t => {
    const direct = await node(t, 'h5-direct', { INITIALIZE_RATE_LIMIT_MAX: '5' })
    const statuses: number[] = []
    for (let i = 0; i < 8; i++) statuses.push((await initializeFrom(direct.mcpUrl, '127.0.0.1', { 'x-forwarded-for': `1.2.3.${i}` })).reply.status)
    t.comment(`8 initialize, each with a different forged X-Forwarded-For: ${statuses.join(' ')}`)
    t.same(statuses, [200, 200, 200, 200, 200, 429, 429, 429], 'the limit holds for the real address')
  })
})

test('6. a batch is one request no more', async t => {
  const { redis, client } = await redisOf(t)
  const batchOf = () => Array.from({ length: 100 }, (_, i) => ({
    jsonrpc: '2.0',
    id: nextId++,
    method: 'tools/call',
    params: { name: 'batch_calculate', arguments: { calculations: Array.from({ length: 100 }, (_, j) => ({ a: i * 100 + j, b: 3.14159, op: 'multiply' })) } }
  }))

  await t.test('RATE_LIMIT_MAX=50: a batch of 100 batch_calculate gets 429 and stores nothing', async t => {
    const server = await node(t, 'h6-low', { ...redisEnv(redis), RATE_LIMIT_MAX: '50', RATE_LIMIT_WINDOW_MS: '2000' })
    const sessionId = await initialize(server.mcpUrl, {}, '2025-03-26')
    const answer = await post(server.mcpUrl, batchOf() as any, sessionId, V2025_03_26)
    t.comment(`HTTP ${answer.status}, Retry-After ${answer.headers.get('retry-after')}, ${JSON.stringify(answer.messages[0]).slice(0, 200)}`)
    t.equal(answer.status, 429, 'refused: each message counts')
    t.equal(await client.hget(`mcp:{${sessionId}}:f`, 'history:n'), null, 'nothing stored in Redis')
    await sleep(2100)
    const history = await callTool(server.mcpUrl, sessionId, 'get_history', { limit: 1000 })
    t.comment(`after the window: get_history HTTP ${history.status}, total ${history.messages[0]?.result?.structuredContent?.total}`)
    t.equal(history.messages[0]?.result?.structuredContent?.total, 0, 'the session has made no calculation')
  })

  await t.test('with a larger limit the answer is bounded by BATCH_ANSWER_MAX_BYTES', async t => {
    const server = await node(t, 'h6-high', { ...redisEnv(redis), RATE_LIMIT_MAX: '1000', BATCH_ANSWER_MAX_BYTES: '100000' })
    const sessionId = await initialize(server.mcpUrl, {}, '2025-03-26')
    const response = await fetch(server.mcpUrl, { method: 'POST', headers: { ...HEADERS, ...V2025_03_26, 'mcp-session-id': sessionId }, body: JSON.stringify(batchOf()) })
    const text = await response.text()
    const answers = JSON.parse(text) as Json[]
    const full = answers.filter(a => a.result !== undefined)
    const refused = answers.filter(a => a.error?.code === -32603 && String(a.error.message).includes('100000'))
    const fullBytes = full.reduce((sum, a) => sum + JSON.stringify(a).length, 0)
    t.comment(`HTTP ${response.status}, body ${kb(text.length)}: ${full.length} full answers (${kb(fullBytes)}), ${refused.length} -32603 naming the bound; unbounded it would be ~${kb(100 * (JSON.stringify(full[0] ?? {}).length))}`)
    t.equal(response.status, 200)
    t.equal(answers.length, 100, 'every request answered')
    t.ok(fullBytes <= 100_000, 'the full answers hold at most BATCH_ANSWER_MAX_BYTES')
    t.ok(refused.length > 0 && full.length + refused.length === 100, 'the rest are -32603 errors naming the bound')
    t.ok(text.length <= 100_000 + 100 * 300, `the body is bounded (${text.length} bytes)`)
  })
})

test('7. streams: per session, per node, and one GET stream per session across nodes', async t => {
  const { redis } = await redisOf(t)
  const a = await node(t, 'h7-a', { ...redisEnv(redis), KEEPALIVE_MS: '1000' })
  const b = await node(t, 'h7-b', { ...redisEnv(redis), KEEPALIVE_MS: '1000', MAX_STREAMS: '20' })

  await t.test('500 concurrent GETs with Last-Event-ID: <invented>.1 on one session', async t => {
    const sessionId = await initialize(a.mcpUrl)
    const streams = await Promise.all(Array.from({ length: 500 }, (_, i) => openGet(a.mcpUrl, sessionId, `invented-${i}.1`)))
    const open = streams.filter(s => s.status === 200)
    const openGauge = await metric(a, 'mcp_sse_streams_open')
    t.comment(`statuses ${tally(streams.map(s => s.status))}; mcp_sse_streams_open on the node: ${openGauge}`)
    for (const stream of streams) stream.close()
    t.ok(open.length <= 8, `at most 8 resumed streams on one session (${open.length} opened)`)
    t.ok(streams.every(s => s.status === 200 || s.status === 409), 'the others get 409')
  })

  await t.test('12 GETs with Last-Event-ID: <invented>.1 one after another on one session', async t => {
    const sessionId = await initialize(a.mcpUrl)
    const streams: RawStream[] = []
    for (let i = 0; i < 12; i++) streams.push(await openGet(a.mcpUrl, sessionId, `one-by-one-${i}.1`))
    t.comment(`statuses in order: ${streams.map(s => s.status).join(' ')}`)
    for (const stream of streams) stream.close()
    t.ok(streams.filter(s => s.status === 200).length <= 8, `at most 8 resumed streams (${streams.filter(s => s.status === 200).length} opened)`)
    t.ok(streams.slice(8).every(s => s.status === 409), 'the ones beyond get 409')
  })

  await t.test('MAX_STREAMS=20: 32 concurrent resumptions over 4 sessions, 503 with Retry-After beyond', async t => {
    const sessions = await Promise.all(Array.from({ length: 4 }, () => initialize(b.mcpUrl)))
    const attempts = await Promise.all(Array.from({ length: 32 }, (_, i) => openGet(b.mcpUrl, sessions[i % 4]!, `invented-${i}.1`)))
    const open = attempts.filter(s => s.status === 200)
    const refused = attempts.filter(s => s.status !== 200)
    t.comment(`4 sessions x 8 concurrent resumed streams on a node with MAX_STREAMS=20: ${tally(attempts.map(s => s.status))}; Retry-After ${tally(refused.map(s => s.headers['retry-after']))}`)
    t.ok(open.length <= 20, `at most 20 streams open on the node (${open.length})`)
    t.ok(refused.length > 0 && refused.every(s => s.status === 503 && Number(s.headers['retry-after']) >= 1), 'the rest get 503 with Retry-After')
    for (const stream of attempts) stream.close()
    await Promise.all(open.map(s => s.ended))
    const deadline = Date.now() + 5000
    while (await metric(b, 'mcp_sse_streams_open') > 0 && Date.now() < deadline) await sleep(50)
    t.equal(await metric(b, 'mcp_sse_streams_open'), 0, 'closed streams give their places back')
  })

  await t.test('a GET stream open on node A: a plain GET on B gets 409, a resumption on B takes it over', async t => {
    const sessionId = await initialize(a.mcpUrl)
    t.equal((await request(a.mcpUrl, sessionId, 'resources/subscribe', { uri: 'calculator://history' })).status, 200)
    const onA = await openStream(a.mcpUrl, sessionId)
    t.equal(onA.status, 200)
    const [priming] = await onA.until(events => events.some(e => e.id !== undefined))
    t.comment(`stream on A primed with event ${priming?.id}`)
    // Longer than the lease (3 keepalives) would last unrenewed.
    await sleep(3500)
    const plain = await openGet(b.mcpUrl, sessionId)
    t.comment(`plain GET on B: ${plain.status} ${plain.text().slice(0, 200)}`)
    t.equal(plain.status, 409, 'a second GET stream on another node is refused')
    plain.close()
    const resumed = await openStream(b.mcpUrl, sessionId, priming!.id)
    t.equal(resumed.status, 200, 'a GET on B with the stream\'s Last-Event-ID is served')
    t.ok(await settlesWithin(onA.ended, 5000), 'A\'s stream ends')
    t.equal((await callTool(a.mcpUrl, sessionId, 'calculate', { a: 2, b: 3, op: 'add' })).status, 200)
    await resumed.until(events => events.some(e => e.message?.method === 'notifications/resources/updated'), 5000)
    t.pass('a notification raised on A reaches the stream now on B')
    resumed.close()
  })
})

/** Opens a connection and sends `head`, then one byte of `trickle` per second, until the server closes it (or `giveUpMs`). */
function trickle (port: number, head: string, trickle: string, giveUpMs: number): Promise<{ status?: number, contentType?: string, body: string, closedAfterMs: number, bytesTrickled: number }> {
  return new Promise(resolve => {
    const started = Date.now()
    const socket = netConnect(port, '127.0.0.1')
    let received = ''
    let sent = 0
    socket.setEncoding('latin1')
    socket.on('data', (chunk: string) => { received += chunk })
    socket.on('error', () => {})
    socket.on('connect', () => socket.write(head))
    const timer = setInterval(() => { if (sent < trickle.length && socket.writable) socket.write(trickle[sent++]!) }, 1000)
    const giveUp = setTimeout(() => socket.destroy(), giveUpMs)
    socket.on('close', () => {
      clearInterval(timer)
      clearTimeout(giveUp)
      const [headPart = '', body = ''] = received.split('\r\n\r\n')
      const status = /^HTTP\/1\.1 (\d{3})/.exec(headPart)?.[1]
      const contentType = /\r\ncontent-type: *([^\r]*)/i.exec(headPart)?.[1]
      resolve({ ...(status !== undefined && { status: Number(status) }), ...(contentType !== undefined && { contentType }), body, closedAfterMs: Date.now() - started, bytesTrickled: sent })
    })
  })
}

test('8. slow bodies and slow headers are cut with 408; SSE streams are not', async t => {
  const REQUEST_TIMEOUT_MS = 3000
  const HEADERS_TIMEOUT_MS = 2000
  const server = await node(t, 'h8', { REQUEST_TIMEOUT_MS: String(REQUEST_TIMEOUT_MS), HEADERS_TIMEOUT_MS: String(HEADERS_TIMEOUT_MS), KEEPALIVE_MS: '1000' })
  const sessionId = await initialize(server.mcpUrl)
  const body = JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'calculate', arguments: { a: 1, b: 2, op: 'add' } } })
  const postHead = `POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:${server.port}\r\nContent-Type: application/json\r\nAccept: application/json, text/event-stream\r\nMcp-Session-Id: ${sessionId}\r\nContent-Length: ${body.length}\r\n\r\n`
  const headersHead = `POST /mcp HTTP/1.1\r\nHost: 127.0.0.1:${server.port}\r\n`
  const stream = await openGet(server.mcpUrl, sessionId)
  t.equal(stream.status, 200, 'a GET stream is open')
  const giveUpMs = 12_000
  const [bodies, heads] = await Promise.all([
    Promise.all(Array.from({ length: 20 }, () => trickle(server.port, postHead, body, giveUpMs))),
    Promise.all(Array.from({ length: 20 }, () => trickle(server.port, headersHead, 'X-Slow: ' + 'y'.repeat(100), giveUpMs)))
  ])
  const report = (rs: typeof bodies) => `statuses ${tally(rs.map(r => r.status))}, closed after ${Math.min(...rs.map(r => r.closedAfterMs))}..${Math.max(...rs.map(r => r.closedAfterMs))} ms, ${Math.max(...rs.map(r => r.bytesTrickled))} bytes trickled at most`
  t.comment(`20 POST bodies at 1 byte/s: ${report(bodies)}; body ${bodies[0]?.body}`)
  t.comment(`20 request heads at 1 byte/s: ${report(heads)}`)
  for (const [what, results, limit] of [['slow body', bodies, REQUEST_TIMEOUT_MS], ['slow headers', heads, HEADERS_TIMEOUT_MS]] as const) {
    t.ok(results.every(r => r.status === 408), `${what}: every connection gets 408`)
    t.ok(results.every(r => r.contentType?.startsWith('application/json') === true && JSON.parse(r.body || 'null')?.error?.code !== undefined), `${what}: with a JSON-RPC error body`)
    t.ok(results.every(r => r.closedAfterMs <= limit + 2500), `${what}: closed within ${limit} + ~2 s (at most ${Math.max(...results.map(r => r.closedAfterMs))} ms)`)
  }
  // The stream has now been open for longer than REQUEST_TIMEOUT_MS (the trickles took at least that long).
  await sleep(1500)
  const late = stream.chunks.filter(c => c.at > REQUEST_TIMEOUT_MS + 500 && c.text.includes(': keepalive'))
  t.comment(`GET stream, last chunk at ${Math.max(...stream.chunks.map(c => c.at))} ms: open ${stream.open()}, ${stream.chunks.filter(c => c.text.includes(': keepalive')).length} keepalives, ${late.length} of them after ${REQUEST_TIMEOUT_MS + 500} ms`)
  t.ok(stream.open(), 'the GET stream is still open')
  t.ok(late.length >= 2, 'and still receives keepalives')
  stream.close()
})

test('9. a flood of sessions does not flush a bystander\'s stream out of the cache', async t => {
  const { redis } = await redisOf(t)
  for (const mode of ['memory', 'redis'] as const) {
    await t.test(`${mode} mode`, async t => {
      const server = await node(t, `h9-${mode}`, { SESSION_CACHE_MAX: '50', INITIALIZE_RATE_LIMIT_MAX: '100000', ...(mode === 'redis' && redisEnv(redis)) })
      const bystander = await initialize(server.mcpUrl)
      t.equal((await request(server.mcpUrl, bystander, 'resources/subscribe', { uri: 'calculator://history' })).status, 200)
      const stream = await openStream(server.mcpUrl, bystander)
      await stream.until(events => events.length > 0)
      const flood = await pool(300, 20, async () => {
        const answer = await fetch(server.mcpUrl, { method: 'POST', headers: HEADERS, body: JSON.stringify(initializeMessage()) })
        await answer.arrayBuffer()
        return answer.headers.get('mcp-session-id') === null ? answer.status : 200
      })
      const cached = await metric(server, 'mcp_cached_sessions')
      t.comment(`300 initialize: ${tally(flood)}; mcp_cached_sessions ${cached}`)
      t.ok(flood.every(s => s === 200), 'all 300 sessions were created')
      t.notOk(await settlesWithin(stream.ended, 200), 'the bystander\'s GET stream is still open')
      t.equal((await callTool(server.mcpUrl, bystander, 'calculate', { a: 6, b: 7, op: 'multiply' })).status, 200)
      const events = await stream.until(events => events.some(e => e.message?.method === 'notifications/resources/updated'), 5000).catch(() => stream.events)
      t.ok(events.some(e => e.message?.method === 'notifications/resources/updated'), 'and receives its notifications')
      t.ok(cached <= 51, `the cache stays bounded (${cached})`)
      stream.close()
    })
  }
})

/** Lines of a node's pino output at warn level or above. */
function warnings (output: string): string[] {
  return output.split('\n').filter(line => {
    try { return JSON.parse(line).level >= 40 } catch { return false }
  })
}

test('10. malformed Last-Event-ID values: no storage error, no warning', async t => {
  const MALFORMED = [
    'x.99999999999999999999999-1', 'garbage', 'a.b.c', 'get.99999999999999999999-0', 'get.0-99999999999999999999',
    'get.18446744073709551616-0', 'x.-1', '.5', 'x.', 'get.(0-0', 'get.1-', 'get.0-0-0', 'get.1e3', 'get.0x10', 'get.+', `x.${'9'.repeat(8000)}`
  ]
  const { redis } = await redisOf(t)
  for (const mode of ['redis', 'memory'] as const) {
    await t.test(`${mode} mode`, async t => {
      const server = await node(t, `h10-${mode}`, mode === 'redis' ? redisEnv(redis) : {}, 'warn')
      const errorsBefore = await metric(server, 'mcp_storage_errors_total')
      const statuses: number[] = []
      for (const lastEventId of MALFORMED) {
        // A session of its own each, with events stored, so that a replay would read them.
        const sessionId = await initialize(server.mcpUrl)
        await post(server.mcpUrl, { jsonrpc: '2.0', id: nextId++, method: 'tools/call', params: { name: 'demo_progress', arguments: { steps: 2 }, _meta: { progressToken: 'p' } } }, sessionId)
        const stream = await openGet(server.mcpUrl, sessionId, lastEventId)
        statuses.push(stream.status)
        stream.close()
      }
      await sleep(300)
      const errorsAfter = await metric(server, 'mcp_storage_errors_total')
      const lines = warnings(server.output.join(''))
      t.comment(`${MALFORMED.length} malformed ids: statuses ${tally(statuses)}; mcp_storage_errors_total ${errorsBefore} -> ${errorsAfter}; warn lines ${lines.length}${lines.length > 0 ? `: ${lines[0]!.slice(0, 300)}` : ''}`)
      t.ok(statuses.every(s => s < 500), 'no 5xx')
      t.equal(errorsAfter, errorsBefore, 'no storage error counted')
      t.same(lines, [], 'no warn-level log line')
    })
  }
})

test('11. the session id appears in no log line, only its 12-character digest', async t => {
  const { redis, client } = await redisOf(t)
  const server = await node(t, 'h11', redisEnv(redis), 'info')
  const url = server.mcpUrl
  const sessionId = await initialize(url)
  const other = await initialize(url, {}, '2025-03-26')
  await callTool(url, sessionId, 'calculate', { a: 1, b: 2, op: 'add' })
  await callTool(url, sessionId, 'calculate', { a: 1, b: 0, op: 'divide' })
  await callTool(url, sessionId, 'calculate', { a: 'x', b: 0, op: 'nope' })
  await request(url, sessionId, 'resources/read', { uri: 'session://info' })
  await request(url, sessionId, 'no/such/method')
  await request(url, sessionId, 'logging/setLevel', { level: 'debug' })
  await post(url, { jsonrpc: '2.0', id: nextId++, method: 'tools/call', params: { name: 'demo_progress', arguments: { steps: 2 }, _meta: { progressToken: 'p' } } }, sessionId)
  await post(url, [{ jsonrpc: '2.0', id: nextId++, method: 'ping' }, { jsonrpc: '2.0', id: nextId++, method: 'tools/list' }] as any, other, V2025_03_26)
  const stream = await openGet(url, sessionId)
  const second = await openGet(url, sessionId)
  const resumed = await openGet(url, sessionId, `${sessionId}.1`)
  // Storage errors log warnings with their cause: Redis refuses writes past maxmemory.
  await client.config('SET', 'maxmemory', '1')
  const refused = await callTool(url, sessionId, 'calculate', { a: 3, b: 4, op: 'add' })
  await client.config('SET', 'maxmemory', '0')
  await fetch(url, { method: 'DELETE', headers: { 'mcp-session-id': sessionId } })
  await callTool(url, sessionId, 'calculate', { a: 1, b: 2, op: 'add' })
  stream.close()
  second.close()
  resumed.close()
  await sleep(500)
  const output = server.output.join('')
  const completed = output.split('\n').filter(line => line.includes('request completed'))
  const digest = logDigest(sessionId)
  t.comment(`statuses: GET ${stream.status}, second GET ${second.status}, resumed ${resumed.status}, past maxmemory ${refused.status}; ${output.split('\n').length} log lines, ${completed.length} request lines, ${warnings(output).length} at warn or above; digest ${digest}`)
  t.ok(completed.length >= 15, 'requests were logged at info level')
  t.ok(completed.some(line => JSON.parse(line).sessionId === digest), 'request lines carry the 12-character digest')
  t.ok(warnings(output).length > 0, 'the storage-error path logged too')
  t.notOk(output.includes(sessionId), 'the session id appears in no log line')
  t.notOk(output.includes(other), 'nor does the other session\'s')
})

/** Sends one request on a connection of its own and drops the connection 2 ms later, answered or not. */
function abandon (url: URL, headers: Record<string, string>, body = ''): Promise<void> {
  return new Promise(resolve => {
    const socket = netConnect(Number(url.port), url.hostname, () => {
      const head = Object.entries({ ...headers, host: url.host, 'content-length': String(Buffer.byteLength(body)) }).map(([name, value]) => `${name}: ${value}\r\n`).join('')
      socket.write(`${body === '' ? 'GET' : 'POST'} ${url.pathname} HTTP/1.1\r\n${head}\r\n${body}`)
      setTimeout(() => { socket.destroy(); resolve() }, 2)
    })
    socket.on('error', () => {})
  })
}

test('12. clients that leave while their stream is being opened give its place back (Redis)', async t => {
  const { redis } = await redisOf(t)
  // Each listen below checks 100 handle URIs, one store round trip each: the client is gone before they are done.
  const server = await node(t, 'h12', { ...redisEnv(redis), MAX_STREAMS: '6', LISTEN_STREAMS_PER_CLIENT: '2' })
  const modern = { ...HEADERS, 'mcp-protocol-version': '2026-07-28' }
  const created = await modernPost(server.mcpUrl, 'tools/call', { name: 'create_history', arguments: {} })
  const uri = `calculator://histories/${created.body.result.structuredContent.history as string}`
  const listenBody = (resources: string[]) => JSON.stringify({ jsonrpc: '2.0', id: 'listen-12', method: 'subscriptions/listen', params: { notifications: { resourceSubscriptions: resources }, _meta: modernMeta() } })
  for (let i = 0; i < 10; i++) await abandon(server.mcpUrl, { ...modern, 'mcp-method': 'subscriptions/listen' }, listenBody(Array.from({ length: 100 }, () => uri)))
  const sessions = await Promise.all(Array.from({ length: 6 }, () => initialize(server.mcpUrl)))
  for (const sessionId of sessions) await abandon(server.mcpUrl, { accept: 'text/event-stream', 'mcp-session-id': sessionId })
  await sleep(500)

  const listens = await Promise.all([0, 1].map(() => openRaw(server.mcpUrl, 'POST', { ...modern, 'mcp-method': 'subscriptions/listen' }, listenBody([uri]))))
  t.same(listens.map(l => l.status), [200, 200], 'the client still holds its LISTEN_STREAMS_PER_CLIENT listen streams')
  for (const listen of listens) listen.close()
  // Their places come back once the node has seen them close.
  await sleep(300)
  const gets = await Promise.all(sessions.map(sessionId => openGet(server.mcpUrl, sessionId)))
  t.same(gets.map(g => g.status), [200, 200, 200, 200, 200, 200], 'each session opens its GET stream again (no 409), and the node has places for them (no 503)')
  const full = await openRaw(server.mcpUrl, 'POST', { ...modern, 'mcp-method': 'subscriptions/listen' }, listenBody([uri]))
  t.equal(full.status, 503, 'with MAX_STREAMS open, a listen is refused')
  t.equal(JSON.parse(full.text()).id, 'listen-12', 'with its request id')
  for (const get of gets) get.close()
})
