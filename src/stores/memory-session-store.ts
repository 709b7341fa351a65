import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js'
import {
  DEFAULT_EVENT_LIMIT, streamOfEventId,
  type HistoryEntry, type LogLevel, type NewHistoryEntry, type SessionRecord, type SessionStore, type SessionStoreOptions, type StoredEvent
} from './session-store.js'

interface Slot {
  record: SessionRecord
  history: HistoryEntry[]
  stats: Record<string, number>
  nextCalculationId: number
  events: Array<StoredEvent & { streamId: string, position: number }>
  nextEventPosition: number
}

/**
 * Sessions in this process's memory: zero set-up, one node. Expired sessions are dropped when touched
 * and by a periodic sweep, so memory follows live sessions only.
 */
export class MemorySessionStore implements SessionStore {
  readonly mode = 'memory'
  readonly #slots = new Map<string, Slot>()
  readonly #ttlMs: number
  readonly #historyLimit: number
  readonly #eventLimit: number
  readonly #options: SessionStoreOptions
  readonly #sweeper: NodeJS.Timeout

  constructor (options: SessionStoreOptions) {
    this.#ttlMs = options.ttlSeconds * 1000
    this.#historyLimit = options.historyLimit
    this.#eventLimit = options.eventLimit ?? DEFAULT_EVENT_LIMIT
    this.#options = options
    this.#sweeper = setInterval(() => this.#sweep(), Math.min(this.#ttlMs, 60_000))
    this.#sweeper.unref()
  }

  async create (record: SessionRecord): Promise<void> {
    this.#slots.set(record.id, { record: structuredClone(record), history: [], stats: {}, nextCalculationId: 1, events: [], nextEventPosition: 1 })
  }

  async touch (id: string): Promise<SessionRecord | undefined> {
    const slot = this.#live(id)
    if (slot === undefined) return undefined
    slot.record.requestCount++
    slot.record.lastActivityAt = Date.now()
    return slot.record
  }

  async get (id: string): Promise<SessionRecord | undefined> {
    return this.#live(id)?.record
  }

  async delete (id: string): Promise<boolean> {
    return this.#slots.delete(id)
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

  async appendHistory (id: string, entry: NewHistoryEntry): Promise<HistoryEntry> {
    // Built field by field: a spread into a literal with more fields is a slow path in V8.
    const stored: HistoryEntry = { id: '', operation: entry.operation, expression: entry.expression, inputs: entry.inputs, result: entry.result, timestamp: new Date().toISOString() }
    const slot = this.#live(id)
    if (slot === undefined) return stored
    stored.id = String(slot.nextCalculationId++)
    slot.history.push(stored)
    // Trimmed in batches (amortised O(1) per entry); readers look at the newest `historyLimit` only.
    if (slot.history.length >= 2 * this.#historyLimit) slot.history.splice(0, slot.history.length - this.#historyLimit)
    slot.stats[entry.operation] = (slot.stats[entry.operation] ?? 0) + 1
    slot.record.calculationCount++
    return stored
  }

  async history (id: string, limit?: number): Promise<HistoryEntry[]> {
    const history = this.#live(id)?.history ?? []
    return history.slice(-Math.min(limit ?? this.#historyLimit, this.#historyLimit))
  }

  async findCalculation (id: string, calculationId: string): Promise<HistoryEntry | undefined> {
    return this.#live(id)?.history.slice(-this.#historyLimit).find(entry => entry.id === calculationId)
  }

  async clearHistory (id: string): Promise<number> {
    const slot = this.#live(id)
    if (slot === undefined) return 0
    const cleared = Math.min(slot.history.length, this.#historyLimit)
    slot.history = []
    return cleared
  }

  async stats (id: string): Promise<Record<string, number>> {
    return { ...this.#live(id)?.stats }
  }

  async appendEvent (id: string, streamId: string, message: JSONRPCMessage | null): Promise<string | undefined> {
    const slot = this.#live(id)
    if (slot === undefined) return undefined
    const position = slot.nextEventPosition++
    const eventId = `${streamId}.${position}`
    slot.events.push({ eventId, streamId, position, message })
    // Trimmed in batches like the history; readers look at the newest `eventLimit` only.
    if (slot.events.length >= 2 * this.#eventLimit) slot.events.splice(0, slot.events.length - this.#eventLimit)
    return eventId
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

  async count (): Promise<number> {
    return this.#slots.size
  }

  async ping (): Promise<void> {}

  async close (): Promise<void> {
    clearInterval(this.#sweeper)
  }

  #live (id: string): Slot | undefined {
    const slot = this.#slots.get(id)
    if (slot === undefined) return undefined
    if (Date.now() - slot.record.lastActivityAt >= this.#ttlMs) {
      this.#slots.delete(id)
      this.#options.observer?.sessionsExpired?.(1)
      return undefined
    }
    return slot
  }

  #sweep (): void {
    const oldest = Date.now() - this.#ttlMs
    let expired = 0
    for (const [id, slot] of this.#slots) {
      if (slot.record.lastActivityAt <= oldest && this.#slots.delete(id)) expired++
    }
    if (expired > 0) this.#options.observer?.sessionsExpired?.(expired)
  }
}
