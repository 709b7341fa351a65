import type { ServerResponse } from 'node:http'
import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js'

/** Response headers of every SSE stream; X-Accel-Buffering stops nginx from holding events back. */
export function sseHeaders (sessionId?: string): Record<string, string> {
  return {
    'content-type': 'text/event-stream',
    'cache-control': 'no-cache, no-transform',
    connection: 'keep-alive',
    'x-accel-buffering': 'no',
    ...(sessionId !== undefined && { 'mcp-session-id': sessionId })
  }
}

/** Event ids remembered per stream to drop a second copy of an event (replay racing live delivery). */
const REMEMBERED_IDS = 1024

/**
 * One Server-Sent Events stream over a raw HTTP response. Writes after the client went away are
 * dropped; an event id is written at most once; `onClose` runs once, whoever closed the stream.
 */
export class SseStream {
  readonly streamId: string
  readonly #res: ServerResponse
  readonly #sent = new Set<string>()
  #held?: Array<[JSONRPCMessage | null, string | undefined]>
  #keepAlive?: NodeJS.Timeout
  #open = true
  #pending = ''
  onClose?: () => void

  /** With `keepAliveMs`, a comment every so often keeps proxies from closing the stream, and `onKeepAlive` runs with it. */
  constructor (res: ServerResponse, streamId: string, keepAliveMs = 0, onKeepAlive?: () => void) {
    this.#res = res
    this.streamId = streamId
    res.on('close', () => this.#closed())
    // A client that left while the stream was being opened (its store round trips under way) has
    // had its 'close' already: the stream closes at once, once its owner has set onClose.
    if (res.destroyed) process.nextTick(() => this.#closed())
    if (keepAliveMs > 0) {
      this.#keepAlive = setInterval(() => {
        this.#write(': keepalive\n\n')
        onKeepAlive?.()
      }, keepAliveMs)
      this.#keepAlive.unref()
    }
  }

  get open (): boolean { return this.#open }

  /**
   * Writes one event. A null message is a priming event: only its id and the reconnection delay,
   * so the client can resume from it.
   */
  send (message: JSONRPCMessage | null, eventId?: string, retryMs?: number): void {
    if (this.#held !== undefined) {
      this.#held.push([message, eventId])
      return
    }
    if (eventId !== undefined) {
      if (this.#sent.has(eventId)) return
      this.#sent.add(eventId)
      if (this.#sent.size > REMEMBERED_IDS) this.#sent.delete(this.#sent.values().next().value!)
    }
    const id = eventId === undefined ? '' : `id: ${eventId}\n`
    const retry = retryMs === undefined ? '' : `retry: ${retryMs}\n`
    this.#write(message === null ? `${id}${retry}data: \n\n` : `event: message\n${id}${retry}data: ${JSON.stringify(message)}\n\n`)
  }

  /** Holds live events back while older ones are replayed. */
  hold (): void { this.#held ??= [] }

  /** Writes the replayed events, then what was held back meanwhile, each event id once. */
  release (replayed: ReadonlyArray<{ message: JSONRPCMessage | null, eventId: string }> = []): void {
    const held = this.#held ?? []
    this.#held = undefined
    for (const { message, eventId } of replayed) this.send(message, eventId)
    for (const [message, eventId] of held) this.send(message, eventId)
  }

  /** Ends the stream; `retryMs` tells the client how soon to reconnect. */
  end (retryMs?: number): void {
    if (!this.#open) return
    if (retryMs !== undefined) this.#write(`retry: ${retryMs}\n\n`)
    // What is still pending leaves with the end of the response.
    const pending = this.#pending
    this.#pending = ''
    if (!this.#res.writableEnded) this.#res.end(pending)
    this.#closed()
  }

  /** Events written in one tick leave in one write, at the end of the tick. */
  #write (chunk: string): void {
    if (!this.#open || this.#res.writableEnded) return
    if (this.#pending === '') process.nextTick(() => this.#flush())
    this.#pending += chunk
  }

  #flush (): void {
    const pending = this.#pending
    this.#pending = ''
    if (pending !== '' && this.#open && !this.#res.writableEnded) this.#res.write(pending)
  }

  #closed (): void {
    if (!this.#open) return
    this.#open = false
    clearInterval(this.#keepAlive)
    this.onClose?.()
  }
}
