import type { ServerResponse } from 'node:http'
import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js'

/** Response headers of every SSE stream; X-Accel-Buffering stops nginx from holding events back. */
export function sseHeaders (sessionId: string): Record<string, string> {
  return {
    'content-type': 'text/event-stream',
    'cache-control': 'no-cache, no-transform',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
    'mcp-session-id': sessionId
  }
}

/**
 * One Server-Sent Events stream over a raw HTTP response. Writes after the client went away are
 * dropped; `onClose` runs once, whoever closed the stream.
 */
export class SseStream {
  readonly #res: ServerResponse
  #keepAlive?: NodeJS.Timeout
  #open = true
  onClose?: () => void

  constructor (res: ServerResponse, keepAliveMs = 0) {
    this.#res = res
    res.on('close', () => this.#closed())
    if (keepAliveMs > 0) {
      this.#keepAlive = setInterval(() => this.#write(': keepalive\n\n'), keepAliveMs)
      this.#keepAlive.unref()
    }
  }

  get open (): boolean { return this.#open }

  send (message: JSONRPCMessage, eventId?: string): void {
    const id = eventId === undefined ? '' : `id: ${eventId}\n`
    this.#write(`event: message\n${id}data: ${JSON.stringify(message)}\n\n`)
  }

  /** Ends the stream; `retryMs` tells the client how soon to reconnect. */
  end (retryMs?: number): void {
    if (!this.#open) return
    if (retryMs !== undefined) this.#write(`retry: ${retryMs}\n\n`)
    this.#res.end()
    this.#closed()
  }

  #write (chunk: string): void {
    if (this.#open && !this.#res.writableEnded) this.#res.write(chunk)
  }

  #closed (): void {
    if (!this.#open) return
    this.#open = false
    clearInterval(this.#keepAlive)
    this.onClose?.()
  }
}
