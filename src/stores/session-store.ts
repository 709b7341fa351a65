import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js'
import type { ServerObserver } from '../observer.js'

/** What a client sent in `initialize`, kept so that any node can rebuild the session the same way. */
export interface InitializeParams {
  protocolVersion: string
  capabilities: Record<string, unknown>
  clientInfo: { name: string, version: string, [key: string]: unknown }
}

export type LogLevel = 'debug' | 'info' | 'notice' | 'warning' | 'error' | 'critical' | 'alert' | 'emergency'

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
  calculationCount: number
}

export interface NewHistoryEntry {
  operation: string
  expression: string
  inputs: number[]
  result: number
}

export interface HistoryEntry extends NewHistoryEntry {
  /** Unique within the session; resolves through `calculator://history/{calculationId}`. */
  id: string
  /** ISO 8601. */
  timestamp: string
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

/**
 * Where sessions live. Every method is atomic for one session, so concurrent requests on any number
 * of nodes never lose an update. Methods that take a session id act on nothing when it is gone.
 * All methods reject with StorageUnavailableError when the backing store cannot be reached.
 */
export interface SessionStore {
  readonly mode: 'memory' | 'redis'
  /** Stores a new session; it is readable by every node once this resolves. */
  create (record: SessionRecord): Promise<void>
  /**
   * Counts one request, slides the expiry of every key of the session, and returns it; undefined
   * when gone. With `known`, the record as this node last read it, only what other nodes may have
   * changed since is read back.
   */
  touch (id: string, known?: SessionRecord): Promise<SessionRecord | undefined>
  /** Reads a session without counting a request. */
  get (id: string): Promise<SessionRecord | undefined>
  /** Ends a session and its history; false when it did not exist. */
  delete (id: string): Promise<boolean>
  setLogLevel (id: string, level: LogLevel): Promise<void>
  setSubscription (id: string, uri: string, subscribed: boolean): Promise<void>
  /** Appends one entry (dropping the oldest past the limit) and counts it; returns it with its id. */
  appendHistory (id: string, entry: NewHistoryEntry): Promise<HistoryEntry>
  /** The newest `limit` entries (all when omitted), oldest first. */
  history (id: string, limit?: number): Promise<HistoryEntry[]>
  findCalculation (id: string, calculationId: string): Promise<HistoryEntry | undefined>
  /** Removes every entry; returns how many there were. Per-operation counts are kept. */
  clearHistory (id: string): Promise<number>
  /** Calculations per operation over the session's life. */
  stats (id: string): Promise<Record<string, number>>
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
  /** Live sessions in the whole store. */
  count (): Promise<number>
  /** Resolves when the store answers; rejects with StorageUnavailableError otherwise. */
  ping (): Promise<void>
  close (): Promise<void>
}

export interface SessionStoreOptions {
  ttlSeconds: number
  historyLimit: number
  /** SSE events kept per session for resumption; the oldest are dropped. */
  eventLimit?: number
  observer?: ServerObserver
}

export const DEFAULT_EVENT_LIMIT = 1000
