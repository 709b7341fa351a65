import type { Cluster, Redis } from 'ioredis'
import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js'
import { StorageUnavailableError } from '../errors.js'
import type { ServerObserver } from '../observer.js'
import {
  DEFAULT_EVENT_LIMIT, streamOfEventId,
  type HistoryEntry, type LogLevel, type NewHistoryEntry, type SessionRecord, type SessionStore, type SessionStoreOptions, type StoredEvent
} from './session-store.js'

/**
 * Key layout. Every key of one session carries the session id as its hash tag, so they share a
 * cluster slot and each operation below is one atomic script.
 *   mcp:{id}:s   hash    the session record
 *   mcp:{id}:h   list    history entries (JSON), oldest first, trimmed to the limit
 *   mcp:{id}:st  hash    calculations per operation
 *   mcp:{id}:e   stream  SSE events (fields s = stream id, m = message), trimmed to the limit
 *   mcp:sessions zset    session id -> last activity (ms, refreshed every MAX_INDEX_LAG_MS at most),
 *                        for counting live sessions
 * All session keys expire together, SESSION_TTL_SECONDS after the last request.
 */
const keys = (id: string) => {
  const tag = `mcp:{${id}}`
  return [`${tag}:s`, `${tag}:h`, `${tag}:st`, `${tag}:e`] as const
}
const SESSIONS = 'mcp:sessions'
/** A session's score in mcp:sessions is refreshed at most this often (or a tenth of the TTL). */
const MAX_INDEX_LAG_MS = 60_000

const SCRIPTS = {
  /**
   * KEYS s h st e; ARGV now ttlMs full(0|1) indexEveryMs. Counts a request and slides every key's
   * expiry. Returns whether the session is due for re-indexing in mcp:sessions, then the whole
   * record (full) or only the fields other nodes may change: requestCount calculationCount
   * logLevel subscriptions.
   */
  mcpTouch: {
    keys: 4,
    lua: `
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
redis.call('HINCRBY', KEYS[1], 'requestCount', 1)
local reindex = 0
if tonumber(ARGV[1]) - tonumber(redis.call('HGET', KEYS[1], 'indexedAt') or '0') >= tonumber(ARGV[4]) then
  redis.call('HSET', KEYS[1], 'indexedAt', ARGV[1])
  reindex = 1
end
redis.call('HSET', KEYS[1], 'lastActivityAt', ARGV[1])
for i = 1, #KEYS do redis.call('PEXPIRE', KEYS[i], ARGV[2]) end
if ARGV[3] == '1' then return {reindex, redis.call('HGETALL', KEYS[1])} end
return {reindex, redis.call('HMGET', KEYS[1], 'requestCount', 'calculationCount', 'logLevel', 'subscriptions')}`
  },
  /** KEYS s h st e; ARGV ttlMs field value ... */
  mcpCreate: {
    keys: 4,
    lua: `
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[4])
redis.call('HSET', KEYS[1], unpack(ARGV, 2))
redis.call('PEXPIRE', KEYS[1], ARGV[1])
return 1`
  },
  /** KEYS s; ARGV field value. Sets a field of a live session only. */
  mcpSetField: {
    keys: 1,
    lua: `
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
return redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])`
  },
  /** KEYS s; ARGV uri subscribed(0|1). */
  mcpSubscribe: {
    keys: 1,
    lua: `
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local subscriptions = cjson.decode(redis.call('HGET', KEYS[1], 'subscriptions') or '[]')
local kept = {}
for _, uri in ipairs(subscriptions) do if uri ~= ARGV[1] then table.insert(kept, uri) end end
if ARGV[2] == '1' then table.insert(kept, ARGV[1]) end
local encoded = #kept == 0 and '[]' or cjson.encode(kept)
return redis.call('HSET', KEYS[1], 'subscriptions', encoded)`
  },
  /** KEYS s h st; ARGV entryJsonWithoutOpeningBrace limit operation ttlMs. Returns the new id. */
  mcpAppendHistory: {
    keys: 3,
    lua: `
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local id = redis.call('HINCRBY', KEYS[1], 'lastCalculationId', 1)
redis.call('HINCRBY', KEYS[1], 'calculationCount', 1)
redis.call('RPUSH', KEYS[2], '{"id":"' .. id .. '",' .. ARGV[1])
redis.call('LTRIM', KEYS[2], -tonumber(ARGV[2]), -1)
redis.call('HINCRBY', KEYS[3], ARGV[3], 1)
redis.call('PEXPIRE', KEYS[2], ARGV[4])
redis.call('PEXPIRE', KEYS[3], ARGV[4])
return id`
  },
  /** KEYS h; ARGV calculationId. Ids in the list are consecutive, so the index follows from the first. */
  mcpFindCalculation: {
    keys: 1,
    lua: `
local first = redis.call('LINDEX', KEYS[1], 0)
if not first then return false end
local index = tonumber(ARGV[1]) - tonumber(cjson.decode(first).id)
if index < 0 then return false end
return redis.call('LINDEX', KEYS[1], index)`
  },
  /** KEYS s h; returns how many entries were removed. */
  mcpClearHistory: {
    keys: 2,
    lua: `
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
local n = redis.call('LLEN', KEYS[2])
redis.call('DEL', KEYS[2])
return n`
  },
  /** KEYS s e; ARGV limit ttlMs (streamId message)... Returns the stream entry ids, in order. */
  mcpAppendEvents: {
    keys: 2,
    lua: `
if redis.call('EXISTS', KEYS[1]) == 0 then return false end
local ids = {}
for i = 3, #ARGV, 2 do
  ids[#ids + 1] = redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[1], '*', 's', ARGV[i], 'm', ARGV[i + 1])
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
return ids`
  }
} as const

type ScriptName = keyof typeof SCRIPTS
type Client = (Redis | Cluster) & Record<ScriptName, (...args: Array<string | number>) => Promise<unknown>>

const STREAM_ENTRY_ID = /^\d+-\d+$/

interface PendingEvent {
  streamId: string
  message: JSONRPCMessage | null
  done (entryId: string | undefined, error?: unknown): void
}

function toRecord (fields: string[]): SessionRecord {
  const hash: Record<string, string> = {}
  for (let i = 0; i < fields.length; i += 2) hash[fields[i]!] = fields[i + 1]!
  return {
    id: hash.id!,
    createdAt: Number(hash.createdAt),
    lastActivityAt: Number(hash.lastActivityAt),
    protocolVersion: hash.protocolVersion!,
    initializeParams: JSON.parse(hash.initializeParams!),
    ...(hash.logLevel !== undefined && { logLevel: hash.logLevel as LogLevel }),
    subscriptions: JSON.parse(hash.subscriptions ?? '[]'),
    requestCount: Number(hash.requestCount),
    calculationCount: Number(hash.calculationCount ?? 0)
  }
}

/**
 * Sessions in Redis (one server or a cluster), shared by every node. Each method is one atomic
 * script on the session's slot, so concurrent requests through any number of nodes lose nothing.
 * Every Redis failure surfaces as StorageUnavailableError.
 */
export class RedisSessionStore implements SessionStore {
  readonly mode = 'redis'
  readonly #redis: Client
  readonly #ttlMs: number
  readonly #historyLimit: number
  readonly #eventLimit: number
  readonly #indexEveryMs: number
  readonly #observer?: ServerObserver
  readonly #eventBatches = new Map<string, PendingEvent[]>()

  /** The client is borrowed: closing the store leaves it open for its owner to close. */
  constructor (redis: Redis | Cluster, options: SessionStoreOptions) {
    for (const [name, { keys, lua }] of Object.entries(SCRIPTS)) {
      if (!(name in redis)) redis.defineCommand(name, { lua, numberOfKeys: keys })
    }
    this.#redis = redis as Client
    this.#ttlMs = options.ttlSeconds * 1000
    this.#historyLimit = options.historyLimit
    this.#eventLimit = options.eventLimit ?? DEFAULT_EVENT_LIMIT
    this.#indexEveryMs = Math.min(this.#ttlMs / 10, MAX_INDEX_LAG_MS)
    this.#observer = options.observer
  }

  async create (record: SessionRecord): Promise<void> {
    const fields = [
      'id', record.id,
      'createdAt', record.createdAt,
      'lastActivityAt', record.lastActivityAt,
      'protocolVersion', record.protocolVersion,
      'initializeParams', JSON.stringify(record.initializeParams),
      'subscriptions', JSON.stringify(record.subscriptions),
      'requestCount', record.requestCount,
      'calculationCount', record.calculationCount,
      'indexedAt', record.lastActivityAt,
      ...(record.logLevel === undefined ? [] : ['logLevel', record.logLevel])
    ]
    await this.#run('create', async () => {
      await this.#redis.mcpCreate(...keys(record.id), this.#ttlMs, ...fields)
      await this.#redis.zadd(SESSIONS, record.lastActivityAt, record.id)
    })
  }

  async touch (id: string, known?: SessionRecord): Promise<SessionRecord | undefined> {
    const now = Date.now()
    const reply = await this.#run('touch', () => this.#redis.mcpTouch(...keys(id), now, this.#ttlMs, known === undefined ? '1' : '0', this.#indexEveryMs)) as [number, Array<string | null>] | null
    if (reply === null) return undefined
    const [reindex, fields] = reply
    // The index only counts live sessions, so it may lag activity by indexEveryMs; not awaited.
    if (reindex === 1) this.#redis.zadd(SESSIONS, now, id).catch(() => {})
    if (known === undefined) return toRecord(fields as string[])
    const [requestCount, calculationCount, logLevel, subscriptions] = fields
    const record: SessionRecord = {
      id,
      createdAt: known.createdAt,
      lastActivityAt: now,
      protocolVersion: known.protocolVersion,
      initializeParams: known.initializeParams,
      subscriptions: JSON.parse(subscriptions ?? '[]'),
      requestCount: Number(requestCount),
      calculationCount: Number(calculationCount ?? 0)
    }
    if (logLevel !== null) record.logLevel = logLevel as LogLevel
    return record
  }

  async get (id: string): Promise<SessionRecord | undefined> {
    const hash = await this.#run('get', () => this.#redis.hgetall(keys(id)[0]))
    if (hash.id === undefined) return undefined
    return toRecord(Object.entries(hash).flat())
  }

  async delete (id: string): Promise<boolean> {
    return this.#run('delete', async () => {
      const [removed] = await Promise.all([
        this.#redis.unlink(...keys(id)),
        this.#redis.zrem(SESSIONS, id)
      ])
      return removed > 0
    })
  }

  async setLogLevel (id: string, level: LogLevel): Promise<void> {
    await this.#run('setLogLevel', () => this.#redis.mcpSetField(keys(id)[0], 'logLevel', level))
  }

  async setSubscription (id: string, uri: string, subscribed: boolean): Promise<void> {
    await this.#run('setSubscription', () => this.#redis.mcpSubscribe(keys(id)[0], uri, subscribed ? '1' : '0'))
  }

  async appendHistory (id: string, entry: NewHistoryEntry): Promise<HistoryEntry> {
    const timestamp = new Date().toISOString()
    const json = JSON.stringify({ operation: entry.operation, expression: entry.expression, inputs: entry.inputs, result: entry.result, timestamp })
    const [s, h, st] = keys(id)
    const calculationId = await this.#run('appendHistory', () => this.#redis.mcpAppendHistory(s, h, st, json.slice(1), this.#historyLimit, entry.operation, this.#ttlMs))
    return { id: calculationId === null ? '' : String(calculationId), operation: entry.operation, expression: entry.expression, inputs: entry.inputs, result: entry.result, timestamp }
  }

  async history (id: string, limit?: number): Promise<HistoryEntry[]> {
    const entries = await this.#run('history', () => this.#redis.lrange(keys(id)[1], limit === undefined ? 0 : -limit, -1))
    return entries.map(e => JSON.parse(e))
  }

  async findCalculation (id: string, calculationId: string): Promise<HistoryEntry | undefined> {
    if (!/^\d{1,15}$/.test(calculationId)) return undefined
    const entry = await this.#run('findCalculation', () => this.#redis.mcpFindCalculation(keys(id)[1], calculationId)) as string | null
    return entry === null ? undefined : JSON.parse(entry)
  }

  async clearHistory (id: string): Promise<number> {
    const [s, h] = keys(id)
    return Number(await this.#run('clearHistory', () => this.#redis.mcpClearHistory(s, h)))
  }

  async stats (id: string): Promise<Record<string, number>> {
    const hash = await this.#run('stats', () => this.#redis.hgetall(keys(id)[2]))
    return Object.fromEntries(Object.entries(hash).map(([op, n]) => [op, Number(n)]))
  }

  /** Events of one session appended in the same tick (a priming event and the first progress, say) go in one script call. */
  appendEvent (id: string, streamId: string, message: JSONRPCMessage | null): Promise<string | undefined> {
    let batch = this.#eventBatches.get(id)
    if (batch === undefined) {
      batch = []
      this.#eventBatches.set(id, batch)
      process.nextTick(() => this.#appendEvents(id))
    }
    const event: PendingEvent = { streamId, message, done: () => {} }
    const appended = new Promise<string | undefined>((resolve, reject) => { event.done = (entryId, error) => error === undefined ? resolve(entryId) : reject(error) })
    batch.push(event)
    return appended
  }

  async #appendEvents (id: string): Promise<void> {
    const batch = this.#eventBatches.get(id)!
    this.#eventBatches.delete(id)
    const [s, , , e] = keys(id)
    const args: string[] = []
    for (const { streamId, message } of batch) args.push(streamId, message === null ? '' : JSON.stringify(message))
    try {
      const entryIds = await this.#run('appendEvent', () => this.#redis.mcpAppendEvents(s, e, this.#eventLimit, this.#ttlMs, ...args)) as string[] | null
      batch.forEach((event, i) => event.done(entryIds === null ? undefined : `${event.streamId}.${entryIds[i]}`))
    } catch (error) {
      for (const event of batch) event.done(undefined, error)
    }
  }

  async eventsAfter (id: string, lastEventId: string): Promise<{ streamId: string, events: StoredEvent[] } | undefined> {
    const streamId = streamOfEventId(lastEventId)
    const after = lastEventId.slice(lastEventId.lastIndexOf('.') + 1)
    if (streamId === undefined || !STREAM_ENTRY_ID.test(after)) return undefined
    const entries = await this.#run('eventsAfter', () => this.#redis.xrange(keys(id)[3], `(${after}`, '+'))
    const events: StoredEvent[] = []
    for (const [entryId, fields] of entries) {
      // fields is [s, streamId, m, message]
      if (fields[1] === streamId && fields[3] !== '') events.push({ eventId: `${streamId}.${entryId}`, message: JSON.parse(fields[3]!) })
    }
    return { streamId, events }
  }

  async count (): Promise<number> {
    return this.#run('count', async () => {
      // A score lags the last activity by less than indexEveryMs: only sessions surely expired go.
      const expired = await this.#redis.zremrangebyscore(SESSIONS, '-inf', Date.now() - this.#ttlMs - this.#indexEveryMs)
      if (expired > 0) this.#observer?.sessionsExpired?.(expired)
      return this.#redis.zcard(SESSIONS)
    })
  }

  async ping (): Promise<void> {
    await this.#run('ping', () => this.#redis.ping())
  }

  async close (): Promise<void> {}

  async #run<T> (name: string, operation: () => Promise<T>): Promise<T> {
    try {
      return await operation()
    } catch (error) {
      this.#observer?.storageError?.(name)
      throw new StorageUnavailableError(error)
    }
  }
}
