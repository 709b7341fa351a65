import { Server } from '@modelcontextprotocol/sdk/server/index.js'
import type { jsonSchemaValidator } from '@modelcontextprotocol/sdk/validation/types.js'
import {
  CallToolRequestSchema, CompleteRequestSchema, ElicitResultSchema, ErrorCode, GetPromptRequestSchema, ListPromptsRequestSchema,
  ListResourceTemplatesRequestSchema, ListResourcesRequestSchema, ListToolsRequestSchema, McpError,
  ReadResourceRequestSchema, SetLevelRequestSchema, SubscribeRequestSchema, UnsubscribeRequestSchema,
  type CallToolResult
} from '@modelcontextprotocol/sdk/types.js'
import { CalculationError } from '../errors.js'
import type { ServerObserver, ToolOutcome } from '../observer.js'
import type { LogLevel, SessionRecord, SessionStore } from '../stores/session-store.js'
import { type FeatureRegistry, type SessionContext, ToolInputError, toolError } from './features.js'

/** JSON-RPC code for an unknown resource in the 2025-11-25 revision. */
export const RESOURCE_NOT_FOUND = -32002
const MAX_COMPLETIONS = 100
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
  /** One JSON Schema validator for every session: the SDK would otherwise build one per server. */
  validator: jsonSchemaValidator
  observer: ServerObserver
  logError (error: unknown, message: string): void
}

const asContent = (uri: string, mimeType: string, body: string | Uint8Array) =>
  typeof body === 'string' ? { uri, mimeType, text: body } : { uri, mimeType, blob: Buffer.from(body).toString('base64') }

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

/**
 * Builds the SDK server answering one session: every request is handled against the shared
 * features and the session's record in the store.
 */
export function createSessionServer (services: SessionServices, state: SessionState): Server {
  const { features, store, observer } = services
  const server = new Server(services.serverInfo, {
    capabilities: SERVER_CAPABILITIES,
    jsonSchemaValidator: services.validator
  })

  /** Whether a message at `level` falls below the level the client set (nothing is below an unset level). */
  const belowLevel = (level: LogLevel) => {
    const current = state.record.logLevel
    return current !== undefined && SEVERITY[level] < SEVERITY[current]
  }

  const context: SessionContext = {
    get sessionId () { return state.record.id },
    get record () { return state.record },
    store,
    calculated: operation => observer.calculated?.(operation),
    async log (level, data) {
      // Activity logs wait for the client to ask for them with logging/setLevel.
      if (state.record.logLevel === undefined || belowLevel(level)) return
      await server.sendLoggingMessage({ level, logger: 'calculator', data })
    },
    async resourceUpdated (uri) {
      if (state.record.subscriptions.includes(uri)) await server.sendResourceUpdated({ uri })
    }
  }

  server.setRequestHandler(SetLevelRequestSchema, async request => {
    const level = request.params.level as LogLevel
    await store.setLogLevel(state.record.id, level)
    state.record = { ...state.record, logLevel: level }
    return {}
  })

  server.setRequestHandler(ListToolsRequestSchema, async () => ({ tools: features.toolList() as never }))

  server.setRequestHandler(CallToolRequestSchema, async (request, extra): Promise<CallToolResult> => {
    const { name } = request.params
    const tool = features.tool(name)
    if (tool === undefined) throw new McpError(ErrorCode.InvalidParams, `Unknown tool: ${name}`)
    const started = performance.now()
    const done = (outcome: ToolOutcome) => observer.toolCalled?.(name, outcome, (performance.now() - started) / 1000)
    const args = request.params.arguments ?? {}
    if (!tool.check.Check(args)) {
      const error = tool.check.Errors(args).First()
      done('invalid_arguments')
      const where = error === undefined || error.path === '' ? 'arguments' : `argument ${error.path.slice(1).replaceAll('/', '.')}`
      return toolError(`Invalid ${where} for ${name}: ${error?.message ?? 'does not match the input schema'}`)
    }
    const progressToken = request.params._meta?.progressToken
    try {
      const result = await tool.definition.run(args, {
        ...context,
        signal: extra.signal,
        get clientCapabilities () { return server.getClientCapabilities() ?? {} },
        confirm: async message => {
          if (server.getClientCapabilities()?.elicitation === undefined) return undefined
          const answer = await extra.sendRequest({ method: 'elicitation/create', params: { message, requestedSchema: CONFIRM_SCHEMA } }, ElicitResultSchema)
          return answer.action === 'accept' && answer.content?.confirm === true
        },
        logToRequest: async (level, data) => {
          if (belowLevel(level)) return
          await extra.sendNotification({ method: 'notifications/message', params: { level, logger: 'calculator', data } })
        },
        request: (clientRequest, resultSchema) => extra.sendRequest(clientRequest, resultSchema as never),
        closeStream: () => extra.closeSSEStream?.(),
        progress: async (progress, total, message) => {
          if (progressToken === undefined) return
          await extra.sendNotification({ method: 'notifications/progress', params: { progressToken, progress, total, message } })
        }
      })
      done(result.isError === true ? 'error' : 'success')
      return result
    } catch (error) {
      if (error instanceof CalculationError || error instanceof ToolInputError) {
        done('error')
        return toolError(error.message)
      }
      done('internal_error')
      services.logError(error, `tool ${name} failed`)
      throw new McpError(ErrorCode.InternalError, 'Internal error')
    }
  })

  server.setRequestHandler(ListResourcesRequestSchema, async () => ({
    resources: features.resourceList().map(({ uri, name, title, description, mimeType }) => ({ uri, name, title, description, mimeType }))
  }))

  server.setRequestHandler(ListResourceTemplatesRequestSchema, async () => ({
    resourceTemplates: features.templateList().map(({ uriTemplate, name, title, description, mimeType }) => ({ uriTemplate, name, title, description, mimeType }))
  }))

  server.setRequestHandler(ReadResourceRequestSchema, async request => {
    const { uri } = request.params
    const resource = features.resource(uri)
    if (resource !== undefined) {
      return { contents: [asContent(uri, resource.mimeType, await resource.read(context))] }
    }
    const match = features.matchTemplate(uri)
    const body = match === undefined ? undefined : await match.definition.read(context, match.variables)
    if (match === undefined || body === undefined) throw new McpError(RESOURCE_NOT_FOUND, `Resource not found: ${uri}`, { uri })
    return { contents: [asContent(uri, match.definition.mimeType, body)] }
  })

  const subscribe = (subscribed: boolean) => async (request: { params: { uri: string } }) => {
    const { uri } = request.params
    if (features.resource(uri) === undefined && features.matchTemplate(uri) === undefined) {
      throw new McpError(RESOURCE_NOT_FOUND, `Resource not found: ${uri}`, { uri })
    }
    await store.setSubscription(state.record.id, uri, subscribed)
    const others = state.record.subscriptions.filter(s => s !== uri)
    state.record = { ...state.record, subscriptions: subscribed ? [...others, uri] : others }
    return {}
  }
  server.setRequestHandler(SubscribeRequestSchema, subscribe(true))
  server.setRequestHandler(UnsubscribeRequestSchema, subscribe(false))

  server.setRequestHandler(ListPromptsRequestSchema, async () => ({
    prompts: features.promptList().map(p => ({
      name: p.name,
      title: p.title,
      description: p.description,
      arguments: p.arguments.map(a => ({ name: a.name, description: a.description, required: a.required === true }))
    }))
  }))

  server.setRequestHandler(GetPromptRequestSchema, async request => {
    const prompt = features.prompt(request.params.name)
    if (prompt === undefined) throw new McpError(ErrorCode.InvalidParams, `Unknown prompt: ${request.params.name}`)
    const args = request.params.arguments ?? {}
    for (const argument of prompt.arguments) {
      const value = args[argument.name]
      if (argument.required === true && (value === undefined || value === '')) {
        throw new McpError(ErrorCode.InvalidParams, `Prompt ${prompt.name} needs the argument ${argument.name}`)
      }
    }
    return prompt.get(args)
  })

  server.setRequestHandler(CompleteRequestSchema, async request => {
    const { ref, argument } = request.params
    let values: string[] = []
    if (ref.type === 'ref/prompt') {
      const prompt = features.prompt(ref.name)
      if (prompt === undefined) throw new McpError(ErrorCode.InvalidParams, `Unknown prompt: ${ref.name}`)
      values = (prompt.arguments.find(a => a.name === argument.name)?.values ?? []).filter(v => v.startsWith(argument.value))
    } else {
      const template = features.templateByPattern(ref.uri)
      if (template === undefined) throw new McpError(ErrorCode.InvalidParams, `Unknown resource template: ${ref.uri}`)
      values = await template.complete?.(context, argument.name, argument.value) ?? []
    }
    return { completion: { values: values.slice(0, MAX_COMPLETIONS), total: values.length, hasMore: values.length > MAX_COMPLETIONS } }
  })

  return server
}
