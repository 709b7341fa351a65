import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js'

/** What a client sent in `initialize`, kept so that any node can rebuild the session the same way. */
export interface InitializeParams {
  protocolVersion: string
  capabilities: Record<string, unknown>
  clientInfo: { name: string, version: string, [key: string]: unknown }
}

export type LogLevel = 'debug' | 'info' | 'notice' | 'warning' | 'error' | 'critical' | 'alert' | 'emergency'

/** The protocol state of one session; features keep theirs in the session's scope (see ScopeStore). */
export interface SessionRecord {
  id: string
  /** Milliseconds since the epoch. */
  createdAt: number
  lastActivityAt: number
  /** The revision negotiated in `initialize`. */
  protocolVersion: string
  initializeParams: InitializeParams
  /** Set by `logging/setLevel`; no log notifications are sent before it is set. */
  logLevel?: LogLevel
  /** Resource URIs the client subscribed to. */
  subscriptions: string[]
  requestCount: number
  /** The bus address of the node holding the session's GET stream, once one was opened. */
  streamNode?: string
  /** Until when (ms since the epoch) that node's lease runs, unless it renews it. */
  streamUntil?: number
  /**
   * The principal (a digest of issuer and subject) that opened the session, when access tokens
   * are required: requests of anyone else find no session.
   */
  principal?: string
  /**
   * Who the session's creation was counted against (its principal, or its client's address):
   * history handles minted in the session count against the same creation budget.
   */
  creator?: string
}

export type StreamClaim = 'open' | 'resume' | 'renew' | 'release'

/**
 * The protocolVersion of a record that is a history handle (a scope a 2026-07-28 tool mints), not a
 * session: the stores keep both alike and count them apart.
 */
export const HANDLE_SCOPE = 'handle'

export const isHandle = (record: Pick<SessionRecord, 'protocolVersion'>) => record.protocolVersion === HANDLE_SCOPE

/** Live scopes in a store, by kind. */
export interface ScopeCounts {
  sessions: number
  handles: number
}

/** A touched session, with the requests it made in the current rate-limit window. */
export interface Touched {
  record: SessionRecord
  hits: number
  /** Milliseconds until the window ends. */
  resetMs: number
}

/** One SSE event of a session; `message` is null for a priming event, which carries only its id. */
export interface StoredEvent {
  eventId: string
  message: JSONRPCMessage | null
}

/** Event ids are `<streamId>.<position>`: unique within the session, and naming their stream. */
export function streamOfEventId (eventId: string): string | undefined {
  const dot = eventId.lastIndexOf('.')
  return dot <= 0 ? undefined : eventId.slice(0, dot)
}

/** A bounded, append-only log that a feature keeps per scope. Its entries are numbered from 1, never reused. */
export interface LogSpec {
  /** Unique among the logs of one scope: 1-64 of A-Z a-z 0-9 _ -. */
  readonly name: string
  /** Entries kept; the oldest are dropped past it. */
  readonly maxEntries: number
}

export interface LogEntry<T = unknown> {
  seq: number
  /** Milliseconds since the epoch, when it was appended. */
  at: number
  data: T
}

/** Amounts to add to the named counters of one counter set, in the same step as an append. */
export interface CounterUpdate {
  readonly set: string
  readonly add: Readonly<Record<string, number>>
}

/** How a write reaches its scope. */
export interface WriteOptions {
  /**
   * An operation key: a write whose key the scope has seen (among its last MAX_REMEMBERED_OPS)
   * changes nothing and returns what that first write returned, so a retried request writes once.
   */
  op?: string
  /**
   * Also checks, in the same step, that the scope is live and (with a principal) that principal's,
   * and slides its expiry as `SessionStore.touch` does, counting no request: a scope another
   * principal (or none) opened is not written to. For a request whose first use of a scope is
   * this write, one step instead of two.
   */
  touch?: { principal?: string }
}

/**
 * State that features keep per scope, through primitives that know nothing of the feature: bounded
 * logs and counter sets, named by the feature. A scope is a session id today; its state lives and
 * expires with the scope, and goes when the scope is deleted. Each method is atomic for one scope
 * (in Redis, one script on the scope's hash tag), and acts on nothing once the scope is gone.
 * Methods reject with StorageUnavailableError when the backing store cannot be reached.
 */
export interface ScopeStore {
  /**
   * Appends entries to a log (all or none) and applies `count` in the same step. Returns the stored
   * entries (for an operation key seen before, as that first append stored them); undefined when
   * the scope is gone, or with `touch` not the principal's.
   */
  append<T> (scope: string, log: LogSpec, entries: readonly T[], count?: CounterUpdate, options?: WriteOptions): Promise<Array<LogEntry<T>> | undefined>
  /** The newest `last` entries (all kept when omitted), oldest first, and how many were ever appended. */
  entries<T> (scope: string, log: LogSpec, last?: number): Promise<{ entries: Array<LogEntry<T>>, appended: number }>
  /** One kept entry by its number. */
  entry<T> (scope: string, log: LogSpec, seq: number): Promise<LogEntry<T> | undefined>
  /** Drops every kept entry (numbering goes on); returns how many there were. With `op`, as in WriteOptions. */
  clear (scope: string, log: LogSpec, op?: string): Promise<number>
  /** The counters of one set; empty when none was counted. */
  counters (scope: string, set: string): Promise<Record<string, number>>
}

/**
 * Where sessions live. Every method is atomic for one session, so concurrent requests on any number
 * of nodes never lose an update. Methods that take a session id act on nothing when it is gone.
 * All methods reject with StorageUnavailableError when the backing store cannot be reached.
 */
export interface SessionStore extends ScopeStore {
  readonly mode: 'memory' | 'redis'
  /** Stores a new session; it is readable by every node once this resolves. */
  create (record: SessionRecord): Promise<void>
  /**
   * Counts one request (in the session's record and its rate-limit window), slides the expiry of
   * the session and everything in its scope, and returns it; undefined when gone. With `known`,
   * the record as this node last read it, only what other nodes may have changed is read back.
   * With `principal`, a session opened by another principal (or by none) is not touched: undefined.
   */
  touch (id: string, known?: SessionRecord, principal?: string): Promise<Touched | undefined>
  /** Reads a session without counting a request. */
  get (id: string): Promise<SessionRecord | undefined>
  /** Ends a session and everything in its scope; false when it did not exist (or, with `principal`, is another's). */
  delete (id: string, principal?: string): Promise<boolean>
  setLogLevel (id: string, level: LogLevel): Promise<void>
  setSubscription (id: string, uri: string, subscribed: boolean): Promise<void>
  /**
   * The lease of the session's GET stream, held by one node at a time across all nodes:
   * - open: takes it unless another node holds a lease that has not run out;
   * - resume: takes it whoever holds it (a client resuming its stream replaces the old one);
   * - renew: extends it while `node` still holds it;
   * - release: gives it up if `node` holds it.
   * Returns whether it succeeded and the node that held it before (if any); false when the session is gone.
   */
  claimStream (id: string, node: string, action: StreamClaim, leaseMs: number): Promise<{ ok: boolean, previous?: string }>
  /**
   * Appends an SSE event to the session's bounded event log and returns its id; undefined when the
   * session is gone.
   */
  appendEvent (id: string, streamId: string, message: JSONRPCMessage | null): Promise<string | undefined>
  /**
   * The events of the stream named by `lastEventId` that came after it, oldest first, without
   * priming events; undefined when the id is malformed or the session is gone.
   */
  eventsAfter (id: string, lastEventId: string): Promise<{ streamId: string, events: StoredEvent[] } | undefined>
  /** Counts `count` requests (default 1) against `key` (a client address, say) in the current rate-limit window. */
  hit (key: string, count?: number): Promise<{ hits: number, resetMs: number }>
  /** Counts `count` more requests in a session's rate-limit window (the rest of a batch); undefined when gone. */
  hitSession (id: string, count: number): Promise<{ hits: number, resetMs: number } | undefined>
  /** Live sessions and history handles in the whole store, each counted apart. */
  count (): Promise<ScopeCounts>
  /** Resolves when the store answers; rejects with StorageUnavailableError otherwise. */
  ping (): Promise<void>
  close (): Promise<void>
}

/** What a store reports, for metrics; every callback is optional. */
export interface StoreObserver {
  /** Sessions and history handles found expired, each counted once, by the store that removed it. */
  scopesExpired? (expired: ScopeCounts): void
  storageError? (operation: string): void
}

export interface SessionStoreOptions {
  ttlSeconds: number
  /** SSE events kept per session for resumption; the oldest are dropped. */
  eventLimit?: number
  /** Bytes of SSE events kept per session (their JSON); the oldest are dropped past it. */
  eventLogMaxBytes?: number
  /** An event larger than this is kept as a gap (its id, no message): delivered live, never replayed. */
  eventMaxBytes?: number
  /** The rate-limit window that `touch` and `hit` count requests in. */
  rateWindowMs?: number
  observer?: StoreObserver
}

export const DEFAULT_EVENT_LIMIT = 1000
export const DEFAULT_EVENT_LOG_MAX_BYTES = 1_048_576
export const DEFAULT_EVENT_MAX_BYTES = 262_144
/** Operation keys a scope remembers, newest first: a retry comes within seconds of the first try. */
export const MAX_REMEMBERED_OPS = 64
export const DEFAULT_RATE_WINDOW_MS = 60_000

const LOG_NAME = /^[A-Za-z0-9_-]{1,64}$/

/** @throws {Error} for a log or counter set name that the stores cannot key safely. */
export function checkStateName (name: string): string {
  if (!LOG_NAME.test(name)) throw new Error(`State name ${JSON.stringify(name)} must be 1-64 of A-Z a-z 0-9 _ -`)
  return name
}

/** A fixed rate-limit window counting `count` more requests: counts restart when `windowMs` has passed since the window began. */
export function rateWindow (now: number, start: number, hits: number, windowMs: number, count = 1): { start: number, hits: number, resetMs: number } {
  if (now - start >= windowMs) return { start: now, hits: count, resetMs: windowMs }
  return { start, hits: hits + count, resetMs: start + windowMs - now }
}
