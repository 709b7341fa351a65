import { setTimeout as sleep } from 'node:timers/promises'
import type { Test } from 'tap'
import type { SessionRecord, SessionStore, SessionStoreOptions } from '../../src/stores/session-store.js'

let counter = 0
export function newRecord (overrides: Partial<SessionRecord> = {}): SessionRecord {
  const now = Date.now()
  return {
    id: `contract-${process.pid}-${++counter}-${now}`,
    createdAt: now,
    lastActivityAt: now,
    protocolVersion: '2025-11-25',
    initializeParams: { protocolVersion: '2025-11-25', capabilities: { elicitation: {} }, clientInfo: { name: 'contract', version: '1' } },
    subscriptions: [],
    requestCount: 1,
    calculationCount: 0,
    ...overrides
  }
}

const entry = (n: number) => ({ operation: n % 2 === 0 ? 'add' : 'multiply', expression: `#${n}`, inputs: [n, 1], result: n })

/** The behaviour every SessionStore implementation must have; run against each of them. */
export function storeContract (t: Test, make: (options: SessionStoreOptions) => Promise<SessionStore>) {
  t.test('create, get, touch and delete', async t => {
    const store = await make({ ttlSeconds: 60, historyLimit: 100 })
    t.teardown(() => store.close())
    const record = newRecord()
    t.equal(await store.get(record.id), undefined)
    await store.create(record)
    const read = await store.get(record.id)
    t.same(read?.initializeParams, record.initializeParams)
    t.equal(read?.protocolVersion, '2025-11-25')
    const touched = await store.touch(record.id)
    t.equal(touched?.requestCount, 2, 'touch counts a request')
    t.equal(await store.touch('missing'), undefined)
    t.equal(await store.delete(record.id), true)
    t.equal(await store.delete(record.id), false)
    t.equal(await store.get(record.id), undefined)
    t.equal(await store.touch(record.id), undefined)
    t.same(await store.history(record.id), [], 'history goes with the session')
  })

  t.test('log level and subscriptions', async t => {
    const store = await make({ ttlSeconds: 60, historyLimit: 100 })
    t.teardown(() => store.close())
    const record = newRecord()
    await store.create(record)
    await store.setLogLevel(record.id, 'warning')
    await store.setSubscription(record.id, 'calculator://history', true)
    await store.setSubscription(record.id, 'calculator://stats', true)
    await store.setSubscription(record.id, 'calculator://history', true)
    await store.setSubscription(record.id, 'calculator://stats', false)
    const read = await store.get(record.id)
    t.equal(read?.logLevel, 'warning')
    t.same(read?.subscriptions, ['calculator://history'])
    await store.appendHistory(record.id, entry(1))
    // A node holding the record as it was at creation reads back what changed since.
    const touched = await store.touch(record.id, structuredClone(record))
    t.equal(touched?.logLevel, 'warning')
    t.same(touched?.subscriptions, ['calculator://history'])
    t.equal(touched?.requestCount, 2)
    t.equal(touched?.calculationCount, 1)
    t.same(touched?.initializeParams, record.initializeParams)
    t.equal(touched?.protocolVersion, record.protocolVersion)
    t.same(await store.touch(record.id, touched), { ...touched, requestCount: 3, lastActivityAt: (await store.get(record.id))!.lastActivityAt })
  })

  t.test('history is bounded, ordered, findable, and counted', async t => {
    const store = await make({ ttlSeconds: 60, historyLimit: 5 })
    t.teardown(() => store.close())
    const record = newRecord()
    await store.create(record)
    const stored = []
    for (let i = 1; i <= 8; i++) stored.push(await store.appendHistory(record.id, entry(i)))
    t.equal(new Set(stored.map(s => s.id)).size, 8, 'ids are unique')
    t.same((await store.history(record.id)).map(e => e.result), [4, 5, 6, 7, 8], 'oldest dropped, oldest first')
    t.same((await store.history(record.id, 2)).map(e => e.result), [7, 8])
    t.equal((await store.findCalculation(record.id, stored[7]!.id))?.result, 8)
    t.equal(await store.findCalculation(record.id, stored[0]!.id), undefined, 'a dropped entry is gone')
    t.equal(await store.findCalculation(record.id, 'nope'), undefined)
    t.same(await store.stats(record.id), { add: 4, multiply: 4 })
    t.equal((await store.get(record.id))?.calculationCount, 8)
    t.equal(await store.clearHistory(record.id), 5)
    t.same(await store.history(record.id), [])
    t.same(await store.stats(record.id), { add: 4, multiply: 4 }, 'statistics survive clearing')
  })

  t.test('concurrent appends lose nothing', async t => {
    const store = await make({ ttlSeconds: 60, historyLimit: 1000 })
    t.teardown(() => store.close())
    const record = newRecord()
    await store.create(record)
    await Promise.all(Array.from({ length: 200 }, (_, i) => store.appendHistory(record.id, entry(i))))
    await Promise.all(Array.from({ length: 100 }, () => store.touch(record.id)))
    t.equal((await store.history(record.id)).length, 200)
    const read = await store.get(record.id)
    t.equal(read?.calculationCount, 200)
    t.equal(read?.requestCount, 101)
  })

  t.test('sessions expire after the TTL without activity', async t => {
    const store = await make({ ttlSeconds: 1, historyLimit: 10 })
    t.teardown(() => store.close())
    const record = newRecord()
    await store.create(record)
    await store.appendHistory(record.id, entry(1))
    await sleep(600)
    t.ok(await store.touch(record.id), 'touch slides the expiry')
    await sleep(600)
    t.ok(await store.get(record.id), 'still alive 1.2 s after creation')
    await sleep(1100)
    t.equal(await store.get(record.id), undefined)
    t.same(await store.history(record.id), [])
  })

  t.test('count sees live sessions', async t => {
    const store = await make({ ttlSeconds: 60, historyLimit: 10 })
    t.teardown(() => store.close())
    const before = await store.count()
    const records = [newRecord(), newRecord(), newRecord()]
    for (const r of records) await store.create(r)
    t.equal(await store.count(), before + 3)
    await store.delete(records[0]!.id)
    t.equal(await store.count(), before + 2)
  })
}
