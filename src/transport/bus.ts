import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js'

/**
 * What one node tells the others about a session:
 * - event: an SSE event for a stream this node does not hold (the GET stream, or a POST stream
 *   whose client reconnected elsewhere);
 * - response: a client's answer to a server request that another node is waiting for;
 * - claim: a GET stream opened on `node`, so any older one elsewhere ends (one stream per message).
 */
export type BusMessage =
  | { kind: 'event', sessionId: string, streamId: string, eventId: string, message: JSONRPCMessage }
  | { kind: 'response', sessionId: string, message: JSONRPCMessage }
  | { kind: 'claim', sessionId: string, streamId: string, node: string }

/** Carries BusMessages between the nodes serving one store; every node receives every message. */
export interface MessageBus {
  publish (message: BusMessage): Promise<void>
  /** Sets the handler for messages published by any node, this one included. */
  onMessage (handler: (message: BusMessage) => void): void
  close (): Promise<void>
}

/** The bus of a single node: messages come straight back to it. */
export class LocalBus implements MessageBus {
  #handler?: (message: BusMessage) => void

  async publish (message: BusMessage): Promise<void> {
    queueMicrotask(() => this.#handler?.(message))
  }

  onMessage (handler: (message: BusMessage) => void): void { this.#handler = handler }

  async close (): Promise<void> { this.#handler = undefined }
}
