import { execFile } from 'node:child_process'
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { test, type Test } from 'tap'
import { startRedis } from './helpers/processes.js'
import { ROOT, startNode, startTopology } from './helpers/nodes.js'
import { node22 } from './helpers/node22.js'
import { needs } from './helpers/needs.js'
import { initialize, post } from './helpers/raw-client.js'

const run = promisify(execFile)

/** 0.1.16, the `latest` release: every server scenario of `--suite all`. */
const STABLE = 'node_modules/@modelcontextprotocol/conformance'
/** 0.2.0-alpha.12 (installed under an alias): the requirement sets of the 2026-07-28 and 2025-11-25 revisions. */
const NEXT = 'node_modules/@modelcontextprotocol/conformance-next'
const NEXT_VERSION = '0.2.0-alpha.12'

interface Run {
  name: string
  package: string
  args: string[]
  /** Scored scenarios: each one must pass. */
  scored: number
  /** Whether the unscored scenarios (extensions, pending) must pass too, or are only reported. */
  unscoredMustPass: boolean
  unscored: number
}

const RUNS: Run[] = [
  { name: '0.1.16 --suite all', package: STABLE, args: ['--suite', 'all'], scored: 32, unscored: 0, unscoredMustPass: true },
  // tasks-* (an extension) and the pending scenarios run but are not scored for 2026-07-28.
  { name: `${NEXT_VERSION} --requirements 2026-07-28`, package: NEXT, args: ['--requirements', '2026-07-28'], scored: 37, unscored: 13, unscoredMustPass: false },
  { name: `${NEXT_VERSION} --requirements 2025-11-25`, package: NEXT, args: ['--requirements', '2025-11-25'], scored: 30, unscored: 3, unscoredMustPass: true }
]

interface Check { id: string, status: string, errorMessage?: string, details?: unknown }
interface Scenario {
  name: string
  scored: boolean
  /** Why it is not scored (extension, pending, added-after-release). */
  reason?: string
  checks: Check[]
  failures: Check[]
  warnings: Check[]
}

/**
 * Runs one suite against `url`. Each scenario's checks come from the checks.json it writes under
 * `-o DIR` (`server-<scenario>-<timestamp>/checks.json`); which ones are not scored comes from the
 * "Not scored for <revision>" list that ends its summary (`  ✗ tasks-lifecycle (extension)`).
 */
async function conformance (suite: Run, url: URL): Promise<{ scenarios: Scenario[], output: string, exitCode: number }> {
  const dir = await mkdtemp(join(tmpdir(), 'mcp-conformance-'))
  try {
    const cli = join(ROOT, suite.package, 'dist/index.js')
    const { stdout, stderr, code } = await run(node22!, [cli, 'server', '--url', url.href, ...suite.args, '-o', dir], { maxBuffer: 64 * 1024 * 1024, timeout: 300_000 })
      .then(({ stdout, stderr }) => ({ stdout, stderr, code: 0 }))
      .catch((error: { stdout: string, stderr: string, code: number }) => error)
    const output = `${stdout}\n${stderr}`
    const unscored = new Map([...(/^Not scored for .*$([\s\S]*)/m.exec(output)?.[1] ?? '').matchAll(/^ {2}[✓✗] (\S+) \(([^)]+)\)$/gm)].map(([, name, reason]) => [name!, reason!]))
    const scenarios: Scenario[] = []
    for (const entry of (await readdir(dir)).sort()) {
      const name = /^server-(.+)-\d{4}-\d\d-\d\dT[\d-]+Z$/.exec(entry)?.[1]
      if (name === undefined) continue
      const checks = JSON.parse(await readFile(join(dir, entry, 'checks.json'), 'utf8')) as Check[]
      const reason = unscored.get(name)
      scenarios.push({
        name,
        scored: reason === undefined,
        ...(reason !== undefined && { reason }),
        checks,
        failures: checks.filter(c => c.status === 'FAILURE'),
        warnings: checks.filter(c => c.status === 'WARNING')
      })
    }
    return { scenarios, output, exitCode: code }
  } finally {
    await rm(dir, { recursive: true, force: true })
  }
}

const describe = (c: Check) => `${c.id}: ${c.errorMessage ?? ''} ${JSON.stringify(c.details ?? {}).slice(0, 600)}`

async function runSuite (t: Test, suite: Run, url: URL) {
  await t.test(suite.name, async t => {
    const started = performance.now()
    const { scenarios, output, exitCode } = await conformance(suite, url)
    t.comment(`${scenarios.length} scenarios in ${((performance.now() - started) / 1000).toFixed(1)} s`)
    for (const s of scenarios) {
      const verdict = s.failures.length === 0 ? 'PASS' : 'FAIL'
      const skipped = s.checks.filter(c => c.status === 'SKIPPED').length
      t.comment(`${verdict} ${s.name}${s.scored ? '' : ` (not scored: ${s.reason})`}: ${s.checks.length} checks, ${s.failures.length} failed${skipped > 0 ? `, ${skipped} skipped` : ''}${s.warnings.length > 0 ? `, warnings: ${s.warnings.map(w => w.id).join(', ')}` : ''}`)
      if (!s.scored && s.failures.length > 0) t.comment(`  failing: ${s.failures.map(f => f.id).join(', ')}`)
    }
    const scored = scenarios.filter(s => s.scored)
    const unscored = scenarios.filter(s => !s.scored)
    t.equal(scored.length, suite.scored, `${suite.scored} scored server scenarios ran`)
    t.equal(unscored.length, suite.unscored, `${suite.unscored} unscored server scenarios ran`)
    const mustPass = suite.unscoredMustPass ? scenarios : scored
    const failures = mustPass.flatMap(s => s.failures.map(f => `${s.name} ${describe(f)}`))
    t.same(failures, [], `every ${suite.unscoredMustPass ? '' : 'scored '}scenario passed`)
    // The SHOULDs of input_required (re-ask for a missing answer, ignore extra ones, refuse malformed ones) are warnings only.
    const warnings = mustPass.flatMap(s => s.warnings.map(w => `${s.name} ${describe(w)}`))
    t.same(warnings, [], `no ${suite.unscoredMustPass ? '' : 'scored '}scenario warns`)
    t.equal(exitCode, 0, 'the suite exits 0', { output: output.slice(-3000) })
  })
}

/** The three suites open more sessions from one address than the 60 per window it may by default. */
const ENV = { CONFORMANCE_FIXTURES: 'true', INITIALIZE_RATE_LIMIT_MAX: '1000000' }

async function runSuites (t: Test, url: URL) {
  for (const suite of RUNS) await runSuite(t, suite, url)
}

const CAPABILITIES = { elicitation: {}, sampling: {}, roots: {} }
let nextId = 7000

/** One 2026-07-28 request, with its envelope and headers. */
function modern (url: URL, method: string, params: Record<string, unknown>, meta: Record<string, unknown> = {}) {
  const name = params.name ?? params.uri
  const body = { jsonrpc: '2.0' as const, id: nextId++, method, params: { ...params, _meta: { 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': CAPABILITIES, ...meta } } }
  return post(url, body, undefined, { 'mcp-protocol-version': '2026-07-28', 'mcp-method': method, ...(typeof name === 'string' && { 'mcp-name': name }) })
}

/** What the suite does not exercise: the fixtures in 2025-11-25 sessions, and input_required paths past its scenarios. */
async function fixtureEdges (t: Test, url: URL) {
  await t.test('the 2026-07-28 fixtures in a 2025-11-25 session answer without input_required', async t => {
    const session = await initialize(url, {})
    const call = async (name: string) => (await post(url, { jsonrpc: '2.0', id: nextId++, method: 'tools/call', params: { name, arguments: {} } }, session)).messages.at(-1)
    const asking = await call('test_input_required_result_elicitation')
    t.equal(asking.result.isError, true, 'a tool that answers input_required gives an error result')
    t.match(asking.result.content[0].text, /2026-07-28/)
    t.equal((await call('test_missing_capability')).result.isError, true, 'test_missing_capability without sampling: an error result')
    t.same((await call('test_logging_tool')).result.content, [{ type: 'text', text: 'Logging tool completed' }])
    const prompt = (await post(url, { jsonrpc: '2.0', id: nextId++, method: 'prompts/get', params: { name: 'test_input_required_result_prompt' } }, session)).messages[0]
    t.match(prompt.result.messages[0].content.text, /^Prompt with context: none/)
  })

  await t.test('an input request the client cannot fulfil is refused with -32021', async t => {
    const answer = await modern(url, 'tools/call', { name: 'test_input_required_result_elicitation', arguments: {} }, { 'io.modelcontextprotocol/clientCapabilities': { sampling: {} } })
    t.equal(answer.status, 400)
    t.match(answer.messages[0], { id: Number, error: { code: -32021, data: { requiredCapabilities: { elicitation: {} } } } })
  })

  await t.test('answers of earlier rounds travel in the requestState: a retry brings only the missing ones', async t => {
    const call = (extra: Record<string, unknown>) => modern(url, 'tools/call', { name: 'test_input_required_result_multiple_inputs', arguments: {}, ...extra })
    const first = (await call({})).messages[0].result
    t.same(Object.keys(first.inputRequests).sort(), ['client_roots', 'greeting', 'user_name'])
    const second = (await call({
      requestState: first.requestState,
      inputResponses: { user_name: { action: 'accept', content: { name: 'Ann' } }, greeting: { role: 'assistant', content: { type: 'text', text: 'Hi' }, model: 'm', stopReason: 'endTurn' } }
    })).messages[0].result
    t.equal(second.resultType, 'input_required', 'one answer missing: asked again')
    t.same(Object.keys(second.inputRequests), ['client_roots'], 'for the missing answer only')
    t.not(second.requestState, first.requestState)
    const third = (await call({ requestState: second.requestState, inputResponses: { client_roots: { roots: [{ uri: 'file:///a' }, { uri: 'file:///b' }] } } })).messages[0].result
    t.match(third, { resultType: 'complete', content: [{ type: 'text', text: 'Name: Ann; Greeting: Hi; Roots: 2' }] })
    const replayed = (await modern(url, 'tools/call', { name: 'test_input_required_result_multi_round', arguments: {}, requestState: second.requestState, inputResponses: {} })).messages[0]
    t.match(replayed, { error: { code: -32602 } }, 'a requestState is bound to its tool')
  })

  await t.test('a declined elicitation ends in an error result, not a retry loop', async t => {
    const answer = await modern(url, 'tools/call', { name: 'test_input_required_result_elicitation', arguments: {}, inputResponses: { user_name: { action: 'decline' } } })
    t.match(answer.messages[0].result, { resultType: 'complete', isError: true })
  })

  await t.test('test_logging_tool streams its log messages at the requested level and above', async t => {
    const answer = await modern(url, 'tools/call', { name: 'test_logging_tool', arguments: {} }, { 'io.modelcontextprotocol/logLevel': 'info' })
    t.match(answer.headers.get('content-type'), /^text\/event-stream/)
    t.same(answer.messages.slice(0, -1).map(m => [m.method, m.params.level]), [['notifications/message', 'info'], ['notifications/message', 'info']], 'two info messages, no debug one')
    t.match(answer.messages.at(-1), { result: { resultType: 'complete', content: [{ text: 'Logging tool completed' }] } })
  })
}

test('the official MCP conformance suites', { skip: needs('node22', 'redis-server', 'nginx') }, async t => {
  const { version } = JSON.parse(await readFile(join(ROOT, NEXT, 'package.json'), 'utf8')) as { version: string }
  t.equal(version, NEXT_VERSION, `the requirement sets come from conformance ${NEXT_VERSION} (its scenario counts are asserted)`)

  await t.test('one node, memory mode', async t => {
    const node = await startNode('conformance-memory', ENV)
    t.teardown(() => node.kill())
    await runSuites(t, node.mcpUrl)
    await fixtureEdges(t, node.mcpUrl)
  })

  await t.test('three Redis nodes behind nginx round-robin', async t => {
    const redis = await startRedis()
    const env = { ...ENV, USE_REDIS: 'true', REDIS_URL: redis.url }
    // The suites open sessions far faster than one client should (33 scenarios in two seconds):
    // past the edge's burst of 20. The edge limit itself is attacked in hardening.test.ts.
    const topology = await startTopology(['conformance-a', 'conformance-b', 'conformance-c'], env, { sessionBurst: 1000 })
    const { nodes, lb } = topology
    t.teardown(async () => {
      await topology.stop()
      await redis.stop()
    })
    await runSuites(t, lb.mcpUrl)
    await fixtureEdges(t, lb.mcpUrl)
    const served = await Promise.all(nodes.map(async n => {
      const text = await (await fetch(`${n.url}/metrics`)).text()
      return [...text.matchAll(/^mcp_tool_calls_total\{[^}]*\} (\d+)$/gm)].reduce((sum, m) => sum + Number(m[1]), 0)
    }))
    t.ok(served.every(n => n > 0), `every node served tool calls (${served.join(', ')})`)
  })
})
