import { setTimeout as sleep } from 'node:timers/promises'
import { test } from 'tap'
import { type BusMessage, LocalBus, addressOf } from '../src/transport/bus.js'
import { RedisBus } from '../src/transport/redis-bus.js'
import { eventually } from './helpers/fakes.js'
import { ownRedis } from './helpers/processes.js'
import { needs } from './helpers/needs.js'

const claim = (from: string, sessionId: string): BusMessage => ({ kind: 'claim', sessionId, streamId: 'get', node: from })

test('RedisBus on a real redis-server', { skip: needs('redis-server') }, async t => {
  const { connect } = await ownRedis(t)
  const admin = connect()

  /** Three nodes, each with its own publisher and subscriber connection, and an inbox. */
  const startNodes = async (sharded: boolean) => {
    const nodes: Array<{ bus: RedisBus, inbox: BusMessage[] }> = []
    for (let i = 0; i < 3; i++) {
      const bus = new RedisBus(connect(), connect(), sharded)
      const inbox: BusMessage[] = []
      bus.onMessage(message => { inbox.push(message) })
      await bus.start()
      nodes.push({ bus, inbox })
    }
    return nodes
  }

  t.test('each node receives only the messages published to its address', async t => {
    const nodes = await startNodes(false)
    for (const [i, { bus }] of nodes.entries()) {
      await bus.publish(nodes[(i + 1) % 3]!.bus.address, claim(bus.address, `from-${i}`))
    }
    await eventually('every node to receive its message', () => nodes.every(n => n.inbox.length > 0))
    // Anything sent to the wrong node would have come by now: the publishes above have all been answered.
    await sleep(50)
    t.same(nodes.map(n => n.inbox), [
      [claim(nodes[2]!.bus.address, 'from-2')],
      [claim(nodes[0]!.bus.address, 'from-0')],
      [claim(nodes[1]!.bus.address, 'from-1')]
    ])

    const channels = nodes.map(n => `mcp:bus:${n.bus.address}`)
    t.same((await admin.call('PUBSUB', 'CHANNELS', '*') as string[]).sort(), [...channels, 'mcp:broadcast'].sort(), 'one channel per node, and the broadcast channel every node hears')
    t.same(await admin.call('PUBSUB', 'NUMSUB', ...channels), channels.flatMap(c => [c, 1]), 'each with its node as the one subscriber')
    for (const { bus } of nodes) await bus.close()
  })

  t.test('a broadcast reaches every node, the sender included, and no node\'s own inbox', async t => {
    const nodes = await startNodes(false)
    const heard = nodes.map(n => {
      const messages: unknown[] = []
      n.bus.onBroadcast(message => { messages.push(message) })
      return messages
    })
    await nodes[1]!.bus.broadcast({ kind: 'updated', uri: 'calculator://histories/h-x' })
    await eventually('every node to hear the broadcast', () => heard.every(m => m.length === 1))
    t.same(heard, [0, 1, 2].map(() => [{ kind: 'updated', uri: 'calculator://histories/h-x' }]))
    t.same(nodes.map(n => n.inbox), [[], [], []])
    for (const { bus } of nodes) await bus.close()
  })

  t.test('a node receives what it publishes to itself; garbage on its channel is ignored', async t => {
    const [{ bus, inbox }] = await startNodes(false) as [{ bus: RedisBus, inbox: BusMessage[] }]
    await admin.publish(`mcp:bus:${bus.address}`, 'not json {')
    await bus.publish(bus.address, claim(bus.address, 'self'))
    await eventually('the message to itself', () => inbox.length > 0)
    t.same(inbox, [claim(bus.address, 'self')])

    await bus.close()
    await bus.publish(bus.address, claim(bus.address, 'after-close'))
    await sleep(50)
    t.equal(inbox.length, 1, 'nothing is delivered after close')
  })

  t.test('sharded channels (SPUBLISH / SSUBSCRIBE) route the same way', async t => {
    const nodes = await startNodes(true)
    await nodes[0]!.bus.publish(nodes[1]!.bus.address, claim(nodes[0]!.bus.address, 'sharded'))
    await eventually('the message', () => nodes[1]!.inbox.length > 0)
    await sleep(50)
    t.same(nodes.map(n => n.inbox), [[], [claim(nodes[0]!.bus.address, 'sharded')], []])
    const channels = nodes.map(n => `mcp:bus:${n.bus.address}`)
    t.same(await admin.call('PUBSUB', 'SHARDNUMSUB', ...channels), channels.flatMap(c => [c, 1]), 'one shard channel per node')
    for (const { bus } of nodes) await bus.close()
  })
})

test('LocalBus delivers only to its own address', async t => {
  const a = new LocalBus()
  const b = new LocalBus()
  const inboxes: Record<'a' | 'b', BusMessage[]> = { a: [], b: [] }
  a.onMessage(message => { inboxes.a.push(message) })
  b.onMessage(message => { inboxes.b.push(message) })
  t.not(a.address, b.address, 'every bus has its own address')
  t.equal(addressOf(`${a.address}0`), a.address, 'which starts the ids its node makes')

  await a.publish(b.address, claim(a.address, 'to-b'))
  await a.publish(a.address, claim(a.address, 'to-a'))
  await sleep(5)
  t.same(inboxes, { a: [claim(a.address, 'to-a')], b: [] }, 'a single node reaches only itself')

  await a.close()
  await a.publish(a.address, claim(a.address, 'after-close'))
  await sleep(5)
  t.equal(inboxes.a.length, 1, 'nothing is delivered after close')
})
