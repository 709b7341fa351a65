import { Kind, type TObject } from '@sinclair/typebox'
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler'
import type { CallToolResult, ClientCapabilities, GetPromptResult, ServerRequest, ToolAnnotations } from '@modelcontextprotocol/sdk/types.js'
import { UriTemplate } from '@modelcontextprotocol/sdk/shared/uriTemplate.js'
import type { LogLevel, SessionRecord, SessionStore } from '../stores/session-store.js'

/** What a handler may do for the session it runs in. */
export interface SessionContext {
  readonly sessionId: string
  readonly store: SessionStore
  /** The record as of this request. */
  readonly record: SessionRecord
  /** Sends `notifications/message` when `level` is at or above the session's log level. */
  log (level: LogLevel, data: unknown): Promise<void>
  /** Counts a recorded calculation in the server's metrics. */
  calculated (operation: string): void
  /** Tells subscribed clients that a resource changed. */
  resourceUpdated (uri: string): Promise<void>
}

export interface ToolCallContext extends SessionContext {
  /** What the client declared in `initialize`, as stored with the session. */
  readonly clientCapabilities: ClientCapabilities
  /** Sends `notifications/progress` on this request's stream; does nothing when the client sent no progressToken. */
  progress (progress: number, total?: number, message?: string): Promise<void>
  /** Sends `notifications/message` on this request's stream when `level` is at or above the session's log level (or none is set). */
  logToRequest (level: LogLevel, data: unknown): Promise<void>
  /** Sends the client a request on this request's stream (sampling, elicitation) and resolves with its checked result. */
  request<T> (request: ServerRequest, resultSchema: { parse (value: unknown): T }): Promise<T>
  /**
   * Ends this request's SSE stream now (SSE polling): the client reconnects with Last-Event-ID, to
   * any node, and receives the rest of the answer there.
   */
  closeStream (): void
  readonly signal: AbortSignal
  /**
   * Asks the person behind the client to confirm (elicitation). Resolves true or false with their
   * answer, or undefined when the client cannot be asked.
   */
  confirm (message: string): Promise<boolean | undefined>
}

export interface ToolDefinition<Args = any> {
  name: string
  title: string
  description: string
  /** What tools/list advertises; a TypeBox object, or any JSON Schema object with `argumentsSchema` beside it. */
  inputSchema: TObject | Record<string, unknown>
  /** Checks the arguments when `inputSchema` is not TypeBox (keywords such as `$defs` the checker does not resolve). */
  argumentsSchema?: TObject
  outputSchema?: TObject
  annotations: ToolAnnotations
  /**
   * Runs the tool with arguments already checked against `inputSchema`.
   * Throws CalculationError or ToolInputError for failures the caller should see as `isError` results.
   */
  run (args: Args, context: ToolCallContext): Promise<CallToolResult>
}

export interface ResourceDefinition {
  uri: string
  name: string
  title: string
  description: string
  mimeType: string
  /** Text, or bytes sent as a base64 blob. */
  read (context: SessionContext): Promise<string | Uint8Array>
}

export interface ResourceTemplateDefinition {
  uriTemplate: string
  name: string
  title: string
  description: string
  mimeType: string
  /** Returns undefined when nothing exists at the URI. */
  read (context: SessionContext, variables: Record<string, string>): Promise<string | Uint8Array | undefined>
  /** Values for a template variable that start with `prefix`. */
  complete? (context: SessionContext, variable: string, prefix: string): Promise<string[]>
}

export interface PromptArgumentDefinition {
  name: string
  description: string
  required?: boolean
  /** The fixed set of values, offered through `completion/complete`. */
  values?: readonly string[]
}

export interface PromptDefinition {
  name: string
  title: string
  description: string
  arguments: PromptArgumentDefinition[]
  get (args: Record<string, string>): GetPromptResult
}

/** Thrown by a tool for arguments that pass the schema but make no sense together. */
export class ToolInputError extends Error {
  override name = 'ToolInputError'
}

interface CompiledTool {
  definition: ToolDefinition
  check: TypeCheck<TObject>
}

interface CompiledTemplate {
  definition: ResourceTemplateDefinition
  template: UriTemplate
}

/**
 * Everything a session serves: tools, resources, templates and prompts, registered by plugins at
 * boot and shared read-only by every session. Lists and validators are built once here.
 */
export class FeatureRegistry {
  readonly #tools = new Map<string, CompiledTool>()
  readonly #resources = new Map<string, ResourceDefinition>()
  readonly #templates: CompiledTemplate[] = []
  readonly #prompts = new Map<string, PromptDefinition>()
  #toolList?: object[]

  /** @throws {Error} when the name is already taken. */
  addTool (definition: ToolDefinition): void {
    if (this.#tools.has(definition.name)) throw new Error(`Tool ${definition.name} is registered twice`)
    const schema = definition.argumentsSchema ?? definition.inputSchema
    if (!(Kind in schema)) throw new Error(`Tool ${definition.name} needs a TypeBox argumentsSchema to check its arguments`)
    this.#tools.set(definition.name, { definition, check: TypeCompiler.Compile(schema as TObject) })
    this.#toolList = undefined
  }

  addResource (definition: ResourceDefinition): void {
    if (this.#resources.has(definition.uri)) throw new Error(`Resource ${definition.uri} is registered twice`)
    this.#resources.set(definition.uri, definition)
  }

  addResourceTemplate (definition: ResourceTemplateDefinition): void {
    this.#templates.push({ definition, template: new UriTemplate(definition.uriTemplate) })
  }

  addPrompt (definition: PromptDefinition): void {
    if (this.#prompts.has(definition.name)) throw new Error(`Prompt ${definition.name} is registered twice`)
    this.#prompts.set(definition.name, definition)
  }

  tool (name: string): CompiledTool | undefined { return this.#tools.get(name) }
  resource (uri: string): ResourceDefinition | undefined { return this.#resources.get(uri) }
  prompt (name: string): PromptDefinition | undefined { return this.#prompts.get(name) }

  /** The `tools/list` entries, built once. */
  toolList (): object[] {
    this.#toolList ??= [...this.#tools.values()].map(({ definition: d }) => ({
      name: d.name,
      title: d.title,
      description: d.description,
      inputSchema: d.inputSchema,
      ...(d.outputSchema !== undefined && { outputSchema: d.outputSchema }),
      annotations: { title: d.title, ...d.annotations }
    }))
    return this.#toolList
  }

  resourceList (): ResourceDefinition[] { return [...this.#resources.values()] }
  templateList (): ResourceTemplateDefinition[] { return this.#templates.map(t => t.definition) }
  promptList (): PromptDefinition[] { return [...this.#prompts.values()] }

  /** The template whose pattern matches `uri`, with its variables. */
  matchTemplate (uri: string): { definition: ResourceTemplateDefinition, variables: Record<string, string> } | undefined {
    for (const { definition, template } of this.#templates) {
      const match = template.match(uri)
      if (match !== null) {
        const variables: Record<string, string> = {}
        for (const [key, value] of Object.entries(match)) variables[key] = Array.isArray(value) ? value.join(',') : value
        return { definition, variables }
      }
    }
    return undefined
  }

  templateByPattern (uriTemplate: string): ResourceTemplateDefinition | undefined {
    return this.#templates.find(t => t.definition.uriTemplate === uriTemplate)?.definition
  }
}

/** A successful tool result carrying both structured content and its text form. */
export function toolResult (structured: Record<string, unknown>, text?: string): CallToolResult {
  return { content: [{ type: 'text', text: text ?? JSON.stringify(structured) }], structuredContent: structured }
}

/** A failed tool result the model can read and act on. */
export function toolError (message: string): CallToolResult {
  return { content: [{ type: 'text', text: message }], isError: true }
}
