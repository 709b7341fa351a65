import { test } from 'tap'
import { Redis } from 'ioredis'
import { RedisSessionStore } from '../src/stores/redis-session-store.js'
import { StorageUnavailableError } from '../src/errors.js'
import { ownRedis } from './helpers/processes.js'
import { newRecord, storeContract } from './helpers/store-contract.js'
import { needs } from './helpers/needs.js'

test('RedisSessionStore keeps the store contract on a real redis-server', { skip: needs('redis-server') }, async t => {
  const { connect } = await ownRedis(t)
  /** A store on a new connection, with a new session in it. */
  const withSession = async () => {
    const client = connect()
    const store = new RedisSessionStore(client, { ttlSeconds: 100 })
    const record = newRecord()
    await store.create(record)
    return { client, store, record }
  }
  storeContract(t, async options => new RedisSessionStore(connect(), options))

  t.test('every key of a session shares one hash tag and one expiry', async t => {
    const { client, store, record } = await withSession()
    await store.append(record.id, { name: 'history', maxEntries: 10 }, [{ expression: '1 + 1 = 2' }], { set: 'ops', add: { add: 1 } })
    await store.appendEvent(record.id, 'g', { jsonrpc: '2.0', method: 'notifications/x' })
    const found = await client.keys(`*${record.id}*`)
    t.equal(found.length, 4)
    for (const key of found) {
      t.match(key, `mcp:{${record.id}}:`)
      const ttl = await client.pttl(key)
      t.ok(ttl > 100_000 && ttl <= 110_000, `${key} expires with the session (the TTL plus its refresh lag, 10 s)`)
    }
    await store.delete(record.id)
    t.same(await client.keys(`*${record.id}*`), [], 'DELETE removes every key')
  })

  t.test('commands sent in one turn of the event loop reach Redis in one write', async t => {
    const { store, record } = await withSession()
    const admin = connect()
    t.teardown(() => admin.disconnect())
    const reads = async () => Number(/^total_reads_processed:(\d+)/m.exec(String(await admin.call('INFO', 'stats')))![1])
    const before = await reads()
    const found = await Promise.all(Array.from({ length: 50 }, () => store.get(record.id)))
    t.ok(found.every(session => session?.id === record.id), 'every command is answered')
    // The second INFO is one read of its own.
    t.ok((await reads()) - before - 1 <= 2, 'Redis read the 50 commands in one or two socket reads')
  })

  t.test('event ids name their stream and replay exactly what came after', async t => {
    const { store, record } = await withSession()
    const priming = await store.appendEvent(record.id, 'a', null)
    const a1 = await store.appendEvent(record.id, 'a', { jsonrpc: '2.0', method: 'm', params: { n: 1 } })
    await store.appendEvent(record.id, 'b', { jsonrpc: '2.0', method: 'm', params: { n: 2 } })
    await store.appendEvent(record.id, 'a', { jsonrpc: '2.0', method: 'm', params: { n: 3 } })
    const all = await store.eventsAfter(record.id, priming!)
    t.equal(all?.streamId, 'a')
    t.same(all?.events.map(e => (e.message as unknown as { params: { n: number } }).params.n), [1, 3])
    const rest = await store.eventsAfter(record.id, a1!)
    t.same(rest?.events.map(e => (e.message as unknown as { params: { n: number } }).params.n), [3])
    t.equal(await store.eventsAfter(record.id, 'garbage'), undefined)
  })

  t.test('an unreachable Redis gives StorageUnavailableError, not a hang', async t => {
    const client = new Redis({ port: 1, host: '127.0.0.1', enableOfflineQueue: false, lazyConnect: true, retryStrategy: () => null })
    t.teardown(() => client.disconnect())
    const store = new RedisSessionStore(client, { ttlSeconds: 100 })
    await t.rejects(store.touch('anything'), StorageUnavailableError)
  })
})
