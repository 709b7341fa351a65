import { randomBytes } from 'node:crypto'
import { Type, type Static, type TSchema } from '@sinclair/typebox'
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler'
import type { Transport } from '@modelcontextprotocol/sdk/shared/transport.js'
import {
  ElicitResultSchema, ErrorCode, LATEST_PROTOCOL_VERSION, McpError, SUPPORTED_PROTOCOL_VERSIONS,
  type CallToolResult, type ClientCapabilities, type InitializeResult, type JSONRPCMessage, type MessageExtraInfo,
  type RequestId, type ServerRequest
} from '@modelcontextprotocol/sdk/types.js'
import { CalculationError, McpHttpError } from '../errors.js'
import type { ServerObserver, ToolOutcome } from '../observer.js'
import type { InitializeParams, LogLevel, SessionRecord, SessionStore } from '../stores/session-store.js'
import { type FeatureRegistry, type SessionContext, type ToolCallContext, ToolInputError, toolError } from './features.js'

/**
 * Ids of requests to the client: a prefix per process and one per session server, then a count,
 * so that a client's answer posted to any node finds the one node waiting for it.
 */
const REQUEST_ID_PREFIX = randomBytes(6).toString('base64url')
let servers = 0

/** JSON-RPC code for an unknown resource in the 2025-11-25 revision. */
export const RESOURCE_NOT_FOUND = -32002
const MAX_COMPLETIONS = 100
/** How long a request to the client (elicitation, sampling) waits for its answer, as in the SDK. */
const CLIENT_REQUEST_TIMEOUT_MS = 60_000
const CONFIRM_SCHEMA = {
  type: 'object' as const,
  properties: { confirm: { type: 'boolean' as const, title: 'Confirm', description: 'true to go ahead' } },
  required: ['confirm']
}

const SEVERITY: Record<LogLevel, number> = {
  debug: 0, info: 1, notice: 2, warning: 3, error: 4, critical: 5, alert: 6, emergency: 7
}

/** Built once per process and shared by every session. */
export interface SessionServices {
  features: FeatureRegistry
  store: SessionStore
  serverInfo: { name: string, version: string }
  observer: ServerObserver
  logError (error: unknown, message: string): void
}

export const SERVER_CAPABILITIES = {
  tools: {},
  resources: { subscribe: true },
  prompts: {},
  completions: {},
  logging: {}
}

/**
 * The state one node holds for one session: the latest record read from the store. It is
 * refreshed on every request, so a log level or subscription set through another node applies here.
 */
export class SessionState {
  record: SessionRecord
  constructor (record: SessionRecord) { this.record = record }
}

// Request params, checked by validators compiled once. Objects admit more properties than listed.
const Meta = Type.Optional(Type.Object({ progressToken: Type.Optional(Type.Union([Type.String(), Type.Number()])) }))
const Paginated = Type.Union([Type.Undefined(), Type.Object({ cursor: Type.Optional(Type.String()), _meta: Meta })])
const Uri = Type.Object({ uri: Type.String(), _meta: Meta })
const PARAMS = {
  initialize: Type.Object({
    protocolVersion: Type.String(),
    capabilities: Type.Object({}),
    clientInfo: Type.Object({ name: Type.String(), version: Type.String() })
  }),
  callTool: Type.Object({ name: Type.String(), arguments: Type.Optional(Type.Object({})), _meta: Meta }),
  getPrompt: Type.Object({ name: Type.String(), arguments: Type.Optional(Type.Record(Type.String(), Type.String())), _meta: Meta }),
  complete: Type.Object({
    ref: Type.Union([
      Type.Object({ type: Type.Literal('ref/prompt'), name: Type.String() }),
      Type.Object({ type: Type.Literal('ref/resource'), uri: Type.String() })
    ]),
    argument: Type.Object({ name: Type.String(), value: Type.String() }),
    _meta: Meta
  }),
  setLevel: Type.Object({ level: Type.Union(Object.keys(SEVERITY).map(l => Type.Literal(l))), _meta: Meta })
}
const checkInitialize = TypeCompiler.Compile(PARAMS.initialize)

/** The -32602 error `Invalid params: <where>: <why>`, from the first error of a failed check. */
function invalidParams (check: TypeCheck<TSchema>, params: unknown): { code: number, message: string } {
  const error = check.Errors(params).First()
  const where = error === undefined || error.path === '' ? 'params' : error.path.slice(1).replaceAll('/', '.')
  return { code: ErrorCode.InvalidParams, message: `Invalid params: ${where}: ${error?.message ?? 'does not match the method\'s schema'}` }
}

/**
 * What `initialize` answers: the client's revision when this server speaks it, else the latest;
 * an error for params that are not an initialize request's.
 */
export function initializeResult (params: unknown, serverInfo: SessionServices['serverInfo']): { result: InitializeResult } | { error: { code: number, message: string } } {
  if (!checkInitialize.Check(params)) return { error: invalidParams(checkInitialize, params) }
  const requested = (params as InitializeParams).protocolVersion
  return {
    result: {
      protocolVersion: SUPPORTED_PROTOCOL_VERSIONS.includes(requested) ? requested : LATEST_PROTOCOL_VERSION,
      capabilities: SERVER_CAPABILITIES,
      serverInfo
    }
  }
}

/** A JSON-RPC error response for what a handler threw; errors nobody planned for are logged, not shown. */
function errorResponse (id: RequestId, error: unknown, logError: SessionServices['logError']): JSONRPCMessage {
  let code: number = ErrorCode.InternalError
  let message = 'Internal error'
  let data: unknown
  if (error instanceof McpError) ({ code, message, data } = error)
  else if (error instanceof McpHttpError) ({ rpcCode: code, message } = error)
  else logError(error, 'MCP request failed')
  return { jsonrpc: '2.0', id, error: { code, message, ...(data !== undefined && { data }) } }
}

/** One request being handled: cancellable by the client with `notifications/cancelled`. */
class Call {
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

interface PendingRequest {
  resolve (result: unknown): void
  reject (error: unknown): void
  timer: NodeJS.Timeout
}

type Handler<P> = (session: SessionServer, params: P, call: Call) => Promise<unknown>
interface Method { check?: TypeCheck<TSchema>, handle: Handler<any> }

const METHODS = new Map<string, Method>()
function method<T extends TSchema> (name: string, schema: T | undefined, handle: Handler<Static<T>>): void {
  METHODS.set(name, { ...(schema !== undefined && { check: TypeCompiler.Compile(schema) }), handle })
}

/**
 * The MCP server side of one session on this node: it takes the session's JSON-RPC messages from
 * its transport, answers requests from the shared features and the session's record, sends the
 * client requests of its own (elicitation, sampling) and matches their answers.
 *
 * The session was initialized before this object exists (on this node or any other), so building
 * one from a stored record is all it takes to serve the session here. The method table and the
 * params validators are built once per process; a request allocates only what it uses.
 */
export class SessionServer implements SessionContext {
  readonly services: SessionServices
  readonly state: SessionState
  readonly transport: Transport
  readonly #inFlight = new Map<RequestId, Call>()
  readonly #pending = new Map<RequestId, PendingRequest>()
  readonly #requestIdPrefix = `${REQUEST_ID_PREFIX}${(servers++).toString(36)}-`
  #nextRequestId = 0
  #closed = false

  constructor (services: SessionServices, state: SessionState, transport: Transport) {
    this.services = services
    this.state = state
    this.transport = transport
    transport.onmessage = (message, extra) => this.receive(message, extra)
    transport.onclose = () => this.#closedDown()
  }

  get sessionId (): string { return this.state.record.id }
  get record (): SessionRecord { return this.state.record }
  get store (): SessionStore { return this.services.store }
  get clientCapabilities (): ClientCapabilities { return this.state.record.initializeParams.capabilities }

  receive (message: JSONRPCMessage, extra?: MessageExtraInfo): void {
    if (!('method' in message)) this.#response(message)
    else if ('id' in message) this.#request(message.id, message.method, message.params, extra).catch(error => this.services.logError(error, 'could not send a response'))
    else if (message.method === 'notifications/cancelled') this.#inFlight.get(message.params?.requestId as RequestId)?.cancel(message.params?.reason)
    // Other notifications (initialized, progress, roots changed) need nothing from this server.
  }

  async #request (id: RequestId, name: string, params: unknown, extra: MessageExtraInfo | undefined): Promise<void> {
    const method = METHODS.get(name)
    let response: JSONRPCMessage
    if (method === undefined) {
      response = { jsonrpc: '2.0', id, error: { code: ErrorCode.MethodNotFound, message: 'Method not found' } }
    } else if (method.check !== undefined && !method.check.Check(params)) {
      response = { jsonrpc: '2.0', id, error: invalidParams(method.check, params) }
    } else {
      const call = new Call(id, extra)
      this.#inFlight.set(id, call)
      try {
        response = { result: await method.handle(this, params, call), jsonrpc: '2.0', id } as JSONRPCMessage
      } catch (error) {
        response = errorResponse(id, error, this.services.logError)
      } finally {
        this.#inFlight.delete(id)
      }
      // A cancelled request gets no answer.
      if (call.cancelled) return
    }
    await this.transport.send(response)
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

  /** Sends the client a request on the stream of `call` and resolves with its result, checked by `resultSchema`. */
  request<T> (call: Call, request: ServerRequest, resultSchema: { parse (value: unknown): T }): Promise<T> {
    if (call.cancelled) return Promise.reject(new McpError(ErrorCode.ConnectionClosed, 'Request was cancelled'))
    if (this.#closed) return Promise.reject(new McpError(ErrorCode.ConnectionClosed, 'Connection closed'))
    const id = `${this.#requestIdPrefix}${this.#nextRequestId++}`
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

  /** Whether a message at `level` falls below the level the client set (nothing is below an unset level). */
  belowLevel (level: LogLevel): boolean {
    const current = this.state.record.logLevel
    return current !== undefined && SEVERITY[level] < SEVERITY[current]
  }

  async log (level: LogLevel, data: unknown): Promise<void> {
    // Activity logs wait for the client to ask for them with logging/setLevel.
    if (this.state.record.logLevel === undefined || this.belowLevel(level)) return
    await this.notify(undefined, 'notifications/message', { level, logger: 'calculator', data })
  }

  calculated (operation: string): void {
    this.services.observer.calculated?.(operation)
  }

  async resourceUpdated (uri: string): Promise<void> {
    if (this.state.record.subscriptions.includes(uri)) await this.notify(undefined, 'notifications/resources/updated', { uri })
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

/** What a tool may do while it runs: the session's context plus this call's stream. */
class ToolCall implements ToolCallContext {
  readonly #session: SessionServer
  readonly #call: Call
  readonly #progressToken: string | number | undefined

  constructor (session: SessionServer, call: Call, progressToken: string | number | undefined) {
    this.#session = session
    this.#call = call
    this.#progressToken = progressToken
  }

  get sessionId (): string { return this.#session.sessionId }
  get record (): SessionRecord { return this.#session.record }
  get store (): SessionStore { return this.#session.store }
  get clientCapabilities (): ClientCapabilities { return this.#session.clientCapabilities }
  get signal (): AbortSignal { return this.#call.signal }
  log (level: LogLevel, data: unknown): Promise<void> { return this.#session.log(level, data) }
  calculated (operation: string): void { this.#session.calculated(operation) }
  resourceUpdated (uri: string): Promise<void> { return this.#session.resourceUpdated(uri) }

  async progress (progress: number, total?: number, message?: string): Promise<void> {
    if (this.#progressToken === undefined) return
    await this.#session.notify(this.#call, 'notifications/progress', { progressToken: this.#progressToken, progress, total, message })
  }

  async logToRequest (level: LogLevel, data: unknown): Promise<void> {
    if (this.#session.belowLevel(level)) return
    await this.#session.notify(this.#call, 'notifications/message', { level, logger: 'calculator', data })
  }

  request<T> (request: ServerRequest, resultSchema: { parse (value: unknown): T }): Promise<T> {
    return this.#session.request(this.#call, request, resultSchema)
  }

  closeStream (): void {
    this.#call.extra?.closeSSEStream?.()
  }

  async confirm (message: string): Promise<boolean | undefined> {
    if (this.clientCapabilities.elicitation === undefined) return undefined
    const answer = await this.request({ method: 'elicitation/create', params: { message, requestedSchema: CONFIRM_SCHEMA } }, ElicitResultSchema)
    return answer.action === 'accept' && answer.content?.confirm === true
  }
}

const asContent = (uri: string, mimeType: string, body: string | Uint8Array) =>
  typeof body === 'string' ? { uri, mimeType, text: body } : { uri, mimeType, blob: Buffer.from(body).toString('base64') }

method('ping', undefined, async () => ({}))

method('logging/setLevel', PARAMS.setLevel, async (session, { level }) => {
  await session.store.setLogLevel(session.sessionId, level as LogLevel)
  session.state.record = { ...session.state.record, logLevel: level as LogLevel }
  return {}
})

method('tools/list', Paginated, async session => ({ tools: session.services.features.toolList() }))

method('tools/call', PARAMS.callTool, async (session, params, call): Promise<CallToolResult> => {
  const { features, observer, logError } = session.services
  const { name } = params
  const tool = features.tool(name)
  if (tool === undefined) throw new McpError(ErrorCode.InvalidParams, `Unknown tool: ${name}`)
  const started = performance.now()
  const done = (outcome: ToolOutcome) => observer.toolCalled?.(name, outcome, (performance.now() - started) / 1000)
  const args = params.arguments ?? {}
  if (!tool.check.Check(args)) {
    const error = tool.check.Errors(args).First()
    done('invalid_arguments')
    const where = error === undefined || error.path === '' ? 'arguments' : `argument ${error.path.slice(1).replaceAll('/', '.')}`
    return toolError(`Invalid ${where} for ${name}: ${error?.message ?? 'does not match the input schema'}`)
  }
  try {
    const result = await tool.definition.run(args, new ToolCall(session, call, params._meta?.progressToken))
    done(result.isError === true ? 'error' : 'success')
    return result
  } catch (error) {
    if (error instanceof CalculationError || error instanceof ToolInputError) {
      done('error')
      return toolError(error.message)
    }
    done('internal_error')
    logError(error, `tool ${name} failed`)
    throw new McpError(ErrorCode.InternalError, 'Internal error')
  }
})

method('resources/list', Paginated, async session => ({
  resources: session.services.features.resourceList().map(({ uri, name, title, description, mimeType }) => ({ uri, name, title, description, mimeType }))
}))

method('resources/templates/list', Paginated, async session => ({
  resourceTemplates: session.services.features.templateList().map(({ uriTemplate, name, title, description, mimeType }) => ({ uriTemplate, name, title, description, mimeType }))
}))

method('resources/read', Uri, async (session, { uri }) => {
  const { features } = session.services
  const resource = features.resource(uri)
  if (resource !== undefined) return { contents: [asContent(uri, resource.mimeType, await resource.read(session))] }
  const match = features.matchTemplate(uri)
  const body = match === undefined ? undefined : await match.definition.read(session, match.variables)
  if (match === undefined || body === undefined) throw new McpError(RESOURCE_NOT_FOUND, `Resource not found: ${uri}`, { uri })
  return { contents: [asContent(uri, match.definition.mimeType, body)] }
})

const subscribe = (subscribed: boolean): Handler<Static<typeof Uri>> => async (session, { uri }) => {
  const { features } = session.services
  if (features.resource(uri) === undefined && features.matchTemplate(uri) === undefined) {
    throw new McpError(RESOURCE_NOT_FOUND, `Resource not found: ${uri}`, { uri })
  }
  await session.store.setSubscription(session.sessionId, uri, subscribed)
  const others = session.state.record.subscriptions.filter(s => s !== uri)
  session.state.record = { ...session.state.record, subscriptions: subscribed ? [...others, uri] : others }
  return {}
}
method('resources/subscribe', Uri, subscribe(true))
method('resources/unsubscribe', Uri, subscribe(false))

method('prompts/list', Paginated, async session => ({
  prompts: session.services.features.promptList().map(p => ({
    name: p.name,
    title: p.title,
    description: p.description,
    arguments: p.arguments.map(a => ({ name: a.name, description: a.description, required: a.required === true }))
  }))
}))

method('prompts/get', PARAMS.getPrompt, async (session, params) => {
  const prompt = session.services.features.prompt(params.name)
  if (prompt === undefined) throw new McpError(ErrorCode.InvalidParams, `Unknown prompt: ${params.name}`)
  const args = params.arguments ?? {}
  for (const argument of prompt.arguments) {
    const value = args[argument.name]
    if (argument.required === true && (value === undefined || value === '')) {
      throw new McpError(ErrorCode.InvalidParams, `Prompt ${prompt.name} needs the argument ${argument.name}`)
    }
  }
  return prompt.get(args)
})

method('completion/complete', PARAMS.complete, async (session, { ref, argument }) => {
  const { features } = session.services
  let values: string[] = []
  if (ref.type === 'ref/prompt') {
    const prompt = features.prompt(ref.name)
    if (prompt === undefined) throw new McpError(ErrorCode.InvalidParams, `Unknown prompt: ${ref.name}`)
    values = (prompt.arguments.find(a => a.name === argument.name)?.values ?? []).filter(v => v.startsWith(argument.value))
  } else {
    const template = features.templateByPattern(ref.uri)
    if (template === undefined) throw new McpError(ErrorCode.InvalidParams, `Unknown resource template: ${ref.uri}`)
    values = await template.complete?.(session, argument.name, argument.value) ?? []
  }
  return { completion: { values: values.slice(0, MAX_COMPLETIONS), total: values.length, hasMore: values.length > MAX_COMPLETIONS } }
})
