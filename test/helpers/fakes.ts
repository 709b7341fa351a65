import { EventEmitter } from 'node:events'
import type { ServerResponse } from 'node:http'
import type { BusMessage, MessageBus } from '../../src/transport/bus.js'
import { newAddress } from '../../src/transport/bus.js'

/** One SSE block as written: an event, a lone `retry:` or a comment. */
export interface WrittenEvent {
  event?: string
  id?: string
  retry?: number
  data?: string
  comment?: string
  /** The parsed JSON of a non-empty data line. */
  message?: any
}

/** Splits SSE text into its blocks, keeping every field (unlike the client-side parser). */
export function parseSse (text: string): WrittenEvent[] {
  const blocks: WrittenEvent[] = []
  for (const block of text.split('\n\n')) {
    if (block === '') continue
    const parsed: WrittenEvent = {}
    for (const line of block.split('\n')) {
      if (line.startsWith(': ')) parsed.comment = line.slice(2)
      else if (line.startsWith('event: ')) parsed.event = line.slice(7)
      else if (line.startsWith('id: ')) parsed.id = line.slice(4)
      else if (line.startsWith('retry: ')) parsed.retry = Number(line.slice(7))
      else if (line.startsWith('data: ')) parsed.data = line.slice(6)
    }
    if (parsed.data !== undefined && parsed.data !== '') parsed.message = JSON.parse(parsed.data)
    blocks.push(parsed)
  }
  return blocks
}

/**
 * A stand-in for the raw HTTP response under an SSE stream: it records every write and end, and
 * counts writes that a real response would refuse (after end) or lose (after the client left).
 */
export class FakeResponse extends EventEmitter {
  statusCode?: number
  headers: Record<string, string> = {}
  /** Each `write` and the chunk of `end`, in order. */
  readonly writes: string[] = []
  endCalls = 0
  writableEnded = false
  headersFlushed = false
  clientLeft = false
  writesAfterEnd = 0
  writesAfterClientLeft = 0

  writeHead (statusCode: number, headers: Record<string, string> = {}): this {
    this.statusCode = statusCode
    this.headers = headers
    return this
  }

  flushHeaders (): void { this.headersFlushed = true }

  write (chunk: string): boolean {
    if (this.writableEnded) this.writesAfterEnd++
    if (this.clientLeft) this.writesAfterClientLeft++
    this.writes.push(chunk)
    return true
  }

  end (chunk?: string): this {
    this.endCalls++
    if (this.writableEnded) this.writesAfterEnd++
    if (chunk !== undefined && chunk !== '') this.writes.push(chunk)
    this.writableEnded = true
    // As a real response does, 'close' follows the end.
    process.nextTick(() => this.emit('close'))
    return this
  }

  /** The client goes away: the connection closes before the response ended. */
  leave (): void {
    this.clientLeft = true
    this.emit('close')
  }

  get text (): string { return this.writes.join('') }
  get events (): WrittenEvent[] { return parseSse(this.text) }
  /** The SSE events that carry a JSON-RPC message. */
  get messages (): any[] { return this.events.filter(e => e.message !== undefined).map(e => e.message) }
  get asServerResponse (): ServerResponse { return this as unknown as ServerResponse }
}

/** A MessageBus that delivers nothing and records every publish. */
export class RecordingBus implements MessageBus {
  readonly address = newAddress()
  readonly published: Array<{ to: string, message: BusMessage }> = []
  handler?: (message: BusMessage) => void

  async publish (to: string, message: BusMessage): Promise<void> { this.published.push({ to, message }) }
  onMessage (handler: (message: BusMessage) => void): void { this.handler = handler }
  async broadcast (): Promise<void> {}
  onBroadcast (): void {}
  async close (): Promise<void> { this.handler = undefined }
}

/** Polls a synchronous condition every few milliseconds; fails after `timeoutMs`. */
export async function eventually (what: string, check: () => boolean, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!check()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await new Promise(resolve => setTimeout(resolve, 2))
  }
}

/** A promise with its resolve function outside, for a test to say when something happened. */
export function deferred<T = void> (): { promise: Promise<T>, resolve: (value: T) => void } {
  let settle!: (value: T) => void
  const promise = new Promise<T>(resolve => { settle = resolve })
  return { promise, resolve: settle }
}
