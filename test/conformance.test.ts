import { execFile } from 'node:child_process'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { test, type Test } from 'tap'
import { startRedis } from './helpers/processes.js'
import { ROOT, startNode, startTopology } from './helpers/nodes.js'
import { node22 } from './helpers/node22.js'
import { needs } from './helpers/needs.js'

const run = promisify(execFile)

const SCENARIOS = 32

async function conformance (url: URL): Promise<{ results: Array<{ scenario: string, passed: number, failed: number }>, output: string }> {
  const cli = join(ROOT, 'node_modules/@modelcontextprotocol/conformance/dist/index.js')
  const { stdout, stderr } = await run(node22!, [cli, 'server', '--url', url.href, '--suite', 'all'], { maxBuffer: 64 * 1024 * 1024, timeout: 300_000 })
    .catch((error: { stdout: string, stderr: string }) => error)
  const output = `${stdout}\n${stderr}`
  const results = [...output.matchAll(/^[✓✗] (\S+): (\d+) passed, (\d+) failed$/gm)]
    .map(([, scenario, passed, failed]) => ({ scenario: scenario!, passed: Number(passed), failed: Number(failed) }))
  return { results, output }
}

function report (t: Test, results: Array<{ scenario: string, passed: number, failed: number }>, output: string) {
  for (const r of results) t.comment(`${r.failed === 0 ? 'PASS' : 'FAIL'} ${r.scenario}: ${r.passed} checks passed, ${r.failed} failed`)
  t.equal(results.length, SCENARIOS, `all ${SCENARIOS} server scenarios ran`)
  const failed = results.filter(r => r.failed > 0).map(r => r.scenario)
  t.same(failed, [], failed.length === 0 ? 'every scenario passed' : output.slice(-4000))
}

test('the official MCP conformance suite', { skip: needs('node22', 'redis-server', 'nginx') }, async t => {
  await t.test('one node, memory mode', async t => {
    const node = await startNode('conformance-memory', { CONFORMANCE_FIXTURES: 'true' })
    t.teardown(() => node.kill())
    const { results, output } = await conformance(node.mcpUrl)
    report(t, results, output)
  })

  await t.test('three Redis nodes behind nginx round-robin', async t => {
    const redis = await startRedis()
    const env = { CONFORMANCE_FIXTURES: 'true', USE_REDIS: 'true', REDIS_URL: redis.url }
    const topology = await startTopology(['conformance-a', 'conformance-b', 'conformance-c'], env)
    const { nodes, lb } = topology
    t.teardown(async () => {
      await topology.stop()
      await redis.stop()
    })
    const { results, output } = await conformance(lb.mcpUrl)
    report(t, results, output)
    const served = await Promise.all(nodes.map(async n => {
      const text = await (await fetch(`${n.url}/metrics`)).text()
      return [...text.matchAll(/^mcp_tool_calls_total\{[^}]*\} (\d+)$/gm)].reduce((sum, m) => sum + Number(m[1]), 0)
    }))
    t.ok(served.every(n => n > 0), `every node served tool calls (${served.join(', ')})`)
  })
})
