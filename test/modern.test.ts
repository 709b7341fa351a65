// The 2026-07-28 revision's own rules, over real HTTP: handles, input_required, subscriptions/listen
// (on one node and across two nodes sharing Redis), and the bounds an attacker would push.
import { test } from 'tap'
import { startNode } from './helpers/nodes.js'
import { startRedis } from './helpers/processes.js'
import { setTimeout as sleep } from 'node:timers/promises'
import { initialize, modernFetch, modernPost, post, readStream } from './helpers/raw-client.js'
import { startServer } from './helpers/server.js'

type Json = Record<string, any>
const CAPABILITIES = { elicitation: {} }

const modern = (url: URL, method: string, params: Json = {}, id?: number) => modernPost(url, method, params, { capabilities: CAPABILITIES, ...(id !== undefined && { id }) })
const call = async (url: URL, name: string, args: Json, extra: Json = {}, id?: number) => (await modern(url, 'tools/call', { name, arguments: args, ...extra }, id)).body
const newHistory = async (url: URL) => (await call(url, 'create_history', {})).result.structuredContent.history as string

/** Opens a listen stream: its messages as they arrive once the acknowledgement came, or the JSON answer that refused it. */
async function listen (url: URL, resources: string[]) {
  const controller = new AbortController()
  const response = await modernFetch(url, 'subscriptions/listen', { notifications: { resourceSubscriptions: resources } }, { id: 'listen-1', capabilities: CAPABILITIES, signal: controller.signal })
  if (response.headers.get('content-type')?.startsWith('text/event-stream') !== true) return { response, body: await response.json() as Json, messages: [] as Json[] }
  const stream = readStream(response, controller)
  await stream.until(events => events.length > 0)
  return { response, stream, get messages (): Json[] { return stream.events.map(e => e.message) } }
}

test('handles, retries and input_required on one node', async t => {
  const server = await startServer({ INITIALIZE_RATE_LIMIT_MAX: '5' })
  t.teardown(() => server.close())
  const url = server.mcpUrl
  const history = await newHistory(url)

  await t.test('the same JSON-RPC id from two requests on one handle records both: ids are unique per client only', async t => {
    t.equal((await call(url, 'calculate', { a: 2, b: 3, op: 'add', history }, {}, 77)).result.structuredContent.result, 5)
    const second = await call(url, 'calculate', { a: 100, b: 100, op: 'multiply', history }, {}, 77)
    t.equal(second.result.structuredContent.result, 10000, 'the second call is answered as itself')
    const read = await call(url, 'get_history', { history })
    t.same(read.result.structuredContent.entries.map((e: Json) => e.result), [5, 10000])
  })

  await t.test('a handle is no session id, and a session id no handle', async t => {
    const answer = await post(url, { jsonrpc: '2.0', id: 1, method: 'tools/list' }, history)
    t.equal(answer.status, 404, 'a handle as Mcp-Session-Id: 404')
    const sessionId = await initialize(url)
    const asHandle = await call(url, 'get_history', { history: sessionId })
    t.equal(asHandle.result.isError, true, 'a session id as a handle: unknown handle')
  })

  await t.test('requestState is bound to the arguments it was made for, and answers are only taken when asked', async t => {
    const other = await newHistory(url)
    await call(url, 'calculate', { a: 1, b: 1, op: 'add', history: other })
    const first = await call(url, 'clear_history', { history })
    t.equal(first.result.resultType, 'input_required')
    const state = first.result.requestState
    const yes = { 'ask-1': { action: 'accept', content: { confirm: true } } }
    const moved = await call(url, 'clear_history', { history: other }, { inputResponses: yes, requestState: state })
    t.equal(moved.error?.code, -32602, 'a state made for one handle does not clear another')
    const unasked = await call(url, 'clear_history', { history: other }, { inputResponses: yes })
    t.equal(unasked.result.resultType, 'input_required', 'an answer sent before being asked is not taken')
    t.equal((await call(url, 'get_history', { history: other })).result.structuredContent.entries.length, 1, 'nothing cleared')
    const malformed = await call(url, 'clear_history', { history }, { inputResponses: { 'ask-1': { action: 'bogus' } }, requestState: state })
    t.equal(malformed.error?.code, -32602, 'an answer that is no elicitation result: invalid params')
    const cleared = await call(url, 'clear_history', { history }, { inputResponses: yes, requestState: state })
    t.equal(cleared.result.structuredContent.cleared, 2, 'the state and answer of this call clear this handle')
    await call(url, 'calculate', { a: 1, b: 1, op: 'add', history })
    const replayed = await call(url, 'clear_history', { history }, { inputResponses: yes, requestState: state })
    t.equal(replayed.result.resultType, 'input_required', 'replayed once the history changed, the answer is to another question: asked again')
    t.equal((await call(url, 'get_history', { history })).result.structuredContent.entries.length, 1, 'nothing cleared')
    const signed = await call(url, 'clear_history', { history }, { inputResponses: yes, requestState: `${replayed.result.requestState as string}!!` })
    t.equal(signed.error?.code, -32602, 'a signature with characters appended is no signature')
  })

  await t.test('memory_store needs a session, which this revision has not', async t => {
    const stored = await call(url, 'memory_store', { value: 4 })
    t.equal(stored.result?.isError, true)
    t.match(stored.result?.content[0].text, /no session memory/)
  })

  await t.test('handles count with the sessions a client creates (INITIALIZE_RATE_LIMIT_MAX)', async t => {
    const statuses: number[] = []
    for (let i = 0; i < 4; i++) statuses.push((await modern(url, 'tools/call', { name: 'create_history', arguments: {} })).status)
    t.equal(statuses.at(-1), 429, `past the limit: 429 (${statuses.join(', ')})`)
  })
})

test('handles minted in sessions count against the address that created the sessions', async t => {
  const server = await startServer({ INITIALIZE_RATE_LIMIT_MAX: '4' })
  t.teardown(() => server.close())
  const url = server.mcpUrl
  const sessions = [await initialize(url), await initialize(url)]
  const statuses: number[] = []
  for (let i = 0; i < 3; i++) {
    const answer = await post(url, { jsonrpc: '2.0', id: i + 1, method: 'tools/call', params: { name: 'create_history', arguments: {} } }, sessions[i % 2])
    statuses.push(answer.status === 200 && answer.messages[0].result?.isError !== true ? 200 : answer.status)
  }
  statuses.push((await modern(url, 'tools/call', { name: 'create_history', arguments: {} })).status)
  t.same(statuses, [200, 200, 429, 429], 'two sessions and two handles from one address: the third handle is refused in a session and out of one')
})

test('Mcp-Param headers of x-mcp-header arguments are checked against the body (test_custom_headers)', async t => {
  const server = await startServer({ CONFORMANCE_FIXTURES: 'true' })
  t.teardown(() => server.close())
  const url = server.mcpUrl
  const listed = await modern(url, 'tools/list')
  const schema = listed.body.result.tools.find((tool: Json) => tool.name === 'test_custom_headers').inputSchema
  t.equal(schema.properties.region['x-mcp-header'], 'Region', 'tools/list shows the annotation')
  const send = (args: Json, headers: Record<string, string>) =>
    modernPost(url, 'tools/call', { name: 'test_custom_headers', arguments: args }, { headers })
  const served = await send({ region: 'us-west1', priority: -7, verbose: false, query: 'q' }, { 'Mcp-Param-Region': 'us-west1', 'mcp-param-priority': '-7', 'MCP-PARAM-VERBOSE': 'false' })
  t.equal(served.status, 200)
  t.same(JSON.parse(served.body.result.content[0].text), { region: 'us-west1', priority: -7, verbose: false, query: 'q' }, 'integers and booleans as decimal and lowercase text, header names in any case')
  t.equal((await send({ region: 'Hello, 世界', query: 'q' }, { 'Mcp-Param-Region': `=?base64?${Buffer.from('Hello, 世界').toString('base64')}?=` })).status, 200, 'a base64-encoded value is decoded')
  t.equal((await send({ region: '=?base64?SGVsbG8=', query: 'q' }, { 'Mcp-Param-Region': '=?base64?SGVsbG8=' })).status, 200, 'without its ?= suffix a value is literal')
  const refusals: Array<[string, Json, Record<string, string>]> = [
    ['missing', { region: 'us-west1', query: 'q' }, {}],
    ['different', { region: 'us-west1', query: 'q' }, { 'Mcp-Param-Region': 'eu-west1' }],
    ['bad base64 padding', { region: 'Hello', query: 'q' }, { 'Mcp-Param-Region': '=?base64?SGVsbG8?=' }],
    ['bad base64 characters', { region: 'Hello', query: 'q' }, { 'Mcp-Param-Region': '=?base64?SGVs!!!bG8=?=' }],
    ['non-ASCII, not encoded', { region: 'Zürich', query: 'q' }, { 'Mcp-Param-Region': 'Zürich' }],
    ['a header without its argument', { region: 'us-west1', query: 'q' }, { 'Mcp-Param-Region': 'us-west1', 'Mcp-Param-Priority': '1' }],
    ['a number as text', { region: 'us-west1', priority: 1, query: 'q' }, { 'Mcp-Param-Region': 'us-west1', 'Mcp-Param-Priority': '1.0' }]
  ]
  for (const [what, args, headers] of refusals) {
    const refused = await send(args, headers)
    t.same([refused.status, refused.body.error?.code], [400, -32020], `${what}: 400 -32020`)
    t.equal(refused.body.id !== null, true, 'with the request id')
  }
})

test('subscriptions/listen on one node: what may be listened to, and how much', async t => {
  const server = await startServer({ LISTEN_STREAMS_PER_CLIENT: '2' })
  t.teardown(() => server.close())
  const url = server.mcpUrl
  const history = await newHistory(url)
  const uri = `calculator://histories/${history}`

  await t.test('the acknowledgement first, then the changes of the handle asked for, tagged with the request id', async t => {
    const listener = await listen(url, [uri])
    t.equal(listener.messages[0]?.method, 'notifications/subscriptions/acknowledged')
    t.same(listener.messages[0]?.params.notifications.resourceSubscriptions, [uri])
    await call(url, 'calculate', { a: 1, b: 2, op: 'add', history })
    await listener.stream!.until(events => events.length > 1)
    t.same(listener.messages[1], { jsonrpc: '2.0', method: 'notifications/resources/updated', params: { uri, _meta: { 'io.modelcontextprotocol/subscriptionId': 'listen-1' } } }, 'the change arrives')
    listener.stream!.close()
  })

  await t.test('a session\'s changes never reach listeners, who are of no session', async t => {
    const listener = await listen(url, ['calculator://history'])
    t.equal(listener.messages[0]?.method, 'notifications/subscriptions/acknowledged')
    const sessionId = await initialize(url)
    await post(url, { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'calculate', arguments: { a: 1, b: 1, op: 'add' } } }, sessionId)
    await sleep(300)
    t.equal(listener.messages.length, 1, 'nothing heard')
    listener.stream!.close()
  })

  await t.test('unknown resources and handles are refused; URIs are bounded in number and bytes', async t => {
    const unknown = await listen(url, ['calculator://nothing-here'])
    t.equal(unknown.body?.error?.code, -32602)
    const noHandle = await listen(url, [`calculator://histories/h-${'A'.repeat(24)}`])
    t.equal(noHandle.body?.error?.code, -32602, 'a handle that does not exist')
    const many = await listen(url, Array.from({ length: 101 }, () => uri))
    t.equal(many.body?.error?.code, -32602, '101 URIs')
    const long = await listen(url, Array.from({ length: 5 }, () => `calculator://histories/${'x'.repeat(2000)}`))
    t.equal(long.body?.error?.code, -32602, 'more than 8 KiB of URIs')
  })

  await t.test('a client holds at most LISTEN_STREAMS_PER_CLIENT streams on a node', async t => {
    const open = [await listen(url, [uri]), await listen(url, [uri])]
    const third = await listen(url, [uri])
    t.equal(third.response.status, 429)
    t.equal(third.body?.error?.id ?? third.body?.id, 'listen-1', 'the refusal carries the request id')
    for (const listener of open) listener.stream!.close()
    await sleep(100)
    const again = await listen(url, [uri])
    t.equal(again.messages[0]?.method, 'notifications/subscriptions/acknowledged', 'a place is free again once one closed')
    again.stream!.close()
  })
})

test('a change on one node reaches a listener held by another (Redis)', async t => {
  const redis = await startRedis()
  const env = { USE_REDIS: 'true', REDIS_URL: redis.url }
  const [a, c] = [await startNode('listen-a', env), await startNode('listen-c', env)]
  t.teardown(async () => {
    await Promise.all([a.kill(), c.kill()])
    await redis.stop()
  })
  const history = await newHistory(c.mcpUrl)
  const uri = `calculator://histories/${history}`
  const listener = await listen(a.mcpUrl, [uri])
  t.equal(listener.messages[0]?.method, 'notifications/subscriptions/acknowledged', 'node A holds the listen stream')
  // Node C learns that someone listens from A's announcement on the broadcast channel.
  await sleep(200)
  await call(c.mcpUrl, 'calculate', { a: 6, b: 7, op: 'multiply', history })
  await listener.stream!.until(events => events.some(e => e.message?.method === 'notifications/resources/updated'))
  t.pass('the calculation made on node C reaches the listener on node A')
  listener.stream!.close()
})
