import { test } from 'tap'
import { CallToolResultSchema, ElicitRequestSchema, type ServerNotification } from '@modelcontextprotocol/sdk/types.js'
import type { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { connect, startServer } from './helpers/server.js'
import { HEADERS, initialize, openStream, parseEvents, post } from './helpers/raw-client.js'

type Structured = Record<string, any>

async function readJson (client: Client, uri: string) {
  const { contents } = await client.readResource({ uri })
  return JSON.parse((contents[0] as { text: string }).text)
}

test('the whole lifecycle with the official SDK client', async t => {
  const server = await startServer({ SAMPLE_TOOL_NAME: 'echo_sample' })
  t.teardown(() => server.close())
  const { client, transport, waitFor } = await connect(server.mcpUrl, {}, 'lifecycle-client')
  t.teardown(() => client.close())

  t.equal(client.getServerVersion()?.name, 'calculator-mcp-server')
  t.same(client.getServerCapabilities(), { tools: {}, resources: { subscribe: true }, prompts: {}, completions: {}, logging: {} }, 'advertises exactly what it implements')
  t.type(transport.sessionId, 'string')

  const { tools } = await client.listTools()
  t.same(tools.map(tool => tool.name).sort(), ['advanced_calculate', 'batch_calculate', 'calculate', 'clear_history', 'create_history', 'demo_progress', 'echo_sample', 'get_history', 'memory_recall', 'memory_store'])
  for (const tool of tools) {
    t.type(tool.title, 'string', `${tool.name} has a title`)
    t.type(tool.annotations?.readOnlyHint, 'boolean', `${tool.name} says whether it is read-only`)
  }
  t.equal(tools.find(tool => tool.name === 'clear_history')?.annotations?.destructiveHint, true)

  const calc = await client.callTool({ name: 'calculate', arguments: { a: 6, b: 7, op: 'multiply' } })
  const sc = calc.structuredContent as Structured
  t.equal(sc.result, 42)
  t.equal(sc.expression, '6 × 7 = 42')
  t.notOk(calc.isError)

  const divided = await client.callTool({ name: 'calculate', arguments: { a: 1, b: 0, op: 'divide' } })
  t.equal(divided.isError, true)
  t.match((divided.content as Structured[])[0]!.text, /Division by zero/)

  const invalid = await client.callTool({ name: 'calculate', arguments: { a: 'one', b: 2, op: 'add' } })
  t.equal(invalid.isError, true)
  t.match((invalid.content as Structured[])[0]!.text, /argument a/, 'invalid arguments name the argument')

  const unknownOp = await client.callTool({ name: 'calculate', arguments: { a: 1, b: 2, op: 'root' } })
  t.equal(unknownOp.isError, true)
  t.match((unknownOp.content as Structured[])[0]!.text, /argument op/)

  const advanced = await client.callTool({ name: 'advanced_calculate', arguments: { operation: 'factorial', value: 5 } })
  t.equal((advanced.structuredContent as Structured).result, 120)
  const badSqrt = await client.callTool({ name: 'advanced_calculate', arguments: { operation: 'sqrt', value: -4 } })
  t.equal(badSqrt.isError, true)
  const log2 = await client.callTool({ name: 'advanced_calculate', arguments: { operation: 'log', value: 8, base: 2 } })
  t.equal((log2.structuredContent as Structured).result, 3)

  const batch = await client.callTool({
    name: 'batch_calculate',
    arguments: { calculations: [{ a: 1, b: 2, op: 'add' }, { a: 1, b: 0, op: 'modulo' }, { a: 2, b: 2, op: 'power' }] }
  })
  const bsc = batch.structuredContent as Structured
  t.equal(bsc.succeeded, 2)
  t.equal(bsc.failed, 1)
  t.match(bsc.results[1].error, /Modulo by zero/)
  const tooBig = await client.callTool({ name: 'batch_calculate', arguments: { calculations: Array.from({ length: 101 }, () => ({ a: 1, b: 1, op: 'add' })) } })
  t.equal(tooBig.isError, true, 'batches are bounded')

  const history = await client.callTool({ name: 'get_history', arguments: { limit: 100 } })
  const entries = (history.structuredContent as Structured).entries as Structured[]
  t.same(entries.map(e => e.result), [42, 120, 3, 3, 4], 'every success is recorded, oldest first')
  t.equal((history.structuredContent as Structured).total, 5)

  const echo = await client.callTool({ name: 'echo_sample', arguments: { value: 'hi' } })
  t.same(echo.content, [{ type: 'text', text: 'test string print: hi' }])

  // Resources
  const { resources } = await client.listResources()
  t.same(resources.map(r => r.uri).sort(), ['calculator://constants', 'calculator://history', 'calculator://stats', 'formulas://library', 'session://info'])
  const { resourceTemplates } = await client.listResourceTemplates()
  t.same(resourceTemplates.map(r => r.uriTemplate), ['calculator://history/{calculationId}', 'calculator://histories/{history}'])

  const constants = await readJson(client, 'calculator://constants')
  t.equal(constants.pi.value, Math.PI)
  const wholeHistory = await readJson(client, 'calculator://history')
  t.equal(wholeHistory.length, 5)
  const one = await readJson(client, `calculator://history/${sc.calculationId}`)
  t.equal(one.result, 42, 'the template resolves the id a tool returned')
  await t.rejects(client.readResource({ uri: 'calculator://history/999999' }), { code: -32002 })
  await t.rejects(client.readResource({ uri: 'calculator://nothing' }), { code: -32002 })
  const stats = await readJson(client, 'calculator://stats')
  t.same(stats, { total: 5, byOperation: { multiply: 1, factorial: 1, log: 1, add: 1, power: 1 } })
  const info = await readJson(client, 'session://info')
  t.equal(info.sessionId, transport.sessionId)
  t.equal(info.clientName, 'lifecycle-client')
  t.equal(info.protocolVersion, '2025-11-25')
  t.equal(info.calculationCount, 5)
  t.ok(info.requestCount > 10)
  const formulas = await readJson(client, 'formulas://library')
  t.ok(formulas.pythagorean)

  // Prompts and completions
  const { prompts } = await client.listPrompts()
  t.same(prompts.map(p => p.name).sort(), ['calculator_assistant', 'explain-calculation', 'explain_formula', 'generate-problems', 'solve_math_problem'])
  const prompt = await client.getPrompt({ name: 'explain-calculation', arguments: { operation: 'modulo', level: 'beginner' } })
  t.match((prompt.messages[0]!.content as Structured).text, /modulo operation to a learner at the beginner level/)
  const problems = await client.getPrompt({ name: 'generate-problems', arguments: { topic: 'algebra', difficulty: 'hard', count: '3' } })
  t.match((problems.messages[0]!.content as Structured).text, /3 hard practice problems on algebra/)
  await t.rejects(client.getPrompt({ name: 'explain-calculation', arguments: {} }), { code: -32602 })
  for (const name of ['solve_math_problem', 'explain_formula', 'calculator_assistant']) {
    const args: Record<string, string> = { solve_math_problem: { problem: '2x = 4' }, explain_formula: { formula: 'pythagorean' }, calculator_assistant: { query: 'tip on 80' } }[name]!
    const result = await client.getPrompt({ name, arguments: args })
    t.ok(result.messages.length > 0, `${name} answers`)
  }
  const completion = await client.complete({ ref: { type: 'ref/prompt', name: 'explain-calculation' }, argument: { name: 'operation', value: 'mu' } })
  t.same(completion.completion.values, ['multiply'])
  const levels = await client.complete({ ref: { type: 'ref/prompt', name: 'generate-problems' }, argument: { name: 'difficulty', value: '' } })
  t.same(levels.completion.values, ['easy', 'medium', 'hard'])
  const ids = await client.complete({ ref: { type: 'ref/resource', uri: 'calculator://history/{calculationId}' }, argument: { name: 'calculationId', value: '' } })
  t.equal(ids.completion.values.length, 5)

  // Subscriptions and logging arrive on the GET stream
  await client.subscribeResource({ uri: 'calculator://history' })
  await client.setLoggingLevel('info')
  await client.callTool({ name: 'calculate', arguments: { a: 1, b: 1, op: 'add' } })
  const updated = await waitFor('notifications/resources/updated')
  t.same(updated.params, { uri: 'calculator://history' })
  const logged = await waitFor('notifications/message', n => (n.params as Structured).data?.expression === '1 + 1 = 2')
  t.equal((logged.params as Structured).level, 'info')
  await client.setLoggingLevel('error')
  await client.unsubscribeResource({ uri: 'calculator://history' })

  // Progress with the client's own token, on the request's stream
  const progress: number[] = []
  const streamed = await client.callTool({ name: 'calculate', arguments: { a: 2, b: 2, op: 'add', stream: true } }, CallToolResultSchema, { onprogress: p => progress.push(p.progress) })
  t.equal((streamed.structuredContent as Structured).result, 4)
  t.same(progress, [1, 2, 3])
  const demo: number[] = []
  const demoResult = await client.callTool({ name: 'demo_progress', arguments: { steps: 4 } }, CallToolResultSchema, { onprogress: p => demo.push(p.progress) })
  t.same(demo, [1, 2, 3, 4])
  t.same(demoResult.structuredContent, { steps: 4, completed: 4 })
  const quiet = await client.callTool({ name: 'demo_progress', arguments: { steps: 2 } })
  t.same(quiet.structuredContent, { steps: 2, completed: 2 }, 'no progress token, no progress, same answer')

  const cleared = await client.callTool({ name: 'clear_history', arguments: {} })
  t.same(cleared.structuredContent, { cleared: 7 })
  const after = await client.callTool({ name: 'get_history', arguments: {} })
  t.same((after.structuredContent as Structured).entries, [])

  await t.rejects(client.callTool({ name: 'no_such_tool', arguments: {} }), { code: -32602 })

  // Ending the session
  const sessionId = transport.sessionId!
  await transport.terminateSession()
  const gone = await fetch(server.mcpUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', 'mcp-session-id': sessionId },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'tools/list' })
  })
  t.equal(gone.status, 404)
  t.equal((await gone.json()).error.code, -32001)
})

test('a notification the client did not subscribe to is not sent', async t => {
  const server = await startServer()
  t.teardown(() => server.close())
  const { client, notifications } = await connect(server.mcpUrl)
  t.teardown(() => client.close())
  await client.callTool({ name: 'calculate', arguments: { a: 1, b: 1, op: 'add' } })
  await client.callTool({ name: 'get_history', arguments: {} })
  t.same(notifications.filter((n: ServerNotification) => n.method !== 'notifications/progress'), [])
})

test('clear_history asks clients that support elicitation, and keeps the history when declined', async t => {
  const server = await startServer()
  t.teardown(() => server.close())
  const { client } = await connect(server.mcpUrl, { elicitation: {} })
  t.teardown(() => client.close())
  const questions: string[] = []
  let answer = false
  client.setRequestHandler(ElicitRequestSchema, async request => {
    questions.push(request.params.message)
    return { action: 'accept', content: { confirm: answer } }
  })
  await client.callTool({ name: 'calculate', arguments: { a: 1, b: 1, op: 'add' } })
  const kept = await client.callTool({ name: 'clear_history', arguments: {} })
  t.same(kept.structuredContent, { cleared: 0, confirmed: false })
  t.same(questions, ['Delete all 1 entries of the calculation history?'])
  answer = true
  const cleared = await client.callTool({ name: 'clear_history', arguments: {} })
  t.same(cleared.structuredContent, { cleared: 1, confirmed: true })
})

test('notifications/cancelled stops a running tool, and its request gets no answer', async t => {
  const server = await startServer()
  t.teardown(() => server.close())
  const sessionId = await initialize(server.mcpUrl)
  // A tool still running after its POST ended would send its progress here instead.
  const stream = await openStream(server.mcpUrl, sessionId)
  t.teardown(() => stream.close())
  const response = await fetch(server.mcpUrl, {
    method: 'POST',
    headers: { ...HEADERS, 'mcp-session-id': sessionId },
    body: JSON.stringify({ jsonrpc: '2.0', id: 'slow', method: 'tools/call', params: { name: 'demo_progress', arguments: { steps: 20 }, _meta: { progressToken: 'p' } } })
  })
  t.match(response.headers.get('content-type'), /text\/event-stream/)
  const reader = response.body!.getReader()
  let text = ''
  while (!text.includes('notifications/progress')) text += new TextDecoder().decode((await reader.read()).value)
  const started = Date.now()
  const cancelled = await post(server.mcpUrl, { jsonrpc: '2.0', method: 'notifications/cancelled', params: { requestId: 'slow', reason: 'changed my mind' } }, sessionId)
  t.equal(cancelled.status, 202)
  for (let chunk = await reader.read(); !chunk.done; chunk = await reader.read()) text += new TextDecoder().decode(chunk.value)
  t.ok(Date.now() - started < 500, 'the stream ends at once, not after the 19 remaining steps')
  const messages = parseEvents(text).filter(e => e.message !== undefined).map(e => e.message)
  t.notOk(messages.some(m => m.id === 'slow'), 'no response for the cancelled request')
  await new Promise(resolve => setTimeout(resolve, 300))
  t.same(stream.events.filter(e => e.message?.method === 'notifications/progress'), [], 'the tool stopped: no progress after the cancellation')
  const after = await post(server.mcpUrl, { jsonrpc: '2.0', id: 'next', method: 'ping' }, sessionId)
  t.same(after.messages, [{ result: {}, jsonrpc: '2.0', id: 'next' }], 'the session goes on')
})
