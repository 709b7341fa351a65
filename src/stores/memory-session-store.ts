import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js'
import {
  DEFAULT_EVENT_LIMIT, DEFAULT_EVENT_LOG_MAX_BYTES, DEFAULT_EVENT_MAX_BYTES, DEFAULT_RATE_WINDOW_MS, MAX_REMEMBERED_OPS, checkStateName, isHandle, rateWindow, streamOfEventId,
  type CounterUpdate, type LogEntry, type LogLevel, type LogSpec, type ScopeCounts, type SessionRecord, type SessionStore,
  type SessionStoreOptions, type StoredEvent, type StreamClaim, type Touched, type WriteOptions
} from './session-store.js'

interface Log {
  /** The last number given. */
  appended: number
  /** Oldest first; may hold up to twice the limit, readers look at the newest `maxEntries`. */
  entries: LogEntry[]
}

interface Slot {
  record: SessionRecord
  rateStart: number
  rateHits: number
  logs: Map<string, Log>
  counters: Map<string, Record<string, number>>
  /** What operations with a key did, oldest first. */
  ops: Map<string, Array<LogEntry<unknown>> | number>
  events: Array<StoredEvent & { streamId: string, position: number, bytes: number }>
  eventBytes: number
  nextEventPosition: number
}

/**
 * Sessions in this process's memory: zero set-up, one node. Expired sessions are dropped when touched
 * and by a periodic sweep, so memory follows live sessions only.
 */
export class MemorySessionStore implements SessionStore {
  readonly mode = 'memory'
  readonly #slots = new Map<string, Slot>()
  readonly #hits = new Map<string, { start: number, hits: number }>()
  /** How many of the slots are history handles. */
  #handles = 0
  readonly #ttlMs: number
  readonly #eventLimit: number
  readonly #eventLogMaxBytes: number
  readonly #eventMaxBytes: number
  readonly #rateWindowMs: number
  readonly #options: SessionStoreOptions
  readonly #sweeper: NodeJS.Timeout

  constructor (options: SessionStoreOptions) {
    this.#ttlMs = options.ttlSeconds * 1000
    this.#eventLimit = options.eventLimit ?? DEFAULT_EVENT_LIMIT
    this.#eventLogMaxBytes = options.eventLogMaxBytes ?? DEFAULT_EVENT_LOG_MAX_BYTES
    this.#eventMaxBytes = options.eventMaxBytes ?? DEFAULT_EVENT_MAX_BYTES
    this.#rateWindowMs = options.rateWindowMs ?? DEFAULT_RATE_WINDOW_MS
    this.#options = options
    this.#sweeper = setInterval(() => this.#sweep(), Math.min(this.#ttlMs, this.#rateWindowMs, 60_000))
    this.#sweeper.unref()
  }

  async create (record: SessionRecord): Promise<void> {
    this.#remove(record.id)
    if (isHandle(record)) this.#handles++
    this.#slots.set(record.id, {
      record: structuredClone(record),
      rateStart: record.createdAt,
      rateHits: 0,
      logs: new Map(),
      counters: new Map(),
      ops: new Map(),
      events: [],
      eventBytes: 0,
      nextEventPosition: 1
    })
  }

  async touch (id: string, _known?: SessionRecord, principal?: string): Promise<Touched | undefined> {
    const slot = this.#owned(id, principal)
    if (slot === undefined) return undefined
    const now = Date.now()
    slot.record.requestCount++
    slot.record.lastActivityAt = now
    const window = rateWindow(now, slot.rateStart, slot.rateHits, this.#rateWindowMs)
    slot.rateStart = window.start
    slot.rateHits = window.hits
    return { record: slot.record, hits: window.hits, resetMs: window.resetMs }
  }

  async get (id: string): Promise<SessionRecord | undefined> {
    return this.#live(id)?.record
  }

  async delete (id: string, principal?: string): Promise<boolean> {
    return this.#owned(id, principal) !== undefined && this.#remove(id)
  }

  async setLogLevel (id: string, level: LogLevel): Promise<void> {
    const slot = this.#live(id)
    if (slot !== undefined) slot.record.logLevel = level
  }

  async setSubscription (id: string, uri: string, subscribed: boolean): Promise<void> {
    const slot = this.#live(id)
    if (slot === undefined) return
    const subscriptions = slot.record.subscriptions.filter(s => s !== uri)
    if (subscribed) subscriptions.push(uri)
    slot.record.subscriptions = subscriptions
  }

  async claimStream (id: string, node: string, action: StreamClaim, leaseMs: number): Promise<{ ok: boolean, previous?: string }> {
    const record = this.#live(id)?.record
    if (record === undefined) return { ok: false }
    const now = Date.now()
    const previous = record.streamNode
    const held = previous !== undefined && previous !== node && (record.streamUntil ?? 0) > now
    if ((action === 'open' && held) || (action === 'renew' && previous !== node)) return { ok: false, previous }
    if (action === 'release') {
      if (previous === node) {
        delete record.streamNode
        delete record.streamUntil
      }
    } else {
      record.streamNode = node
      record.streamUntil = now + leaseMs
    }
    return previous === undefined ? { ok: true } : { ok: true, previous }
  }

  async append<T> (scope: string, spec: LogSpec, entries: readonly T[], count?: CounterUpdate, { op, touch }: WriteOptions = {}): Promise<Array<LogEntry<T>> | undefined> {
    const slot = touch === undefined ? this.#live(scope) : this.#owned(scope, touch.principal)
    if (slot === undefined) return undefined
    if (touch !== undefined) slot.record.lastActivityAt = Date.now()
    const done = op === undefined ? undefined : slot.ops.get(op)
    if (Array.isArray(done)) return done as Array<LogEntry<T>>
    const log = this.#log(slot, spec)
    const at = Date.now()
    const stored = entries.map(data => ({ seq: ++log.appended, at, data }))
    log.entries.push(...stored)
    // Trimmed in batches (amortised O(1) per entry).
    if (log.entries.length >= 2 * spec.maxEntries) log.entries.splice(0, log.entries.length - spec.maxEntries)
    if (count !== undefined) {
      let counters = slot.counters.get(checkStateName(count.set))
      if (counters === undefined) slot.counters.set(count.set, counters = {})
      for (const name in count.add) counters[name] = (counters[name] ?? 0) + count.add[name]!
    }
    if (op !== undefined) this.#remember(slot, op, stored)
    return stored
  }

  #remember (slot: Slot, op: string, outcome: Array<LogEntry<unknown>> | number): void {
    slot.ops.set(op, outcome)
    if (slot.ops.size > MAX_REMEMBERED_OPS) slot.ops.delete(slot.ops.keys().next().value!)
  }

  async entries<T> (scope: string, spec: LogSpec, last?: number): Promise<{ entries: Array<LogEntry<T>>, appended: number }> {
    const log = this.#live(scope)?.logs.get(spec.name)
    if (log === undefined) return { entries: [], appended: 0 }
    const wanted = Math.min(last ?? spec.maxEntries, spec.maxEntries)
    return { entries: (wanted <= 0 ? [] : log.entries.slice(-wanted)) as Array<LogEntry<T>>, appended: log.appended }
  }

  async entry<T> (scope: string, spec: LogSpec, seq: number): Promise<LogEntry<T> | undefined> {
    const log = this.#live(scope)?.logs.get(spec.name)
    if (log === undefined || seq <= log.appended - spec.maxEntries) return undefined
    // Numbers are consecutive, so an entry's index follows from the first one's.
    const first = log.entries[0]
    return first === undefined ? undefined : log.entries[seq - first.seq] as LogEntry<T> | undefined
  }

  async clear (scope: string, spec: LogSpec, op?: string): Promise<number> {
    const slot = this.#live(scope)
    if (slot === undefined) return 0
    const done = op === undefined ? undefined : slot.ops.get(op)
    if (typeof done === 'number') return done
    const log = slot.logs.get(spec.name)
    const cleared = log === undefined ? 0 : Math.min(log.entries.length, spec.maxEntries)
    if (log !== undefined) log.entries = []
    if (op !== undefined) this.#remember(slot, op, cleared)
    return cleared
  }

  async counters (scope: string, set: string): Promise<Record<string, number>> {
    return { ...this.#live(scope)?.counters.get(set) }
  }

  async appendEvent (id: string, streamId: string, message: JSONRPCMessage | null): Promise<string | undefined> {
    const slot = this.#live(id)
    if (slot === undefined) return undefined
    const position = slot.nextEventPosition++
    const eventId = `${streamId}.${position}`
    let bytes = message === null ? 0 : JSON.stringify(message).length
    if (bytes > this.#eventMaxBytes) bytes = 0
    slot.events.push({ eventId, streamId, position, message: bytes === 0 ? null : message, bytes })
    slot.eventBytes += bytes
    // Trimmed in batches (amortised O(1) per event): readers look at the newest `eventLimit` only.
    if (slot.events.length >= 2 * this.#eventLimit || slot.eventBytes > this.#eventLogMaxBytes) this.#trimEvents(slot)
    return eventId
  }

  #trimEvents (slot: Slot): void {
    let drop = Math.max(0, slot.events.length - this.#eventLimit)
    for (let i = 0; i < drop; i++) slot.eventBytes -= slot.events[i]!.bytes
    while (drop < slot.events.length && slot.eventBytes > this.#eventLogMaxBytes * 3 / 4) slot.eventBytes -= slot.events[drop++]!.bytes
    slot.events.splice(0, drop)
  }

  async eventsAfter (id: string, lastEventId: string): Promise<{ streamId: string, events: StoredEvent[] } | undefined> {
    const streamId = streamOfEventId(lastEventId)
    const after = Number(lastEventId.slice(lastEventId.lastIndexOf('.') + 1))
    const slot = this.#live(id)
    if (streamId === undefined || !Number.isSafeInteger(after) || slot === undefined) return undefined
    const events = slot.events.slice(-this.#eventLimit)
      .filter(e => e.position > after && e.streamId === streamId && e.message !== null)
      .map(({ eventId, message }) => ({ eventId, message }))
    return { streamId, events }
  }

  async hit (key: string, count = 1): Promise<{ hits: number, resetMs: number }> {
    const counted = this.#hits.get(key)
    const window = rateWindow(Date.now(), counted?.start ?? 0, counted?.hits ?? 0, this.#rateWindowMs, count)
    this.#hits.set(key, { start: window.start, hits: window.hits })
    return { hits: window.hits, resetMs: window.resetMs }
  }

  async hitSession (id: string, count: number): Promise<{ hits: number, resetMs: number } | undefined> {
    const slot = this.#live(id)
    if (slot === undefined) return undefined
    const window = rateWindow(Date.now(), slot.rateStart, slot.rateHits, this.#rateWindowMs, count)
    slot.rateStart = window.start
    slot.rateHits = window.hits
    return { hits: window.hits, resetMs: window.resetMs }
  }

  async count (): Promise<ScopeCounts> {
    return { sessions: this.#slots.size - this.#handles, handles: this.#handles }
  }

  async ping (): Promise<void> {}

  async close (): Promise<void> {
    clearInterval(this.#sweeper)
  }

  #log (slot: Slot, spec: LogSpec): Log {
    let log = slot.logs.get(spec.name)
    if (log === undefined) slot.logs.set(checkStateName(spec.name), log = { appended: 0, entries: [] })
    return log
  }

  #live (id: string): Slot | undefined {
    const slot = this.#slots.get(id)
    if (slot === undefined) return undefined
    if (Date.now() - slot.record.lastActivityAt >= this.#ttlMs) {
      this.#remove(id)
      this.#options.observer?.scopesExpired?.(isHandle(slot.record) ? { sessions: 0, handles: 1 } : { sessions: 1, handles: 0 })
      return undefined
    }
    return slot
  }

  /** A live session, unless `principal` is given and the session is not its own. */
  #owned (id: string, principal?: string): Slot | undefined {
    const slot = this.#live(id)
    return slot === undefined || (principal !== undefined && (slot.record.principal ?? '') !== principal) ? undefined : slot
  }

  /** Drops a slot, keeping the count of handles; false when there was none. */
  #remove (id: string): boolean {
    const slot = this.#slots.get(id)
    if (slot === undefined) return false
    if (isHandle(slot.record)) this.#handles--
    return this.#slots.delete(id)
  }

  #sweep (): void {
    const now = Date.now()
    const oldest = now - this.#ttlMs
    const expired = { sessions: 0, handles: 0 }
    for (const [id, slot] of this.#slots) {
      if (slot.record.lastActivityAt <= oldest && this.#remove(id)) isHandle(slot.record) ? expired.handles++ : expired.sessions++
    }
    if (expired.sessions + expired.handles > 0) this.#options.observer?.scopesExpired?.(expired)
    for (const [key, counted] of this.#hits) {
      if (now - counted.start >= this.#rateWindowMs) this.#hits.delete(key)
    }
  }
}
