import { setTimeout as sleep } from 'node:timers/promises'
import { test, type Test } from 'tap'
import type { JSONRPCMessage, MessageExtraInfo, RequestId } from '@modelcontextprotocol/sdk/types.js'
import { ConflictError, InvalidRequestError, TooManyStreamsError } from '../src/errors.js'
import { IdSequence } from '../src/mcp/protocol.js'
import { MemorySessionStore } from '../src/stores/memory-session-store.js'
import type { SessionRecord } from '../src/stores/session-store.js'
import { addressOf, newAddress } from '../src/transport/bus.js'
import { type ExchangeSink, SessionTransport, StreamBudget } from '../src/transport/session-transport.js'
import { sseHeaders } from '../src/transport/sse.js'
import { FakeResponse, RecordingBus, eventually } from './helpers/fakes.js'
import { newRecord } from './helpers/store-contract.js'

const RETRY_MS = 1000

/** Where a POST's answer goes, as the route provides it: records the JSON body or opens an SSE response. */
class FakeSink implements ExchangeSink {
  readonly bodies: unknown[] = []
  readonly res = new FakeResponse()
  streamCalls = 0
  readonly #streams: boolean

  /** `streams: false` is a client that gets no SSE stream (streamed messages are dropped here). */
  constructor (streams = true) { this.#streams = streams }

  json (body: unknown): void { this.bodies.push(body) }

  stream () {
    this.streamCalls++
    if (!this.#streams) return undefined
    this.res.writeHead(200, sseHeaders('unit'))
    this.res.flushHeaders()
    return this.res.asServerResponse
  }
}

const request = (id: RequestId, method = 'tools/call'): JSONRPCMessage => ({ jsonrpc: '2.0', id, method, params: {} })
const response = (id: RequestId, result: Record<string, unknown> = {}): JSONRPCMessage => ({ jsonrpc: '2.0', id, result })
const progress = (n: number): JSONRPCMessage => ({ jsonrpc: '2.0', method: 'notifications/progress', params: { progressToken: 'tok', progress: n } })
const updated: JSONRPCMessage = { jsonrpc: '2.0', method: 'notifications/resources/updated', params: { uri: 'test://x' } }

/** A session's transport over a memory store and a bus that records what it is asked to publish. */
async function setup (t: Test, options: { protocolVersion?: string, streamPrefix?: string, batchAnswerMaxBytes?: number, streams?: StreamBudget } = {}) {
  const store = new MemorySessionStore({ ttlSeconds: 60 })
  t.teardown(() => store.close())
  const bus = new RecordingBus()
  const session = { record: newRecord({ protocolVersion: options.protocolVersion ?? '2025-11-25' }) as SessionRecord }
  await store.create(session.record)
  const errors: Array<{ error: unknown, message: string }> = []
  const transport = new SessionTransport(session.record.id, {
    store,
    bus,
    streamIds: new IdSequence(options.streamPrefix ?? bus.address),
    retryMs: RETRY_MS,
    keepAliveMs: 0,
    batchAnswerMaxBytes: options.batchAnswerMaxBytes ?? 1_000_000,
    streams: options.streams ?? new StreamBudget(100),
    onError: (error, message) => { errors.push({ error, message }) }
  }, () => session.record)
  const received: Array<{ message: any, extra?: MessageExtraInfo }> = []
  transport.onmessage = (message, extra) => { received.push({ message, extra }) }
  t.teardown(() => transport.close())
  return { store, bus, session, sessionId: session.record.id, transport, received, errors }
}

test('a request answered with nothing streamed gets one JSON body', async t => {
  const { transport, received, errors } = await setup(t)
  const sink = new FakeSink()
  t.equal(transport.post([request(1)], false, sink), true, 'the POST carries a request')
  t.same(received.map(r => r.message), [request(1)], 'which reaches the session server')
  t.type(received[0]?.extra?.closeSSEStream, 'function', 'with a way to end its stream')
  t.same(sink.bodies, [], 'nothing before the response')

  await transport.send(response(1, { ok: true }))
  await transport.send(response(1, { ok: 'again' }))
  t.same(sink.bodies, [response(1, { ok: true })], 'the response, once, as an object')
  t.equal(sink.streamCalls, 0, 'no SSE')

  const notifications = new FakeSink()
  t.equal(transport.post([{ jsonrpc: '2.0', method: 'notifications/initialized' }], false, notifications), false, 'a POST of notifications answers nothing')
  t.equal(received[1]?.extra, undefined)
  t.same([notifications.bodies, notifications.streamCalls], [[], 0])
  t.same(errors, [])
})

test('a progress notification related to the request switches its POST to SSE', async t => {
  const { transport, bus, store, sessionId } = await setup(t)
  const sink = new FakeSink()
  transport.post([request('r1')], false, sink)
  await transport.send(progress(1), { relatedRequestId: 'r1' })
  await transport.send(progress(2), { relatedRequestId: 'r1' })
  await transport.send(updated)
  await transport.send(response('r1', { done: true }))
  await eventually('the stream to end', () => sink.res.writableEnded)

  t.equal(sink.streamCalls, 1, 'one stream for the POST')
  t.same(sink.bodies, [], 'and no JSON body')
  const streamId = `${bus.address}0`
  t.equal(addressOf(streamId), bus.address, 'the stream id names this node')
  const { events } = sink.res
  t.same(events.map(e => e.id), [1, 2, 3, 5].map(n => `${streamId}.${n}`), 'every event has an id <streamId>.<n>; the unrelated notification is not here')
  t.same(events[0], { id: `${streamId}.1`, retry: RETRY_MS, data: '' }, 'a priming event first')
  t.same(sink.res.messages, [progress(1), progress(2), response('r1', { done: true })], 'the response is the last event')
  t.ok(events.slice(1).every(e => e.event === 'message'))
  t.equal(sink.res.endCalls, 1, 'the stream ends once')

  const stored = await store.eventsAfter(sessionId, `${streamId}.1`)
  t.same(stored?.events.map(e => e.message), [progress(1), progress(2), response('r1', { done: true })], 'every event is stored for resumption')
  t.same(bus.published, [], 'nothing goes over the bus for a stream held here')
})

test('the answers to a batch are bounded in bytes: the ones past the bound become errors', async t => {
  const { transport } = await setup(t, { batchAnswerMaxBytes: 300 })
  const sink = new FakeSink()
  transport.post([request('a'), request('b'), request('c')], true, sink)
  const big = { text: 'x'.repeat(200) }
  await transport.send(response('a', big))
  await transport.send(response('b', big))
  await transport.send(response('c', { small: true }))
  const [answers] = sink.bodies as any[][]
  t.same(answers![0], response('a', big), 'answers within the bound as they are')
  t.match(answers![1], { id: 'b', error: { code: -32603, message: /exceed 300 bytes; send this request alone/ } })
  t.match(answers![2], { id: 'c', error: { code: -32603 } }, 'and every one after it')
})

test('a batch is answered with an array', async t => {
  const { transport, received } = await setup(t)
  const sink = new FakeSink()
  t.equal(transport.post([request('a'), request('b'), { jsonrpc: '2.0', method: 'notifications/initialized' }], true, sink), true)
  t.equal(received.length, 3)
  await transport.send(response('b'))
  t.same(sink.bodies, [], 'not before every request is answered')
  await transport.send(response('a'))
  t.same(sink.bodies, [[response('b'), response('a')]], 'every response, in the order they came')

  const one = new FakeSink()
  transport.post([request('c')], true, one)
  await transport.send(response('c'))
  t.same(one.bodies, [[response('c')]], 'a batch of one is still an array')

  // A response waiting for its batch joins the stream when another request of the batch streams.
  const mixed = new FakeSink()
  transport.post([request('d'), request('e')], true, mixed)
  await transport.send(response('d'))
  await transport.send(progress(1), { relatedRequestId: 'e' })
  await transport.send(response('e'))
  await eventually('the stream to end', () => mixed.res.writableEnded)
  t.same(mixed.res.messages, [response('d'), progress(1), response('e')])
  t.same(mixed.bodies, [])
})

test('a request id already in flight is refused', async t => {
  const { transport, received } = await setup(t)
  const sink = new FakeSink()
  transport.post([request(5)], false, sink)
  t.throws(() => transport.post([request(5)], false, new FakeSink()), InvalidRequestError)
  t.equal(received.length, 1, 'the refused POST reached nobody')
  t.throws(() => transport.post([request(6), request(6)], true, new FakeSink()), InvalidRequestError, 'ids in one batch must differ')
  t.throws(() => transport.post([request(7), request(5)], true, new FakeSink()), InvalidRequestError)
  t.equal(received.length, 1)
  await transport.send(response(5))
  t.same(sink.bodies, [response(5)])
  t.doesNotThrow(() => transport.post([request(5)], false, new FakeSink()), 'an answered id may come again')
})

test('a cancelled request still ends its POST, with no body', async t => {
  const { transport } = await setup(t)
  const sink = new FakeSink()
  transport.post([request('slow')], false, sink)
  transport.post([{ jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 'slow' } }], false, new FakeSink())
  t.same(sink.bodies, [undefined])
})

test('serveGet opens the session\'s GET stream and records this node as its holder', async t => {
  const { transport, bus, store, sessionId } = await setup(t)
  const get = new FakeResponse()
  await transport.serveGet(() => get.asServerResponse)
  await eventually('the priming event', () => get.events.length === 1)
  t.match(get.events[0], { id: /^get\.\d+$/, retry: RETRY_MS, data: '' }, 'primed for protocol 2025-11-25')
  t.equal((await store.get(sessionId))?.streamNode, bus.address, 'the store names this node')

  let opened = false
  await t.rejects(transport.serveGet(() => { opened = true; return new FakeResponse().asServerResponse }), ConflictError)
  t.notOk(opened, 'the second GET got no stream')

  await transport.send(updated)
  transport.receive({ kind: 'event', sessionId, streamId: 'get', eventId: 'get.99', message: progress(9) })
  await eventually('two messages', () => get.messages.length === 2)
  t.same(get.messages, [updated, progress(9)], 'unrelated messages and events from other nodes go to the GET stream')
  t.match(get.events[1], { event: 'message', id: /^get\.\d+$/ })
  t.equal(get.events[2]?.id, 'get.99')
  t.same(bus.published, [])

  get.leave()
  const again = new FakeResponse()
  await transport.serveGet(() => again.asServerResponse)
  await eventually('the new stream\'s priming event', () => again.events.length === 1)
  t.pass('a GET after the client left opens a new stream')
})

test('two GETs at once: one stream, the other refused', async t => {
  const { transport } = await setup(t)
  const opened = new Set<FakeResponse>()
  const open = (res: FakeResponse) => () => { opened.add(res); return res.asServerResponse }
  const [first, second] = [new FakeResponse(), new FakeResponse()]
  const results = await Promise.allSettled([transport.serveGet(open(first)), transport.serveGet(open(second))])
  t.same(results.map(r => r.status).sort(), ['fulfilled', 'rejected'], 'one GET is refused')
  await transport.send(updated)
  await sleep(10)
  for (const res of [...opened].filter(r => !r.writableEnded)) {
    t.same(res.messages, [updated], 'every open GET stream gets the session\'s messages')
  }
})

test('no priming event before protocol 2025-11-25', async t => {
  const { transport } = await setup(t, { protocolVersion: '2025-06-18' })
  const get = new FakeResponse()
  await transport.serveGet(() => get.asServerResponse)
  await transport.send(updated)
  await eventually('the notification', () => get.messages.length === 1)
  t.equal(get.events.length, 1, 'only the notification')
  t.match(get.events[0], { event: 'message', id: /^get\.\d+$/ })
})

test('a GET opened here tells the previous holder to end its stream', async t => {
  const { transport, bus, store, sessionId } = await setup(t)
  const previous = newAddress()
  // A holder whose lease ran out (a node that stopped, say).
  await store.claimStream(sessionId, previous, 'open', 0)
  await transport.serveGet(() => new FakeResponse().asServerResponse)
  t.equal((await store.get(sessionId))?.streamNode, bus.address, 'this node holds the lease now')
  await eventually('the claim', () => bus.published.length === 1)
  t.same(bus.published, [{ to: previous, message: { kind: 'claim', sessionId, streamId: 'get', node: bus.address } }])
})

test('one GET stream per session across nodes: a live lease elsewhere refuses a new GET, a resumption takes it over', async t => {
  const { transport, bus, store, sessionId } = await setup(t)
  const other = newAddress()
  await store.claimStream(sessionId, other, 'open', 60_000)
  await t.rejects(transport.serveGet(() => new FakeResponse().asServerResponse), ConflictError, 'another node holds the stream')
  const resumed = new FakeResponse()
  await transport.serveGet(() => resumed.asServerResponse, 'get.1')
  t.notOk(resumed.writableEnded, 'a resumption opens here')
  t.equal((await store.get(sessionId))?.streamNode, bus.address)
  await eventually('the old holder to be told', () => bus.published.some(p => p.to === other && p.message.kind === 'claim'))
  resumed.leave()
  await sleep(10)
  t.equal((await store.get(sessionId))?.streamNode, undefined, 'a closed stream releases the lease')
})

test('a resumption on the same node replaces the stream and keeps the lease', async t => {
  const { transport, bus, store, sessionId } = await setup(t)
  const first = new FakeResponse()
  await transport.serveGet(() => first.asServerResponse)
  const second = new FakeResponse()
  await transport.serveGet(() => second.asServerResponse, 'get.1')
  t.ok(first.writableEnded, 'the resumed stream ends')
  t.notOk(second.writableEnded, 'the resumption is open')
  await sleep(10)
  t.equal((await store.get(sessionId))?.streamNode, bus.address, 'this node still holds the lease')
})

test('a node holds at most MAX_STREAMS GET streams', async t => {
  const { transport } = await setup(t, { streams: new StreamBudget(1) })
  const first = new FakeResponse()
  await transport.serveGet(() => first.asServerResponse)
  await t.rejects(transport.serveGet(() => new FakeResponse().asServerResponse, 'other-stream.1'), TooManyStreamsError)
  first.leave()
  await sleep(5)
  const again = new FakeResponse()
  await transport.serveGet(() => again.asServerResponse)
  t.notOk(again.writableEnded, 'a closed stream gives its place back')
})

test('a claim from another node ends the local GET stream; its events then go to that node', async t => {
  const { transport, bus, session, sessionId } = await setup(t)
  const get = new FakeResponse()
  await transport.serveGet(() => get.asServerResponse)
  transport.receive({ kind: 'claim', sessionId, streamId: 'get', node: bus.address })
  await sleep(5)
  t.notOk(get.writableEnded, 'a claim of this node\'s own is ignored')

  const other = newAddress()
  transport.receive({ kind: 'claim', sessionId, streamId: 'get', node: other })
  t.ok(get.writableEnded, 'the stream ends')
  t.same(get.events.at(-1), { retry: RETRY_MS }, 'with a reconnection delay')

  session.record = { ...session.record, streamNode: other }
  await transport.send(updated)
  t.same(bus.published.map(p => p.to), [other])
  t.match(bus.published[0]?.message, { kind: 'event', sessionId, streamId: 'get', eventId: /^get\.\d+$/, message: updated })
})

test('an event for a POST stream made by another node is published to that node only', async t => {
  const other = newAddress()
  const { transport, bus, sessionId } = await setup(t, { streamPrefix: other })
  const sink = new FakeSink(false)
  transport.post([request('x')], false, sink)
  await transport.send(progress(1), { relatedRequestId: 'x' })
  await transport.send(response('x'))
  await eventually('two publishes', () => bus.published.length === 2)
  await sleep(5)
  t.same(bus.published.map(p => p.to), [other, other], 'to the node named by the stream id, and no other')
  t.match(bus.published.map(p => p.message), [
    { kind: 'event', sessionId, streamId: `${other}0`, eventId: new RegExp(`^${other}0\\.\\d+$`), message: progress(1) },
    { kind: 'event', sessionId, streamId: `${other}0`, message: response('x') }
  ])
  t.notOk(bus.published.some(p => p.to === bus.address))
})

test('a POST stream resumed on another node: its events follow the claim there', async t => {
  const { transport, bus, sessionId } = await setup(t)
  const sink = new FakeSink()
  transport.post([request('y')], false, sink)
  await transport.send(progress(1), { relatedRequestId: 'y' })
  await eventually('the first event', () => sink.res.messages.length === 1)
  const streamId = `${bus.address}0`

  const elsewhere = newAddress()
  transport.receive({ kind: 'claim', sessionId, streamId, node: elsewhere })
  t.ok(sink.res.writableEnded, 'the stream here ends')
  await transport.send(progress(2), { relatedRequestId: 'y' })
  await transport.send(response('y'))
  await eventually('two publishes', () => bus.published.length === 2)
  t.same(bus.published.map(p => p.to), [elsewhere, elsewhere])
  t.same(bus.published.map(p => p.message.kind === 'event' && p.message.message), [progress(2), response('y')])
  t.same(sink.res.messages, [progress(1)], 'nothing more was written here')
})

test('a client\'s answer goes to the node that asked', async t => {
  const { transport, bus, received, sessionId } = await setup(t)
  const other = newAddress()
  const theirs = response(`${other}0`, { action: 'accept' })
  const sink = new FakeSink()
  t.equal(transport.post([theirs], false, sink), false, 'a POST of responses answers nothing')
  await eventually('the publish', () => bus.published.length === 1)
  t.same(bus.published, [{ to: other, message: { kind: 'response', sessionId, message: theirs } }], 'published to the node named by the id')
  t.same(received, [], 'nobody here waits for it')

  const ownId = `${bus.address}0`
  await transport.send({ jsonrpc: '2.0', id: ownId, method: 'elicitation/create', params: { message: 'Sure?', requestedSchema: { type: 'object', properties: {} } } })
  transport.post([response(ownId, { action: 'decline' })], false, new FakeSink())
  t.same(received.map(r => r.message), [response(ownId, { action: 'decline' })], 'an answer to this node\'s request is delivered here')
  transport.post([response(ownId, { action: 'decline' })], false, new FakeSink())
  t.equal(received.length, 1, 'once')

  const viaBus = `${bus.address}1`
  await transport.send({ jsonrpc: '2.0', id: viaBus, method: 'sampling/createMessage', params: {} })
  transport.receive({ kind: 'response', sessionId, message: response(viaBus) })
  transport.receive({ kind: 'response', sessionId, message: response(viaBus) })
  t.same(received.slice(1).map(r => r.message), [response(viaBus)], 'an answer relayed by another node is delivered here, once')
  await sleep(5)
  t.equal(bus.published.length, 1, 'answers to this node\'s requests are not published')
})
