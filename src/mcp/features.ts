import type { Static, TObject, TSchema } from '@sinclair/typebox'
import { TypeCompiler, type TypeCheck } from '@sinclair/typebox/compiler'
import type { CallToolResult, ClientCapabilities, GetPromptResult, ServerRequest, ToolAnnotations } from '@modelcontextprotocol/sdk/types.js'
import { UriTemplate } from '@modelcontextprotocol/sdk/shared/uriTemplate.js'
import { randomBytes } from 'node:crypto'
import { ToolInputError } from '../errors.js'
import { HANDLE_SCOPE, type CounterUpdate, type LogEntry, type LogLevel, type LogSpec, type ScopeStore, type SessionRecord, type SessionStore } from '../stores/session-store.js'

/**
 * How a handle's state reaches its scope: the request has yet to show that the scope is there and
 * its principal's (the scope's touch). Its first write does that in the same store step; a read
 * first touches.
 */
interface HandleGate {
  readonly principal: string | undefined
  touch (): Promise<boolean>
  /** What to throw when the scope is gone or another's. */
  missing (): Error
}

/**
 * A feature's state in one scope (the session a request belongs to, or a scope a handle names):
 * its own logs and counters, through the store's generic primitives, and nothing of any other scope.
 *
 * Made for one request (`request` is its key, from the JSON-RPC id), its writes are keyed by the
 * request and their order in it: when a proxy or a client retries the request, the same writes
 * change nothing the second time and return what the first try stored, so the retry gives the
 * same answer and the state is written once.
 */
export class ScopeState {
  readonly #store: ScopeStore
  readonly #scope: string
  readonly #request?: string
  readonly #gate?: HandleGate
  /** With a gate: settles once the request has reached the scope, rejects when it could not. */
  #reached?: Promise<unknown>
  #writes = 0

  constructor (store: ScopeStore, scope: string, request?: string, gate?: HandleGate) {
    this.#store = store
    this.#scope = scope
    this.#request = request
    this.#gate = gate
  }

  #op (): string | undefined {
    return this.#request === undefined ? undefined : `${this.#request}#${this.#writes++}`
  }

  /** Runs `use` on the scope: at once, or for a handle once the request has reached it (a read touches first). */
  #onScope<R> (use: () => Promise<R>): Promise<R> {
    const gate = this.#gate
    if (gate === undefined) return use()
    this.#reached ??= gate.touch().then(found => { if (!found) throw gate.missing() })
    return this.#reached.then(use)
  }

  /** @throws {StorageUnavailableError} when the store cannot be reached; nothing is appended then. */
  async append<T> (log: LogSpec, entries: readonly T[], count?: CounterUpdate): Promise<Array<LogEntry<T>>> {
    const gate = this.#gate
    if (gate !== undefined && this.#reached === undefined) {
      // A handle's first use: the append itself checks the scope and slides its expiry. Later uses
      // of the state wait for it.
      const stored = this.#store.append(this.#scope, log, entries, count, { op: this.#op(), touch: { principal: gate.principal } }).then(found => {
        if (found === undefined) throw gate.missing()
        return found
      })
      this.#reached = stored
      return await stored
    }
    return await this.#onScope(() => this.#store.append(this.#scope, log, entries, count, { op: this.#op() })) ?? []
  }

  entries<T> (log: LogSpec, last?: number): Promise<{ entries: Array<LogEntry<T>>, appended: number }> {
    return this.#onScope(() => this.#store.entries(this.#scope, log, last))
  }

  entry<T> (log: LogSpec, seq: number): Promise<LogEntry<T> | undefined> {
    return this.#onScope(() => this.#store.entry(this.#scope, log, seq))
  }

  clear (log: LogSpec): Promise<number> {
    return this.#onScope(() => this.#store.clear(this.#scope, log, this.#op()))
  }

  counters (set: string): Promise<Record<string, number>> {
    return this.#onScope(() => this.#store.counters(this.#scope, set))
  }
}

/**
 * A scope that keeps nothing: the state of a 2026-07-28 request that names no handle. Appends
 * store nothing (and touch no store), reads find nothing.
 */
const NOWHERE: ScopeStore = {
  append: async () => [],
  entries: async () => ({ entries: [], appended: 0 }),
  entry: async () => undefined,
  clear: async () => 0,
  counters: async () => ({})
}
export const NO_STATE = new ScopeState(NOWHERE, '')

/** Handles start with this, so no session id (a UUID) is ever one and no handle is ever a session. */
export const HANDLE_PREFIX = 'h-'
const MAX_HANDLE_LENGTH = 64
/** A handle inside a resource URI (`calculator://histories/h-…`). */
export const HANDLE_IN_URI = /\bh-[A-Za-z0-9_-]{24}(?![A-Za-z0-9_-])/

/**
 * Server-minted scopes that clients name by handle (the state of the 2026-07-28 revision, usable
 * from any node): unguessable, bound to the principal that minted them when there is one, and
 * living in the store like a session (same primitives, same limits, same expiry).
 */
export class ScopeHandles {
  readonly #store: SessionStore
  readonly #countCreation: (client: string) => Promise<void>

  /** `countCreation` counts what a client creates (sessions and handles alike) and throws past its limit. */
  constructor (store: SessionStore, countCreation: (client: string) => Promise<void> = async () => {}) {
    this.#store = store
    this.#countCreation = countCreation
  }

  /**
   * A new scope for `principal` (or for whoever holds the handle, without one), minted for
   * `client` (a principal or an address), counted like a session it creates.
   * @throws {RateLimitedError} past the client's limit.
   */
  async mint (principal: string | undefined, client: string): Promise<string> {
    await this.#countCreation(client)
    const id = `${HANDLE_PREFIX}${randomBytes(18).toString('base64url')}`
    const now = Date.now()
    await this.#store.create({
      id,
      createdAt: now,
      lastActivityAt: now,
      protocolVersion: HANDLE_SCOPE,
      initializeParams: { protocolVersion: HANDLE_SCOPE, capabilities: {}, clientInfo: { name: 'handle', version: '0' } },
      subscriptions: [],
      requestCount: 0,
      ...(principal !== undefined && { principal })
    })
    return id
  }

  /**
   * The state of the scope `handle` names, for `principal`, with writes keyed by `request`; the
   * request's first use of it slides its expiry.
   * @throws {ToolInputError} for a handle that is malformed, or on its first use, unknown, expired
   * or another principal's.
   */
  open (handle: string, principal: string | undefined, request?: string): ScopeState {
    if (!this.#wellFormed(handle)) throw unknownHandle(handle)
    return new ScopeState(this.#store, handle, request, {
      principal,
      touch: () => this.#touch(handle, principal),
      missing: () => unknownHandle(handle)
    })
  }

  /** Whether `handle` names a live scope of `principal`'s; sliding its expiry when it does. */
  async usable (handle: string, principal: string | undefined): Promise<boolean> {
    return this.#wellFormed(handle) && await this.#touch(handle, principal)
  }

  #wellFormed (handle: string): boolean {
    return handle.startsWith(HANDLE_PREFIX) && handle.length <= MAX_HANDLE_LENGTH
  }

  async #touch (handle: string, principal: string | undefined): Promise<boolean> {
    return await this.#store.touch(handle, undefined, principal) !== undefined
  }
}

const unknownHandle = (handle: string) => new ToolInputError(`Unknown handle ${handle.slice(0, 64)}: it never existed, expired, or belongs to someone else`)

/** What every handler may use: its scope's state, and what it may tell the client. */
export interface FeatureContext {
  /**
   * The feature's state in this request's scope: the session's (2025-11-25), or a scope that keeps
   * nothing (2026-07-28: state lives in handles, see `open`).
   */
  readonly state: ScopeState
  /** The session as of this request (read-only); undefined for a request of the 2026-07-28 revision. */
  readonly session?: Readonly<SessionRecord>
  /** A new scope (a handle to give the client) bound to the request's principal. */
  mint (): Promise<string>
  /**
   * The state of the scope a handle names.
   * @throws {ToolInputError} when it is malformed, or on the state's first use, unknown, expired or
   * another principal's.
   */
  open (handle: string): ScopeState
  /** Sends `notifications/message` on the session's stream once the client set a level and `level` reaches it. */
  log (level: LogLevel, data: unknown): Promise<void>
  /** Tells the client that a resource changed, when it subscribed to it. */
  resourceUpdated (uri: string): Promise<void>
}

/** What a tool may do while it runs. */
export interface ToolContext extends FeatureContext {
  /** What the client declared in `initialize`. */
  readonly clientCapabilities: ClientCapabilities
  /** Aborted when the client cancels the request or the session closes on this node. */
  readonly signal: AbortSignal
  /** Sends `notifications/progress` on this request's stream; does nothing when the client sent no progressToken. */
  progress (progress: number, total?: number, message?: string): Promise<void>
  /** Sends `notifications/message` on this request's stream unless `level` is below the session's level. */
  logToRequest (level: LogLevel, data: unknown): Promise<void>
  /**
   * Asks the client (elicitation, sampling) on this request's stream and resolves with its answer,
   * checked by `resultSchema`.
   * @throws {McpError} when the client answers with an error, the request times out or is cancelled.
   */
  ask<T> (request: ServerRequest, resultSchema: { parse (value: unknown): T }): Promise<T>
  /**
   * Ends this request's SSE stream now (SSE polling): the client reconnects with Last-Event-ID, to
   * any node, and receives the rest of the answer there.
   */
  closeStream (): void
  /**
   * 2026-07-28, a retry of a request answered `input_required`: the client's `inputResponses`
   * (as sent: null or anything) and the state the tool passed to InputRequired (its integrity
   * checked); undefined on a first try and in 2025-11-25 sessions.
   */
  readonly input?: { responses: unknown, state: unknown }
}

/**
 * Thrown by a tool of a 2026-07-28 request to answer `input_required`: the requests for the client
 * to fulfil (elicitation, sampling, roots) and a state of the tool's own, which comes back with the
 * retry integrity-protected (see ToolContext.input). `ask` throws it for the tool.
 */
export class InputRequired extends Error {
  readonly inputRequests: Record<string, ServerRequest>
  readonly state: unknown

  constructor (inputRequests: Record<string, ServerRequest>, state?: unknown) {
    super('input required')
    this.inputRequests = inputRequests
    this.state = state
  }
}

/** A tool's result: with an output schema, its structured content has the schema's type. */
export type ToolResult<O extends TObject | undefined> = O extends TObject
  ? (CallToolResult & { structuredContent: Static<O> }) | (CallToolResult & { isError: true })
  : CallToolResult

export interface ToolDefinition<I extends TObject = TObject, O extends TObject | undefined = TObject | undefined> {
  name: string
  title: string
  description: string
  /** What tools/list advertises and what the arguments are checked against before `run`. */
  inputSchema: I
  outputSchema?: O
  annotations: ToolAnnotations
  /** OAuth scopes a caller's access token must hold to call the tool, when tokens are required. */
  scopes?: readonly string[]
  /**
   * Runs the tool with arguments already checked against `inputSchema`.
   * Throws ToolInputError for failures the caller should see as `isError` results.
   */
  run (args: Static<I>, context: ToolContext): Promise<ToolResult<O>>
}

export interface ResourceDefinition {
  uri: string
  name: string
  title: string
  description: string
  mimeType: string
  /** OAuth scopes needed to read it, when tokens are required. */
  scopes?: readonly string[]
  /** Text, or bytes sent as a base64 blob; undefined when there is nothing to read in this request's scope. */
  read (context: FeatureContext): Promise<string | Uint8Array | undefined>
}

export interface ResourceTemplateDefinition {
  uriTemplate: string
  name: string
  title: string
  description: string
  mimeType: string
  /** OAuth scopes needed to read a resource of the template, when tokens are required. */
  scopes?: readonly string[]
  /** Returns undefined when nothing exists at the URI. */
  read (context: FeatureContext, variables: Record<string, string>): Promise<string | Uint8Array | undefined>
  /** Values for a template variable that start with `prefix`. */
  complete? (context: FeatureContext, variable: string, prefix: string): Promise<string[]>
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
  /** OAuth scopes needed to get it, when tokens are required. */
  scopes?: readonly string[]
  /** The prompt; `context` lets a 2026-07-28 prompt answer input_required (see ToolContext.input). */
  get (args: Record<string, string>, context: ToolContext): GetPromptResult | Promise<GetPromptResult>
}

/** A registered entry and the feature it belongs to (the logger name of its messages). */
interface Owned<T> {
  feature: string
  definition: T
}

/** An argument that 2026-07-28 clients mirror into an `Mcp-Param-{name}` header (`x-mcp-header`). */
export interface HeaderParam {
  /** The argument's path: the chain of `properties` keys from the input schema's root. */
  path: readonly string[]
  /** The header's name, lowercased as Node gives request headers. */
  header: string
}

export interface RegisteredTool extends Owned<ToolDefinition> {
  check: TypeCheck<TObject>
  headerParams: readonly HeaderParam[]
}

const HEADER_TOKEN = /^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/

/**
 * The `x-mcp-header` annotations of an input schema, found through `properties` keys only (as the
 * 2026-07-28 revision allows them).
 * @throws {Error} for a name that is no header token or is repeated, or an annotated type other than string, integer or boolean.
 */
function headerParams (tool: string, schema: TSchema, path: string[] = [], found: HeaderParam[] = []): HeaderParam[] {
  const properties = (schema as { properties?: Record<string, TSchema> }).properties ?? {}
  for (const [key, property] of Object.entries(properties)) {
    const name = (property as { 'x-mcp-header'?: unknown })['x-mcp-header']
    if (name !== undefined) {
      if (typeof name !== 'string' || !HEADER_TOKEN.test(name)) throw new Error(`Tool ${tool}: x-mcp-header ${JSON.stringify(name)} is no header name`)
      if (!['string', 'integer', 'boolean'].includes(property.type as string)) throw new Error(`Tool ${tool}: x-mcp-header on ${key}, which is no string, integer or boolean`)
      const header = `mcp-param-${name.toLowerCase()}`
      if (found.some(param => param.header === header)) throw new Error(`Tool ${tool}: x-mcp-header ${name} is used twice`)
      found.push({ path: [...path, key], header })
    }
    headerParams(tool, property, [...path, key], found)
  }
  return found
}

export interface RegisteredTemplate extends Owned<ResourceTemplateDefinition> {
  template: UriTemplate
}

/** Registers one feature's tools, resources and prompts; see FeatureRegistry.feature. */
export interface Feature {
  readonly name: string
  /** @throws {Error} when the name is already taken. */
  addTool<I extends TObject, O extends TObject | undefined = undefined> (definition: ToolDefinition<I, O>): void
  /** @throws {Error} when the URI is already taken. */
  addResource (definition: ResourceDefinition): void
  addResourceTemplate (definition: ResourceTemplateDefinition): void
  /** @throws {Error} when the name is already taken. */
  addPrompt (definition: PromptDefinition): void
}

/**
 * Everything a session serves: tools, resources, templates and prompts, added by feature plugins at
 * boot and shared read-only by every session. Lists and validators are built once here.
 */
export class FeatureRegistry {
  readonly #tools = new Map<string, RegisteredTool>()
  readonly #resources = new Map<string, Owned<ResourceDefinition>>()
  readonly #templates: RegisteredTemplate[] = []
  readonly #prompts = new Map<string, PromptDefinition>()
  readonly #promptFeatures = new Map<string, string>()
  #toolList?: object[]
  #scopes?: { base: readonly string[], all: readonly string[] }

  /** A handle for one feature to add what it serves; `name` becomes the logger of its log messages. */
  feature (name: string): Feature {
    return {
      name,
      addTool: definition => {
        if (this.#tools.has(definition.name)) throw new Error(`Tool ${definition.name} is registered twice`)
        this.#tools.set(definition.name, { feature: name, definition: definition as unknown as ToolDefinition, check: TypeCompiler.Compile(definition.inputSchema), headerParams: headerParams(definition.name, definition.inputSchema) })
        this.#toolList = undefined
        this.#scopes = undefined
      },
      addResource: definition => {
        if (this.#resources.has(definition.uri)) throw new Error(`Resource ${definition.uri} is registered twice`)
        this.#resources.set(definition.uri, { feature: name, definition })
        this.#scopes = undefined
      },
      addResourceTemplate: definition => {
        this.#templates.push({ feature: name, definition, template: new UriTemplate(definition.uriTemplate) })
        this.#scopes = undefined
      },
      addPrompt: definition => {
        if (this.#prompts.has(definition.name)) throw new Error(`Prompt ${definition.name} is registered twice`)
        this.#prompts.set(definition.name, definition)
        this.#promptFeatures.set(definition.name, name)
        this.#scopes = undefined
      }
    }
  }

  /**
   * The OAuth scopes declared: `all` of them, and the `base` ones that every tool, resource and
   * prompt declaring scopes requires (what any use of the server needs).
   */
  get scopes (): { base: readonly string[], all: readonly string[] } {
    if (this.#scopes === undefined) {
      const declared = [
        ...[...this.#tools.values()].map(t => t.definition.scopes),
        ...[...this.#resources.values()].map(r => r.definition.scopes),
        ...this.#templates.map(t => t.definition.scopes),
        ...[...this.#prompts.values()].map(p => p.scopes)
      ].filter(scopes => scopes !== undefined && scopes.length > 0) as Array<readonly string[]>
      const all = [...new Set(declared.flat())]
      this.#scopes = { base: all.filter(scope => declared.every(scopes => scopes.includes(scope))), all }
    }
    return this.#scopes
  }

  /**
   * The scopes a request needs: the base scopes, and those declared by the tool, resource or
   * prompt it names. A name nothing is registered under needs the base scopes (and gets its error
   * from the dispatcher).
   */
  scopesFor (method: string, params: Record<string, unknown> | undefined): readonly string[] {
    const { base } = this.scopes
    let declared: readonly string[] | undefined
    if (method === 'tools/call' && typeof params?.name === 'string') declared = this.#tools.get(params.name)?.definition.scopes
    else if (method === 'prompts/get' && typeof params?.name === 'string') declared = this.#prompts.get(params.name)?.scopes
    else if ((method === 'resources/read' || method === 'resources/subscribe') && typeof params?.uri === 'string') {
      declared = this.#resources.get(params.uri)?.definition.scopes ?? this.matchTemplate(params.uri)?.registered.definition.scopes
    }
    return declared === undefined ? base : [...new Set([...base, ...declared])]
  }

  tool (name: string): RegisteredTool | undefined { return this.#tools.get(name) }
  resource (uri: string): Owned<ResourceDefinition> | undefined { return this.#resources.get(uri) }
  prompt (name: string): PromptDefinition | undefined { return this.#prompts.get(name) }
  promptFeature (name: string): string | undefined { return this.#promptFeatures.get(name) }

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

  resourceList (): ResourceDefinition[] { return [...this.#resources.values()].map(r => r.definition) }
  templateList (): ResourceTemplateDefinition[] { return this.#templates.map(t => t.definition) }
  promptList (): PromptDefinition[] { return [...this.#prompts.values()] }

  /** The template whose pattern matches `uri`, with its variables. */
  matchTemplate (uri: string): { registered: RegisteredTemplate, variables: Record<string, string> } | undefined {
    for (const registered of this.#templates) {
      const match = registered.template.match(uri)
      if (match !== null) {
        const variables: Record<string, string> = {}
        for (const [key, value] of Object.entries(match)) variables[key] = Array.isArray(value) ? value.join(',') : value
        return { registered, variables }
      }
    }
    return undefined
  }

  templateByPattern (uriTemplate: string): RegisteredTemplate | undefined {
    return this.#templates.find(t => t.definition.uriTemplate === uriTemplate)
  }
}

/** A successful tool result carrying both structured content and its text form. */
export function toolResult<T extends Record<string, unknown>> (structured: T, text?: string): CallToolResult & { structuredContent: T } {
  return { content: [{ type: 'text', text: text ?? JSON.stringify(structured) }], structuredContent: structured }
}

/** A failed tool result the model can read and act on. */
export function toolError (message: string): CallToolResult & { isError: true } {
  return { content: [{ type: 'text', text: message }], isError: true }
}
