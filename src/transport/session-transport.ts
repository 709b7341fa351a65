import type { ServerResponse } from 'node:http'
import type { Transport, TransportSendOptions } from '@modelcontextprotocol/sdk/shared/transport.js'
import { type JSONRPCMessage, type JSONRPCRequest, type MessageExtraInfo, type RequestId } from '@modelcontextprotocol/sdk/types.js'
import { ConflictError, InvalidRequestError, RpcCode, TooManyStreamsError, type McpHttpError } from '../errors.js'
import type { IdSequence } from '../mcp/protocol.js'
import { type SessionRecord, type SessionStore, type StoredEvent, streamOfEventId } from '../stores/session-store.js'
import { type BusMessage, type MessageBus, addressOf } from './bus.js'
import { SseStream } from './sse.js'

/** The stream id of a session's GET stream; POST streams get ids unique across nodes, starting with their node's bus address. */
export const STANDALONE_STREAM = 'get'
/** Priming events (an id to resume from) are part of the 2025-11-25 revision. */
const PRIMING_SINCE = '2025-11-25'

/** Where the answer to one POST goes. */
export interface ExchangeSink {
  /** Called once with the whole answer when nothing was streamed before it; undefined when no request is answered. */
  json (body: unknown): void
  /** Called instead of `json` when the POST's one request failed on the HTTP layer (503: storage unreachable); without it, such a request is answered with a JSON-RPC error. */
  fail? (error: McpHttpError): void
  /**
   * Called at the first message that must be streamed (a progress notification, a server request);
   * returns the response to write SSE to, with its headers already sent, or undefined to drop
   * streamed messages.
   */
  stream (): ServerResponse | undefined
}

/** Resumed POST streams one session may hold open on a node at once. */
const MAX_RESUMED_STREAMS = 8

/** The GET streams a node may hold open at once, shared by its sessions. */
export class StreamBudget {
  readonly max: number
  #open = 0
  constructor (max: number) { this.max = max }
  get open (): number { return this.#open }
  /** Takes a place; false when none is left. */
  take (): boolean {
    if (this.#open >= this.max) return false
    this.#open++
    return true
  }

  give (): void { this.#open-- }
}

/** What a transport reports, for metrics; every callback is optional. */
export interface TransportObserver {
  streamOpened? (): void
  streamClosed? (): void
  eventStored? (): void
  eventsReplayed? (count: number): void
  busMessage? (direction: 'published' | 'received', kind: string): void
}

/** Shared by every session transport of a node. */
export interface TransportServices {
  store: SessionStore
  bus: MessageBus
  /** Ids of POST streams, starting with this node's bus address. */
  streamIds: IdSequence
  /** Reconnection delay sent with priming events and when the server ends a stream. */
  retryMs: number
  keepAliveMs: number
  /** GET streams this node may hold open at once. */
  streams: StreamBudget
  /** Bytes of answers to one JSON-RPC batch; answers past it become errors. */
  batchAnswerMaxBytes: number
  observer?: TransportObserver
  onError (error: unknown, message: string): void
}

interface Exchange {
  pending: Set<RequestId>
  batch: boolean
  /** Bytes the answers to a batch may still take. */
  budget: number
  sink: ExchangeSink
  responses: JSONRPCMessage[]
  streamId?: string
  done: boolean
}

const isResponse = (message: JSONRPCMessage): message is JSONRPCMessage & { id: RequestId } =>
  'id' in message && ('result' in message || 'error' in message)

const isRequest = (message: JSONRPCMessage): message is JSONRPCRequest =>
  'method' in message && 'id' in message

/**
 * The transport of one session on this node, implementing the SDK's public `Transport` interface.
 * It takes JSON-RPC messages that Fastify already parsed and routes what the session server sends:
 * - a response goes to the POST that carried its request: one JSON body when nothing was streamed
 *   for that POST (the fast path), else the last event of its SSE stream;
 * - a message related to a request opens (or continues) that POST's SSE stream;
 * - anything else goes to the session's GET stream.
 * Streamed messages are stored as events first, so a client can resume any stream on any node;
 * an event for a stream held by another node travels over the bus.
 */
export class SessionTransport implements Transport {
  readonly sessionId: string
  onmessage?: (message: JSONRPCMessage, extra?: MessageExtraInfo) => void
  onclose?: () => void
  onerror?: (error: Error) => void

  readonly #services: TransportServices
  readonly #record: () => SessionRecord
  readonly #exchanges = new Map<RequestId, Exchange>()
  readonly #streams = new Map<string, SseStream>()
  /** Ids of this node's server requests still awaiting the client's answer (unique across nodes). */
  readonly #awaiting = new Set<RequestId>()
  /** Resumed POST streams open here, or being opened. */
  #resumedStreams = 0
  /** POST streams of this node that a client resumed on another node, and that node. */
  readonly #resumedElsewhere = new Map<string, string>()
  #chain: Promise<void> = Promise.resolve()
  #closed = false
  /** Requests between finding this session in the cache and handing it their messages. */
  #leases = 0
  #onRetired?: () => void

  /** `record` reads the session's latest record: its revision, and the node holding its GET stream. */
  constructor (sessionId: string, services: TransportServices, record: () => SessionRecord) {
    this.sessionId = sessionId
    this.#services = services
    this.#record = record
  }

  async start (): Promise<void> {}

  async send (message: JSONRPCMessage, options?: TransportSendOptions): Promise<void> {
    if (isResponse(message)) {
      const exchange = this.#exchanges.get(message.id)
      if (exchange !== undefined) {
        this.#exchanges.delete(message.id)
        this.#respond(exchange, message.id, message)
        this.#closeIfRetired()
      }
      return
    }
    if (isRequest(message)) this.#awaiting.add(message.id)
    const related = options?.relatedRequestId === undefined ? undefined : this.#exchanges.get(options.relatedRequestId)
    if (related !== undefined && !related.done) this.#stream(related, message)
    else await this.#emit(STANDALONE_STREAM, message)
  }

  async close (): Promise<void> {
    if (this.#closed) return
    this.#closed = true
    for (const exchange of new Set(this.#exchanges.values())) this.#finish(exchange)
    this.#exchanges.clear()
    await this.#chain
    for (const stream of this.#streams.values()) stream.end(this.#services.retryMs)
    this.#streams.clear()
    this.onclose?.()
  }

  /**
   * Fails a POST whose only request could not run (storage unreachable, nothing written) with the
   * error's HTTP status, so the client or proxy retries it; false when the answer already started
   * streaming or other requests share the POST.
   */
  failRequest (id: RequestId, error: McpHttpError): boolean {
    const exchange = this.#exchanges.get(id)
    if (exchange?.sink.fail === undefined || exchange.streamId !== undefined || exchange.batch || exchange.pending.size !== 1) return false
    this.#exchanges.delete(id)
    exchange.done = true
    exchange.sink.fail(error)
    this.#closeIfRetired()
    return true
  }

  /**
   * Takes the session for one request, so that it cannot close before the request has handed over
   * its messages; false when it has already closed (the caller finds the session again).
   */
  lease (): boolean {
    if (this.#closed) return false
    this.#leases++
    return true
  }

  release (): void {
    this.#leases--
    this.#closeIfRetired()
  }

  /**
   * Leaves this node: the GET stream ends at once (the client resumes it anywhere), and `onRetired`
   * runs as soon as no request holds the session and every request in flight has been answered.
   */
  retire (onRetired: () => void): void {
    this.#onRetired = onRetired
    this.endStandaloneStream()
    this.#closeIfRetired()
  }

  /** Stays on this node after all (its session was wanted again before it closed); false when it has closed. */
  unretire (): boolean {
    if (this.#closed) return false
    this.#onRetired = undefined
    return true
  }

  #closeIfRetired (): void {
    if (this.#onRetired === undefined || this.#leases > 0 || this.#exchanges.size > 0) return
    const onRetired = this.#onRetired
    this.#onRetired = undefined
    onRetired()
  }

  /** Whether this node holds an open GET stream of the session. */
  get streaming (): boolean {
    for (const stream of this.#streams.values()) if (stream.open) return true
    return false
  }

  /** Ends the session's GET stream here with a reconnection delay; the client resumes it on any node. */
  endStandaloneStream (): void {
    this.#streams.get(STANDALONE_STREAM)?.end(this.#services.retryMs)
  }

  /**
   * Delivers the messages of one POST to the session server. When they include requests, their answers
   * go to `sink`; returns whether any did. A client's response to a server request that another
   * node made is passed on over the bus.
   * @throws {InvalidRequestError} when a request id is already in flight on this session.
   */
  post (messages: JSONRPCMessage[], batch: boolean, sink: ExchangeSink): boolean {
    const ids: RequestId[] = []
    for (const message of messages) {
      if (!isRequest(message)) continue
      if (this.#exchanges.has(message.id)) throw new InvalidRequestError(`request id ${JSON.stringify(message.id)} is already in flight`)
      ids.push(message.id)
    }
    if (new Set(ids).size !== ids.length) throw new InvalidRequestError('request ids in a batch must be distinct')
    if (ids.length > 0) {
      const exchange: Exchange = { pending: new Set(ids), batch, budget: this.#services.batchAnswerMaxBytes, sink, responses: [], done: false }
      for (const id of ids) this.#exchanges.set(id, exchange)
    }
    for (const message of messages) {
      if (isResponse(message)) this.#clientResponse(message)
      else if ('method' in message) {
        if (message.method === 'notifications/cancelled') this.#cancelled(message.params?.requestId as RequestId | undefined)
        const exchange = isRequest(message) ? this.#exchanges.get(message.id) : undefined
        this.onmessage?.(message, exchange === undefined ? undefined : { closeSSEStream: () => this.#poll(exchange) })
      }
    }
    return ids.length > 0
  }

  /**
   * Serves a GET: the session's stream for server-initiated messages, or, with `lastEventId`, the
   * resumption of the stream that event belongs to, replaying exactly the events after it. One
   * GET stream per session across all nodes: a resumption replaces the stream it resumes, wherever
   * it is; any other second GET stream is refused.
   * @throws {ConflictError} when another GET stream of the session is open (on any node).
   * @throws {TooManyStreamsError} when this node holds MAX_STREAMS streams.
   * @throws {StorageUnavailableError} when the GET stream cannot be claimed in the store.
   */
  async serveGet (open: () => ServerResponse, lastEventId?: string): Promise<void> {
    const resumed = lastEventId === undefined ? undefined : streamOfEventId(lastEventId)
    const streamId = resumed ?? STANDALONE_STREAM
    const standalone = streamId === STANDALONE_STREAM
    const conflict = () => {
      if (resumed === undefined && this.#streams.get(streamId)?.open === true) throw new ConflictError('this session\'s stream is already open')
    }
    conflict()
    // Places are taken before the claim is awaited, so concurrent GETs cannot all pass the checks.
    if (!standalone && this.#resumedStreams >= MAX_RESUMED_STREAMS) throw new ConflictError(`at most ${MAX_RESUMED_STREAMS} resumed streams per session`)
    const { streams, keepAliveMs, retryMs } = this.#services
    if (!streams.take()) throw new TooManyStreamsError()
    if (!standalone) this.#resumedStreams++
    const giveBack = () => {
      streams.give()
      if (!standalone) this.#resumedStreams--
    }
    let stream: SseStream
    try {
      if (standalone) await this.#claimStandaloneStream(resumed !== undefined)
      else await this.#claimPostStream(streamId)
      // Another GET may have opened the stream while the claim was under way.
      conflict()
      stream = new SseStream(open(), streamId, keepAliveMs, standalone ? () => this.#renewStandaloneStream(stream) : undefined)
    } catch (error) {
      giveBack()
      throw error
    }
    // Registered before the replay is read, holding live events back: an event stored meanwhile
    // arrives live and may be in the replay too; the stream writes each id once.
    stream.hold()
    const replaced = this.#streams.get(streamId)
    this.#register(stream, () => {
      giveBack()
      // The lease goes with the last GET stream of the session here (not with one a resumption replaced).
      if (standalone && this.#streams.get(STANDALONE_STREAM)?.open !== true) {
        this.#services.store.claimStream(this.sessionId, this.#services.bus.address, 'release', 0).catch(() => {})
      }
    })
    // A resumption replaces the stream it resumes.
    replaced?.end(retryMs)
    let events: StoredEvent[] = []
    try {
      events = resumed === undefined ? [] : (await this.#services.store.eventsAfter(this.sessionId, lastEventId!))?.events ?? []
    } catch (error) {
      // The response is already an SSE stream: end it with a retry delay, so the client tries again.
      this.#services.onError(error, 'could not read events to replay')
      stream.end(this.#services.retryMs)
      return
    }
    if (events.length > 0) this.#services.observer?.eventsReplayed?.(events.length)
    stream.release(events)
    if (resumed === undefined) await this.#emit(streamId, null)
    if (streamId !== STANDALONE_STREAM && events.some(e => e.message !== null && isResponse(e.message))) stream.end()
  }

  /** A message from another node about this session. */
  receive (message: BusMessage): void {
    switch (message.kind) {
      case 'event': {
        const stream = this.#streams.get(message.streamId)
        if (stream?.open !== true) return
        stream.send(message.message, message.eventId)
        if (message.streamId !== STANDALONE_STREAM && isResponse(message.message)) stream.end()
        return
      }
      case 'response':
        if (isResponse(message.message) && this.#awaiting.has(message.message.id)) this.#clientResponse(message.message)
        return
      case 'claim':
        if (message.node === this.#services.bus.address) return
        if (message.streamId !== STANDALONE_STREAM) this.#resumedElsewhere.set(message.streamId, message.node)
        this.#streams.get(message.streamId)?.end(this.#services.retryMs)
    }
  }

  /**
   * A POST stream made by another node, resumed here: that node sends its further events here. The
   * claim is out before the replay is read, so every event is either in the replay or sent here.
   */
  async #claimPostStream (streamId: string): Promise<void> {
    const owner = addressOf(streamId)
    const { address } = this.#services.bus
    if (owner === undefined || owner === address) return
    await this.#publish(owner, { kind: 'claim', sessionId: this.sessionId, streamId, node: address }).catch(error => this.#services.onError(error, 'could not claim a resumed stream'))
  }

  /** How long a node holds a GET stream's lease without renewing it (at every keepalive). */
  get #leaseMs (): number { return 3 * this.#services.keepAliveMs }

  /**
   * Takes the lease of the session's GET stream for this node (`resume`: whoever holds it), and
   * tells the previous holder to end its stream.
   * @throws {ConflictError} when another node holds a live lease and this is no resumption.
   */
  async #claimStandaloneStream (resume: boolean): Promise<void> {
    const { bus, store } = this.#services
    const { ok, previous } = await store.claimStream(this.sessionId, bus.address, resume ? 'resume' : 'open', this.#leaseMs)
    if (!ok) throw new ConflictError('this session\'s stream is open on another node; resume it with Last-Event-ID to move it here')
    if (previous !== undefined && previous !== bus.address) {
      this.#publish(previous, { kind: 'claim', sessionId: this.sessionId, streamId: STANDALONE_STREAM, node: bus.address }).catch(() => {})
    }
  }

  /** Keeps the lease while the stream lives; a stream whose lease went to another node ends. */
  #renewStandaloneStream (stream: SseStream): void {
    this.#services.store.claimStream(this.sessionId, this.#services.bus.address, 'renew', this.#leaseMs).then(({ ok }) => {
      if (!ok) stream.end(this.#services.retryMs)
    }, () => {})
  }

  /** A client's answer goes to the node that asked, named by the request id. */
  #clientResponse (message: JSONRPCMessage & { id: RequestId }): void {
    if (this.#awaiting.delete(message.id)) {
      this.onmessage?.(message)
      return
    }
    const node = addressOf(message.id)
    if (node === undefined || node === this.#services.bus.address) return
    this.#publish(node, { kind: 'response', sessionId: this.sessionId, message }).catch(error => this.#services.onError(error, 'could not pass a client response on'))
  }

  #stream (exchange: Exchange, message: JSONRPCMessage): void {
    if (exchange.streamId === undefined) this.#switchToSse(exchange)
    this.#emit(exchange.streamId!, message)
  }

  /** Switches a POST's answer to SSE: a primed stream, then any responses already waiting. */
  #switchToSse (exchange: Exchange): void {
    const streamId = this.#services.streamIds.next()
    exchange.streamId = streamId
    const res = exchange.sink.stream()
    if (res !== undefined) {
      this.#register(new SseStream(res, streamId))
      this.#emit(streamId, null)
    }
    for (const response of exchange.responses.splice(0)) this.#emit(streamId, response)
  }

  /**
   * SSE polling: answers the POST as a stream (primed, so it has an event id to resume from) and
   * ends it with a reconnection delay; what the request sends later is stored, and replayed or
   * delivered when the client reconnects with Last-Event-ID.
   */
  #poll (exchange: Exchange): void {
    if (exchange.done) return
    if (exchange.streamId === undefined) this.#switchToSse(exchange)
    const streamId = exchange.streamId!
    this.#chain = this.#chain.then(() => this.#streams.get(streamId)?.end(this.#services.retryMs))
  }

  #respond (exchange: Exchange, id: RequestId, message: JSONRPCMessage): void {
    if (!exchange.pending.delete(id)) return
    if (exchange.batch) message = this.#withinBudget(exchange, id, message)
    if (exchange.streamId !== undefined) this.#emit(exchange.streamId, message)
    else exchange.responses.push(message)
    if (exchange.pending.size === 0) this.#finish(exchange)
  }

  #finish (exchange: Exchange): void {
    if (exchange.done) return
    exchange.done = true
    const { streamId } = exchange
    if (streamId !== undefined) {
      this.#chain = this.#chain.then(() => {
        this.#streams.get(streamId)?.end()
        this.#resumedElsewhere.delete(streamId)
      })
      return
    }
    if (exchange.responses.length === 0) exchange.sink.json(undefined)
    else exchange.sink.json(exchange.batch ? exchange.responses : exchange.responses[0])
  }

  /** An answer to a batch, or an error in its place once the batch's answers exceed BATCH_ANSWER_MAX_BYTES (JSON or SSE alike). */
  #withinBudget (exchange: Exchange, id: RequestId, message: JSONRPCMessage): JSONRPCMessage {
    exchange.budget -= JSON.stringify(message).length
    if (exchange.budget >= 0) return message
    return { jsonrpc: '2.0', id, error: { code: RpcCode.InternalError, message: `The answers to this batch exceed ${this.#services.batchAnswerMaxBytes} bytes; send this request alone` } }
  }

  /**
   * Stores a streamed message as an event of its stream (a null message is a priming event) and
   * writes it to that stream here, or passes it to the node that holds the stream (named by a POST
   * stream's id, recorded for the GET stream). Emits run one after another, so a session's events
   * keep their order.
   */
  #emit (streamId: string, message: JSONRPCMessage | null): Promise<void> {
    const { store, retryMs, onError, observer } = this.#services
    const priming = message === null
    if (priming && this.#record().protocolVersion < PRIMING_SINCE) return this.#chain
    // Stored at once, so the appends of one burst share a round trip to Redis; written in order.
    const stored = store.appendEvent(this.sessionId, streamId, message).catch(error => { onError(error, 'could not store an SSE event'); return undefined })
    this.#chain = this.#chain.then(async () => {
      const eventId = await stored
      if (eventId !== undefined) observer?.eventStored?.()
      const stream = this.#streams.get(streamId)
      if (stream?.open === true) stream.send(message, eventId, priming ? retryMs : undefined)
      else if (!priming && eventId !== undefined) {
        const holder = streamId === STANDALONE_STREAM ? this.#record().streamNode : this.#resumedElsewhere.get(streamId) ?? addressOf(streamId)
        if (holder !== undefined && holder !== this.#services.bus.address) await this.#publish(holder, { kind: 'event', sessionId: this.sessionId, streamId, eventId, message })
      }
    }).catch(error => onError(error, 'could not deliver an SSE event'))
    return this.#chain
  }

  #register (stream: SseStream, onClose?: () => void): void {
    const { observer } = this.#services
    this.#streams.set(stream.streamId, stream)
    observer?.streamOpened?.()
    stream.onClose = () => {
      observer?.streamClosed?.()
      if (this.#streams.get(stream.streamId) === stream) this.#streams.delete(stream.streamId)
      onClose?.()
    }
  }

  #publish (to: string, message: BusMessage): Promise<void> {
    this.#services.observer?.busMessage?.('published', message.kind)
    return this.#services.bus.publish(to, message)
  }

  /** A cancelled request gets no response from the session server; its POST must still end. */
  #cancelled (id: RequestId | undefined): void {
    const exchange = id === undefined ? undefined : this.#exchanges.get(id)
    if (exchange === undefined || id === undefined) return
    this.#exchanges.delete(id)
    exchange.pending.delete(id)
    if (exchange.pending.size === 0) this.#finish(exchange)
    this.#closeIfRetired()
  }
}
