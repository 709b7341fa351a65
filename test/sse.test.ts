import { setTimeout as sleep } from 'node:timers/promises'
import { test } from 'tap'
import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js'
import { SseStream } from '../src/transport/sse.js'
import { FakeResponse, eventually } from './helpers/fakes.js'
import { parseEvents } from './helpers/raw-client.js'

const message = (n: number): JSONRPCMessage => ({ jsonrpc: '2.0', method: 'notifications/message', params: { level: 'info', data: n } })
/** Lets the current tick end, and with it the stream's write of that tick. */
const nextTurn = () => new Promise(resolve => setImmediate(resolve))

function open (keepAliveMs?: number) {
  const res = new FakeResponse()
  const stream = new SseStream(res.asServerResponse, 's', keepAliveMs)
  return { res, stream }
}

test('an event is written as event, id and data lines', async t => {
  const { res, stream } = open()
  stream.send(message(1), 's.1')
  stream.send(message(2))
  await nextTurn()
  t.equal(res.text,
    `event: message\nid: s.1\ndata: ${JSON.stringify(message(1))}\n\n` +
    `event: message\ndata: ${JSON.stringify(message(2))}\n\n`)
  t.same(parseEvents(res.text).map(e => e.message), [message(1), message(2)], 'as a client reads them')
})

test('a priming event carries only its id and the reconnection delay', async t => {
  const { res, stream } = open()
  stream.send(null, 's.0', 3000)
  await nextTurn()
  t.equal(res.text, 'id: s.0\nretry: 3000\ndata: \n\n')
  t.same(parseEvents(res.text), [{ id: 's.0', data: '' }], 'a client sees an id to resume from and no message')
})

test('events written in one tick leave in one write', async t => {
  const { res, stream } = open()
  stream.send(message(1), 's.1')
  stream.send(message(2), 's.2')
  stream.send(message(3), 's.3')
  t.same(res.writes, [], 'nothing before the tick ends')
  await nextTurn()
  t.equal(res.writes.length, 1, 'one write')
  t.same(res.messages, [message(1), message(2), message(3)], 'in order')
  stream.send(message(4), 's.4')
  await nextTurn()
  t.equal(res.writes.length, 2, 'a later tick, a second write')
})

test('an event id is written at most once', async t => {
  const { res, stream } = open()
  stream.send(message(1), 's.1')
  stream.send(message(1), 's.1')
  await nextTurn()
  stream.send(message(1), 's.1')
  stream.send(message(2))
  stream.send(message(2))
  await nextTurn()
  t.same(res.events.map(e => e.id), ['s.1', undefined, undefined], 'events without an id are never dropped')
})

test('hold and release: the replay first, then what was held back, each id once', async t => {
  const { res, stream } = open()
  stream.hold()
  stream.send(message(3), 's.3')
  stream.send(message(4), 's.4')
  await nextTurn()
  t.same(res.writes, [], 'nothing while held')
  stream.release([{ message: message(1), eventId: 's.1' }, { message: message(2), eventId: 's.2' }, { message: message(3), eventId: 's.3' }])
  stream.send(message(5), 's.5')
  await nextTurn()
  t.same(res.events.map(e => e.id), ['s.1', 's.2', 's.3', 's.4', 's.5'])
  t.same(res.messages, [1, 2, 3, 4, 5].map(message))
})

test('end writes the reconnection delay and ends the response once', async t => {
  const { res, stream } = open()
  stream.send(message(1), 's.1')
  stream.end(500)
  t.equal(res.endCalls, 1)
  t.equal(res.text, `event: message\nid: s.1\ndata: ${JSON.stringify(message(1))}\n\nretry: 500\n\n`, 'the pending event, then the delay')
  t.equal(stream.open, false)
  stream.end(500)
  stream.send(message(2), 's.2')
  await nextTurn()
  t.equal(res.endCalls, 1, 'ended once')
  t.same(res.messages, [message(1)], 'nothing after the end')
  t.equal(res.writesAfterEnd, 0)

  const plain = open()
  plain.stream.end()
  t.equal(plain.res.text, '', 'no delay unless asked')
  t.equal(plain.res.endCalls, 1)
})

test('onClose runs once, whoever closes', async t => {
  const byClient = open()
  let clientCloses = 0
  byClient.stream.onClose = () => { clientCloses++ }
  byClient.res.leave()
  byClient.res.leave()
  byClient.stream.end(100)
  t.equal(clientCloses, 1, 'the client left')
  t.equal(byClient.stream.open, false)

  const byServer = open()
  let serverCloses = 0
  byServer.stream.onClose = () => { serverCloses++ }
  byServer.stream.end()
  t.equal(serverCloses, 1, 'the server ended it')
  await nextTurn()
  t.equal(serverCloses, 1, 'the response\'s close event after the end changes nothing')
})

test('keepalive comments at the interval, until the stream closes', async t => {
  const started = performance.now()
  const { res, stream } = open(20)
  const keepalives = () => res.events.filter(e => e.comment === 'keepalive').length
  await eventually('two keepalives', () => keepalives() >= 2)
  // Timers never fire early, so this holds however loaded the machine is.
  t.ok(performance.now() - started >= 35, 'two intervals passed before the second')
  t.ok(res.text.startsWith(': keepalive\n\n'), 'an SSE comment')
  t.equal(res.events.length, keepalives(), 'comments only')
  stream.end()
  const written = res.text
  await sleep(60)
  t.equal(res.text, written, 'none after the end')

  const left = open(20)
  left.res.leave()
  await sleep(60)
  t.same(left.res.writes, [], 'none after the client left')
})

test('the keepalive timer stops when the stream closes, whoever closes it', async t => {
  const { setInterval: set, clearInterval: clear } = globalThis
  const created: unknown[] = []
  const cleared: unknown[] = []
  // Patched only while the streams open and close, synchronously: no other code runs meanwhile.
  globalThis.setInterval = ((...args: Parameters<typeof set>) => {
    const timer = set(...args)
    created.push(timer)
    return timer
  }) as typeof set
  const byServer = open(20)
  const byClient = open(20)
  globalThis.setInterval = set
  globalThis.clearInterval = ((timer: Parameters<typeof clear>[0]) => {
    cleared.push(timer)
    clear(timer)
  }) as typeof clear
  byServer.stream.end()
  byClient.res.leave()
  globalThis.clearInterval = clear
  t.equal(created.length, 2, 'one timer per stream')
  t.same(cleared, created, 'both stopped, so a closed stream holds nothing alive')
})

test('nothing is written after the client went away', async t => {
  const { res, stream } = open()
  stream.send(message(1), 's.1')
  await nextTurn()
  res.leave()
  t.equal(stream.open, false)
  stream.send(message(2), 's.2')
  stream.send(null, 's.3', 100)
  stream.end(100)
  await nextTurn()
  t.same(res.messages, [message(1)])
  t.equal(res.writesAfterClientLeft, 0)
  t.equal(res.endCalls, 0, 'a response the client left is not ended by the stream')

  // An event sent in the same tick as the client leaves is not flushed to the gone response.
  const sameTick = open()
  sameTick.stream.send(message(1), 's.1')
  sameTick.res.leave()
  await nextTurn()
  t.equal(sameTick.res.writesAfterClientLeft, 0, 'a pending write is dropped too')
})
