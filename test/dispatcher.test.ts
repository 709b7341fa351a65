import { setTimeout as sleep } from 'node:timers/promises'
import { test } from 'tap'
import { Type } from '@sinclair/typebox'
import type { Transport, TransportSendOptions } from '@modelcontextprotocol/sdk/shared/transport.js'
import { ElicitResultSchema, ErrorCode, LATEST_PROTOCOL_VERSION, type JSONRPCMessage, type RequestId } from '@modelcontextprotocol/sdk/types.js'
import { RpcError, ToolInputError } from '../src/errors.js'
import { Dispatcher, RESOURCE_NOT_FOUND, SERVER_CAPABILITIES, initializeResult } from '../src/mcp/dispatcher.js'
import { FeatureRegistry, ScopeHandles, toolResult } from '../src/mcp/features.js'
import { IdSequence } from '../src/mcp/protocol.js'
import { SessionServer } from '../src/mcp/session-server.js'
import { MemorySessionStore } from '../src/stores/memory-session-store.js'
import type { LogLevel, LogSpec } from '../src/stores/session-store.js'
import { deferred } from './helpers/fakes.js'
import { newRecord } from './helpers/store-contract.js'

interface Sent { message: any, options?: TransportSendOptions }

/**
 * The SDK's Transport as the session server sees it: what the server sends is recorded, and the test
 * delivers the client's messages through `onmessage`, as the real transport does.
 */
class FakeTransport implements Transport {
  readonly sent: Sent[] = []
  onmessage?: Transport['onmessage']
  onclose?: () => void
  #waiters: Array<{ match: (sent: Sent) => boolean, resolve: (sent: Sent) => void }> = []

  async start (): Promise<void> {}

  async send (message: JSONRPCMessage, options?: TransportSendOptions): Promise<void> {
    const sent = { message, options }
    this.sent.push(sent)
    this.#waiters = this.#waiters.filter(waiter => {
      if (!waiter.match(sent)) return true
      waiter.resolve(sent)
      return false
    })
  }

  async close (): Promise<void> { this.onclose?.() }

  /** The first message sent that matches, already sent or to come; fails after a second. */
  next (match: (sent: Sent) => boolean): Promise<Sent> {
    const found = this.sent.find(match)
    if (found !== undefined) return Promise.resolve(found)
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('nothing matching was sent')), 1000)
      this.#waiters.push({ match, resolve: sent => { clearTimeout(timer); resolve(sent) } })
    })
  }

  /** The response to request `id`. */
  async response (id: RequestId): Promise<any> {
    return (await this.next(({ message }) => message.id === id && !('method' in message))).message
  }

  sentWithMethod (method: string): Sent[] { return this.sent.filter(s => s.message.method === method) }
}

const NOTES: LogSpec = { name: 'notes', maxEntries: 10 }
const annotations = { readOnlyHint: true }

/** A registry of tiny features, a session in a memory store, and its server over a fake transport. */
async function setup () {
  const hooks = {
    waitStarted: deferred(),
    waitAborted: deferred<unknown>()
  }
  const registry = new FeatureRegistry()
  const feature = registry.feature('t')
  feature.addTool({
    name: 'echo',
    title: 'Echo',
    description: 'Echoes its text',
    inputSchema: Type.Object({ text: Type.String(), options: Type.Optional(Type.Object({ repeat: Type.Integer() })) }),
    annotations,
    async run (args) { return toolResult({ text: args.text.repeat(args.options?.repeat ?? 1) }) }
  })
  feature.addTool({
    name: 'reject',
    title: 'Reject',
    description: 'Has no answer for its input',
    inputSchema: Type.Object({}),
    annotations,
    async run () { throw new ToolInputError('no answer for this input') }
  })
  feature.addTool({
    name: 'crash',
    title: 'Crash',
    description: 'Fails unexpectedly',
    inputSchema: Type.Object({}),
    annotations,
    async run () { throw new Error('secret detail: db password is hunter2') }
  })
  feature.addTool({
    name: 'note',
    title: 'Note',
    description: 'Appends its text to the session\'s notes',
    inputSchema: Type.Object({ text: Type.String() }),
    annotations,
    async run (args, context) {
      const [entry] = await context.state.append(NOTES, [args.text], { set: 'notes', add: { written: 1 } })
      return toolResult({ seq: entry!.seq })
    }
  })
  feature.addTool({
    name: 'steps',
    title: 'Steps',
    description: 'Reports progress twice',
    inputSchema: Type.Object({}),
    annotations,
    async run (_args, context) {
      await context.progress(1, 2, 'half way')
      await context.progress(2, 2)
      return toolResult({ done: true })
    }
  })
  feature.addTool({
    name: 'shout',
    title: 'Shout',
    description: 'Logs at a level on the session\'s stream',
    inputSchema: Type.Object({ level: Type.String() }),
    annotations,
    async run (args, context) {
      await context.log(args.level as LogLevel, { shouted: args.level })
      return toolResult({})
    }
  })
  feature.addTool({
    name: 'wait',
    title: 'Wait',
    description: 'Waits until cancelled',
    inputSchema: Type.Object({}),
    annotations,
    async run (_args, context) {
      hooks.waitStarted.resolve()
      await new Promise(resolve => context.signal.addEventListener('abort', resolve, { once: true }))
      hooks.waitAborted.resolve(context.signal.reason)
      return toolResult({ aborted: true })
    }
  })
  feature.addTool({
    name: 'confirm',
    title: 'Confirm',
    description: 'Asks the client to confirm',
    inputSchema: Type.Object({}),
    annotations,
    async run (_args, context) {
      const answer = await context.ask({
        method: 'elicitation/create',
        params: { message: 'Sure?', requestedSchema: { type: 'object', properties: { ok: { type: 'boolean' } } } }
      }, ElicitResultSchema)
      return toolResult({ action: answer.action, ok: answer.content?.ok === true })
    }
  })
  feature.addResource({
    uri: 'test://hello',
    name: 'hello',
    title: 'Hello',
    description: 'A fixed text',
    mimeType: 'text/plain',
    async read () { return 'hello' }
  })
  feature.addResourceTemplate({
    uriTemplate: 'test://items/{id}',
    name: 'item',
    title: 'Item',
    description: 'Item 1 exists, no other',
    mimeType: 'text/plain',
    async read (_context, { id }) { return id === '1' ? 'item one' : undefined }
  })
  feature.addPrompt({
    name: 'greet',
    title: 'Greet',
    description: 'Greets someone',
    arguments: [{ name: 'who', description: 'Whom to greet', required: true }],
    get: args => ({ messages: [{ role: 'user', content: { type: 'text', text: `Hello ${args.who}` } }] })
  })

  const logged: Array<{ error: unknown, message: string }> = []
  const logError = (error: unknown, message: string) => { logged.push({ error, message }) }
  const dispatcher = new Dispatcher({ features: registry, handles: new ScopeHandles(new MemorySessionStore({ ttlSeconds: 60 })), serverInfo: { name: 'unit', version: '0' }, logError })
  const store = new MemorySessionStore({ ttlSeconds: 60 })
  const record = newRecord()
  await store.create(record)
  const transport = new FakeTransport()
  const server = new SessionServer({ dispatcher, store, requestIds: new IdSequence('testnode'), logError }, record, transport)
  await transport.start()

  let nextId = 1
  /** A request from the client, as the transport delivers it; resolves with the response. */
  const request = (method: string, params?: unknown, id: RequestId = nextId++) => {
    transport.onmessage!({ jsonrpc: '2.0', id, method, ...(params !== undefined && { params }) } as JSONRPCMessage)
    return transport.response(id)
  }
  const notify = (method: string, params?: Record<string, unknown>) =>
    transport.onmessage!({ jsonrpc: '2.0', method, ...(params !== undefined && { params }) } as JSONRPCMessage)
  return { hooks, store, record, transport, server, logged, request, notify }
}

test('initializeResult', async t => {
  const params = (protocolVersion: string) => ({ protocolVersion, capabilities: {}, clientInfo: { name: 'c', version: '1' } })
  const serverInfo = { name: 'unit', version: '0' }
  t.same(initializeResult(params('2025-06-18'), serverInfo), { protocolVersion: '2025-06-18', capabilities: SERVER_CAPABILITIES, serverInfo },
    'a revision the server speaks is the one answered')
  t.equal(initializeResult(params('1999-01-01'), serverInfo).protocolVersion, LATEST_PROTOCOL_VERSION, 'an unknown revision gets the latest')
  const missing = (() => { try { initializeResult({ protocolVersion: '2025-06-18', capabilities: {} }, serverInfo) } catch (error) { return error } })()
  t.type(missing, RpcError)
  t.equal((missing as RpcError).code, ErrorCode.InvalidParams)
  t.match((missing as RpcError).message, /Invalid params: clientInfo: /, 'the error names what is wrong')
  t.throws(() => initializeResult(undefined, serverInfo), { code: ErrorCode.InvalidParams, message: /Invalid params: params: / })
})

test('protocol errors', async t => {
  const { request, logged } = await setup()

  const unknown = await request('tools/destroy', {})
  t.match(unknown.error, { code: -32601, message: /Method not found$/ })

  const badUri = await request('resources/read', { uri: 42 })
  t.equal(badUri.error.code, -32602)
  t.match(badUri.error.message, /Invalid params: uri: Expected string$/, 'the error names the param')
  const noName = await request('tools/call', { arguments: {} })
  t.match(noName.error, { code: -32602, message: /Invalid params: name: / })
  const noParams = await request('tools/call')
  t.match(noParams.error, { code: -32602, message: /Invalid params: params: / })

  const unknownTool = await request('tools/call', { name: 'nope', arguments: {} })
  t.match(unknownTool.error, { code: -32602, message: /Unknown tool: nope$/ })

  t.same(await request('ping'), { jsonrpc: '2.0', id: 6, result: {} })
  t.same(logged, [], 'nothing of this is logged as a failure')
})

test('error messages reach the client as written, without the SDK\'s "MCP error <code>: " prefix', async t => {
  const { request } = await setup()
  t.same((await request('tools/call', { name: 'crash', arguments: {} })).error, { code: -32603, message: 'Internal error' }, 'a failing tool')
  t.same((await request('tools/destroy', {})).error, { code: -32601, message: 'Method not found' }, 'an unknown method')
  t.same((await request('resources/read', { uri: 42 })).error, { code: -32602, message: 'Invalid params: uri: Expected string' }, 'invalid params')
})

test('tool calls: results, invalid arguments, tool errors and failures', async t => {
  const { request, logged } = await setup()

  const ok = await request('tools/call', { name: 'echo', arguments: { text: 'ab', options: { repeat: 2 } } })
  t.same(ok.result.structuredContent, { text: 'abab' })

  const wrongType = await request('tools/call', { name: 'echo', arguments: { text: 5 } })
  t.equal(wrongType.error, undefined, 'invalid arguments are a tool result, not a protocol error')
  t.equal(wrongType.result.isError, true)
  t.match(wrongType.result.content[0].text, /^Invalid argument text for echo: /)
  const nested = await request('tools/call', { name: 'echo', arguments: { text: 'a', options: { repeat: 'x' } } })
  t.match(nested.result.content[0].text, /^Invalid argument options\.repeat for echo: /, 'a nested argument is named by its path')
  const missing = await request('tools/call', { name: 'echo', arguments: {} })
  t.match(missing.result, { isError: true, content: [{ text: /argument text/ }] })

  const rejected = await request('tools/call', { name: 'reject', arguments: {} })
  t.same(rejected.result, { content: [{ type: 'text', text: 'no answer for this input' }], isError: true })
  t.same(logged, [], 'a ToolInputError is not logged as a failure')

  const crashed = await request('tools/call', { name: 'crash', arguments: {} })
  t.match(crashed.error, { code: -32603, message: /Internal error$/ }, 'the client sees a generic error')
  t.same(Object.keys(crashed.error).sort(), ['code', 'message'], 'with no data')
  t.notMatch(JSON.stringify(crashed), /hunter2/, 'and nothing of its detail')
  t.equal(logged.length, 1, 'the failure is logged once')
  t.match(logged[0], { error: { message: /hunter2/ }, message: 'tool crash failed' })
})

test('resources and prompts', async t => {
  const { request } = await setup()
  const hello = await request('resources/read', { uri: 'test://hello' })
  t.same(hello.result.contents, [{ uri: 'test://hello', mimeType: 'text/plain', text: 'hello' }])
  const item = await request('resources/read', { uri: 'test://items/1' })
  t.same(item.result.contents, [{ uri: 'test://items/1', mimeType: 'text/plain', text: 'item one' }])

  const unknown = await request('resources/read', { uri: 'test://nothing' })
  t.match(unknown.error, { code: RESOURCE_NOT_FOUND, message: /Resource not found: test:\/\/nothing$/, data: { uri: 'test://nothing' } })
  t.equal(RESOURCE_NOT_FOUND, -32002)
  const noItem = await request('resources/read', { uri: 'test://items/9' })
  t.equal(noItem.error.code, -32002, 'a template that finds nothing at the URI is not found either')
  t.equal((await request('resources/subscribe', { uri: 'test://nothing' })).error.code, -32002)

  const greeting = await request('prompts/get', { name: 'greet', arguments: { who: 'Ada' } })
  t.equal(greeting.result.messages[0].content.text, 'Hello Ada')
  const noWho = await request('prompts/get', { name: 'greet', arguments: {} })
  t.match(noWho.error, { code: -32602, message: /Prompt greet needs the argument who$/ })
})

test('logging/setLevel persists to the store, and the level filters log messages', async t => {
  const { request, store, record, transport } = await setup()
  const invalid = await request('logging/setLevel', { level: 'loud' })
  t.match(invalid.error, { code: -32602, message: /Invalid params: level: / })
  t.equal((await store.get(record.id))?.logLevel, undefined)

  await request('tools/call', { name: 'shout', arguments: { level: 'emergency' } })
  t.same(transport.sentWithMethod('notifications/message'), [], 'no log messages before a level is set')

  t.same((await request('logging/setLevel', { level: 'warning' })).result, {})
  t.equal((await store.get(record.id))?.logLevel, 'warning', 'the level is in the store, for every node')

  await request('tools/call', { name: 'shout', arguments: { level: 'info' } })
  await request('tools/call', { name: 'shout', arguments: { level: 'error' } })
  const logs = transport.sentWithMethod('notifications/message')
  t.equal(logs.length, 1, 'a message below the level is not sent')
  t.same(logs[0]?.message.params, { level: 'error', logger: 't', data: { shouted: 'error' } }, 'the logger is the feature')
  t.equal(logs[0]?.options, undefined, 'on the session\'s stream, not the request\'s')
})

test('a tool\'s state reaches the store under the session\'s scope', async t => {
  const { request, store, record } = await setup()
  const other = newRecord()
  await store.create(other)
  const first = await request('tools/call', { name: 'note', arguments: { text: 'first' } })
  const second = await request('tools/call', { name: 'note', arguments: { text: 'second' } })
  t.same([first.result.structuredContent.seq, second.result.structuredContent.seq], [1, 2])
  const { entries, appended } = await store.entries<string>(record.id, NOTES)
  t.same(entries.map(e => e.data), ['first', 'second'])
  t.equal(appended, 2)
  t.same(await store.counters(record.id, 'notes'), { written: 2 })
  t.same((await store.entries(other.id, NOTES)).entries, [], 'another session sees none of it')
})

test('progress is sent only with a progressToken, on the request\'s stream', async t => {
  const { request, transport } = await setup()
  const without = await request('tools/call', { name: 'steps', arguments: {} })
  t.same(without.result.structuredContent, { done: true })
  t.same(transport.sentWithMethod('notifications/progress'), [], 'no token, no progress')

  const withToken = await request('tools/call', { name: 'steps', arguments: {}, _meta: { progressToken: 'tok' } }, 'with-token')
  t.same(withToken.result.structuredContent, { done: true })
  const progress = transport.sentWithMethod('notifications/progress')
  t.equal(progress.length, 2)
  t.match(progress.map(p => p.message.params), [
    { progressToken: 'tok', progress: 1, total: 2, message: 'half way' },
    { progressToken: 'tok', progress: 2, total: 2 }
  ])
  t.same(progress.map(p => p.options), [{ relatedRequestId: 'with-token' }, { relatedRequestId: 'with-token' }], 'related to the request')
  const responseAt = transport.sent.findIndex(s => s.message.id === 'with-token')
  t.ok(transport.sent.indexOf(progress[1]!) < responseAt, 'progress comes before the response')
})

test('notifications/cancelled aborts the tool\'s signal and the request gets no response', async t => {
  const { request, transport, hooks, notify } = await setup()
  transport.onmessage!({ jsonrpc: '2.0', id: 7, method: 'tools/call', params: { name: 'wait', arguments: {} } })
  await hooks.waitStarted.promise
  notify('notifications/cancelled', { requestId: 99, reason: 'another request' })
  await sleep(10)
  t.equal(transport.sent.length, 0, 'cancelling another id changes nothing')
  notify('notifications/cancelled', { requestId: 7, reason: 'user gave up' })
  t.equal(await hooks.waitAborted.promise, 'user gave up', 'the signal is aborted with the client\'s reason')
  await sleep(20)
  t.same(transport.sent.filter(s => s.message.id === 7), [], 'no response to a cancelled request')
  t.same((await request('ping')).result, {}, 'the session goes on')
})

test('context.ask sends a request and resolves with the client\'s answer', async t => {
  const { transport, request } = await setup()
  transport.onmessage!({ jsonrpc: '2.0', id: 'call-1', method: 'tools/call', params: { name: 'confirm', arguments: {} } })
  const asked = await transport.next(s => s.message.method === 'elicitation/create')
  t.match(asked.message, { jsonrpc: '2.0', id: /^testnode/, params: { message: 'Sure?' } }, 'with an id of this node')
  t.same(asked.options, { relatedRequestId: 'call-1' }, 'on the stream of the request that asked')
  await sleep(10)
  t.notOk(transport.sent.some(s => s.message.id === 'call-1'), 'the tool waits for the answer')

  transport.onmessage!({ jsonrpc: '2.0', id: 'testnode-unknown', result: { action: 'decline' } })
  transport.onmessage!({ jsonrpc: '2.0', id: asked.message.id, result: { action: 'accept', content: { ok: true } } })
  const response = await transport.response('call-1')
  t.same(response.result.structuredContent, { action: 'accept', ok: true })

  transport.onmessage!({ jsonrpc: '2.0', id: 'call-2', method: 'tools/call', params: { name: 'confirm', arguments: {} } })
  const again = await transport.next(s => s.message.method === 'elicitation/create' && s.message.id !== asked.message.id)
  t.not(again.message.id, asked.message.id, 'each request to the client has its own id')
  transport.onmessage!({ jsonrpc: '2.0', id: again.message.id, result: { action: 'decline' } })
  t.same((await transport.response('call-2')).result.structuredContent, { action: 'decline', ok: false })
  t.same((await request('ping')).result, {})
})

test('x-mcp-header annotations are read when a tool is added, and bad ones refused', async t => {
  const feature = new FeatureRegistry().feature('headers')
  const add = (name: string, properties: Record<string, ReturnType<typeof Type.String> | ReturnType<typeof Type.Number> | ReturnType<typeof Type.Object>>) =>
    feature.addTool({ name, title: name, description: name, annotations: {}, inputSchema: Type.Object(properties), async run () { return toolResult({}, '') } })
  const registry = new FeatureRegistry()
  registry.feature('headers').addTool({ name: 'nested', title: 'nested', description: 'nested', annotations: {}, inputSchema: Type.Object({ region: Type.String({ 'x-mcp-header': 'Region' }), options: Type.Object({ tenant: Type.String({ 'x-mcp-header': 'Tenant' }) }) }), async run () { return toolResult({}, '') } })
  t.same(registry.tool('nested')?.headerParams, [{ path: ['region'], header: 'mcp-param-region' }, { path: ['options', 'tenant'], header: 'mcp-param-tenant' }], 'found through properties, nested objects included')
  t.throws(() => add('number', { amount: Type.Number({ 'x-mcp-header': 'Amount' }) }), /no string, integer or boolean/, 'a number')
  t.throws(() => add('token', { region: Type.String({ 'x-mcp-header': 'Re gion' }) }), /no header name/, 'a name that is no header token')
  t.throws(() => add('twice', { a: Type.String({ 'x-mcp-header': 'Same' }), b: Type.String({ 'x-mcp-header': 'same' }) }), /used twice/, 'a name used twice, in any case')
})
