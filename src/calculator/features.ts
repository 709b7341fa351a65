import { Type, type Static } from '@sinclair/typebox'
import { ElicitResultSchema } from '@modelcontextprotocol/sdk/types.js'
import {
  ADVANCED_OPERATIONS, BINARY_OPERATIONS, CONSTANTS, FORMULAS, CalculationError,
  calculate, calculateAdvanced, describeAdvanced, describeBinary
} from './math.js'
import type { LogEntry, LogSpec } from '../stores/session-store.js'
import { ToolInputError } from '../errors.js'
import { type Feature, type FeatureContext, type ScopeState, type ToolContext, toolError, toolResult } from '../mcp/features.js'

export const HISTORY_URI = 'calculator://history'
/** A history handle's resource: `calculator://histories/<handle>`. */
export const HANDLE_HISTORY_URI = 'calculator://histories/'
export const MAX_BATCH = 100
export const MAX_PROGRESS_STEPS = 20
const PROGRESS_STEP_MS = 50
/** The counter set of calculations per operation. */
const OPERATIONS = 'operations'

const literals = <T extends string>(values: readonly T[], description: string) =>
  Type.Union(values.map(v => Type.Literal(v)), { description })

const Operand = (description: string) => Type.Number({ description })

const BinaryInput = Type.Object({
  a: Operand('First operand'),
  b: Operand('Second operand'),
  op: literals(BINARY_OPERATIONS, 'Operation: add, subtract, multiply, divide, power or modulo')
})

/** The argument naming a history handle, on the tools that record or read history. */
const HistoryHandle = Type.Optional(Type.String({
  maxLength: 64,
  description: 'A history handle from create_history: the history to record in or read instead of this session\'s (in the 2026-07-28 revision, which has no sessions, the only way to keep one)'
}))

const CalculationOutput = Type.Object({
  calculationId: Type.Optional(Type.String({ description: 'Its number in the history it was recorded in; none when no history was kept' })),
  operation: Type.String(),
  expression: Type.String(),
  result: Type.Number()
})

const HistoryEntrySchema = Type.Object({
  id: Type.String(), operation: Type.String(), expression: Type.String(), inputs: Type.Array(Type.Number()), result: Type.Number(), timestamp: Type.String()
})
/** One calculation as clients see it: its number in the session's history log is its id. */
export type HistoryEntry = Static<typeof HistoryEntrySchema>
/** What the history log stores per calculation. */
type Calculation = Omit<HistoryEntry, 'id' | 'timestamp'>
/** A calculation just recorded: its number, no timestamp (no result shows it). */
type Recorded = Calculation & { id: string }

const CONFIRM_SCHEMA = {
  type: 'object' as const,
  properties: { confirm: { type: 'boolean' as const, title: 'Confirm', description: 'true to go ahead' } },
  required: ['confirm']
}

const sleep = (ms: number, signal: AbortSignal) => new Promise<void>(resolve => {
  const timer = setTimeout(resolve, ms)
  signal.addEventListener('abort', () => { clearTimeout(timer); resolve() }, { once: true })
})

const asHistoryEntry = (entry: LogEntry<Calculation>): HistoryEntry => {
  const { data } = entry
  return { id: String(entry.seq), operation: data.operation, expression: data.expression, inputs: data.inputs, result: data.result, timestamp: new Date(entry.at).toISOString() }
}

const asRecorded = ({ seq, data }: LogEntry<Calculation>): Recorded =>
  ({ id: String(seq), operation: data.operation, expression: data.expression, inputs: data.inputs, result: data.result })

// Object literals of one shape each: a conditional spread here took V8's slow path on every call.
function asOutput (entry: Recorded | Calculation): Static<typeof CalculationOutput> {
  return 'id' in entry
    ? { calculationId: entry.id, operation: entry.operation, expression: entry.expression, result: entry.result }
    : { operation: entry.operation, expression: entry.expression, result: entry.result }
}

const describe = (entry: Recorded | Calculation) => 'id' in entry ? `${entry.expression} (calculation ${entry.id})` : entry.expression

/**
 * Asks the person behind the client to confirm (elicitation). Resolves true or false with their
 * answer, or undefined when the client cannot be asked.
 */
async function confirm (context: ToolContext, message: string): Promise<boolean | undefined> {
  if (context.clientCapabilities.elicitation === undefined) return undefined
  const answer = await context.ask({ method: 'elicitation/create', params: { message, requestedSchema: CONFIRM_SCHEMA } }, ElicitResultSchema)
  return answer.action === 'accept' && answer.content?.confirm === true
}

/** The resource URI of a history: the handle's when there is one, else the session's. */
const historyUri = (handle: string | undefined) => handle === undefined ? HISTORY_URI : `${HANDLE_HISTORY_URI}${handle}`

/** The log message of calculations just recorded. */
function logRecorded (context: FeatureContext, calculations: readonly Calculation[]): Promise<void> {
  const [first] = calculations
  return calculations.length === 1
    ? context.log('info', { event: 'calculation', operation: first!.operation, expression: first!.expression, result: first!.result })
    : context.log('info', { event: 'batch', recorded: calculations.length })
}

export interface CalculatorOptions {
  /** Calculations kept per session. */
  historyLimit: number
  /** When not empty, adds an echo tool of that name. */
  sampleToolName?: string
  /** Called for every calculation recorded, for metrics. */
  onCalculated? (operation: string, count: number): void
}

/** OAuth scopes, when access tokens are required: every tool, resource and prompt needs `calculator:use`; clearing the history also `calculator:admin`. */
const USE = ['calculator:use'] as const
const ADMIN = ['calculator:use', 'calculator:admin'] as const

/**
 * Registers the calculator's tools, resources and prompts. Its state per session is one history log
 * and one counter set, kept through the scope's generic state.
 */
export function registerCalculator (calculator: Feature, options: CalculatorOptions): void {
  const HISTORY: LogSpec = { name: 'history', maxEntries: options.historyLimit }

  /**
   * The history a request works on: the handle's when it names one, else the session's (none in
   * the 2026-07-28 revision). Its resource URI goes with it.
   * @throws {ToolInputError} for a malformed handle; the state throws it on first use for one that
   * is unknown, expired or another's.
   */
  function historyOf (context: FeatureContext, handle: string | undefined): { state: ScopeState, uri: string } {
    return { state: handle === undefined ? context.state : context.open(handle), uri: historyUri(handle) }
  }

  /**
   * Stores calculations (all or none) in a history and counts them per operation, then tells
   * subscribers and the log. Without a history to keep them (a 2026-07-28 call naming no handle),
   * stores nothing and returns them unnumbered.
   * @throws {StorageUnavailableError} when the store cannot be written; nothing was stored then.
   */
  async function record (context: FeatureContext, calculations: Calculation[], handle?: string): Promise<Array<Recorded | Calculation>> {
    const add: Record<string, number> = {}
    for (const { operation } of calculations) add[operation] = (add[operation] ?? 0) + 1
    const { state, uri } = historyOf(context, handle)
    const appended = await state.append(HISTORY, calculations, { set: OPERATIONS, add })
    for (const operation in add) options.onCalculated?.(operation, add[operation]!)
    // A history that kept nothing did not change: no subscriber is told. Otherwise the update
    // goes out before the log message.
    if (appended.length === 0) {
      await logRecorded(context, calculations)
      return calculations
    }
    await Promise.all([context.resourceUpdated(uri), logRecorded(context, calculations)])
    return appended.map(asRecorded)
  }

  const history = async (context: FeatureContext, last?: number, handle?: string) => {
    const { entries, appended } = await historyOf(context, handle).state.entries<Calculation>(HISTORY, last)
    return { entries: entries.map(asHistoryEntry), appended }
  }

  calculator.addTool({
    name: 'calculate',
    scopes: USE,
    title: 'Calculate',
    description: 'Applies add, subtract, multiply, divide, power or modulo to two numbers and records the result in this session\'s history. With stream: true and a progress token, reports progress.',
    inputSchema: Type.Object({ ...BinaryInput.properties, stream: Type.Optional(Type.Boolean({ description: 'Report progress while calculating' })), history: HistoryHandle }),
    outputSchema: CalculationOutput,
    annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: false },
    /** @throws {CalculationError} on division or modulo by zero and results that are not finite. */
    async run (args, context) {
      if (args.stream === true) await context.progress(1, 3, 'validated')
      const result = calculate(args.a, args.b, args.op)
      if (args.stream === true) await context.progress(2, 3, 'calculated')
      const [entry] = await record(context, [{ operation: args.op, expression: `${describeBinary(args.a, args.b, args.op)} = ${result}`, inputs: [args.a, args.b], result }], args.history)
      if (args.stream === true) await context.progress(3, 3, 'recorded')
      return toolResult(asOutput(entry!), describe(entry!))
    }
  })

  calculator.addTool({
    name: 'batch_calculate',
    scopes: USE,
    title: 'Batch calculate',
    description: `Runs 1 to ${MAX_BATCH} calculations; the successes are recorded together, each failure is reported with its index.`,
    inputSchema: Type.Object({
      calculations: Type.Array(BinaryInput, { minItems: 1, maxItems: MAX_BATCH, description: `1 to ${MAX_BATCH} calculations` }),
      reportProgress: Type.Optional(Type.Boolean({ description: 'Report progress after each calculation' })),
      history: HistoryHandle
    }),
    outputSchema: Type.Object({
      results: Type.Array(Type.Object({
        index: Type.Integer(),
        calculationId: Type.Optional(Type.String()),
        expression: Type.String(),
        result: Type.Optional(Type.Number()),
        error: Type.Optional(Type.String())
      })),
      succeeded: Type.Integer(),
      failed: Type.Integer()
    }),
    annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: false },
    /**
     * Per-item CalculationErrors become per-item errors; the result is an error only when every item
     * failed. The successes are stored in one step: all of them, or none and a storage error.
     */
    async run (args, context) {
      const results: Array<{ index: number, calculationId?: string, expression: string, result?: number, error?: string }> = []
      const calculations: Calculation[] = []
      const total = args.calculations.length
      for (const [index, { a, b, op }] of args.calculations.entries()) {
        const expression = describeBinary(a, b, op)
        try {
          const result = calculate(a, b, op)
          calculations.push({ operation: op, expression: `${expression} = ${result}`, inputs: [a, b], result })
          results.push({ index, expression: `${expression} = ${result}`, result })
        } catch (error) {
          if (!(error instanceof CalculationError)) throw error
          results.push({ index, expression, error: error.message })
        }
        if (args.reportProgress === true) await context.progress(index + 1, total, `${index + 1} of ${total}`)
      }
      const stored = calculations.length === 0 ? [] : await record(context, calculations, args.history)
      let next = 0
      for (const item of results) {
        if (item.error !== undefined) continue
        const entry = stored[next++]!
        if ('id' in entry) item.calculationId = entry.id
      }
      const succeeded = calculations.length
      const output = { results, succeeded, failed: total - succeeded }
      if (succeeded === 0) return { ...toolError(`All ${total} calculations failed: ${results.map(r => `#${r.index} ${r.error}`).join('; ')}`), structuredContent: output }
      return toolResult(output)
    }
  })

  calculator.addTool({
    name: 'advanced_calculate',
    scopes: USE,
    title: 'Advanced calculate',
    description: 'Applies factorial, sqrt, log (base 10 or base), ln, sin, cos, tan (radians) or abs to one number and records the result.',
    inputSchema: Type.Object({
      operation: literals(ADVANCED_OPERATIONS, 'Operation: factorial, sqrt, log, ln, sin, cos, tan or abs'),
      value: Type.Number({ description: 'The operand' }),
      base: Type.Optional(Type.Number({ description: 'Logarithm base for log (default 10)' })),
      history: HistoryHandle
    }),
    outputSchema: CalculationOutput,
    annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: false },
    /** @throws {CalculationError} for values outside the operation's domain. */
    async run (args, context) {
      const result = calculateAdvanced(args.operation, args.value, args.base)
      const expression = `${describeAdvanced(args.operation, args.value, args.base)} = ${result}`
      const [entry] = await record(context, [{ operation: args.operation, expression, inputs: args.base === undefined ? [args.value] : [args.value, args.base], result }], args.history)
      return toolResult(asOutput(entry!), describe(entry!))
    }
  })

  calculator.addTool({
    name: 'demo_progress',
    scopes: USE,
    title: 'Progress demonstration',
    description: `Counts through 1 to ${MAX_PROGRESS_STEPS} steps of ${PROGRESS_STEP_MS} ms, reporting progress after each when the client sent a progress token.`,
    inputSchema: Type.Object({ steps: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_PROGRESS_STEPS, default: 5, description: `Number of steps, 1 to ${MAX_PROGRESS_STEPS}` })) }),
    outputSchema: Type.Object({ steps: Type.Integer(), completed: Type.Integer() }),
    annotations: { readOnlyHint: true, destructiveHint: false, idempotentHint: true, openWorldHint: false },
    async run (args, context) {
      const steps = args.steps ?? 5
      let completed = 0
      for (; completed < steps && !context.signal.aborted; completed++) {
        await sleep(PROGRESS_STEP_MS, context.signal)
        await context.progress(completed + 1, steps, `step ${completed + 1} of ${steps}`)
      }
      return toolResult({ steps, completed }, `Completed ${completed} of ${steps} steps`)
    }
  })

  calculator.addTool({
    name: 'get_history',
    scopes: USE,
    title: 'Get history',
    description: 'Returns this session\'s most recent calculations, oldest first.',
    inputSchema: Type.Object({ limit: Type.Optional(Type.Integer({ minimum: 1, maximum: 1000, description: 'How many of the newest entries, 1 to 1000 (default 10)' })), history: HistoryHandle }),
    outputSchema: Type.Object({
      entries: Type.Array(HistoryEntrySchema),
      total: Type.Integer({ description: 'Calculations made in this session' })
    }),
    annotations: { readOnlyHint: true, destructiveHint: false, idempotentHint: true, openWorldHint: false },
    async run (args, context) {
      const { entries, appended } = await history(context, args.limit ?? 10, args.history)
      const text = entries.length === 0 ? 'No calculations yet' : entries.map(e => `#${e.id} ${e.expression}`).join('\n')
      return toolResult({ entries, total: appended }, text)
    }
  })

  calculator.addTool({
    name: 'clear_history',
    scopes: ADMIN,
    title: 'Clear history',
    description: 'Deletes every entry of this session\'s calculation history, after asking for confirmation when the client supports elicitation. Per-operation statistics are kept.',
    inputSchema: Type.Object({ history: HistoryHandle }),
    outputSchema: Type.Object({ cleared: Type.Integer(), confirmed: Type.Optional(Type.Boolean()) }),
    annotations: { readOnlyHint: false, destructiveHint: true, idempotentHint: true, openWorldHint: false },
    async run (args, context) {
      const { state, uri } = historyOf(context, args.history)
      const { entries } = await state.entries(HISTORY)
      const confirmed = await confirm(context, `Delete all ${entries.length} entries of the calculation history?`)
      if (confirmed === false) return toolResult({ cleared: 0, confirmed }, 'History kept: clearing was not confirmed')
      const cleared = await state.clear(HISTORY)
      await Promise.all([context.resourceUpdated(uri), context.log('notice', { event: 'history cleared', cleared })])
      return toolResult({ cleared, ...(confirmed !== undefined && { confirmed }) }, `Cleared ${cleared} entries`)
    }
  })

  calculator.addTool({
    name: 'create_history',
    scopes: USE,
    title: 'Create history',
    description: 'Starts a calculation history of its own and returns its handle: pass it as the history argument of calculate, batch_calculate, advanced_calculate, get_history and clear_history, from any connection, and read it at calculator://histories/{handle}. In the 2026-07-28 revision, which has no sessions, this is how a history is kept.',
    inputSchema: Type.Object({}),
    outputSchema: Type.Object({ history: Type.String({ description: 'The handle: unguessable, yours alone when the server requires sign-in, kept until idle for the session TTL' }) }),
    annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: false },
    async run (_args, context) {
      const handle = await context.mint()
      return toolResult({ history: handle }, `History ${handle} created`)
    }
  })

  // The memory register: one number per session, kept as a log of one entry.
  const MEMORY: LogSpec = { name: 'memory', maxEntries: 1 }
  const Recalled = Type.Object({
    value: Type.Union([Type.Number(), Type.Null()], { description: 'The number in memory; null when none was stored' }),
    storedAt: Type.Union([Type.String(), Type.Null()], { description: 'When it was stored (ISO 8601)' })
  })

  calculator.addTool({
    name: 'memory_store',
    scopes: USE,
    title: 'Memory store',
    description: 'Keeps one number in this session\'s memory (like a calculator\'s M key), replacing the one before.',
    inputSchema: Type.Object({ value: Type.Number({ description: 'The number to keep' }) }),
    outputSchema: Recalled,
    annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: true, openWorldHint: false },
    async run (args, context) {
      const [stored] = await context.state.append(MEMORY, [args.value])
      // A 2026-07-28 request has no session to keep it in.
      if (stored === undefined) return toolError('There is no session memory to keep a number in: this revision has no sessions. Use a history handle (create_history) to keep results.')
      return toolResult({ value: args.value, storedAt: new Date(stored.at).toISOString() }, `${args.value} is in memory`)
    }
  })

  calculator.addTool({
    name: 'memory_recall',
    scopes: USE,
    title: 'Memory recall',
    description: 'Returns the number kept in this session\'s memory by memory_store.',
    inputSchema: Type.Object({}),
    outputSchema: Recalled,
    annotations: { readOnlyHint: true, destructiveHint: false, idempotentHint: true, openWorldHint: false },
    async run (_args, context) {
      const [last] = (await context.state.entries<number>(MEMORY, 1)).entries
      if (last === undefined) return toolResult({ value: null, storedAt: null }, 'Memory is empty')
      return toolResult({ value: last.data, storedAt: new Date(last.at).toISOString() }, `${last.data}`)
    }
  })

  if (options.sampleToolName !== undefined && options.sampleToolName !== '') {
    calculator.addTool({
      name: options.sampleToolName,
      scopes: USE,
      title: 'Echo',
      description: 'Echoes its value back.',
      inputSchema: Type.Object({ value: Type.String({ maxLength: 10_000, description: 'Text to echo' }) }),
      annotations: { readOnlyHint: true, destructiveHint: false, idempotentHint: true, openWorldHint: false },
      async run (args) {
        return { content: [{ type: 'text', text: `test string print: ${args.value}` }] }
      }
    })
  }

  const json = (value: unknown) => JSON.stringify(value, null, 2)

  calculator.addResource({
    uri: 'calculator://constants',
    name: 'constants',
    scopes: USE,
    title: 'Mathematical constants',
    description: 'π, e, φ and other constants with their values',
    mimeType: 'application/json',
    read: async () => json(CONSTANTS)
  })
  calculator.addResource({
    uri: HISTORY_URI,
    name: 'history',
    scopes: USE,
    title: 'Calculation history',
    description: 'This session\'s calculations, oldest first; subscribe to hear of changes',
    mimeType: 'application/json',
    read: async context => json((await history(context)).entries)
  })
  calculator.addResource({
    uri: 'calculator://stats',
    name: 'stats',
    scopes: USE,
    title: 'Calculation statistics',
    description: 'This session\'s calculations counted per operation',
    mimeType: 'application/json',
    read: async context => {
      const byOperation = await context.state.counters(OPERATIONS)
      const total = Object.values(byOperation).reduce((sum, n) => sum + n, 0)
      return json({ total, byOperation })
    }
  })
  calculator.addResource({
    uri: 'session://info',
    name: 'session-info',
    scopes: USE,
    title: 'Session information',
    description: 'This session: created, last activity, requests, calculations, protocol version and client',
    mimeType: 'application/json',
    read: async context => {
      const { session } = context
      // A 2026-07-28 request has no session: not found.
      if (session === undefined) return undefined
      const { appended } = await context.state.entries(HISTORY, 0)
      return json({
        sessionId: session.id,
        createdAt: new Date(session.createdAt).toISOString(),
        lastActivityAt: new Date(session.lastActivityAt).toISOString(),
        requestCount: session.requestCount,
        calculationCount: appended,
        protocolVersion: session.protocolVersion,
        clientName: session.initializeParams.clientInfo.name,
        clientVersion: session.initializeParams.clientInfo.version,
        logLevel: session.logLevel ?? null,
        subscriptions: session.subscriptions
      })
    }
  })
  calculator.addResource({
    uri: 'formulas://library',
    name: 'formulas',
    scopes: USE,
    title: 'Formula library',
    description: 'Common formulas with their meaning',
    mimeType: 'application/json',
    read: async () => json(FORMULAS)
  })
  calculator.addResourceTemplate({
    uriTemplate: 'calculator://history/{calculationId}',
    name: 'calculation',
    scopes: USE,
    title: 'One calculation',
    description: 'A calculation of this session by the id the tools return',
    mimeType: 'application/json',
    read: async (context, { calculationId = '' }) => {
      if (!/^[1-9]\d{0,14}$/.test(calculationId)) return undefined
      const entry = await context.state.entry<Calculation>(HISTORY, Number(calculationId))
      return entry === undefined ? undefined : json(asHistoryEntry(entry))
    },
    complete: async (context, _variable, prefix) => {
      const { entries } = await history(context, 100)
      return entries.map(e => e.id).filter(id => id.startsWith(prefix)).reverse()
    }
  })

  calculator.addResourceTemplate({
    uriTemplate: `${HANDLE_HISTORY_URI}{history}`,
    name: 'history-by-handle',
    scopes: USE,
    title: 'A history by its handle',
    description: 'The calculations of a history made by create_history, oldest first',
    mimeType: 'application/json',
    read: async (context, { history: handle = '' }) => {
      try {
        return json((await history(context, undefined, handle)).entries)
      } catch (error) {
        if (error instanceof ToolInputError) return undefined
        throw error
      }
    }
  })

  registerPrompts(calculator)
}

const LEVELS = ['beginner', 'intermediate', 'advanced'] as const
const DIFFICULTIES = ['easy', 'medium', 'hard'] as const
const TOPICS = ['arithmetic', 'algebra', 'geometry', 'trigonometry', 'logarithms', 'statistics'] as const
const ALL_OPERATIONS = [...BINARY_OPERATIONS, ...ADVANCED_OPERATIONS]

const userPrompt = (description: string, text: string) => ({
  description,
  messages: [{ role: 'user' as const, content: { type: 'text' as const, text } }]
})

function registerPrompts (calculator: Feature): void {
  calculator.addPrompt({
    name: 'explain-calculation',
    scopes: USE,
    title: 'Explain a calculation',
    description: 'Asks for an explanation of an operation at a chosen level',
    arguments: [
      { name: 'operation', description: 'The operation to explain', required: true, values: ALL_OPERATIONS },
      { name: 'level', description: 'beginner, intermediate or advanced', values: LEVELS }
    ],
    get: ({ operation, level = 'intermediate' }) => userPrompt(`Explain ${operation}`,
      `Explain the ${operation} operation to a learner at the ${level} level: what it means, how it is computed, one worked example and the inputs for which it is undefined.`)
  })
  calculator.addPrompt({
    name: 'generate-problems',
    scopes: USE,
    title: 'Generate practice problems',
    description: 'Asks for practice problems on a topic',
    arguments: [
      { name: 'topic', description: 'The topic', required: true, values: TOPICS },
      { name: 'difficulty', description: 'easy, medium or hard', required: true, values: DIFFICULTIES },
      { name: 'count', description: 'How many problems, 1 to 20', required: true }
    ],
    get: ({ topic, difficulty, count }) => {
      const n = Math.min(20, Math.max(1, Number.parseInt(count ?? '5', 10) || 5))
      return userPrompt(`${n} ${difficulty} ${topic} problems`,
        `Write ${n} ${difficulty} practice problems on ${topic}. Number them, and give the answers in a separate list at the end.`)
    }
  })
  calculator.addPrompt({
    name: 'solve_math_problem',
    scopes: USE,
    title: 'Solve a math problem',
    description: 'Asks for the solution of a problem, using the calculator tools for arithmetic',
    arguments: [
      { name: 'problem', description: 'The problem in words or symbols', required: true },
      { name: 'showWork', description: 'true to show every step', values: ['true', 'false'] }
    ],
    get: ({ problem, showWork }) => userPrompt('Solve a problem',
      `Solve this problem${showWork === 'true' ? ', showing every step' : ''}. Use the calculate and advanced_calculate tools for the arithmetic.\n\n${problem}`)
  })
  calculator.addPrompt({
    name: 'explain_formula',
    scopes: USE,
    title: 'Explain a formula',
    description: 'Asks for an explanation of a formula from the library or any other',
    arguments: [
      { name: 'formula', description: 'A formula, or a name from formulas://library', required: true, values: Object.keys(FORMULAS) },
      { name: 'context', description: 'Where the formula is being used' }
    ],
    get: ({ formula = '', context }) => {
      const known = (FORMULAS as Record<string, { formula: string, description: string }>)[formula]
      const subject = known === undefined ? formula : `${formula} (${known.formula}: ${known.description})`
      return userPrompt(`Explain ${formula}`,
        `Explain the formula ${subject}: what each symbol means, where it comes from and one worked example${context === undefined ? '' : ` in the context of ${context}`}.`)
    }
  })
  calculator.addPrompt({
    name: 'calculator_assistant',
    scopes: USE,
    title: 'Calculator assistant',
    description: 'Starts a conversation with an assistant that uses this server\'s tools',
    arguments: [{ name: 'query', description: 'What you want to work out', required: true }],
    get: ({ query }) => userPrompt('Calculator assistant',
      `You are a careful calculator assistant. Use the calculate, batch_calculate and advanced_calculate tools for every computation, cite the calculation ids they return, and read calculator://history when asked about earlier results.\n\n${query}`)
  })
}
