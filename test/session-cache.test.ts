import { setTimeout as sleep } from 'node:timers/promises'
import { test, type Test } from 'tap'
import { Type } from '@sinclair/typebox'
import { ElicitResultSchema, type JSONRPCMessage, type JSONRPCRequest } from '@modelcontextprotocol/sdk/types.js'
import { Dispatcher } from '../src/mcp/dispatcher.js'
import { FeatureRegistry, ScopeHandles, toolResult } from '../src/mcp/features.js'
import { IdSequence } from '../src/mcp/protocol.js'
import { MemorySessionStore } from '../src/stores/memory-session-store.js'
import type { LogSpec, SessionRecord } from '../src/stores/session-store.js'
import { LocalBus } from '../src/transport/bus.js'
import { SessionCache } from '../src/transport/session-cache.js'
import { StreamBudget } from '../src/transport/session-transport.js'
import { FakeResponse, deferred, eventually } from './helpers/fakes.js'

const NOTES: LogSpec = { name: 'notes', maxEntries: 10 }

/** A memory store whose writes of new sessions take a while, as a remote store's do. */
class SlowCreateStore extends MemorySessionStore {
  override async create (record: SessionRecord): Promise<void> {
    await sleep(20)
    return super.create(record)
  }
}

let nextId = 1
const initialize = (params: Record<string, unknown> = {}): JSONRPCRequest => ({
  jsonrpc: '2.0',
  id: nextId++,
  method: 'initialize',
  params: { protocolVersion: '2025-11-25', capabilities: { elicitation: {} }, clientInfo: { name: 'unit', version: '1' }, ...params }
})

/** A cache of at most `max` live sessions over a memory store and a local bus; counts its callbacks. */
function setup (t: Test, max = 10) {
  const store = new SlowCreateStore({ ttlSeconds: 60 })
  const bus = new LocalBus()
  const registry = new FeatureRegistry()
  const toolCalled = { started: deferred(), finish: deferred() }
  registry.feature('t').addTool({
    name: 'hold',
    title: 'Hold',
    description: 'Answers when the test says so',
    inputSchema: Type.Object({}),
    annotations: {},
    async run () {
      toolCalled.started.resolve()
      await toolCalled.finish.promise
      return toolResult({ held: true })
    }
  })
  registry.feature('t').addTool({
    name: 'confirm',
    title: 'Confirm',
    description: 'Asks the client to confirm',
    inputSchema: Type.Object({}),
    annotations: {},
    async run (_args, context) {
      const answer = await context.ask({ method: 'elicitation/create', params: { message: 'Sure?', requestedSchema: { type: 'object', properties: {} } } }, ElicitResultSchema)
      return toolResult({ action: answer.action })
    }
  })
  const logError = () => {}
  const counts = { created: 0, rebuilt: 0, deleted: 0 }
  const cache = new SessionCache(
    { dispatcher: new Dispatcher({ features: registry, handles: new ScopeHandles(store), serverInfo: { name: 'unit', version: '0' }, logError }), store, requestIds: new IdSequence(bus.address), logError },
    { name: 'unit', version: '0' },
    { store, bus, streamIds: new IdSequence(bus.address), retryMs: 1000, keepAliveMs: 0, batchAnswerMaxBytes: 1_000_000, streams: new StreamBudget(100), onError: () => {} },
    {
      max,
      maxBytes: 1_000_000_000,
      idleMs: 60_000,
      onCreated: () => { counts.created++ },
      onRebuilt: () => { counts.rebuilt++ },
      onDeleted: () => { counts.deleted++ }
    }
  )
  t.teardown(async () => {
    cache.close()
    await bus.close()
    await store.close()
  })
  return { store, cache, counts, toolCalled }
}

test('initialize writes the session to the store before it resolves', async t => {
  const { store, cache, counts } = setup(t)
  const request = initialize()
  const { sessionId, response } = await cache.initialize(request)
  t.type(sessionId, 'string')
  const record = await store.get(sessionId!)
  t.ok(record, 'the record is readable by every node once initialize resolved')
  t.match(record, { id: sessionId, protocolVersion: '2025-11-25', subscriptions: [], requestCount: 1, initializeParams: { clientInfo: { name: 'unit' }, capabilities: { elicitation: {} } } })
  t.match(response, { jsonrpc: '2.0', id: request.id, result: { protocolVersion: '2025-11-25', serverInfo: { name: 'unit' } } })
  t.equal(cache.size, 1)
  t.equal(counts.created, 1)

  const older = await cache.initialize(initialize({ protocolVersion: '2025-03-26' }))
  t.equal((await store.get(older.sessionId!))?.protocolVersion, '2025-03-26', 'the negotiated revision is recorded')
  t.not(older.sessionId, sessionId, 'each session has its own id')

  const before = await store.count()
  const invalid = await cache.initialize(initialize({ clientInfo: undefined }))
  t.equal(invalid.sessionId, undefined, 'invalid params make no session')
  t.match(invalid.response, { error: { code: -32602, message: /clientInfo/ } })
  t.same(await store.count(), before)
  t.equal(counts.created, 2)
})

test('acquire of an unknown session id is undefined', async t => {
  const { cache, counts } = setup(t)
  t.equal(await cache.acquire('no-such-session'), undefined)
  t.equal(cache.size, 0)
  t.equal(counts.rebuilt, 0)
})

test('an evicted session is rebuilt on acquire with its state from the store', async t => {
  const { store, cache, counts } = setup(t, 1)
  const { sessionId: first } = await cache.initialize(initialize())
  const live = (await cache.acquire(first!))!
  await live.server.setLogLevel('warning')
  await live.server.subscribe('test://x', true)
  await live.server.state.append(NOTES, ['kept'])
  live.transport.release()

  await cache.initialize(initialize())
  t.equal(cache.size, 1, 'the second session took the only slot')
  t.equal(counts.rebuilt, 0)

  const rebuilt = (await cache.acquire(first!))!
  t.teardown(() => rebuilt.transport.release())
  t.equal(counts.rebuilt, 1, 'onRebuilt was called')
  t.not(rebuilt.server, live.server, 'a new server')
  t.not(rebuilt.transport, live.transport, 'and a new transport')
  t.equal(rebuilt.server.sessionId, first)
  t.equal(rebuilt.server.record.logLevel, 'warning', 'the log level survived')
  t.same(rebuilt.server.record.subscriptions, ['test://x'], 'so did the subscriptions')
  t.same((await rebuilt.server.state.entries(NOTES)).entries.map(e => e.data), ['kept'], 'and the session\'s state')
  t.equal((await store.get(first!))?.requestCount, 3, 'every acquire counted a request')

  const again = (await cache.acquire(first!))!
  again.transport.release()
  t.equal(again.server, rebuilt.server, 'a live session is reused')
  t.equal(counts.rebuilt, 1)
})

test('a flood of new sessions does not push out a session holding a stream', async t => {
  const { cache, counts } = setup(t, 2)
  const { sessionId: bystander } = await cache.initialize(initialize())
  const live = (await cache.acquire(bystander!))!
  const stream = new FakeResponse()
  await live.transport.serveGet(() => stream.asServerResponse)
  live.transport.release()
  for (let i = 0; i < 20; i++) await cache.initialize(initialize())
  t.notOk(stream.writableEnded, 'the bystander\'s stream is still open')
  const again = (await cache.acquire(bystander!))!
  again.transport.release()
  t.equal(again.server, live.server, 'and its session was not rebuilt')
  t.equal(counts.rebuilt, 0)
})

test('delete removes a session from the store and the cache', async t => {
  const { store, cache, counts } = setup(t)
  const { sessionId } = await cache.initialize(initialize())
  await cache.initialize(initialize())
  t.equal(await cache.delete(sessionId!), true)
  t.equal(await store.get(sessionId!), undefined, 'gone from the store')
  t.equal(cache.size, 1, 'and from the cache')
  t.equal(counts.deleted, 1, 'onDeleted was called')
  t.equal(await cache.delete(sessionId!), false, 'a second delete finds nothing')
  t.equal(counts.deleted, 1)
  t.equal(await cache.acquire(sessionId!), undefined)
  t.equal(counts.rebuilt, 0, 'a deleted session is not rebuilt')
})

test('a leased session is not closed by eviction until released', async t => {
  const { cache } = setup(t, 1)
  const { sessionId } = await cache.initialize(initialize())
  const live = (await cache.acquire(sessionId!))!
  let closed = 0
  const onclose = live.transport.onclose
  live.transport.onclose = () => { closed++; onclose?.() }

  await cache.initialize(initialize())
  t.equal(cache.size, 1, 'evicted')
  await sleep(20)
  t.equal(closed, 0, 'still open while leased')

  live.transport.release()
  await eventually('the transport to close', () => closed === 1)
  t.equal(live.transport.lease(), false, 'a closed transport takes no more requests')
  await sleep(10)
  t.equal(closed, 1, 'closed once')
})

test('a session evicted while answering a request closes once it has answered', async t => {
  const { cache, toolCalled } = setup(t, 1)
  const { sessionId } = await cache.initialize(initialize())
  const live = (await cache.acquire(sessionId!))!
  let closed = 0
  const onclose = live.transport.onclose
  live.transport.onclose = () => { closed++; onclose?.() }
  const bodies: unknown[] = []
  live.transport.post([{ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'hold', arguments: {} } }], false, {
    json: body => { bodies.push(body) },
    stream: () => undefined
  })
  live.transport.release()
  await toolCalled.started.promise

  await cache.initialize(initialize())
  await sleep(20)
  t.equal(closed, 0, 'not closed with a request in flight')
  toolCalled.finish.resolve()
  await eventually('the answer', () => bodies.length === 1)
  t.match(bodies[0], { id: 1, result: { structuredContent: { held: true } } }, 'the request was answered')
  await eventually('the transport to close', () => closed === 1)
  t.equal(live.transport.lease(), false, 'then the session closed on this node')
})

test('a session evicted while its tool waits for the client\'s answer still gets the answer', async t => {
  const { cache } = setup(t, 1)
  const { sessionId } = await cache.initialize(initialize())
  const first = (await cache.acquire(sessionId!))!
  const res = new FakeResponse()
  first.transport.post([{ jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'confirm', arguments: {} } }], false, {
    json: () => {},
    stream: () => res.asServerResponse
  })
  first.transport.release()
  await eventually('the question', () => res.messages.some(m => m.method === 'elicitation/create'))
  const question = res.messages.find(m => m.method === 'elicitation/create')
  const answer: JSONRPCMessage = { jsonrpc: '2.0', id: question.id, result: { action: 'accept', content: {} } }
  const answered = () => res.messages.some(m => m.id === 1)
  // Without the fix the tool would wait 60 s: the answer goes to the retiring transport directly, so the test ends now.
  t.teardown(() => { if (!answered()) first.transport.post([answer], false, { json: () => {}, stream: () => undefined }) })

  await cache.initialize(initialize())
  const rebuilt = (await cache.acquire(sessionId!))!
  rebuilt.transport.post([answer], false, { json: () => {}, stream: () => undefined })
  rebuilt.transport.release()
  await eventually('the tool\'s answer', answered, 500).catch(() => {})
  t.ok(answered(), 'the tool got the client\'s answer and answered the call')
})
