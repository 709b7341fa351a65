import { randomUUID } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import type { JSONRPCMessage, JSONRPCRequest } from '@modelcontextprotocol/sdk/types.js'
import { type SessionServices, SessionServer, SessionState, initializeResult } from '../mcp/session-server.js'
import type { InitializeParams, SessionRecord } from '../stores/session-store.js'
import type { BusMessage } from './bus.js'
import { SessionTransport, type TransportServices } from './session-transport.js'

/** A session that is live on this node: its record, server and transport. */
export interface LiveSession {
  state: SessionState
  server: SessionServer
  transport: SessionTransport
}

export interface SessionCacheOptions {
  /** Live sessions kept on this node. */
  max: number
  /** Idle time after which a live session is dropped from this node (never from the store). */
  idleMs: number
  onRebuilt? (): void
}

/**
 * The transport cache: a bounded set of live sessions on this node. A session found in the store
 * but not here (evicted, or initialized on another node) is rebuilt just in time from its record:
 * a server and a transport, no messages replayed. Dropping a live session closes only its server
 * and streams on this node.
 */
export class SessionCache {
  readonly #services: SessionServices
  readonly #transportServices: TransportServices
  readonly #options: SessionCacheOptions
  readonly #live: LRUCache<string, LiveSession>
  readonly #sweeper: NodeJS.Timeout

  constructor (services: SessionServices, transportServices: TransportServices, options: SessionCacheOptions) {
    this.#services = services
    this.#transportServices = transportServices
    transportServices.bus.onMessage(message => this.#deliver(message))
    this.#options = options
    this.#live = new LRUCache<string, LiveSession>({
      max: options.max,
      ttl: options.idleMs,
      updateAgeOnGet: true,
      // A session dropped here may still be answering requests: it closes once they are done.
      dispose: live => { live.transport.retire(() => { live.transport.close().catch(() => {}) }) }
    })
    this.#sweeper = setInterval(() => this.#live.purgeStale(), Math.min(options.idleMs, 60_000))
    this.#sweeper.unref()
  }

  get size (): number { return this.#live.size }

  /**
   * Answers `initialize` with a new session. The record is written to the store before this
   * resolves, so the client's next request may land on any node.
   * Returns the JSON-RPC response; params that are not an initialize request's get an error and no session.
   * @throws {StorageUnavailableError} when the store cannot be written.
   */
  async initialize (request: JSONRPCRequest): Promise<{ sessionId?: string, response: JSONRPCMessage }> {
    const answer = initializeResult(request.params, this.#services.serverInfo)
    if ('error' in answer) return { response: { jsonrpc: '2.0', id: request.id, error: answer.error } }
    const now = Date.now()
    const { protocolVersion, capabilities, clientInfo } = request.params as unknown as InitializeParams
    const record: SessionRecord = {
      id: randomUUID(),
      createdAt: now,
      lastActivityAt: now,
      protocolVersion: answer.result.protocolVersion,
      initializeParams: { protocolVersion, capabilities, clientInfo },
      subscriptions: [],
      requestCount: 1,
      calculationCount: 0
    }
    await this.#services.store.create(record)
    this.#live.set(record.id, this.#connect(record))
    return { sessionId: record.id, response: { result: answer.result, jsonrpc: '2.0', id: request.id } as JSONRPCMessage }
  }

  /**
   * Counts a request for session `id` in the store and reads back its record; `acquire` takes the
   * result. Started as a request arrives, its store round trip overlaps the rate limiter's (in
   * Redis, both scripts are in flight at once). A session live here is read back in part only.
   * @throws {StorageUnavailableError} when the store cannot be reached.
   */
  touch (id: string): Promise<SessionRecord | undefined> {
    return this.#services.store.touch(id, this.#live.peek(id)?.state.record)
  }

  /**
   * The live session for `id`, given its `touch`, leased to the caller, who must `release()` its
   * transport once it has handed over its messages; rebuilt here when this node does not hold it.
   * Undefined when the session expired, was deleted or never existed.
   * @throws {StorageUnavailableError} when the store cannot be reached.
   */
  async acquire (id: string, touched = this.touch(id)): Promise<LiveSession | undefined> {
    const record = await touched
    if (record === undefined) {
      this.#live.delete(id)
      return undefined
    }
    // A session closed by eviction between being found and leased is found (rebuilt) again.
    for (;;) {
      const live = this.#find(record)
      if (live.transport.lease()) return live
    }
  }

  #find (record: SessionRecord): LiveSession {
    const live = this.#live.get(record.id)
    if (live !== undefined) {
      live.state.record = record
      return live
    }
    const rebuilt = this.#connect(record)
    this.#live.set(record.id, rebuilt)
    this.#options.onRebuilt?.()
    return rebuilt
  }

  /** Drops a session from this node. */
  drop (id: string): void {
    this.#live.delete(id)
  }

  /** Closes every live session on this node; the store keeps them all. */
  close (): void {
    clearInterval(this.#sweeper)
    this.#live.clear()
  }

  /** A message from another node reaches the session if it is live here; otherwise nobody here waits for it. */
  #deliver (message: BusMessage): void {
    const live = this.#live.peek(message.sessionId)
    if (live === undefined) return
    this.#transportServices.observer?.busMessage?.('received', message.kind)
    live.transport.receive(message)
  }

  /** Ends every GET stream on this node, telling clients to reconnect (to another node) shortly. */
  endStreams (): void {
    for (const live of this.#live.values()) live.transport.endStandaloneStream()
  }

  #connect (record: SessionRecord): LiveSession {
    const state = new SessionState(record)
    const transport = new SessionTransport(record.id, this.#transportServices, () => state.record.protocolVersion)
    return { state, server: new SessionServer(this.#services, state, transport), transport }
  }
}
