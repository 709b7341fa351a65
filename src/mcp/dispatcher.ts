import { Type, type Static, type TSchema } from '@sinclair/typebox'
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler'
import {
  ErrorCode, LATEST_PROTOCOL_VERSION, SUPPORTED_PROTOCOL_VERSIONS,
  type CallToolResult, type ClientCapabilities, type InitializeResult, type RequestId, type ServerRequest
} from '@modelcontextprotocol/sdk/types.js'
import { McpHttpError, ModernRequestError, RpcError, ToolInputError } from '../errors.js'
import type { InitializeParams, LogLevel, SessionRecord } from '../stores/session-store.js'
import { type FeatureContext, type FeatureRegistry, InputRequired, type ScopeHandles, type ScopeState, type ToolContext, toolError } from './features.js'
import type { Call } from './protocol.js'
import { LOG_LEVELS, type SessionServer } from './session-server.js'

/** JSON-RPC code for an unknown resource in the 2025-11-25 revision. */
export const RESOURCE_NOT_FOUND = -32002
const MAX_COMPLETIONS = 100

export const SERVER_CAPABILITIES = {
  tools: {},
  resources: { subscribe: true },
  prompts: {},
  completions: {},
  logging: {}
}

export type ToolOutcome = 'success' | 'error' | 'invalid_arguments' | 'input_required' | 'refused' | 'unavailable' | 'internal_error'

/** What the contexts of features use beyond their session. */
export interface ScopeServices {
  /** The scopes that handles name. */
  handles: ScopeHandles
  /** Tells the subscriptions/listen streams of every node that a resource changed. */
  resourceUpdated? (uri: string): void
}

export interface DispatcherOptions extends ScopeServices {
  features: FeatureRegistry
  serverInfo: { name: string, version: string }
  /** Called after every tool call, for metrics. */
  onToolCall? (tool: string, outcome: ToolOutcome, seconds: number): void
  logError (error: unknown, message: string): void
}

/** Longest progress token accepted: it is repeated in every progress notification and stored with it. */
export const MAX_PROGRESS_TOKEN_LENGTH = 256
/** Longest resource URI accepted: a subscription is stored with the session. */
export const MAX_URI_LENGTH = 2048
/** Largest client capabilities accepted in `initialize`, as JSON: they are stored with the session. */
export const MAX_CAPABILITIES_BYTES = 8192

// Request params, checked by validators compiled once. Objects admit more properties than listed.
const Meta = Type.Optional(Type.Object({ progressToken: Type.Optional(Type.Union([Type.String({ maxLength: MAX_PROGRESS_TOKEN_LENGTH }), Type.Number()])) }))
const Paginated = Type.Union([Type.Undefined(), Type.Object({ cursor: Type.Optional(Type.String({ maxLength: 1024 })), _meta: Meta })])
const Uri = Type.Object({ uri: Type.String({ maxLength: MAX_URI_LENGTH }), _meta: Meta })
const InitializeParamsSchema = Type.Object({
  protocolVersion: Type.String({ maxLength: 64 }),
  capabilities: Type.Object({}),
  clientInfo: Type.Object({ name: Type.String({ maxLength: 256 }), version: Type.String({ maxLength: 256 }) })
})
const CallToolParams = Type.Object({ name: Type.String(), arguments: Type.Optional(Type.Object({})), _meta: Meta })
const GetPromptParams = Type.Object({ name: Type.String(), arguments: Type.Optional(Type.Record(Type.String(), Type.String())), _meta: Meta })
const CompleteParams = Type.Object({
  ref: Type.Union([
    Type.Object({ type: Type.Literal('ref/prompt'), name: Type.String() }),
    Type.Object({ type: Type.Literal('ref/resource'), uri: Type.String() })
  ]),
  argument: Type.Object({ name: Type.String(), value: Type.String() }),
  _meta: Meta
})
const SetLevelParams = Type.Object({ level: Type.Union(LOG_LEVELS.map(l => Type.Literal(l))), _meta: Meta })
const checkInitialize = TypeCompiler.Compile(InitializeParamsSchema)

/** The -32602 error `Invalid params: <where>: <why>`, from the first error of a failed check. */
function invalidParams (check: TypeCheck<TSchema>, params: unknown): RpcError {
  const error = check.Errors(params).First()
  const where = error === undefined || error.path === '' ? 'params' : error.path.slice(1).replaceAll('/', '.')
  return new RpcError(ErrorCode.InvalidParams, `Invalid params: ${where}: ${error?.message ?? 'does not match the method\'s schema'}`)
}

/**
 * What `initialize` answers: the client's revision when this server speaks it, else the latest.
 * @throws {RpcError} -32602 for params that are not an initialize request's.
 */
export function initializeResult (params: unknown, serverInfo: DispatcherOptions['serverInfo']): InitializeResult {
  if (!checkInitialize.Check(params)) throw invalidParams(checkInitialize, params)
  if (JSON.stringify((params as InitializeParams).capabilities).length > MAX_CAPABILITIES_BYTES) {
    throw new RpcError(ErrorCode.InvalidParams, `Invalid params: capabilities: larger than ${MAX_CAPABILITIES_BYTES} bytes`)
  }
  const requested = (params as InitializeParams).protocolVersion
  return {
    protocolVersion: SUPPORTED_PROTOCOL_VERSIONS.includes(requested) ? requested : LATEST_PROTOCOL_VERSION,
    capabilities: SERVER_CAPABILITIES,
    serverInfo
  }
}

/** Where a request runs: in a 2025-11-25 session, or on its own (2026-07-28, see modern.ts). */
export interface RequestScope {
  readonly era: 'legacy' | 'modern'
  /** What a resource, template or completion handler of `feature` may use. */
  featureContext (feature: string): FeatureContext
  /** What a tool of `feature` may use during this call. */
  toolContext (feature: string, progressToken: string | number | undefined): ToolContext
}

/** The key a request's writes carry, so that a retry of it writes once. */
export const requestKey = (id: RequestId) => `${typeof id === 'number' ? 'n' : 's'}:${id}`

/** What a resource or completion handler of `feature` may use in `session`. */
class FeatureCall implements FeatureContext {
  readonly #session: SessionServer
  readonly #feature: string
  protected readonly services: ScopeServices

  constructor (session: SessionServer, feature: string, services: ScopeServices) {
    this.#session = session
    this.#feature = feature
    this.services = services
  }

  get state (): ScopeState { return this.#session.state }
  get session (): SessionRecord { return this.#session.record }
  mint (): Promise<string> {
    const { principal, creator } = this.#session.record
    // A session written before creators were recorded counts its handles on its own.
    return this.services.handles.mint(principal, creator ?? (principal === undefined ? `session:${this.#session.sessionId}` : `pr:${principal}`))
  }

  open (handle: string): ScopeState { return this.services.handles.open(handle, this.#session.record.principal) }
  log (level: LogLevel, data: unknown): Promise<void> { return this.#session.log(this.#feature, level, data) }
  resourceUpdated (uri: string): Promise<void> {
    this.services.resourceUpdated?.(uri)
    return this.#session.resourceUpdated(uri)
  }
}

/** What a tool may do while it runs: its feature's context plus this call's stream. */
class ToolCall extends FeatureCall implements ToolContext {
  readonly #session: SessionServer
  readonly #feature: string
  readonly #call: Call
  readonly #progressToken: string | number | undefined
  #state?: ScopeState

  constructor (session: SessionServer, feature: string, services: ScopeServices, call: Call, progressToken: string | number | undefined) {
    super(session, feature, services)
    this.#session = session
    this.#feature = feature
    this.#call = call
    this.#progressToken = progressToken
  }

  override get state (): ScopeState { return (this.#state ??= this.#session.stateFor(this.#call.id)) }
  // A handle may be shared by many sessions: its writes are keyed by the session and the request.
  override open (handle: string): ScopeState { return this.services.handles.open(handle, this.#session.record.principal, `${this.#session.sessionId}/${requestKey(this.#call.id)}`) }
  get clientCapabilities (): ClientCapabilities { return this.#session.clientCapabilities }
  get signal (): AbortSignal { return this.#call.signal }

  async progress (progress: number, total?: number, message?: string): Promise<void> {
    if (this.#progressToken === undefined) return
    await this.#session.protocol.notify(this.#call, 'notifications/progress', { progressToken: this.#progressToken, progress, total, message })
  }

  async logToRequest (level: LogLevel, data: unknown): Promise<void> {
    if (this.#session.belowLevel(level)) return
    await this.#session.protocol.notify(this.#call, 'notifications/message', { level, logger: this.#feature, data })
  }

  ask<T> (request: ServerRequest, resultSchema: { parse (value: unknown): T }): Promise<T> {
    return this.#session.protocol.request(this.#call, request, resultSchema)
  }

  closeStream (): void {
    this.#call.extra?.closeSSEStream?.()
  }
}

/** A request of a session. */
class SessionScope implements RequestScope {
  readonly era = 'legacy'
  readonly session: SessionServer
  readonly #call: Call
  readonly #services: ScopeServices

  constructor (session: SessionServer, call: Call, services: ScopeServices) {
    this.session = session
    this.#call = call
    this.#services = services
  }

  featureContext (feature: string): FeatureContext { return new FeatureCall(this.session, feature, this.#services) }
  toolContext (feature: string, progressToken: string | number | undefined): ToolContext { return new ToolCall(this.session, feature, this.#services, this.#call, progressToken) }
}

const asContent = (uri: string, mimeType: string, body: string | Uint8Array) =>
  typeof body === 'string' ? { uri, mimeType, text: body } : { uri, mimeType, blob: Buffer.from(body).toString('base64') }

interface Method<S> { check?: TypeCheck<TSchema>, handle (scope: S, params: any): Promise<unknown> }

/**
 * The server's MCP methods (everything after `initialize`), built once per node and shared by
 * every session and every 2026-07-28 request: method tables with params validators compiled once,
 * over the feature registry. Methods that only exist in a session (ping, logging/setLevel,
 * resources/subscribe) have a table of their own.
 */
export class Dispatcher {
  readonly #options: DispatcherOptions
  readonly #methods = new Map<string, Method<RequestScope>>()
  readonly #sessionMethods = new Map<string, Method<SessionServer>>()

  constructor (options: DispatcherOptions) {
    this.#options = options
    const { features } = options
    const method = <T extends TSchema>(name: string, schema: T | undefined, handle: (scope: RequestScope, params: Static<T>) => Promise<unknown>) => {
      this.#methods.set(name, { ...(schema !== undefined && { check: TypeCompiler.Compile(schema) }), handle })
    }
    const sessionMethod = <T extends TSchema>(name: string, schema: T | undefined, handle: (session: SessionServer, params: Static<T>) => Promise<unknown>) => {
      this.#sessionMethods.set(name, { ...(schema !== undefined && { check: TypeCompiler.Compile(schema) }), handle })
    }
    const notFound = (scope: RequestScope, uri: string) =>
      new RpcError(scope.era === 'legacy' ? RESOURCE_NOT_FOUND : ErrorCode.InvalidParams, `Resource not found: ${uri}`, { uri })

    sessionMethod('ping', undefined, async () => ({}))
    sessionMethod('logging/setLevel', SetLevelParams, async (session, { level }) => {
      await session.setLogLevel(level as LogLevel)
      return {}
    })
    const subscribe = (subscribed: boolean) => async (session: SessionServer, { uri }: Static<typeof Uri>) => {
      if (features.resource(uri) === undefined && features.matchTemplate(uri) === undefined) {
        throw new RpcError(RESOURCE_NOT_FOUND, `Resource not found: ${uri}`, { uri })
      }
      await session.subscribe(uri, subscribed)
      return {}
    }
    sessionMethod('resources/subscribe', Uri, subscribe(true))
    sessionMethod('resources/unsubscribe', Uri, subscribe(false))

    method('tools/list', Paginated, async () => ({ tools: features.toolList() }))
    method('tools/call', CallToolParams, (scope, params) => this.#callTool(scope, params))
    method('resources/list', Paginated, async () => ({
      resources: features.resourceList().map(({ uri, name, title, description, mimeType }) => ({ uri, name, title, description, mimeType }))
    }))
    method('resources/templates/list', Paginated, async () => ({
      resourceTemplates: features.templateList().map(({ uriTemplate, name, title, description, mimeType }) => ({ uriTemplate, name, title, description, mimeType }))
    }))
    method('resources/read', Uri, async (scope, { uri }) => {
      const resource = features.resource(uri)
      if (resource !== undefined) {
        const { definition, feature } = resource
        const body = await definition.read(scope.featureContext(feature))
        if (body === undefined) throw notFound(scope, uri)
        return { contents: [asContent(uri, definition.mimeType, body)] }
      }
      const match = features.matchTemplate(uri)
      const body = match === undefined ? undefined : await match.registered.definition.read(scope.featureContext(match.registered.feature), match.variables)
      if (match === undefined || body === undefined) throw notFound(scope, uri)
      return { contents: [asContent(uri, match.registered.definition.mimeType, body)] }
    })
    method('prompts/list', Paginated, async () => ({
      prompts: features.promptList().map(p => ({
        name: p.name,
        title: p.title,
        description: p.description,
        arguments: p.arguments.map(a => ({ name: a.name, description: a.description, required: a.required === true }))
      }))
    }))
    method('prompts/get', GetPromptParams, async (scope, params) => {
      const prompt = features.prompt(params.name)
      if (prompt === undefined) throw new RpcError(ErrorCode.InvalidParams, `Unknown prompt: ${params.name}`)
      const args = params.arguments ?? {}
      for (const argument of prompt.arguments) {
        const value = args[argument.name]
        if (argument.required === true && (value === undefined || value === '')) {
          throw new RpcError(ErrorCode.InvalidParams, `Prompt ${prompt.name} needs the argument ${argument.name}`)
        }
      }
      return prompt.get(args, scope.toolContext(features.promptFeature(params.name) ?? '', undefined))
    })
    method('completion/complete', CompleteParams, async (scope, { ref, argument }) => {
      let values: string[] = []
      if (ref.type === 'ref/prompt') {
        const prompt = features.prompt(ref.name)
        if (prompt === undefined) throw new RpcError(ErrorCode.InvalidParams, `Unknown prompt: ${ref.name}`)
        values = (prompt.arguments.find(a => a.name === argument.name)?.values ?? []).filter(v => v.startsWith(argument.value))
      } else {
        const template = features.templateByPattern(ref.uri)
        if (template === undefined) throw new RpcError(ErrorCode.InvalidParams, `Unknown resource template: ${ref.uri}`)
        values = await template.definition.complete?.(scope.featureContext(template.feature), argument.name, argument.value) ?? []
      }
      return { completion: { values: values.slice(0, MAX_COMPLETIONS), total: values.length, hasMore: values.length > MAX_COMPLETIONS } }
    })
  }

  /** Whether `name` is a method of 2026-07-28 requests (the session-only ones are not). */
  serves (name: string): boolean { return this.#methods.has(name) }

  /**
   * Answers one request of `session`.
   * @throws {RpcError} -32601 for an unknown method, -32602 for invalid params, or what the method throws.
   */
  handle (session: SessionServer, name: string, params: unknown, call: Call): Promise<unknown> {
    const only = this.#sessionMethods.get(name)
    if (only !== undefined) return run(only, session, params)
    const method = this.#methods.get(name)
    if (method === undefined) return Promise.reject(new RpcError(ErrorCode.MethodNotFound, 'Method not found'))
    return run(method, new SessionScope(session, call, this.#options), params)
  }

  /**
   * Answers one request that runs on its own, in `scope` (2026-07-28).
   * @throws {RpcError} as `handle`.
   */
  handleIn (scope: RequestScope, name: string, params: unknown): Promise<unknown> {
    const method = this.#methods.get(name)
    if (method === undefined) return Promise.reject(new RpcError(ErrorCode.MethodNotFound, 'Method not found'))
    return run(method, scope, params)
  }

  async #callTool (scope: RequestScope, params: Static<typeof CallToolParams>): Promise<CallToolResult> {
    const { features, onToolCall, logError } = this.#options
    const { name } = params
    const tool = features.tool(name)
    if (tool === undefined) throw new RpcError(ErrorCode.InvalidParams, `Unknown tool: ${name}`)
    const started = performance.now()
    const done = (outcome: ToolOutcome) => onToolCall?.(name, outcome, (performance.now() - started) / 1000)
    const args = params.arguments ?? {}
    if (!tool.check.Check(args)) {
      const error = tool.check.Errors(args).First()
      done('invalid_arguments')
      const where = error === undefined || error.path === '' ? 'arguments' : `argument ${error.path.slice(1).replaceAll('/', '.')}`
      return toolError(`Invalid ${where} for ${name}: ${error?.message ?? 'does not match the input schema'}`)
    }
    try {
      const result = await tool.definition.run(args, scope.toolContext(tool.feature, params._meta?.progressToken))
      done(result.isError === true ? 'error' : 'success')
      return result
    } catch (error) {
      if (error instanceof InputRequired) {
        done('input_required')
        throw error
      }
      // A protocol error the tool chose (-32602, say), or a 2026 refusal the HTTP layer answers (-32021).
      if (error instanceof RpcError || error instanceof ModernRequestError) {
        done('refused')
        throw error
      }
      if (error instanceof ToolInputError) {
        done('error')
        return toolError(error.message)
      }
      // Storage unreachable (nothing was half-written): the HTTP layer answers 503 and the client retries.
      if (error instanceof McpHttpError) {
        done('unavailable')
        throw error
      }
      done('internal_error')
      logError(error, `tool ${name} failed`)
      throw new RpcError(ErrorCode.InternalError, 'Internal error')
    }
  }
}

function run<S> (method: Method<S>, scope: S, params: unknown): Promise<unknown> {
  if (method.check !== undefined && !method.check.Check(params)) return Promise.reject(invalidParams(method.check, params))
  return method.handle(scope, params)
}
