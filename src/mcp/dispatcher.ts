import { Type, type Static, type TSchema } from '@sinclair/typebox'
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler'
import {
  ErrorCode, LATEST_PROTOCOL_VERSION, SUPPORTED_PROTOCOL_VERSIONS,
  type CallToolResult, type ClientCapabilities, type InitializeResult, type ServerRequest
} from '@modelcontextprotocol/sdk/types.js'
import { McpHttpError, RpcError, ToolInputError } from '../errors.js'
import type { InitializeParams, LogLevel, SessionRecord } from '../stores/session-store.js'
import { type FeatureContext, type FeatureRegistry, type ScopeState, type ToolContext, toolError } from './features.js'
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

export type ToolOutcome = 'success' | 'error' | 'invalid_arguments' | 'unavailable' | 'internal_error'

export interface DispatcherOptions {
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

/** What a resource or completion handler of `feature` may use in `session`. */
class FeatureCall implements FeatureContext {
  readonly #session: SessionServer
  readonly #feature: string

  constructor (session: SessionServer, feature: string) {
    this.#session = session
    this.#feature = feature
  }

  get state (): ScopeState { return this.#session.state }
  get session (): SessionRecord { return this.#session.record }
  log (level: LogLevel, data: unknown): Promise<void> { return this.#session.log(this.#feature, level, data) }
  resourceUpdated (uri: string): Promise<void> { return this.#session.resourceUpdated(uri) }
}

/** What a tool may do while it runs: its feature's context plus this call's stream. */
class ToolCall extends FeatureCall implements ToolContext {
  readonly #session: SessionServer
  readonly #feature: string
  readonly #call: Call
  readonly #progressToken: string | number | undefined
  #state?: ScopeState

  constructor (session: SessionServer, feature: string, call: Call, progressToken: string | number | undefined) {
    super(session, feature)
    this.#session = session
    this.#feature = feature
    this.#call = call
    this.#progressToken = progressToken
  }

  override get state (): ScopeState { return (this.#state ??= this.#session.stateFor(this.#call.id)) }
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

const asContent = (uri: string, mimeType: string, body: string | Uint8Array) =>
  typeof body === 'string' ? { uri, mimeType, text: body } : { uri, mimeType, blob: Buffer.from(body).toString('base64') }

type Handler<P> = (session: SessionServer, params: P, call: Call) => Promise<unknown>
interface Method { check?: TypeCheck<TSchema>, handle: Handler<any> }

/**
 * The server's MCP methods (everything after `initialize`), built once per node and shared by
 * every session: a method table with params validators compiled once, over the feature registry.
 */
export class Dispatcher {
  readonly #options: DispatcherOptions
  readonly #methods = new Map<string, Method>()

  constructor (options: DispatcherOptions) {
    this.#options = options
    const { features } = options
    const method = <T extends TSchema>(name: string, schema: T | undefined, handle: Handler<Static<T>>) => {
      this.#methods.set(name, { ...(schema !== undefined && { check: TypeCompiler.Compile(schema) }), handle })
    }

    method('ping', undefined, async () => ({}))
    method('logging/setLevel', SetLevelParams, async (session, { level }) => {
      await session.setLogLevel(level as LogLevel)
      return {}
    })
    method('tools/list', Paginated, async () => ({ tools: features.toolList() }))
    method('tools/call', CallToolParams, (session, params, call) => this.#callTool(session, params, call))
    method('resources/list', Paginated, async () => ({
      resources: features.resourceList().map(({ uri, name, title, description, mimeType }) => ({ uri, name, title, description, mimeType }))
    }))
    method('resources/templates/list', Paginated, async () => ({
      resourceTemplates: features.templateList().map(({ uriTemplate, name, title, description, mimeType }) => ({ uriTemplate, name, title, description, mimeType }))
    }))
    method('resources/read', Uri, async (session, { uri }) => {
      const resource = features.resource(uri)
      if (resource !== undefined) {
        const { definition, feature } = resource
        return { contents: [asContent(uri, definition.mimeType, await definition.read(new FeatureCall(session, feature)))] }
      }
      const match = features.matchTemplate(uri)
      const body = match === undefined ? undefined : await match.registered.definition.read(new FeatureCall(session, match.registered.feature), match.variables)
      if (match === undefined || body === undefined) throw new RpcError(RESOURCE_NOT_FOUND, `Resource not found: ${uri}`, { uri })
      return { contents: [asContent(uri, match.registered.definition.mimeType, body)] }
    })
    const subscribe = (subscribed: boolean): Handler<Static<typeof Uri>> => async (session, { uri }) => {
      if (features.resource(uri) === undefined && features.matchTemplate(uri) === undefined) {
        throw new RpcError(RESOURCE_NOT_FOUND, `Resource not found: ${uri}`, { uri })
      }
      await session.subscribe(uri, subscribed)
      return {}
    }
    method('resources/subscribe', Uri, subscribe(true))
    method('resources/unsubscribe', Uri, subscribe(false))
    method('prompts/list', Paginated, async () => ({
      prompts: features.promptList().map(p => ({
        name: p.name,
        title: p.title,
        description: p.description,
        arguments: p.arguments.map(a => ({ name: a.name, description: a.description, required: a.required === true }))
      }))
    }))
    method('prompts/get', GetPromptParams, async (_session, params) => {
      const prompt = features.prompt(params.name)
      if (prompt === undefined) throw new RpcError(ErrorCode.InvalidParams, `Unknown prompt: ${params.name}`)
      const args = params.arguments ?? {}
      for (const argument of prompt.arguments) {
        const value = args[argument.name]
        if (argument.required === true && (value === undefined || value === '')) {
          throw new RpcError(ErrorCode.InvalidParams, `Prompt ${prompt.name} needs the argument ${argument.name}`)
        }
      }
      return prompt.get(args)
    })
    method('completion/complete', CompleteParams, async (session, { ref, argument }) => {
      let values: string[] = []
      if (ref.type === 'ref/prompt') {
        const prompt = features.prompt(ref.name)
        if (prompt === undefined) throw new RpcError(ErrorCode.InvalidParams, `Unknown prompt: ${ref.name}`)
        values = (prompt.arguments.find(a => a.name === argument.name)?.values ?? []).filter(v => v.startsWith(argument.value))
      } else {
        const template = features.templateByPattern(ref.uri)
        if (template === undefined) throw new RpcError(ErrorCode.InvalidParams, `Unknown resource template: ${ref.uri}`)
        values = await template.definition.complete?.(new FeatureCall(session, template.feature), argument.name, argument.value) ?? []
      }
      return { completion: { values: values.slice(0, MAX_COMPLETIONS), total: values.length, hasMore: values.length > MAX_COMPLETIONS } }
    })
  }

  /**
   * Answers one request of `session`.
   * @throws {RpcError} -32601 for an unknown method, -32602 for invalid params, or what the method throws.
   */
  handle (session: SessionServer, name: string, params: unknown, call: Call): Promise<unknown> {
    const method = this.#methods.get(name)
    if (method === undefined) return Promise.reject(new RpcError(ErrorCode.MethodNotFound, 'Method not found'))
    if (method.check !== undefined && !method.check.Check(params)) return Promise.reject(invalidParams(method.check, params))
    return method.handle(session, params, call)
  }

  async #callTool (session: SessionServer, params: Static<typeof CallToolParams>, call: Call): Promise<CallToolResult> {
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
      const result = await tool.definition.run(args, new ToolCall(session, tool.feature, call, params._meta?.progressToken))
      done(result.isError === true ? 'error' : 'success')
      return result
    } catch (error) {
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
