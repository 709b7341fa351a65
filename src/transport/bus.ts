import { randomBytes } from 'node:crypto'
import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js'

/**
 * What one node tells another about a session:
 * - event: an SSE event for a stream the receiving node holds (the GET stream, or a POST stream
 *   whose client reconnected there);
 * - response: a client's answer to a server request that the receiving node is waiting for;
 * - claim: the session's GET stream was opened on `node`, so the receiver ends its own.
 */
export type BusMessage =
  | { kind: 'event', sessionId: string, streamId: string, eventId: string, message: JSONRPCMessage }
  | { kind: 'response', sessionId: string, message: JSONRPCMessage }
  | { kind: 'claim', sessionId: string, streamId: string, node: string }

/**
 * What one node tells every node: a resource changed (for the subscriptions/listen streams each
 * holds), or that it holds such streams (so that the others publish changes at all).
 */
export type BroadcastMessage =
  | { kind: 'updated', uri: string }
  | { kind: 'listening', node: string }

/** Length of a node's bus address, which starts every stream id and request id that node makes. */
const ADDRESS_LENGTH = 8

/** A new bus address: random, so that every process has its own. */
export function newAddress (): string {
  return randomBytes(6).toString('base64url')
}

/** The address of the node that made a stream id or request id; undefined for ids of other origin. */
export function addressOf (id: unknown): string | undefined {
  return typeof id === 'string' && id.length > ADDRESS_LENGTH ? id.slice(0, ADDRESS_LENGTH) : undefined
}

/** Carries BusMessages between the nodes serving one store, each to the one node it is for. */
export interface MessageBus {
  /** This node's address. */
  readonly address: string
  publish (to: string, message: BusMessage): Promise<void>
  /** Sets the handler for messages published to this node, by any node, this one included. */
  onMessage (handler: (message: BusMessage) => void): void
  /** Sends to every node, this one included. */
  broadcast (message: BroadcastMessage): Promise<void>
  onBroadcast (handler: (message: BroadcastMessage) => void): void
  close (): Promise<void>
}

/** The bus of a single node: messages to it come straight back. */
export class LocalBus implements MessageBus {
  readonly address = newAddress()
  #handler?: (message: BusMessage) => void
  #broadcastHandler?: (message: BroadcastMessage) => void

  async publish (to: string, message: BusMessage): Promise<void> {
    if (to === this.address) queueMicrotask(() => this.#handler?.(message))
  }

  onMessage (handler: (message: BusMessage) => void): void { this.#handler = handler }

  async broadcast (message: BroadcastMessage): Promise<void> {
    queueMicrotask(() => this.#broadcastHandler?.(message))
  }

  onBroadcast (handler: (message: BroadcastMessage) => void): void { this.#broadcastHandler = handler }

  async close (): Promise<void> {
    this.#handler = undefined
    this.#broadcastHandler = undefined
  }
}
