import type { Transport } from '@modelcontextprotocol/sdk/shared/transport.js'
import {
  ErrorCode, McpError,
  type JSONRPCMessage, type MessageExtraInfo, type RequestId, type ServerRequest
} from '@modelcontextprotocol/sdk/types.js'
import { McpHttpError, RpcError } from '../errors.js'

/** How long a request to the client (elicitation, sampling) waits for its answer, as in the SDK. */
export const CLIENT_REQUEST_TIMEOUT_MS = 60_000

/** Ids made by one node; unique across nodes when `prefix` is (see NodeIds). */
export class IdSequence {
  readonly prefix: string
  #next = 0
  constructor (prefix: string) { this.prefix = prefix }
  next (): string { return `${this.prefix}${(this.#next++).toString(36)}` }
}

/** One request being handled: cancellable by the client with `notifications/cancelled`. */
export class Call {
  readonly id: RequestId
  readonly extra: MessageExtraInfo | undefined
  cancelled = false
  #controller?: AbortController

  constructor (id: RequestId, extra: MessageExtraInfo | undefined) {
    this.id = id
    this.extra = extra
  }

  /** Made on first use: most requests never look at it. */
  get signal (): AbortSignal {
    this.#controller ??= new AbortController()
    if (this.cancelled && !this.#controller.signal.aborted) this.#controller.abort()
    return this.#controller.signal
  }

  cancel (reason: unknown): void {
    this.cancelled = true
    this.#controller?.abort(reason)
  }
}

/** Answers one request: a result, or a thrown RpcError (or McpHttpError) for an error response. */
export type RequestHandler = (method: string, params: unknown, call: Call) => Promise<unknown>

/** A transport that can fail a request on the HTTP layer (a 503 the client retries) instead of answering it. */
export interface FailingTransport extends Transport {
  /** Returns false when it cannot (the answer already started streaming); the request is then answered with an error. */
  failRequest? (id: RequestId, error: McpHttpError): boolean
}

interface PendingRequest {
  resolve (result: unknown): void
  reject (error: unknown): void
  timer: NodeJS.Timeout
}

/**
 * The JSON-RPC layer of one session on this node, over the SDK's public `Transport` interface:
 * requests go to a handler and their results or errors back to the transport; requests in flight
 * can be cancelled; requests to the client get ids from `ids` and wait, bounded in time, for their
 * answers. It knows nothing of MCP's methods.
 */
export class Protocol {
  readonly transport: FailingTransport
  readonly #handle: RequestHandler
  readonly #ids: IdSequence
  readonly #logError: (error: unknown, message: string) => void
  readonly #inFlight = new Map<RequestId, Call>()
  readonly #pending = new Map<RequestId, PendingRequest>()
  #closed = false

  constructor (transport: FailingTransport, handle: RequestHandler, ids: IdSequence, logError: (error: unknown, message: string) => void) {
    this.transport = transport
    this.#handle = handle
    this.#ids = ids
    this.#logError = logError
    transport.onmessage = (message, extra) => this.receive(message, extra)
    transport.onclose = () => this.#closedDown()
  }

  receive (message: JSONRPCMessage, extra?: MessageExtraInfo): void {
    if (!('method' in message)) this.#response(message)
    else if ('id' in message) this.#request(message.id, message.method, message.params, extra).catch(error => this.#logError(error, 'could not send a response'))
    else if (message.method === 'notifications/cancelled') this.#inFlight.get(message.params?.requestId as RequestId)?.cancel(message.params?.reason)
    // Other notifications (initialized, progress, roots changed) need nothing from this layer.
  }

  async #request (id: RequestId, method: string, params: unknown, extra: MessageExtraInfo | undefined): Promise<void> {
    const call = new Call(id, extra)
    this.#inFlight.set(id, call)
    let response: JSONRPCMessage
    try {
      response = { result: await this.#handle(method, params, call), jsonrpc: '2.0', id } as JSONRPCMessage
    } catch (error) {
      if (!call.cancelled && error instanceof McpHttpError && this.transport.failRequest?.(id, error) === true) return
      response = this.#errorResponse(id, error)
    } finally {
      this.#inFlight.delete(id)
    }
    // A cancelled request gets no answer.
    if (call.cancelled) return
    await this.transport.send(response)
  }

  /** Errors nobody planned for are logged, and the client sees a generic one. */
  #errorResponse (id: RequestId, error: unknown): JSONRPCMessage {
    let code: number = ErrorCode.InternalError
    let message = 'Internal error'
    let data: unknown
    if (error instanceof RpcError) ({ code, message, data } = error)
    else if (error instanceof McpHttpError) ({ rpcCode: code, message } = error)
    else this.#logError(error, 'MCP request failed')
    return { jsonrpc: '2.0', id, error: { code, message, ...(data !== undefined && { data }) } }
  }

  #response (message: JSONRPCMessage): void {
    const id = 'id' in message ? message.id : undefined
    const pending = id === undefined ? undefined : this.#pending.get(id)
    if (pending === undefined) return
    this.#pending.delete(id!)
    clearTimeout(pending.timer)
    if ('result' in message) pending.resolve(message.result)
    else if ('error' in message) pending.reject(new McpError(message.error.code, message.error.message, message.error.data))
  }

  /**
   * Sends the client a request on the stream of `call` and resolves with its result, checked by `resultSchema`.
   * @throws {McpError} on an error answer, a timeout, a cancelled call or a closed session.
   */
  request<T> (call: Call, request: ServerRequest, resultSchema: { parse (value: unknown): T }): Promise<T> {
    if (call.cancelled) return Promise.reject(new McpError(ErrorCode.ConnectionClosed, 'Request was cancelled'))
    if (this.#closed) return Promise.reject(new McpError(ErrorCode.ConnectionClosed, 'Connection closed'))
    const id = this.#ids.next()
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.#pending.delete(id)
        this.notify(call, 'notifications/cancelled', { requestId: id, reason: 'timed out' }).catch(() => {})
        reject(new McpError(ErrorCode.RequestTimeout, 'Request timed out'))
      }, CLIENT_REQUEST_TIMEOUT_MS)
      this.#pending.set(id, {
        resolve: result => { try { resolve(resultSchema.parse(result)) } catch (error) { reject(error) } },
        reject,
        timer
      })
      this.transport.send({ ...request, jsonrpc: '2.0', id } as JSONRPCMessage, { relatedRequestId: call.id }).catch(error => {
        this.#pending.delete(id)
        clearTimeout(timer)
        reject(error)
      })
    })
  }

  /** A notification about `call`, on its stream; or on the session's stream when `call` is undefined. */
  async notify (call: Call | undefined, method: string, params: Record<string, unknown>): Promise<void> {
    if (call?.cancelled === true) return
    await this.transport.send({ jsonrpc: '2.0', method, params }, call === undefined ? undefined : { relatedRequestId: call.id })
  }

  /** Requests still running and requests to the client still waiting end here. */
  #closedDown (): void {
    this.#closed = true
    for (const call of this.#inFlight.values()) call.cancel(new Error('session closed on this node'))
    for (const pending of this.#pending.values()) {
      clearTimeout(pending.timer)
      pending.reject(new McpError(ErrorCode.ConnectionClosed, 'Connection closed'))
    }
    this.#pending.clear()
  }
}
