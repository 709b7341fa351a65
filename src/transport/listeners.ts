import type { ServerResponse } from 'node:http'
import type { JSONRPCMessage, RequestId } from '@modelcontextprotocol/sdk/types.js'
import { HANDLE_IN_URI } from '../mcp/features.js'
import type { MessageBus } from './bus.js'
import type { StreamBudget } from './session-transport.js'

/** Resources one listen stream may subscribe to, and the bytes of their URIs together. */
export const MAX_LISTEN_SUBSCRIPTIONS = 100
export const MAX_LISTEN_URI_BYTES = 8192
/** A listen stream whose client does not read, holding this much unsent, is closed. */
const MAX_UNSENT_BYTES = 65_536

const SUBSCRIPTION_ID = 'io.modelcontextprotocol/subscriptionId'
/** How often a node holding listen streams says so to the others, and how long they believe it. */
const ANNOUNCE_EVERY_MS = 5000
const BELIEVE_FOR_MS = 3 * ANNOUNCE_EVERY_MS

interface Listener {
  id: RequestId
  resources: ReadonlySet<string>
  raw: ServerResponse
  client: string
}

/**
 * The `subscriptions/listen` streams of 2026-07-28 clients on this node, and the changes they
 * hear from every node. A change goes out on the bus's broadcast channel only while some node
 * holds listen streams (each such node says so when it opens its first one and every few seconds
 * after), so a server nobody listens to publishes nothing.
 */
export class Listeners {
  readonly #bus: MessageBus
  readonly #streams: StreamBudget
  readonly #keepAliveMs: number
  readonly #perClient: number
  readonly #here = new Set<Listener>()
  /** Listen streams open here, by client (principal or address). */
  readonly #clients = new Map<string, number>()
  /** When another node last said it holds listen streams, by node. */
  readonly #elsewhere = new Map<string, number>()
  #announcer?: NodeJS.Timeout
  #keepAlive?: NodeJS.Timeout

  constructor (bus: MessageBus, streams: StreamBudget, keepAliveMs: number, perClient: number) {
    this.#bus = bus
    this.#streams = streams
    this.#keepAliveMs = keepAliveMs
    this.#perClient = perClient
    bus.onBroadcast(message => {
      if (message.kind === 'listening') {
        if (message.node !== bus.address) this.#elsewhere.set(message.node, Date.now())
      } else {
        this.#deliver(message.uri)
      }
    })
  }

  get size (): number { return this.#here.size }

  /** A resource changed: every listen stream subscribed to it, on any node, hears of it. */
  resourceUpdated (uri: string): void {
    // In the 2026-07-28 revision the only state is in handles, so only resources that name one
    // change; others (a session's history, say) are never announced: listeners are of no session.
    const elsewhere = this.#anyoneElse()
    if ((!elsewhere && this.#here.size === 0) || !HANDLE_IN_URI.test(uri)) return
    // The broadcast comes back to this node too.
    if (elsewhere) this.#bus.broadcast({ kind: 'updated', uri }).catch(() => {})
    else this.#deliver(uri)
  }

  /**
   * Serves a listen stream on `raw`: the acknowledgement of what is honoured first, then the
   * changes asked for, each tagged with the listen request's id, until the client leaves.
   * `start` sends the response's head and gives the response. 'node' when this node holds as many
   * streams as it may (the caller answers 503), 'client' when `client` holds as many listen
   * streams here as it may (429).
   */
  open (start: () => ServerResponse, id: RequestId, resources: readonly string[], client: string): true | 'node' | 'client' {
    const held = this.#clients.get(client) ?? 0
    if (held >= this.#perClient) return 'client'
    if (!this.#streams.take()) return 'node'
    this.#clients.set(client, held + 1)
    const raw = start()
    const listener: Listener = { id, resources: new Set(resources), raw, client }
    const leave = () => {
      this.#here.delete(listener)
      this.#streams.give()
      const left = this.#clients.get(client)! - 1
      if (left === 0) this.#clients.delete(client)
      else this.#clients.set(client, left)
      if (this.#here.size === 0) this.#stopTimers()
    }
    // A client that left while its filter was checked has had its 'close' already.
    if (raw.destroyed) {
      leave()
      return true
    }
    this.#here.add(listener)
    this.#send(listener, { jsonrpc: '2.0', method: 'notifications/subscriptions/acknowledged', params: { notifications: { resourceSubscriptions: [...listener.resources] }, _meta: { [SUBSCRIPTION_ID]: id } } })
    raw.once('close', leave)
    if (this.#here.size === 1) this.#startTimers()
    return true
  }

  /** Ends every listen stream with its final result (the server is shutting down): clients listen again elsewhere. */
  close (): void {
    this.#stopTimers()
    for (const listener of this.#here) {
      listener.raw.end(`event: message\ndata: ${JSON.stringify({ jsonrpc: '2.0', id: listener.id, result: { resultType: 'complete', _meta: { [SUBSCRIPTION_ID]: listener.id } } })}\n\n`)
    }
  }

  #anyoneElse (): boolean {
    const now = Date.now()
    for (const [node, at] of this.#elsewhere) {
      if (now - at < BELIEVE_FOR_MS) return true
      this.#elsewhere.delete(node)
    }
    return false
  }

  #deliver (uri: string): void {
    for (const listener of this.#here) {
      if (listener.resources.has(uri)) this.#send(listener, { jsonrpc: '2.0', method: 'notifications/resources/updated', params: { uri, _meta: { [SUBSCRIPTION_ID]: listener.id } } })
    }
  }

  #send (listener: Listener, message: JSONRPCMessage): void {
    // A client that does not read does not make this node hold its notifications.
    if (listener.raw.writableLength > MAX_UNSENT_BYTES) {
      listener.raw.destroy()
      return
    }
    listener.raw.write(`event: message\ndata: ${JSON.stringify(message)}\n\n`)
  }

  #startTimers (): void {
    const announce = () => { this.#bus.broadcast({ kind: 'listening', node: this.#bus.address }).catch(() => {}) }
    announce()
    this.#announcer = setInterval(announce, ANNOUNCE_EVERY_MS).unref()
    if (this.#keepAliveMs > 0) {
      this.#keepAlive = setInterval(() => { for (const listener of this.#here) listener.raw.write(': keepalive\n\n') }, this.#keepAliveMs).unref()
    }
  }

  #stopTimers (): void {
    clearInterval(this.#announcer)
    clearInterval(this.#keepAlive)
  }
}
