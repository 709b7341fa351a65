import { randomUUID } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import type { Server } from '@modelcontextprotocol/sdk/server/index.js'
import type { JSONRPCMessage, JSONRPCRequest } from '@modelcontextprotocol/sdk/types.js'
import { type SessionServices, SessionState, createSessionServer } from '../mcp/session-server.js'
import type { InitializeParams, SessionRecord } from '../stores/session-store.js'
import type { BusMessage } from './bus.js'
import { SessionTransport, type TransportServices } from './session-transport.js'

/** A session that is live on this node: its record, SDK server and transport. */
export interface LiveSession {
  state: SessionState
  server: Server
  transport: SessionTransport
}

export interface SessionCacheOptions {
  /** Live sessions kept on this node. */
  max: number
  /** Idle time after which a live session is dropped from this node (never from the store). */
  idleMs: number
  onRebuilt? (): void
}

const REBUILD_ID = 'rebuild'

/**
 * The transport cache: a bounded set of live sessions on this node. A session found in the store
 * but not here (evicted, or initialized on another node) is rebuilt just in time by replaying its
 * `initialize` through a fresh server, so the SDK normalises the client's capabilities as it did
 * the first time. Dropping a live session closes only its server and streams on this node.
 */
export class SessionCache {
  readonly #services: SessionServices
  readonly #transportServices: TransportServices
  readonly #options: SessionCacheOptions
  readonly #live: LRUCache<string, LiveSession>
  readonly #building = new Map<string, Promise<LiveSession>>()
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
      dispose: live => { live.transport.retire(() => { live.server.close().catch(() => {}) }) }
    })
    this.#sweeper = setInterval(() => this.#live.purgeStale(), Math.min(options.idleMs, 60_000))
    this.#sweeper.unref()
  }

  get size (): number { return this.#live.size }

  /**
   * Runs `initialize` on a new session. The record is written to the store before this resolves,
   * so the client's next request may land on any node.
   * Returns the SDK's response; no session is kept when it is an error.
   * @throws {StorageUnavailableError} when the store cannot be written.
   */
  async initialize (request: JSONRPCRequest): Promise<{ sessionId?: string, response: JSONRPCMessage }> {
    const now = Date.now()
    const params = request.params as unknown as InitializeParams
    const state = new SessionState({
      id: randomUUID(),
      createdAt: now,
      lastActivityAt: now,
      protocolVersion: '',
      initializeParams: params,
      subscriptions: [],
      requestCount: 1,
      calculationCount: 0
    })
    const live = await this.#connect(state)
    const response = await live.transport.dispatch(request)
    if (!('result' in response)) {
      await live.server.close()
      return { response }
    }
    state.record.protocolVersion = String(response.result.protocolVersion)
    try {
      await this.#services.store.create(state.record)
    } catch (error) {
      await live.server.close()
      throw error
    }
    this.#live.set(state.record.id, live)
    return { sessionId: state.record.id, response }
  }

  /**
   * The live session for `id`, counting the request in the store and leased to the caller, who
   * must `release()` its transport once it has handed over its messages; rebuilt here when this
   * node does not hold it. Undefined when the session expired, was deleted or never existed.
   * @throws {StorageUnavailableError} when the store cannot be reached.
   */
  async acquire (id: string): Promise<LiveSession | undefined> {
    const record = await this.#services.store.touch(id)
    if (record === undefined) {
      this.#live.delete(id)
      return undefined
    }
    // A session closed by eviction between being found and leased is found (rebuilt) again.
    for (;;) {
      const live = await this.#find(record)
      if (live.transport.lease()) return live
    }
  }

  async #find (record: SessionRecord): Promise<LiveSession> {
    const id = record.id
    const live = this.#live.get(id)
    if (live !== undefined) {
      live.state.record = record
      return live
    }
    let building = this.#building.get(id)
    if (building === undefined) {
      building = this.#rebuild(record).finally(() => this.#building.delete(id))
      this.#building.set(id, building)
    }
    return building
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

  async #rebuild (record: SessionRecord): Promise<LiveSession> {
    const live = await this.#connect(new SessionState(record))
    await live.transport.dispatch({
      jsonrpc: '2.0',
      id: REBUILD_ID,
      method: 'initialize',
      params: { ...record.initializeParams, protocolVersion: record.protocolVersion }
    })
    live.transport.onmessage?.({ jsonrpc: '2.0', method: 'notifications/initialized' })
    this.#live.set(record.id, live)
    this.#options.onRebuilt?.()
    return live
  }

  async #connect (state: SessionState): Promise<LiveSession> {
    const server = createSessionServer(this.#services, state)
    const transport = new SessionTransport(state.record.id, this.#transportServices, () => state.record.protocolVersion)
    server.onerror = error => this.#services.logError(error, 'MCP session error')
    await server.connect(transport)
    return { state, server, transport }
  }
}
