import type { Transport } from '@modelcontextprotocol/sdk/shared/transport.js'
import type { ClientCapabilities, RequestId } from '@modelcontextprotocol/sdk/types.js'
import type { LogLevel, SessionRecord, SessionStore } from '../stores/session-store.js'
import type { Dispatcher } from './dispatcher.js'
import { ScopeState } from './features.js'
import { type IdSequence, Protocol } from './protocol.js'

const SEVERITY: Record<LogLevel, number> = {
  debug: 0, info: 1, notice: 2, warning: 3, error: 4, critical: 5, alert: 6, emergency: 7
}
export const LOG_LEVELS = Object.keys(SEVERITY) as LogLevel[]

/** Built once per node and shared by every session. */
export interface SessionServices {
  dispatcher: Dispatcher
  store: SessionStore
  /** Ids of requests to clients, unique across nodes. */
  requestIds: IdSequence
  logError (error: unknown, message: string): void
}

/**
 * The MCP server side of one session on this node: the session's record, its JSON-RPC layer, and
 * what the session's methods change (log level, subscriptions). Requests go to the shared
 * dispatcher.
 *
 * The session was initialized before this object exists (on this node or any other), so building
 * one from a stored record is all it takes to serve the session here.
 */
export class SessionServer {
  /** The latest record read from the store: refreshed on every request, so a log level or subscription set through another node applies here. */
  record: SessionRecord
  readonly protocol: Protocol
  /** The session's scope, for reads. */
  readonly state: ScopeState
  readonly #store: SessionStore

  constructor (services: SessionServices, record: SessionRecord, transport: Transport) {
    this.record = record
    this.#store = services.store
    this.state = new ScopeState(services.store, record.id)
    this.protocol = new Protocol(transport, (method, params, call) => services.dispatcher.handle(this, method, params, call), services.requestIds, services.logError)
  }

  get sessionId (): string { return this.record.id }

  /** The session's scope for the writes of request `id`, which a retry of that request repeats harmlessly. */
  stateFor (id: RequestId): ScopeState {
    return new ScopeState(this.#store, this.record.id, `${typeof id === 'number' ? 'n' : 's'}:${id}`)
  }

  get clientCapabilities (): ClientCapabilities { return this.record.initializeParams.capabilities }

  /** Whether a message at `level` falls below the level the client set (nothing is below an unset level). */
  belowLevel (level: LogLevel): boolean {
    const current = this.record.logLevel
    return current !== undefined && SEVERITY[level] < SEVERITY[current]
  }

  /** A log message on the session's stream, once the client asked for them with logging/setLevel. */
  async log (logger: string, level: LogLevel, data: unknown): Promise<void> {
    if (this.record.logLevel === undefined || this.belowLevel(level)) return
    await this.protocol.notify(undefined, 'notifications/message', { level, logger, data })
  }

  async resourceUpdated (uri: string): Promise<void> {
    if (this.record.subscriptions.includes(uri)) await this.protocol.notify(undefined, 'notifications/resources/updated', { uri })
  }

  /** @throws {StorageUnavailableError} when the store cannot be written. */
  async setLogLevel (level: LogLevel): Promise<void> {
    await this.#store.setLogLevel(this.sessionId, level)
    this.record = { ...this.record, logLevel: level }
  }

  /** @throws {StorageUnavailableError} when the store cannot be written. */
  async subscribe (uri: string, subscribed: boolean): Promise<void> {
    await this.#store.setSubscription(this.sessionId, uri, subscribed)
    const others = this.record.subscriptions.filter(s => s !== uri)
    this.record = { ...this.record, subscriptions: subscribed ? [...others, uri] : others }
  }
}
