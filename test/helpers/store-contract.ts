import { setTimeout as sleep } from 'node:timers/promises'
import type { Test } from 'tap'
import { HANDLE_SCOPE, MAX_REMEMBERED_OPS, type LogSpec, type SessionRecord, type SessionStore, type SessionStoreOptions } from '../../src/stores/session-store.js'

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
    ...overrides
  }
}

const entry = (n: number) => ({ operation: n % 2 === 0 ? 'add' : 'multiply', expression: `#${n}`, inputs: [n, 1], result: n })
const LOG: LogSpec = { name: 'history', maxEntries: 5 }
const OTHER_LOG: LogSpec = { name: 'other', maxEntries: 5 }
const BIG_LOG: LogSpec = { name: 'big', maxEntries: 1000 }

/** The behaviour every SessionStore implementation must have; run against each of them. */
export function storeContract (t: Test, make: (options: SessionStoreOptions) => Promise<SessionStore>) {
  t.test('create, get, touch and delete', async t => {
    const store = await make({ ttlSeconds: 60 })
    t.teardown(() => store.close())
    const record = newRecord({ creator: 'ip:192.0.2.7' })
    t.equal(await store.get(record.id), undefined)
    await store.create(record)
    const read = await store.get(record.id)
    t.same(read?.initializeParams, record.initializeParams)
    t.equal(read?.protocolVersion, '2025-11-25')
    t.equal(read?.creator, 'ip:192.0.2.7', 'who created it is kept')
    const touched = await store.touch(record.id)
    t.equal(touched?.record.requestCount, 2, 'touch counts a request')
    t.equal(touched?.record.creator, 'ip:192.0.2.7')
    t.equal((await store.touch(record.id, touched?.record))?.record.creator, 'ip:192.0.2.7', 'also when the caller knew the record')
    t.equal(await store.touch('missing'), undefined)
    await store.append(record.id, LOG, [entry(1)], { set: 'ops', add: { add: 1 } })
    t.equal(await store.delete(record.id), true)
    t.equal(await store.delete(record.id), false)
    t.equal(await store.get(record.id), undefined)
    t.equal(await store.touch(record.id), undefined)
    t.same(await store.entries(record.id, LOG), { entries: [], appended: 0 }, 'the scope\'s logs go with the session')
    t.same(await store.counters(record.id, 'ops'), {}, 'and its counters')
  })

  t.test('log level and subscriptions', async t => {
    const store = await make({ ttlSeconds: 60 })
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
    // A node holding the record as it was at creation reads back what changed since.
    const touched = await store.touch(record.id, structuredClone(record))
    t.equal(touched?.record.logLevel, 'warning')
    t.same(touched?.record.subscriptions, ['calculator://history'])
    t.equal(touched?.record.requestCount, 2)
    t.same(touched?.record.initializeParams, record.initializeParams)
    t.equal(touched?.record.protocolVersion, record.protocolVersion)
    await store.claimStream(record.id, 'node-b', 'open', 60_000)
    const again = await store.touch(record.id, touched!.record)
    t.same(again?.record, { ...touched!.record, requestCount: 3, streamNode: 'node-b', lastActivityAt: (await store.get(record.id))!.lastActivityAt })
  })

  t.test('one node at a time holds the lease of a session\'s GET stream', async t => {
    const store = await make({ ttlSeconds: 60 })
    t.teardown(() => store.close())
    const record = newRecord()
    await store.create(record)
    t.same(await store.claimStream(record.id, 'a', 'open', 300), { ok: true }, 'the first GET takes it')
    t.same(await store.claimStream(record.id, 'b', 'open', 300), { ok: false, previous: 'a' }, 'a second one elsewhere is refused')
    t.same(await store.claimStream(record.id, 'a', 'open', 300), { ok: true, previous: 'a' }, 'the holder may open again')
    t.same(await store.claimStream(record.id, 'b', 'renew', 300), { ok: false, previous: 'a' }, 'only the holder renews')
    t.same(await store.claimStream(record.id, 'b', 'resume', 300), { ok: true, previous: 'a' }, 'a resumption takes it from anyone')
    t.same(await store.claimStream(record.id, 'a', 'renew', 300), { ok: false, previous: 'b' }, 'and the old holder learns it lost it')
    await sleep(350)
    t.same(await store.claimStream(record.id, 'c', 'open', 300), { ok: true, previous: 'b' }, 'a lease that was not renewed runs out')
    t.same(await store.claimStream(record.id, 'b', 'release', 0), { ok: true, previous: 'c' }, 'releasing what another holds changes nothing')
    t.equal((await store.get(record.id))?.streamNode, 'c')
    await store.claimStream(record.id, 'c', 'release', 0)
    t.equal((await store.get(record.id))?.streamNode, undefined, 'the holder releases it')
    t.same(await store.claimStream('missing', 'a', 'open', 300), { ok: false })
  })

  t.test('the event log is bounded in bytes; an event too large to keep is a gap', async t => {
    const store = await make({ ttlSeconds: 60, eventLimit: 1000, eventLogMaxBytes: 10_000, eventMaxBytes: 2000 })
    t.teardown(() => store.close())
    const record = newRecord()
    await store.create(record)
    const message = (n: number, size: number) => ({ jsonrpc: '2.0' as const, method: 'notifications/message', params: { n, data: 'x'.repeat(size) } })
    const first = await store.appendEvent(record.id, 's', null)
    for (let n = 1; n <= 100; n++) await store.appendEvent(record.id, 's', message(n, 900))
    const kept = (await store.eventsAfter(record.id, first!))!.events
    const bytes = kept.reduce((sum, e) => sum + JSON.stringify(e.message).length, 0)
    t.ok(bytes <= 10_000, `at most 10,000 bytes kept (${bytes})`)
    t.ok(kept.length >= 5, `the newest are kept (${kept.length})`)
    t.equal((kept.at(-1)!.message as any).params.n, 100)
    const big = await store.appendEvent(record.id, 's', message(101, 5000))
    t.type(big, 'string', 'an event too large to keep still gets an id')
    const after = (await store.eventsAfter(record.id, first!))!.events
    t.notOk(after.some(e => (e.message as any).params.n === 101), 'but is not replayed')
  })

  t.test('the event log keeps the newest events, in order, up to its count', async t => {
    const store = await make({ ttlSeconds: 60, eventLimit: 10 })
    t.teardown(() => store.close())
    const record = newRecord()
    await store.create(record)
    const message = (n: number) => ({ jsonrpc: '2.0' as const, method: 'notifications/progress', params: { progressToken: 't', progress: n } })
    const first = await store.appendEvent(record.id, 's', message(0))
    // One at a time, then several in one loop turn (appended together, past the count at once).
    for (let n = 1; n <= 12; n++) await store.appendEvent(record.id, 's', message(n))
    await Promise.all([13, 14, 15, 16, 17, 18, 19].map(n => store.appendEvent(record.id, 's', message(n))))
    const kept = (await store.eventsAfter(record.id, first!))!.events
    t.same(kept.map(e => (e.message as any).params.progress), [10, 11, 12, 13, 14, 15, 16, 17, 18, 19], 'the newest 10')
  })

  t.test('a touch counts requests in a fixed rate-limit window', async t => {
    const store = await make({ ttlSeconds: 60, rateWindowMs: 400 })
    t.teardown(() => store.close())
    const record = newRecord()
    await store.create(record)
    t.equal((await store.touch(record.id))?.hits, 1, 'the window starts at the first request after initialize (counted for its address)')
    const second = await store.touch(record.id)
    t.equal(second?.hits, 2)
    t.ok(second!.resetMs > 0 && second!.resetMs <= 400)
    await sleep(450)
    t.equal((await store.touch(record.id))?.hits, 1, 'a new window starts over')
    t.equal((await store.hit('ip:192.0.2.1')).hits, 1)
    t.equal((await store.hit('ip:192.0.2.1')).hits, 2)
    t.equal((await store.hit('ip:192.0.2.2')).hits, 1, 'keys are counted apart')
  })

  t.test('logs are bounded, ordered, numbered and findable; counters are kept beside them', async t => {
    const store = await make({ ttlSeconds: 60 })
    t.teardown(() => store.close())
    const record = newRecord()
    await store.create(record)
    const stored = []
    for (let i = 1; i <= 8; i++) stored.push(...(await store.append(record.id, LOG, [entry(i)], { set: 'ops', add: { [entry(i).operation]: 1 } }))!)
    t.same(stored.map(s => s.seq), [1, 2, 3, 4, 5, 6, 7, 8], 'numbered from 1')
    const { entries, appended } = await store.entries<ReturnType<typeof entry>>(record.id, LOG)
    t.same(entries.map(e => e.data.result), [4, 5, 6, 7, 8], 'oldest dropped, oldest first')
    t.equal(appended, 8)
    t.same((await store.entries<ReturnType<typeof entry>>(record.id, LOG, 2)).entries.map(e => e.data.result), [7, 8])
    t.same((await store.entries(record.id, LOG, 0)).entries, [])
    t.same((await store.entry(record.id, LOG, 8))?.data, entry(8))
    t.equal(await store.entry(record.id, LOG, 1), undefined, 'a dropped entry is gone')
    t.equal(await store.entry(record.id, LOG, 99), undefined)
    t.same(await store.counters(record.id, 'ops'), { add: 4, multiply: 4 })
    t.same(await store.counters(record.id, 'other'), {})
    t.equal(await store.clear(record.id, LOG), 5)
    t.same((await store.entries(record.id, LOG)).entries, [])
    t.equal((await store.entries(record.id, LOG)).appended, 8, 'numbering goes on after clearing')
    t.same((await store.append(record.id, LOG, [entry(9)]))?.map(e => e.seq), [9])
    t.same(await store.counters(record.id, 'ops'), { add: 4, multiply: 4 }, 'counters survive clearing')
    t.same((await store.entries(record.id, OTHER_LOG)).entries, [], 'logs are apart')
    t.equal(await store.append('missing', LOG, [entry(1)]), undefined, 'nothing is kept for a scope that is gone')
  })

  t.test('an operation key makes a write happen once', async t => {
    const store = await make({ ttlSeconds: 60 })
    t.teardown(() => store.close())
    const record = newRecord()
    await store.create(record)
    const first = await store.append(record.id, BIG_LOG, [entry(1), entry(2)], { set: 'ops', add: { add: 1, multiply: 1 } }, { op: 'r1#0' })
    const again = await store.append(record.id, BIG_LOG, [entry(1), entry(2)], { set: 'ops', add: { add: 1, multiply: 1 } }, { op: 'r1#0' })
    t.same(again, first, 'the same entries, numbers and time')
    const concurrent = await Promise.all(Array.from({ length: 10 }, () => store.append(record.id, BIG_LOG, [entry(3)], undefined, { op: 'r2#0' })))
    t.same(new Set(concurrent.map(c => c![0]!.seq)), new Set([3]), 'concurrent tries agree')
    t.equal((await store.entries(record.id, BIG_LOG)).appended, 3, 'written once each')
    t.same(await store.counters(record.id, 'ops'), { add: 1, multiply: 1 }, 'counted once')
    t.equal(await store.clear(record.id, BIG_LOG, 'r3#0'), 3)
    await store.append(record.id, BIG_LOG, [entry(4)])
    t.equal(await store.clear(record.id, BIG_LOG, 'r3#0'), 3, 'a repeated clear reports what it did and clears nothing more')
    t.equal((await store.entries(record.id, BIG_LOG)).entries.length, 1)
    for (let i = 0; i < MAX_REMEMBERED_OPS; i++) await store.append(record.id, BIG_LOG, [entry(i)], undefined, { op: `later-${i}` })
    const forgotten = await store.append(record.id, BIG_LOG, [entry(1), entry(2)], undefined, { op: 'r1#0' })
    t.not(forgotten![0]!.seq, first![0]!.seq, `only the last ${MAX_REMEMBERED_OPS} keys are remembered`)
  })

  t.test('a batch is appended all at once; concurrent appends lose nothing', async t => {
    const store = await make({ ttlSeconds: 60 })
    t.teardown(() => store.close())
    const record = newRecord()
    await store.create(record)
    const batch = await store.append(record.id, BIG_LOG, [entry(1), entry(2), entry(3)], { set: 'ops', add: { add: 1, multiply: 2 } })
    t.same(batch?.map(e => e.seq), [1, 2, 3])
    await Promise.all(Array.from({ length: 200 }, (_, i) => store.append(record.id, BIG_LOG, [entry(i)], { set: 'ops', add: { add: 1 } })))
    await Promise.all(Array.from({ length: 100 }, () => store.touch(record.id)))
    const { entries, appended } = await store.entries(record.id, BIG_LOG)
    t.equal(entries.length, 203)
    t.equal(new Set(entries.map(e => e.seq)).size, 203, 'every number once')
    t.equal(appended, 203)
    t.same(await store.counters(record.id, 'ops'), { add: 201, multiply: 2 })
    t.equal((await store.get(record.id))?.requestCount, 101)
  })

  t.test('sessions expire after the TTL without activity', async t => {
    const store = await make({ ttlSeconds: 1 })
    t.teardown(() => store.close())
    const record = newRecord()
    await store.create(record)
    await store.append(record.id, LOG, [entry(1)])
    await sleep(600)
    t.ok(await store.touch(record.id), 'touch slides the expiry')
    await sleep(600)
    t.ok(await store.get(record.id), 'still alive 1.2 s after creation')
    await sleep(1100)
    t.equal(await store.get(record.id), undefined)
    t.same((await store.entries(record.id, LOG)).entries, [])
  })

  t.test('a write that touches slides the expiry, counts no request, and writes only its principal\'s scope', async t => {
    const store = await make({ ttlSeconds: 1 })
    t.teardown(() => store.close())
    const before = await store.count()
    const handle = newRecord({ protocolVersion: HANDLE_SCOPE, principal: 'alice' })
    await store.create(handle)
    t.equal(await store.append(handle.id, LOG, [entry(1)], undefined, { touch: { principal: 'mallory' } }), undefined, 'another principal finds no scope')
    t.same((await store.append(handle.id, LOG, [entry(2)], undefined, { touch: { principal: 'alice' } }))?.map(e => e.seq), [1], 'its own principal writes')
    t.equal((await store.get(handle.id))?.requestCount, 1, 'and counts no request')
    t.equal(await store.append('missing', LOG, [entry(1)], undefined, { touch: {} }), undefined, 'a scope that is gone is not written')
    for (let i = 0; i < 2; i++) {
      await sleep(600)
      t.ok(await store.append(handle.id, LOG, [entry(3 + i)], undefined, { touch: { principal: 'alice' } }), `alive ${(i + 1) * 0.6} s after creation`)
    }
    t.same(await store.count(), { sessions: before.sessions, handles: before.handles + 1 }, 'the write kept it counted')
    t.same((await store.entries(handle.id, LOG)).entries.map(e => e.data), [entry(2), entry(3), entry(4)])
    await sleep(1200)
    t.equal(await store.append(handle.id, LOG, [entry(5)], undefined, { touch: { principal: 'alice' } }), undefined, 'expired a TTL after its last write')
  })

  t.test('count sees live sessions and history handles, each apart', async t => {
    const store = await make({ ttlSeconds: 60 })
    t.teardown(() => store.close())
    const before = await store.count()
    const sessions = [newRecord(), newRecord(), newRecord()]
    const handles = [newRecord({ protocolVersion: HANDLE_SCOPE }), newRecord({ protocolVersion: HANDLE_SCOPE })]
    for (const r of [...sessions, ...handles]) await store.create(r)
    t.same(await store.count(), { sessions: before.sessions + 3, handles: before.handles + 2 })
    await store.delete(sessions[0]!.id)
    await store.delete(handles[0]!.id)
    t.notOk(await store.delete(handles[0]!.id), 'a second delete finds nothing')
    t.same(await store.count(), { sessions: before.sessions + 2, handles: before.handles + 1 })
    await store.touch(handles[1]!.id)
    await store.touch(sessions[1]!.id, sessions[1])
    t.same(await store.count(), { sessions: before.sessions + 2, handles: before.handles + 1 }, 'a touch keeps each in its own count')
  })

  t.test('expired sessions and history handles leave the counts, and are reported each apart', async t => {
    const expired = { sessions: 0, handles: 0 }
    const store = await make({ ttlSeconds: 1, observer: { scopesExpired: ({ sessions, handles }) => { expired.sessions += sessions; expired.handles += handles } } })
    t.teardown(() => store.close())
    // A shared store counts what the earlier tests left as expired too, once it is older than this TTL.
    await sleep(1200)
    const before = await store.count()
    const seen = { ...expired }
    await store.create(newRecord())
    await store.create(newRecord())
    await store.create(newRecord({ protocolVersion: HANDLE_SCOPE }))
    t.same(await store.count(), { sessions: before.sessions + 2, handles: before.handles + 1 })
    await sleep(2200)
    t.same(await store.count(), before)
    t.same({ sessions: expired.sessions - seen.sessions, handles: expired.handles - seen.handles }, { sessions: 2, handles: 1 }, 'two sessions and one handle reported expired')
  })
}
