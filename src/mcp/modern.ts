import { createHash } from 'node:crypto'
import type { IncomingHttpHeaders } from 'node:http'
import {
  ErrorCode, type ClientCapabilities, type JSONRPCMessage, type JSONRPCRequest, type RequestId, type ServerRequest
} from '@modelcontextprotocol/sdk/types.js'
import { McpHttpError, ModernRequestError, RpcError } from '../errors.js'
import type { LogLevel } from '../stores/session-store.js'
import { type Dispatcher, type RequestScope, SERVER_CAPABILITIES } from './dispatcher.js'
import { type FeatureContext, type FeatureRegistry, HANDLE_IN_URI, InputRequired, NO_STATE, type ScopeHandles, type ScopeState, type ToolContext } from './features.js'
import type { RequestStateCodec, RoundState, StateBinding } from './request-state.js'
import { LOG_LEVELS } from './session-server.js'

/** The revision served without sessions, and the only one such requests may claim. */
export const MODERN_REVISION = '2026-07-28'
export const MODERN_REVISIONS = [MODERN_REVISION]

export const META = {
  protocolVersion: 'io.modelcontextprotocol/protocolVersion',
  clientCapabilities: 'io.modelcontextprotocol/clientCapabilities',
  clientInfo: 'io.modelcontextprotocol/clientInfo',
  logLevel: 'io.modelcontextprotocol/logLevel',
  serverInfo: 'io.modelcontextprotocol/serverInfo',
  subscriptionId: 'io.modelcontextprotocol/subscriptionId'
} as const

/** JSON-RPC codes of the 2026-07-28 HTTP layer. */
export const ModernCode = { HeaderMismatch: -32020, MissingCapability: -32021, UnsupportedVersion: -32022 } as const

const SEVERITY = new Map(LOG_LEVELS.map((level, i) => [level, i]))
/** Requests that name what they act on in a header (Mcp-Name) as well as in the body. */
const NAMED: Record<string, 'name' | 'uri'> = { 'tools/call': 'name', 'prompts/get': 'name', 'resources/read': 'uri' }
/** The capability a request to the client needs, by its method. */
const NEEDS: Record<string, keyof ClientCapabilities> = { 'elicitation/create': 'elicitation', 'sampling/createMessage': 'sampling', 'roots/list': 'roots' }
/** Cache hints of the results that must carry them: lists change only with a deployment, reads are the caller's. */
const CACHE_HINTS: Record<string, { ttlMs: number, cacheScope: 'public' | 'private' }> = {
  'server/discover': { ttlMs: 60_000, cacheScope: 'public' },
  'tools/list': { ttlMs: 60_000, cacheScope: 'public' },
  'prompts/list': { ttlMs: 60_000, cacheScope: 'public' },
  'resources/list': { ttlMs: 60_000, cacheScope: 'public' },
  'resources/templates/list': { ttlMs: 60_000, cacheScope: 'public' },
  'resources/read': { ttlMs: 0, cacheScope: 'private' }
}

export const isObject = (value: unknown): value is Record<string, unknown> => typeof value === 'object' && value !== null && !Array.isArray(value)

/**
 * Checks that the client declared what `requests` (to ask it with input_required) need.
 * @throws {ModernRequestError} 400 -32021 naming the missing capabilities (the server fills in the id).
 */
export function requireCapabilities (requests: readonly ServerRequest[], declared: ClientCapabilities, id?: RequestId): void {
  const missing = [...new Set(requests.map(r => NEEDS[r.method]))]
    .filter((needed): needed is keyof ClientCapabilities => needed !== undefined && declared[needed] === undefined)
  if (missing.length === 0) return
  throw new ModernRequestError(ModernCode.MissingCapability, `Missing required client capability: ${missing.join(', ')}`, id, {
    requiredCapabilities: Object.fromEntries(missing.map(needed => [needed, {}]))
  })
}

/** A header's value without surrounding spaces and tabs (trimmed in linear time: no regular expression). */
const header = (headers: IncomingHttpHeaders, name: string): string | undefined => {
  const value = headers[name]
  if (typeof value !== 'string') return undefined
  let start = 0
  let end = value.length
  while (start < end && (value[start] === ' ' || value[start] === '\t')) start++
  while (end > start && (value[end - 1] === ' ' || value[end - 1] === '\t')) end--
  return value.slice(start, end)
}

/** Whether an MCP-Protocol-Version header names 2026-07-28 or a later revision. */
export function isModernHeader (value: unknown): boolean {
  return typeof value === 'string' && value.length <= 64 && value.trim() >= MODERN_REVISION
}

/** Whether a message's params._meta claims a protocol revision (the mark of a 2026-07-28 client). */
export function claimsRevision (message: unknown): boolean {
  return isObject(message) && isObject(message.params) && isObject(message.params._meta) && META.protocolVersion in message.params._meta
}

/**
 * Which era serves a POST body: 2026-07-28 rules for a request or notification that claims a
 * revision in its `_meta` or whose MCP-Protocol-Version header names 2026-07-28 or later; the
 * sessions of 2025-11-25 for everything else (initialize, responses, batches, no claim).
 * @throws {ModernRequestError} for a batch carrying a claim, or initialize under a modern header.
 */
export function eraOf (body: unknown, protocolHeader: unknown): 'modern' | 'legacy' {
  if (Array.isArray(body)) {
    if (body.some(claimsRevision)) throw new ModernRequestError(ErrorCode.InvalidRequest, 'Invalid Request: batches are not part of the 2026-07-28 revision', undefined)
    return 'legacy'
  }
  if (!isObject(body) || typeof body.method !== 'string') return 'legacy'
  const claimed = claimsRevision(body)
  if (body.method === 'initialize' && !(claimed && isModernHeader((body.params as { _meta: Record<string, unknown> })._meta[META.protocolVersion]))) {
    if (isModernHeader(protocolHeader)) throw new ModernRequestError(ModernCode.HeaderMismatch, 'Bad Request: initialize (the 2025 handshake) under a 2026-07-28 MCP-Protocol-Version header', body.id as RequestId | undefined)
    return 'legacy'
  }
  return claimed || isModernHeader(protocolHeader) ? 'modern' : 'legacy'
}

const SENTINEL = /^=\?base64\?(.*)\?=$/
const BASE64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/
const utf8 = new TextDecoder('utf-8', { fatal: true })

/** A header value as sent: plain, or `=?base64?…?=` for text a header cannot carry. Undefined when the encoding is broken. */
export function decodeHeaderValue (value: string): string | undefined {
  const encoded = SENTINEL.exec(value)?.[1]
  if (encoded === undefined) return value
  if (!BASE64.test(encoded)) return undefined
  try {
    return utf8.decode(Buffer.from(encoded, 'base64'))
  } catch {
    return undefined
  }
}

/** A question as the signed round state remembers it: its key and a digest of what it asked. */
const questionOf = (key: string, request: ServerRequest) => `${key}#${createHash('sha256').update(JSON.stringify(request)).digest('base64url').slice(0, 22)}`

/** What a 2026-07-28 request says about itself in `_meta`. */
export interface Envelope {
  revision: string
  clientCapabilities: ClientCapabilities
  logLevel?: LogLevel
  progressToken?: string | number
}

/**
 * Checks a 2026-07-28 request's `_meta` and headers, in the order the revision gives.
 * @throws {ModernRequestError} 400 -32602 (envelope), -32020 (headers), -32022 (revision).
 */
export function checkEnvelope (message: { id?: RequestId, method: string, params?: unknown }, headers: IncomingHttpHeaders): Envelope {
  const { id, method } = message
  const params = isObject(message.params) ? message.params : undefined
  const meta = params !== undefined && isObject(params._meta) ? params._meta : undefined
  const missing = (what: string) => new ModernRequestError(ErrorCode.InvalidParams, `Invalid params: the request has no ${what} in params._meta, which 2026-07-28 requests carry`, id, { envelope: { missing: [what] } })
  if (meta === undefined) throw missing('_meta')
  const revision = meta[META.protocolVersion]
  if (typeof revision !== 'string') throw missing(META.protocolVersion)
  const clientCapabilities = meta[META.clientCapabilities]
  if (!isObject(clientCapabilities)) throw missing(META.clientCapabilities)
  const logLevel = meta[META.logLevel]
  if (logLevel !== undefined && !SEVERITY.has(logLevel as LogLevel)) {
    throw new ModernRequestError(ErrorCode.InvalidParams, `Invalid params: ${META.logLevel} is not one of ${LOG_LEVELS.join(', ')}`, id, { envelope: { key: META.logLevel, problem: 'invalid' } })
  }
  const mismatch = (name: string, sent: string, body: string) =>
    new ModernRequestError(ModernCode.HeaderMismatch, `Bad Request: the ${name} header (${sent.slice(0, 256)}) disagrees with the body (${body.slice(0, 256)})`, id, { mismatch: { header: name, body: body.slice(0, 256) } })
  const versionHeader = header(headers, 'mcp-protocol-version')
  if (versionHeader !== undefined && versionHeader !== revision) throw mismatch('MCP-Protocol-Version', versionHeader, revision)
  const methodHeader = header(headers, 'mcp-method')
  if (methodHeader !== undefined && methodHeader !== method) throw mismatch('Mcp-Method', methodHeader, method)
  if (!MODERN_REVISIONS.includes(revision)) {
    throw new ModernRequestError(ModernCode.UnsupportedVersion, `Unsupported protocol version: ${revision.slice(0, 64)}`, id, { supported: MODERN_REVISIONS, requested: revision })
  }
  if (versionHeader === undefined) throw new ModernRequestError(ModernCode.HeaderMismatch, 'Bad Request: 2026-07-28 requests carry an MCP-Protocol-Version header', id)
  if (id !== undefined) {
    if (methodHeader === undefined) throw new ModernRequestError(ModernCode.HeaderMismatch, 'Bad Request: 2026-07-28 requests carry an Mcp-Method header', id)
    const field = NAMED[method]
    const named = field === undefined ? undefined : params?.[field]
    if (typeof named === 'string') {
      const sent = header(headers, 'mcp-name')
      if (sent === undefined) throw new ModernRequestError(ModernCode.HeaderMismatch, `Bad Request: ${method} requests carry an Mcp-Name header`, id)
      const decoded = decodeHeaderValue(sent)
      if (decoded === undefined) throw new ModernRequestError(ModernCode.HeaderMismatch, 'Bad Request: the Mcp-Name header\'s base64 is malformed', id)
      if (decoded !== named) throw mismatch('Mcp-Name', decoded, named)
    }
  }
  const progressToken = meta.progressToken
  const envelope: Envelope = { revision, clientCapabilities }
  if (logLevel !== undefined) envelope.logLevel = logLevel as LogLevel
  if (typeof progressToken === 'string' || typeof progressToken === 'number') envelope.progressToken = progressToken
  return envelope
}

/** Visible ASCII, space and tab: what a header value may hold (RFC 9110); anything else travels base64-encoded. */
const HEADER_SAFE = /^[\x20-\x7E\t]*$/

/** An argument as its `Mcp-Param-{Name}` header carries it; undefined when it has no such form (absent, null, an object). */
function asHeaderValue (value: unknown): string | undefined {
  if (typeof value === 'string') return value
  if (typeof value === 'boolean') return value ? 'true' : 'false'
  if (typeof value === 'number' && Number.isSafeInteger(value)) return String(value)
  return undefined
}

/**
 * Checks a 2026-07-28 `tools/call`'s `Mcp-Param-{Name}` headers against its arguments, for the
 * arguments its tool annotates with `x-mcp-header`: an argument in the body comes with its header,
 * which (base64-decoded when so marked) equals it; a header comes with its argument.
 * @throws {ModernRequestError} 400 -32020 on any difference or a malformed header value.
 */
export function checkParamHeaders (message: { id?: RequestId, method: string, params?: unknown }, headers: IncomingHttpHeaders, features: FeatureRegistry): void {
  if (message.method !== 'tools/call' || !isObject(message.params)) return
  const { name, arguments: args } = message.params
  const tool = typeof name === 'string' ? features.tool(name) : undefined
  if (tool === undefined || tool.headerParams.length === 0) return
  const refuse = (problem: string, param: string) => new ModernRequestError(ModernCode.HeaderMismatch, `Bad Request: ${problem}`, message.id, { mismatch: { header: param } })
  for (const { path, header: param } of tool.headerParams) {
    let value: unknown = args
    for (const key of path) value = isObject(value) ? value[key] : undefined
    const expected = asHeaderValue(value)
    const sent = header(headers, param)
    if (sent === undefined) {
      if (expected !== undefined) throw refuse(`the argument ${path.join('.')} is mirrored in the ${param} header, which is missing`, param)
      continue
    }
    // Trimming took only spaces and tabs, which a header value may hold.
    if (!HEADER_SAFE.test(sent)) throw refuse(`the ${param} header holds characters a header value may not; encode it as =?base64?…?=`, param)
    const decoded = decodeHeaderValue(sent)
    if (decoded === undefined) throw refuse(`the ${param} header's base64 is malformed`, param)
    if (decoded !== expected) throw refuse(`the ${param} header (${decoded.slice(0, 256)}) disagrees with the body`, param)
  }
}

/** Where a 2026-07-28 request's notifications go: its own response, turned into an SSE stream at the first. */
export interface ResponseStream {
  send (message: JSONRPCMessage): void
}

export interface ModernOptions {
  dispatcher: Dispatcher
  features: FeatureRegistry
  handles: ScopeHandles
  requestState: RequestStateCodec
  serverInfo: { name: string, version: string }
  /** Tells listeners (subscriptions/listen) on every node that a resource changed. */
  resourceUpdated? (uri: string): void
}

/** One 2026-07-28 request, as the scope its methods run in. */
class ModernRequest implements RequestScope {
  readonly era = 'modern'
  readonly id: RequestId
  readonly envelope: Envelope
  readonly principal?: string
  /** Who the request counts against: its principal, or its client's address. */
  readonly client: string
  readonly #signal: () => AbortSignal
  readonly stream: ResponseStream
  readonly options: ModernOptions
  /** With a retry of an input_required answer: the client's answers and the verified round state. */
  input?: { responses: unknown, round: RoundState }
  /** Answers gathered so far by `ask`, kept in the next requestState. */
  readonly answers: Record<string, unknown> = {}

  constructor (id: RequestId, envelope: Envelope, principal: string | undefined, client: string, signal: () => AbortSignal, stream: ResponseStream, options: ModernOptions) {
    this.id = id
    this.envelope = envelope
    if (principal !== undefined) this.principal = principal
    this.client = client
    this.#signal = signal
    this.stream = stream
    this.options = options
  }

  /** Aborted when the client leaves before the answer. */
  get signal (): AbortSignal { return this.#signal() }

  featureContext (feature: string): FeatureContext { return new ModernCall(this, feature, undefined) }
  toolContext (feature: string, progressToken: string | number | undefined): ToolContext { return new ModernCall(this, feature, progressToken) }

  /** Whether a message at `level` goes out: only when the request asked for them, at that level or above. */
  logs (level: LogLevel): boolean {
    const wanted = this.envelope.logLevel
    return wanted !== undefined && SEVERITY.get(level)! >= SEVERITY.get(wanted)!
  }
}

/** What a handler or tool of a 2026-07-28 request may use: no session; state only through handles. */
class ModernCall implements ToolContext {
  readonly #request: ModernRequest
  readonly #feature: string
  readonly #progressToken: string | number | undefined
  #asked = 0

  constructor (request: ModernRequest, feature: string, progressToken: string | number | undefined) {
    this.#request = request
    this.#feature = feature
    this.#progressToken = progressToken
  }

  get state (): ScopeState { return NO_STATE }
  get clientCapabilities (): ClientCapabilities { return this.#request.envelope.clientCapabilities }
  get signal (): AbortSignal { return this.#request.signal }
  get input (): ToolContext['input'] {
    const input = this.#request.input
    return input === undefined ? undefined : { responses: input.responses, state: input.round.state }
  }

  mint (): Promise<string> { return this.#request.options.handles.mint(this.#request.principal, this.#request.client) }
  // JSON-RPC ids of this revision are unique per client only, and a handle may have many: its writes are not keyed.
  open (handle: string): ScopeState { return this.#request.options.handles.open(handle, this.#request.principal) }

  async log (level: LogLevel, data: unknown): Promise<void> { await this.logToRequest(level, data) }

  async logToRequest (level: LogLevel, data: unknown): Promise<void> {
    if (this.#request.logs(level)) this.#request.stream.send({ jsonrpc: '2.0', method: 'notifications/message', params: { level, logger: this.#feature, data } })
  }

  async progress (progress: number, total?: number, message?: string): Promise<void> {
    if (this.#progressToken === undefined) return
    this.#request.stream.send({ jsonrpc: '2.0', method: 'notifications/progress', params: { progressToken: this.#progressToken, progress, total, message } })
  }

  async resourceUpdated (uri: string): Promise<void> { this.#request.options.resourceUpdated?.(uri) }

  /**
   * The client's answer to `request` when this retry carries it; otherwise the request ends with
   * input_required asking for it (the answers so far travel in the signed requestState).
   * @throws {InputRequired} to ask; {ModernRequestError} -32021 when the client lacks the capability.
   */
  async ask<T> (request: ServerRequest, resultSchema: { parse (value: unknown): T }): Promise<T> {
    const key = `ask-${++this.#asked}`
    const question = questionOf(key, request)
    const input = this.#request.input
    // Only an answer to this very question, which the signed state says was asked: no answering
    // before being asked, and no answer to another question (the same tool asking about other data).
    const answered = input !== undefined && input.round.asked.includes(question) && isObject(input.responses) ? input.responses[key] : undefined
    const answer = answered ?? input?.round.answers[question]
    if (answer !== undefined) {
      let parsed: T
      try {
        parsed = resultSchema.parse(answer)
      } catch {
        throw new RpcError(ErrorCode.InvalidParams, `Invalid params: inputResponses["${key}"] is no answer to ${request.method}`)
      }
      this.#request.answers[question] = answer
      return parsed
    }
    requireCapabilities([request], this.clientCapabilities, this.#request.id)
    throw new InputRequired({ [key]: request }, input?.round.state)
  }

  closeStream (): void {}
}

/**
 * The 2026-07-28 revision's requests, each on its own: the envelope checked, the method run on the
 * dispatcher every session uses, the result marked as the revision wants (resultType, cache hints,
 * serverInfo), multi round-trip answers (input_required) signed.
 */
export class ModernServer {
  readonly #options: ModernOptions
  /** The `_meta` naming this server, made once and shared: answers are only serialized. */
  readonly #serverMeta: Readonly<Record<string, unknown>>

  constructor (options: ModernOptions) {
    this.#options = options
    this.#serverMeta = Object.freeze({ [META.serverInfo]: options.serverInfo })
  }

  /** `server/discover`: what this server speaks and offers, without a session. */
  discover (): Record<string, unknown> {
    return { supportedVersions: MODERN_REVISIONS, capabilities: SERVER_CAPABILITIES, instructions: 'A calculator. In this revision, state lives in history handles: call create_history, then pass its handle as the history argument.' }
  }

  /**
   * Answers one checked request: resolves with its JSON-RPC response.
   * @throws {McpHttpError} what the HTTP layer answers instead (with the request's id).
   */
  async answer (message: JSONRPCRequest, envelope: Envelope, who: { principal: string | undefined, client: string }, signal: () => AbortSignal, stream: ResponseStream): Promise<JSONRPCMessage> {
    const { id, method } = message
    const params = (isObject(message.params) ? message.params : {}) as Record<string, unknown>
    const { principal, client } = who
    const request = new ModernRequest(id, envelope, principal, client, signal, stream, this.#options)
    // A requestState is good for a retry of the same operation (method, name or URI, arguments) by the same principal.
    const binding = (): StateBinding => {
      const named = params[NAMED[method] ?? 'name']
      const digest = createHash('sha256').update(JSON.stringify(params.arguments ?? null)).digest('base64url')
      return { method, name: `${typeof named === 'string' ? named : ''}#${digest}`, principal: principal ?? '' }
    }
    try {
      if (method === 'server/discover') return this.#complete(id, method, this.discover())
      if (!this.#options.dispatcher.serves(method)) throw new ModernRequestError(ErrorCode.MethodNotFound, 'Method not found', id, undefined, 404)
      if (params.requestState !== undefined || params.inputResponses !== undefined) {
        const round = params.requestState === undefined ? { state: undefined, answers: {}, asked: [] } : await this.#options.requestState.verify(params.requestState, binding())
        if (round === undefined) throw new RpcError(ErrorCode.InvalidParams, 'requestState integrity check failed')
        request.input = { responses: params.inputResponses, round }
      }
      return this.#complete(id, method, await this.#options.dispatcher.handleIn(request, method, message.params) as Record<string, unknown>)
    } catch (error) {
      if (error instanceof InputRequired) {
        const requestState = await this.#options.requestState.mint(binding(), { state: error.state, answers: request.answers, asked: Object.entries(error.inputRequests).map(([key, request]) => questionOf(key, request)) })
        return { jsonrpc: '2.0', id, result: { resultType: 'input_required', inputRequests: error.inputRequests, requestState, _meta: this.#serverMeta } }
      }
      if (error instanceof RpcError) return { jsonrpc: '2.0', id, error: { code: error.code, message: error.message, ...(error.data !== undefined && { data: error.data }) } }
      if (error instanceof McpHttpError && error.rpcId === undefined) error.rpcId = id
      throw error
    }
  }

  /**
   * The first of `uris` a listener may not subscribe to: one that names no resource here, or a
   * handle that is unknown or someone else's. Undefined when all are fine.
   */
  async unlistenable (uris: readonly string[], principal: string | undefined): Promise<string | undefined> {
    const { features, handles } = this.#options
    for (const uri of uris) {
      if (features.resource(uri) === undefined && features.matchTemplate(uri) === undefined) return uri
      const handle = HANDLE_IN_URI.exec(uri)?.[0]
      if (handle !== undefined && !await handles.usable(handle, principal)) return uri
    }
    return undefined
  }

  #complete (id: RequestId, method: string, result: Record<string, unknown>): JSONRPCMessage {
    // Copied key by key: spreads of a result and of absent hints took V8's slow path, at a cost
    // larger than the calculation's. A handler's result may be shared, so it is never changed.
    const marked: Record<string, unknown> = {}
    for (const key in result) marked[key] = result[key]
    marked.resultType = 'complete'
    const hints = CACHE_HINTS[method]
    if (hints !== undefined) {
      marked.ttlMs = hints.ttlMs
      marked.cacheScope = hints.cacheScope
    }
    const given = result._meta as Record<string, unknown> | undefined
    if (given === undefined) marked._meta = this.#serverMeta
    else {
      const meta: Record<string, unknown> = {}
      for (const key in given) meta[key] = given[key]
      meta[META.serverInfo] = this.#options.serverInfo
      marked._meta = meta
    }
    return { jsonrpc: '2.0', id, result: marked }
  }
}
