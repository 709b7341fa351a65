import type { ServerResponse } from 'node:http'
import type { Transport, TransportSendOptions } from '@modelcontextprotocol/sdk/shared/transport.js'
import { ErrorCode, type JSONRPCMessage, type JSONRPCRequest, type MessageExtraInfo, type RequestId } from '@modelcontextprotocol/sdk/types.js'
import { ConflictError, InvalidRequestError } from '../errors.js'
import { SseStream } from './sse.js'

/** Where the answer to one POST goes. */
export interface ExchangeSink {
  /** Called once with the whole answer when nothing was streamed before it; undefined when no request is answered. */
  json (body: unknown): void
  /**
   * Called at the first message that must be streamed (a progress notification, a server request);
   * returns the response to write SSE to, with its headers already sent, or undefined to drop
   * streamed messages.
   */
  stream (): ServerResponse | undefined
}

const isResponse = (message: JSONRPCMessage): message is JSONRPCMessage & { id: RequestId } =>
  'id' in message && ('result' in message || 'error' in message)

/**
 * The SDK answers request params that fail its schema with -32603 and the schema library's issue
 * list as the message; a client should see -32602 and a readable reason.
 */
function asInvalidParams (message: JSONRPCMessage): JSONRPCMessage {
  if (!('error' in message) || message.error.code !== ErrorCode.InternalError || !message.error.message.startsWith('[')) return message
  let reason = 'the params do not match the method\'s schema'
  try {
    const [issue] = JSON.parse(message.error.message) as Array<{ path?: unknown[], message?: string }>
    if (issue !== undefined) reason = `${(issue.path ?? []).join('.')}: ${issue.message ?? 'invalid'}`
  } catch {}
  return { ...message, error: { code: ErrorCode.InvalidParams, message: `Invalid params: ${reason}` } }
}

const isRequest = (message: JSONRPCMessage): message is JSONRPCRequest =>
  'method' in message && 'id' in message

/**
 * The requests of one POST and how their answers leave: as one JSON body when nothing streams
 * before the last response (the fast path), else as an SSE stream opened at the first streamed
 * message. The server chooses per request, as Streamable HTTP allows.
 */
class Exchange {
  readonly #pending: Set<RequestId>
  readonly #batch: boolean
  readonly #sink: ExchangeSink
  readonly #responses: JSONRPCMessage[] = []
  #stream?: SseStream
  #streamChosen = false
  #done = false

  constructor (ids: RequestId[], batch: boolean, sink: ExchangeSink) {
    this.#pending = new Set(ids)
    this.#batch = batch
    this.#sink = sink
  }

  get done (): boolean { return this.#done }

  /** Streams a message related to one of this exchange's requests; false once the exchange is over. */
  push (message: JSONRPCMessage): boolean {
    if (this.#done) return false
    if (!this.#streamChosen) {
      this.#streamChosen = true
      const res = this.#sink.stream()
      if (res !== undefined) {
        this.#stream = new SseStream(res)
        for (const response of this.#responses.splice(0)) this.#stream.send(response)
      }
    }
    this.#stream?.send(message)
    return true
  }

  respond (message: JSONRPCMessage & { id: RequestId }): void {
    if (!this.#pending.delete(message.id)) return
    if (this.#streamChosen) this.#stream?.send(message)
    else this.#responses.push(message)
    if (this.#pending.size === 0) this.#finish()
  }

  /** Ends the exchange early (request cancelled, session closed) with whatever was answered. */
  forget (id: RequestId): void {
    if (this.#pending.delete(id) && this.#pending.size === 0) this.#finish()
  }

  #finish (): void {
    this.#done = true
    if (this.#streamChosen) this.#stream?.end()
    else if (this.#responses.length === 0) this.#sink.json(undefined)
    else this.#sink.json(this.#batch ? this.#responses : this.#responses[0])
  }
}

/**
 * The SDK `Transport` of one session on this node. It takes the JSON-RPC messages Fastify already
 * parsed, and routes what the SDK server sends: a response to the POST that carried its request,
 * a message related to a request onto that request's stream, anything else onto the session's
 * standalone GET stream (or to `onUnrouted` when this node has none).
 */
export class SessionTransport implements Transport {
  readonly sessionId: string
  onmessage?: (message: JSONRPCMessage, extra?: MessageExtraInfo) => void
  onclose?: () => void
  onerror?: (error: Error) => void
  /** A message for the standalone stream while this node holds none for the session. */
  onUnrouted?: (message: JSONRPCMessage) => void

  readonly #exchanges = new Map<RequestId, Exchange>()
  #standalone?: SseStream
  #closed = false

  constructor (sessionId: string) {
    this.sessionId = sessionId
  }

  async start (): Promise<void> {}

  async send (message: JSONRPCMessage, options?: TransportSendOptions): Promise<void> {
    if (isResponse(message)) {
      const exchange = this.#exchanges.get(message.id)
      if (exchange === undefined) return
      this.#exchanges.delete(message.id)
      exchange.respond(asInvalidParams(message) as typeof message)
      return
    }
    const related = options?.relatedRequestId
    if (related !== undefined && this.#exchanges.get(related)?.push(message) === true) return
    if (this.#standalone?.open === true) this.#standalone.send(message)
    else this.onUnrouted?.(message)
  }

  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    for (const [id, exchange] of this.#exchanges) exchange.forget(id)
    this.#exchanges.clear()
    this.#standalone?.end()
    this.onclose?.()
  }

  /** True while a standalone GET stream for the session is open on this node. */
  get hasStandaloneStream (): boolean {
    return this.#standalone?.open === true
  }

  /**
   * Delivers the messages of one POST to the SDK server. When they include requests, their answers
   * go to `sink`; returns whether any did.
   * @throws {InvalidRequestError} when a request id is already in flight on this session.
   */
  post (messages: JSONRPCMessage[], batch: boolean, sink: ExchangeSink, extra?: MessageExtraInfo): boolean {
    const ids: RequestId[] = []
    for (const message of messages) {
      if (!isRequest(message)) continue
      if (this.#exchanges.has(message.id)) throw new InvalidRequestError(`request id ${JSON.stringify(message.id)} is already in flight`)
      ids.push(message.id)
    }
    if (new Set(ids).size !== ids.length) throw new InvalidRequestError('request ids in a batch must be distinct')
    if (ids.length > 0) {
      const exchange = new Exchange(ids, batch, sink)
      for (const id of ids) this.#exchanges.set(id, exchange)
    }
    for (const message of messages) {
      if ('method' in message && message.method === 'notifications/cancelled') this.#cancelled(message.params?.requestId as RequestId | undefined)
      this.onmessage?.(message, extra)
    }
    return ids.length > 0
  }

  /** Sends one request through the server and resolves with its response; streamed messages are dropped. */
  dispatch (request: JSONRPCRequest): Promise<JSONRPCMessage> {
    return new Promise(resolve => {
      this.post([request], false, { json: body => resolve(body as JSONRPCMessage), stream: () => undefined })
    })
  }

  /**
   * Makes `res` the session's standalone stream on this node.
   * @throws {ConflictError} when one is already open.
   */
  openStandaloneStream (res: ServerResponse, keepAliveMs: number): SseStream {
    if (this.#standalone?.open === true) throw new ConflictError('a GET stream is already open for this session')
    const stream = new SseStream(res, keepAliveMs)
    stream.onClose = () => { if (this.#standalone === stream) this.#standalone = undefined }
    this.#standalone = stream
    return stream
  }

  /** A cancelled request gets no response from the SDK; its POST must still end. */
  #cancelled (id: RequestId | undefined): void {
    if (id === undefined) return
    const exchange = this.#exchanges.get(id)
    if (exchange === undefined) return
    this.#exchanges.delete(id)
    exchange.forget(id)
  }
}
