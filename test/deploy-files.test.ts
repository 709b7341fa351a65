import { execFile, spawn } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { test } from 'tap'
import { ROOT, writeNginxConfig } from './helpers/nodes.js'
import { connect, startServer } from './helpers/server.js'

const run = promisify(execFile)

/** Feeds text to a command's standard input; resolves with its exit code and output. */
function pipe (command: string, args: string[], input: string): Promise<{ code: number | null, output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args)
    let output = ''
    child.stdout.on('data', d => { output += d })
    child.stderr.on('data', d => { output += d })
    child.on('error', reject)
    child.on('close', code => resolve({ code, output }))
    child.stdin.end(input)
  })
}

test('the compose file passes a real compose parser and describes the deployment', async t => {
  const file = join(ROOT, 'docker/docker-compose.yml')
  await run('docker-compose', ['-f', file, '--profile', 'monitoring', 'config', '-q'])
  const { stdout } = await run('docker-compose', ['-f', file, '--profile', 'monitoring', 'config', '--services'])
  t.same(stdout.trim().split('\n').sort(), ['app', 'grafana', 'nginx', 'prometheus', 'redis'])
  const text = await readFile(file, 'utf8')
  t.match(text, /replicas: 3/)
  t.match(text, /--appendonly", "yes"/)
  t.match(text, /\.\/nginx\/mcp\.conf:\/etc\/nginx\/conf\.d\/default\.conf/)
  t.match(text, /condition: service_healthy/)
})

test('the Dockerfile passes the linter and keeps its promises', async t => {
  const file = join(ROOT, 'docker/Dockerfile')
  await run(join(ROOT, 'node_modules/.bin/dockerfile-utils'), ['lint', file])
  const text = await readFile(file, 'utf8')
  const froms = [...text.matchAll(/^FROM (\S+)/gm)].map(m => m[1])
  t.equal(froms.length, 2, 'multi-stage')
  t.ok(froms.every(f => f?.startsWith('node:22-')), 'Node 22, the major CI also runs the suite on')
  t.match(text, /npm ci --omit=dev/)
  t.match(text, /^USER node$/m)
  t.match(text, /^HEALTHCHECK .*\n.*\/health/m)
  t.match(text, /^ENTRYPOINT \["\/usr\/bin\/tini", "--"\]$/m)
  t.match(text, /fastify start -o/)
  t.match(text, /HOST=0\.0\.0\.0/)
})

test('nginx accepts docker/nginx/mcp.conf', async t => {
  const { dir } = await writeNginxConfig([1453, 1454, 1455])
  const { stderr } = await run('nginx', ['-t', '-p', dir, '-c', join(dir, 'nginx.conf')])
  t.match(stderr, /syntax is ok/)
  t.match(stderr, /test is successful/)
})

test('/metrics passes promtool check metrics', async t => {
  const server = await startServer({ SAMPLE_TOOL_NAME: 'echo' })
  t.teardown(() => server.close())
  const { client } = await connect(server.mcpUrl)
  t.teardown(() => client.close())
  await client.callTool({ name: 'calculate', arguments: { a: 1, b: 2, op: 'add' } })
  await client.callTool({ name: 'calculate', arguments: { a: 1, b: 0, op: 'divide' } })
  const text = await (await fetch(new URL('/metrics', server.url))).text()
  for (const name of ['mcp_active_sessions', 'mcp_cached_sessions', 'mcp_sessions_created_total', 'mcp_sessions_rebuilt_total',
    'mcp_sessions_expired_total', 'mcp_sessions_deleted_total', 'mcp_tool_calls_total', 'mcp_tool_call_duration_seconds',
    'mcp_sse_streams_open', 'mcp_sse_events_stored_total', 'mcp_sse_events_replayed_total', 'mcp_bus_messages_total',
    'mcp_rate_limited_requests_total', 'mcp_storage_errors_total', 'http_request_duration_seconds', 'process_cpu_seconds_total']) {
    t.match(text, new RegExp(`^# TYPE ${name} `, 'm'), name)
  }
  const { code, output } = await pipe('promtool', ['check', 'metrics'], text)
  t.equal(code, 0, output)
})
