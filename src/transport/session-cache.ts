import { randomUUID } from 'node:crypto'
import { LRUCache } from 'lru-cache'
import type { InitializeResult, JSONRPCMessage, JSONRPCRequest } from '@modelcontextprotocol/sdk/types.js'
import { RpcError } from '../errors.js'
import { initializeResult } from '../mcp/dispatcher.js'
import { type SessionServices, SessionServer } from '../mcp/session-server.js'
import type { InitializeParams, SessionRecord, Touched } from '../stores/session-store.js'
import type { BusMessage } from './bus.js'
import { SessionTransport, type TransportServices } from './session-transport.js'

/** A session that is live on this node: its server (with the latest record) and transport. */
export interface LiveSession {
  server: SessionServer
  transport: SessionTransport
}

/** What a live session costs on a node besides its record (measured: about 3 KiB of heap). */
const SESSION_BYTES = 4096

export interface SessionCacheOptions {
  /** Live sessions kept on this node. */
  max: number
  /** Bytes of session records live on this node (as JSON, plus a fixed cost per session). */
  maxBytes: number
  /** Idle time after which a live session is dropped from this node (never from the store). */
  idleMs: number
  onCreated? (): void
  onRebuilt? (): void
  onDeleted? (): void
}

/**
 * The transport cache: a bounded set of live sessions on this node. A session found in the store
 * but not here (evicted, or initialized on another node) is rebuilt just in time from its record:
 * a server and a transport, no messages replayed. Dropping a live session closes only its server
 * and streams on this node.
 */
export class SessionCache {
  readonly #services: SessionServices
  readonly #serverInfo: InitializeResult['serverInfo']
  readonly #transportServices: TransportServices
  readonly #options: SessionCacheOptions
  readonly #live: LRUCache<string, LiveSession>
  /** Sessions dropped from the cache that still answer requests. */
  readonly #retiring = new Map<string, LiveSession>()
  /** Sessions evicted while holding a stream, kept while it is open (at most MAX_STREAMS of them). */
  readonly #pinned = new Map<string, LiveSession>()
  readonly #sweeper: NodeJS.Timeout
  #closing = false

  constructor (services: SessionServices, serverInfo: InitializeResult['serverInfo'], transportServices: TransportServices, options: SessionCacheOptions) {
    this.#services = services
    this.#serverInfo = serverInfo
    this.#transportServices = transportServices
    transportServices.bus.onMessage(message => this.#deliver(message))
    this.#options = options
    this.#live = new LRUCache<string, LiveSession>({
      max: options.max,
      maxSize: options.maxBytes,
      sizeCalculation: live => SESSION_BYTES + JSON.stringify(live.server.record.initializeParams).length,
      ttl: options.idleMs,
      updateAgeOnGet: true,
      // A session dropped here may still be answering requests (a tool may be waiting for the
      // client's answer to an elicitation): it closes once they are done, and until then it is
      // found again rather than rebuilt, so that answer reaches it.
      dispose: (live, id, reason) => {
        if (reason === 'set' && this.#live.peek(id) === live) return
        // A session with an open stream is not pushed out by others (it stays, outside the count,
        // until its streams close): a flood of new sessions cannot end a bystander's stream.
        if (reason === 'evict' && live.transport.streaming) {
          this.#pinned.set(id, live)
          return
        }
        this.#retire(id, live)
      }
    })
    this.#sweeper = setInterval(() => this.#sweep(), Math.min(options.idleMs, 60_000))
    this.#sweeper.unref()
  }

  get size (): number { return this.#live.size + this.#pinned.size }

  /** True once shutdown began: new GET streams would hold it up. */
  get closing (): boolean { return this.#closing }

  /**
   * Answers `initialize` with a new session, whose creation was counted against `creator` (see
   * SessionRecord). The record is written to the store before this resolves, so the client's next
   * request may land on any node.
   * Returns the JSON-RPC response; params that are not an initialize request's get an error and no session.
   * @throws {StorageUnavailableError} when the store cannot be written.
   */
  async initialize (request: JSONRPCRequest, principal?: string, creator?: string): Promise<{ sessionId?: string, response: JSONRPCMessage }> {
    let result: InitializeResult
    try {
      result = initializeResult(request.params, this.#serverInfo)
    } catch (error) {
      if (!(error instanceof RpcError)) throw error
      return { response: { jsonrpc: '2.0', id: request.id, error: { code: error.code, message: error.message } } }
    }
    const now = Date.now()
    const { protocolVersion, capabilities, clientInfo } = request.params as unknown as InitializeParams
    const record: SessionRecord = {
      id: randomUUID(),
      createdAt: now,
      lastActivityAt: now,
      protocolVersion: result.protocolVersion,
      // Only what rebuilding the session needs, each part bounded by initializeResult.
      initializeParams: { protocolVersion, capabilities, clientInfo: { name: clientInfo.name, version: clientInfo.version } },
      subscriptions: [],
      requestCount: 1,
      ...(principal !== undefined && { principal }),
      ...(creator !== undefined && { creator })
    }
    await this.#services.store.create(record)
    this.#live.set(record.id, this.#connect(record))
    this.#options.onCreated?.()
    return { sessionId: record.id, response: { result, jsonrpc: '2.0', id: request.id } as JSONRPCMessage }
  }

  /**
   * Counts a request for session `id` in the store (and in its rate-limit window) and reads back
   * its record; `acquire` takes the result. Started as a request arrives, it is the request's one
   * store round trip before the tools run. A session live here is read back in part only. With
   * `principal`, only a session that principal opened is found.
   * @throws {StorageUnavailableError} when the store cannot be reached.
   */
  touch (id: string, principal?: string): Promise<Touched | undefined> {
    return this.#services.store.touch(id, this.#live.peek(id)?.server.record, principal)
  }

  /**
   * The live session for `id`, given its `touch`, leased to the caller, who must `release()` its
   * transport once it has handed over its messages; rebuilt here when this node does not hold it.
   * Undefined when the session expired, was deleted, never existed or is another principal's.
   * @throws {StorageUnavailableError} when the store cannot be reached.
   */
  async acquire (id: string, principal?: string, touching = this.touch(id, principal)): Promise<LiveSession | undefined> {
    const touched = await touching
    if (touched === undefined) {
      // Gone; but another principal asking for it is no reason to drop it here.
      if (this.#owns(id, principal)) this.#live.delete(id)
      return undefined
    }
    const { record } = touched
    // A session closed by eviction between being found and leased is found (rebuilt) again.
    for (;;) {
      const live = this.#find(record)
      if (live.transport.lease()) return live
    }
  }

  #find (record: SessionRecord): LiveSession {
    const live = this.#live.get(record.id) ?? this.#unpin(record.id) ?? this.#revive(record.id)
    if (live !== undefined) {
      live.server.record = record
      return live
    }
    const rebuilt = this.#connect(record)
    this.#live.set(record.id, rebuilt)
    this.#options.onRebuilt?.()
    return rebuilt
  }

  /** Whether `principal` (when given) opened the session as this node holds it, or the node holds none. */
  #owns (id: string, principal?: string): boolean {
    const live = this.#live.peek(id) ?? this.#pinned.get(id)
    return principal === undefined || live === undefined || live.server.record.principal === principal
  }

  /** A pinned session, back in the cache. */
  #unpin (id: string): LiveSession | undefined {
    const live = this.#pinned.get(id)
    if (live === undefined) return undefined
    this.#pinned.delete(id)
    this.#live.set(id, live)
    return live
  }

  /** Drops idle sessions, and pinned ones whose streams have closed. */
  #sweep (): void {
    this.#live.purgeStale()
    for (const [id, live] of this.#pinned) {
      if (live.transport.streaming) continue
      this.#pinned.delete(id)
      this.#retire(id, live)
    }
  }

  /** Closes a session on this node once the requests it is answering are done. */
  #retire (id: string, live: LiveSession): void {
    this.#retiring.set(id, live)
    live.transport.retire(() => {
      if (this.#retiring.get(id) === live) this.#retiring.delete(id)
      live.transport.close().catch(() => {})
    })
  }

  /** A session that was dropped but has not closed yet, back in the cache. */
  #revive (id: string): LiveSession | undefined {
    const live = this.#retiring.get(id)
    if (live === undefined || !live.transport.unretire()) return undefined
    this.#retiring.delete(id)
    this.#live.set(id, live)
    return live
  }

  /**
   * Ends a session in the store (for every node) and here; false when it did not exist.
   * @throws {StorageUnavailableError} when the store cannot be reached.
   */
  async delete (id: string, principal?: string): Promise<boolean> {
    const existed = await this.#services.store.delete(id, principal)
    if (!existed && !this.#owns(id, principal)) return false
    this.#live.delete(id)
    const pinned = this.#pinned.get(id)
    if (pinned !== undefined) {
      this.#pinned.delete(id)
      this.#retire(id, pinned)
    }
    if (existed) this.#options.onDeleted?.()
    return existed
  }

  /** Closes every live session on this node; the store keeps them all. */
  close (): void {
    clearInterval(this.#sweeper)
    this.#live.clear()
    for (const [id, live] of this.#pinned) this.#retire(id, live)
    this.#pinned.clear()
  }

  /** A message from another node reaches the session if it is live here; otherwise nobody here waits for it. */
  #deliver (message: BusMessage): void {
    const live = this.#live.peek(message.sessionId) ?? this.#pinned.get(message.sessionId) ?? this.#retiring.get(message.sessionId)
    if (live === undefined) return
    this.#transportServices.observer?.busMessage?.('received', message.kind)
    live.transport.receive(message)
  }

  /** Shutdown begins: ends every GET stream on this node, telling clients to reconnect (to another node) shortly. */
  endStreams (): void {
    this.#closing = true
    for (const live of [...this.#live.values(), ...this.#pinned.values()]) live.transport.endStandaloneStream()
  }

  #connect (record: SessionRecord): LiveSession {
    const transport = new SessionTransport(record.id, this.#transportServices, () => server.record)
    const server: SessionServer = new SessionServer(this.#services, record, transport)
    return { server, transport }
  }
}
