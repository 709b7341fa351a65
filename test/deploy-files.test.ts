import { execFile, spawn } from 'node:child_process'
import { readFile, mkdtemp, writeFile } from 'node:fs/promises'
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { promisify } from 'node:util'
import { test, type Test } from 'tap'
import { parse as parseYaml } from 'yaml'
import { ROOT, startNginx, writeNginxConfig } from './helpers/nodes.js'
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

const COMPOSE_FILE = join(ROOT, 'docker/docker-compose.yml')
const ENV_EXAMPLE = join(ROOT, 'docker/.env.example')

/** The environment without the deployment's own variables, so that only the env file sets them. */
function cleanEnv (): NodeJS.ProcessEnv {
  const env = { ...process.env }
  for (const name of Object.keys(env)) if (/^(REDIS_PASSWORD|GRAFANA_ADMIN_PASSWORD|MCP_|COMPOSE_)/.test(name)) delete env[name]
  return env
}

/** `docker-compose config` of the whole file (monitoring and auth profiles included), as an object. */
async function composeConfig (envFile: string): Promise<any> {
  const { stdout } = await run('docker-compose', ['--env-file', envFile, '-f', COMPOSE_FILE, '--profile', 'monitoring', '--profile', 'auth', 'config'], { env: cleanEnv() })
  return parseYaml(stdout)
}

/** KEY=value lines of an env file. */
function readEnvFile (text: string): Record<string, string> {
  return Object.fromEntries(text.split('\n').filter(l => /^[A-Z_]+=/.test(l)).map(l => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]))
}

test('the compose file passes a real compose parser and describes the deployment', async t => {
  await run('docker-compose', ['--env-file', ENV_EXAMPLE, '-f', COMPOSE_FILE, '--profile', 'monitoring', 'config', '-q'], { env: cleanEnv() })
  const { stdout } = await run('docker-compose', ['--env-file', ENV_EXAMPLE, '-f', COMPOSE_FILE, '--profile', 'monitoring', 'config', '--services'], { env: cleanEnv() })
  t.same(stdout.trim().split('\n').sort(), ['app', 'app-auth', 'auth', 'grafana', 'nginx', 'nginx-auth', 'prometheus', 'redis'])
  const config = await composeConfig(ENV_EXAMPLE)
  const { app, redis, nginx } = config.services
  t.equal(app.deploy.replicas, 3)
  t.same(app.depends_on, { redis: { condition: 'service_healthy' } }, 'the replicas start once Redis is healthy')
  t.same(nginx.depends_on, { app: { condition: 'service_healthy' } }, 'nginx starts once the replicas are live')
  t.equal(app.healthcheck, undefined, 'the replicas keep the image\'s liveness check')
  t.ok(redis.healthcheck.test.join(' ').includes('redis-cli ping'))
  t.ok(nginx.volumes.some((v: string) => v.endsWith('/docker/nginx/mcp.conf:/etc/nginx/mcp.conf:ro')), 'nginx runs docker/nginx/mcp.conf')
  t.ok(nginx.volumes.some((v: string) => v.endsWith('/docker/nginx/nginx.conf:/etc/nginx/nginx.conf:ro')))
  t.equal(nginx.image, 'nginx:1.27-bookworm')
  t.equal(redis.image, 'redis:7-bookworm')
})

test('every service is hardened', async t => {
  const config = await composeConfig(ENV_EXAMPLE)
  for (const [name, service] of Object.entries<any>(config.services)) {
    t.ok(/^\d+[kmg]?$/.test(String(service.mem_limit)), `${name}: memory limit ${service.mem_limit}`)
    t.ok(service.pids_limit > 0, `${name}: pids limit ${service.pids_limit}`)
    t.same(service.cap_drop, ['ALL'], `${name}: every capability dropped`)
    t.same(service.security_opt, ['no-new-privileges:true'], `${name}: no-new-privileges`)
    t.equal(service.read_only, true, `${name}: read-only root filesystem`)
    t.equal(service.logging?.options?.['max-size'], '10m', `${name}: logs rotated`)
    for (const port of service.ports ?? []) {
      t.match(String(port.published === undefined ? port : `${port.host_ip}:${port.published}`), /^127\.0\.0\.1:/, `${name}: publishes on 127.0.0.1 only`)
    }
  }
  t.same(Object.entries<any>(config.services).filter(([, s]) => s.ports !== undefined).map(([name]) => name).sort(), ['auth', 'grafana', 'nginx', 'nginx-auth', 'prometheus'],
    'Redis and the replicas publish no port')
  t.same(config.services.nginx.ports, ['127.0.0.1:8080:8080/tcp'])
  t.equal(config.services.nginx.user, '101:101', 'nginx runs unprivileged')
  t.equal(config.services.redis.user, '999:999', 'Redis runs unprivileged')
})

test('the networks: Redis and the replicas are internal; the replicas trust only the backend as proxies', async t => {
  const config = await composeConfig(ENV_EXAMPLE)
  const { backend } = config.networks
  t.equal(backend.internal, true, 'no route out, no published port')
  const subnet = backend.ipam.config[0].subnet
  t.match(subnet, /^\d+\.\d+\.\d+\.\d+\/\d+$/)
  t.same(Object.keys(config.services.redis.networks), ['backend'])
  t.same(Object.keys(config.services.app.networks), ['backend'])
  t.same(Object.keys(config.services.nginx.networks).sort(), ['backend', 'edge'])
  t.ok(Object.keys(config.services.prometheus.networks).includes('backend'), 'Prometheus scrapes the replicas directly')
  t.equal(config.services.app.environment.TRUST_PROXY, subnet, 'TRUST_PROXY is the backend subnet, where nginx is')
  t.same(Object.keys(config.services['app-auth'].networks), ['backend'])
  t.equal(config.services['app-auth'].environment.TRUST_PROXY, subnet)
})

test('the auth profile: replicas that require the development authorization server\'s tokens', async t => {
  const config = await composeConfig(ENV_EXAMPLE)
  const { app, 'app-auth': protectedApp, auth, 'nginx-auth': protectedNginx } = config.services
  t.equal(app.environment.AUTH_DISABLED, 'true', 'the default deployment is open, and says so')
  t.equal(protectedApp.environment.AUTH_DISABLED, undefined, 'the protected replicas are not told to run open')
  t.equal(protectedApp.environment.AUTH_ISSUER, auth.environment.AUTH_ISSUER, 'the replicas trust the development authorization server')
  t.equal(protectedApp.environment.PUBLIC_URL, auth.environment.AUTH_RESOURCES, 'which issues tokens for their public URL')
  t.equal(protectedApp.environment.PUBLIC_URL, 'http://localhost:8081/mcp')
  t.same(protectedNginx.ports, ['127.0.0.1:8081:8080/tcp'])
  t.ok(protectedNginx.volumes.some((v: string) => v.endsWith('/docker/nginx/mcp-upstreams-auth.conf:/etc/nginx/mcp-upstreams.conf:ro')), 'its load balancer sends to the protected replicas')
  t.equal(auth.build.target, 'dev-auth')
  t.equal(protectedApp.deploy.replicas, 3)
})

test('Redis: a password from the environment, a memory bound, no eviction, append-only', async t => {
  const raw = await readFile(COMPOSE_FILE, 'utf8')
  const example = readEnvFile(await readFile(ENV_EXAMPLE, 'utf8'))
  t.ok(example.REDIS_PASSWORD !== undefined && example.GRAFANA_ADMIN_PASSWORD !== undefined, 'the example env file names both secrets')
  t.notOk(raw.includes(example.REDIS_PASSWORD!), 'no password in the compose file')
  const config = await composeConfig(ENV_EXAMPLE)
  const { redis, app, grafana } = config.services
  const command = redis.command.join(' ')
  t.match(command, /--maxmemory \d+mb/)
  t.match(command, /--maxmemory-policy noeviction/)
  t.match(command, /--appendonly yes/)
  t.match(command, /requirepass %s.*\$REDISCLI_AUTH/, 'requirepass comes from the environment')
  t.equal(redis.environment.REDISCLI_AUTH, example.REDIS_PASSWORD)
  t.equal(app.environment.REDIS_URL, `redis://:${example.REDIS_PASSWORD}@redis:6379`, 'the replicas authenticate')
  t.equal(grafana.environment.GF_SECURITY_ADMIN_PASSWORD, example.GRAFANA_ADMIN_PASSWORD)
  t.equal(grafana.environment.GF_AUTH_ANONYMOUS_ENABLED, 'false', 'no anonymous Grafana')

  // Without the secrets, compose refuses to start, naming the variable.
  const empty = join(await mkdtemp(join(tmpdir(), 'mcp-compose-')), 'empty.env')
  await writeFile(empty, '')
  const refused = await run('docker-compose', ['--env-file', empty, '-f', COMPOSE_FILE, 'config', '-q'], { env: cleanEnv() }).then(() => '', (error: { stderr: string }) => error.stderr)
  t.match(refused, /REDIS_PASSWORD/, 'no password, no deployment')
  const { stdout: ignored } = await run('git', ['check-ignore', 'docker/.env'], { cwd: ROOT }).catch(() => ({ stdout: '' }))
  t.equal(ignored.trim(), 'docker/.env', 'git ignores docker/.env')
})

test('Prometheus scrapes the replicas directly, and its config passes promtool', async t => {
  const file = join(ROOT, 'docker/prometheus/prometheus.yml')
  await run('promtool', ['check', 'config', file])
  const config = parseYaml(await readFile(file, 'utf8'))
  t.same(config.scrape_configs[0].dns_sd_configs[0], { names: ['app'], type: 'A', port: 1453, refresh_interval: '30s' })
  t.equal(config.scrape_configs[0].metrics_path, '/metrics')
})

test('the Dockerfile passes the linter and keeps its promises', async t => {
  const file = join(ROOT, 'docker/Dockerfile')
  await run(join(ROOT, 'node_modules/.bin/dockerfile-utils'), ['lint', file])
  const text = await readFile(file, 'utf8')
  const froms = [...text.matchAll(/^FROM (\S+)/gm)].map(m => m[1])
  t.same(froms, ['node:22-bookworm-slim', 'build', 'node:22-bookworm-slim'], 'multi-stage: build, the development authorization server (from build), the runtime')
  t.ok(froms.every(f => f === 'build' || f?.startsWith('node:22-')), 'Node 22, the major CI also runs the suite on')
  t.match(text, /npm ci --omit=dev/)
  t.match(text, /^USER node$/m)
  t.match(text, /^HEALTHCHECK .*\n.*\/health\/live'/m, 'the health check is liveness, not readiness')
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

test('nginx accepts the container\'s own nginx.conf with mcp.conf', async t => {
  const dir = await mkdtemp(join(tmpdir(), 'mcp-nginx-main-'))
  const main = await readFile(join(ROOT, 'docker/nginx/nginx.conf'), 'utf8')
  // The container's paths, here: mime.types of this machine, the files of docker/nginx, a file for
  // the access log (the container's stdout is a pipe; this process's is a socket nginx cannot open).
  await writeFile(join(dir, 'nginx.conf'), main.replace('include mime.types;', 'include /etc/nginx/mime.types;')
    .replace('/tmp/nginx.pid', join(dir, 'nginx.pid')).replace('access_log /dev/stdout', `access_log ${join(dir, 'access.log')}`))
  for (const file of ['mcp.conf', 'mcp-upstreams.conf', 'mcp-listen.conf']) {
    const text = await readFile(join(ROOT, 'docker/nginx', file), 'utf8')
    await writeFile(join(dir, file), file === 'mcp-upstreams.conf' ? text.replace(/server app:1453/, 'server 127.0.0.1:1453') : text)
  }
  const { stderr } = await run('nginx', ['-t', '-e', 'stderr', '-p', dir, '-c', join(dir, 'nginx.conf')]).catch((error: { stderr: string }) => ({ stderr: error.stderr }))
  t.match(stderr, /test is successful/, stderr)
})

interface FakeNode {
  server: Server
  port: number
  /** ok: 200 with the request's headers; unavailable: the server's own JSON-RPC 503. */
  mode: 'ok' | 'unavailable'
  seen: Array<{ method: string, url: string, headers: IncomingHttpHeaders }>
}

async function fakeNode (): Promise<FakeNode> {
  const node = { mode: 'ok', seen: [] } as unknown as FakeNode
  node.server = createServer((req, res) => {
    node.seen.push({ method: req.method!, url: req.url!, headers: req.headers })
    req.resume()
    req.on('end', () => {
      if (node.mode === 'unavailable') {
        res.writeHead(503, { 'content-type': 'application/json; charset=utf-8', 'retry-after': '2' })
        res.end(JSON.stringify({ jsonrpc: '2.0', error: { code: -32000, message: 'Service Unavailable: session storage is unreachable' }, id: null }))
      } else {
        res.writeHead(200, { 'content-type': 'application/json', 'x-served-by': String(node.port) })
        res.end(JSON.stringify({ ok: true }))
      }
    })
  })
  await new Promise<void>(resolve => node.server.listen(0, '127.0.0.1', resolve))
  node.port = (node.server.address() as { port: number }).port
  return node
}

test('the load balancer speaks JSON-RPC: its own answers, 503s passed through, limits', async t => {
  const nodes = await Promise.all([fakeNode(), fakeNode(), fakeNode()])
  const lb = await startNginx(nodes.map(n => n.port))
  t.teardown(async () => {
    await lb.stop()
    for (const node of nodes) node.server.close()
  })
  const initialize = (headers: Record<string, string> = {}) => fetch(lb.mcpUrl, {
    method: 'POST',
    headers: { 'content-type': 'application/json', accept: 'application/json, text/event-stream', ...headers },
    body: JSON.stringify({ jsonrpc: '2.0', id: 1, method: 'initialize', params: {} })
  })
  const expectJsonError = async (t: Test, response: Response, status: number, code: number, retryAfter: boolean) => {
    t.equal(response.status, status)
    t.match(response.headers.get('content-type'), /^application\/json/)
    t.equal(response.headers.get('server'), 'nginx', 'no version in the Server header')
    if (retryAfter) t.ok(Number(response.headers.get('retry-after')) >= 1, 'Retry-After')
    t.match(await response.json(), { jsonrpc: '2.0', error: { code }, id: null })
  }

  await t.test('X-Forwarded-For is the connecting address, never what the client sent', async t => {
    const response = await fetch(`${lb.url}/mcp`, { method: 'DELETE', headers: { 'x-forwarded-for': '203.0.113.7, 198.51.100.1', 'mcp-session-id': 'x' } })
    await response.text()
    const last = nodes.flatMap(n => n.seen).at(-1)!
    t.equal(last.headers['x-forwarded-for'], '127.0.0.1')
    t.equal(response.headers.get('server'), 'nginx')
  })

  await t.test('/metrics and /health are not served on the public listener; /health/live is', async t => {
    const before = nodes.reduce((n, node) => n + node.seen.length, 0)
    for (const path of ['/metrics', '/metrics?name=x', '//metrics', '/%6Detrics', '/metrics/', '/health']) {
      await expectJsonError(t, await fetch(`${lb.url}${path}`), 404, -32601, false)
    }
    t.equal(nodes.reduce((n, node) => n + node.seen.length, 0), before, 'no node was asked')
    t.equal((await fetch(`${lb.url}/health/live`)).status, 200)
  })

  await t.test('every node answering 503: the node\'s own JSON 503 with Retry-After, and every node stays in rotation', async t => {
    for (const node of nodes) node.mode = 'unavailable'
    for (const node of nodes) node.seen.length = 0
    for (let i = 0; i < 12; i++) {
      const response = await initialize({ 'mcp-session-id': 'session' })
      t.equal(response.status, 503)
      t.equal(response.headers.get('retry-after'), '2', 'the node\'s Retry-After')
      t.match(await response.json(), { jsonrpc: '2.0', error: { code: -32000, message: /session storage/ } })
    }
    t.ok(nodes.every(n => n.seen.length >= 12), `each request tried every node: ${nodes.map(n => n.seen.length).join(', ')}`)
    for (const node of nodes) node.mode = 'ok'
    const recovered = await Promise.all([0, 1, 2].map(() => initialize({ 'mcp-session-id': 'session' })))
    t.same(recovered.map(r => r.status), [200, 200, 200], 'no node was marked failed: the next requests are served at once')
    t.equal(new Set(recovered.map(r => r.headers.get('x-served-by'))).size, 3, 'by all three nodes')
  })

  await t.test('one node answering 503: POSTs go to the next node', async t => {
    nodes[0]!.mode = 'unavailable'
    const answers = await Promise.all(Array.from({ length: 12 }, () => initialize({ 'mcp-session-id': 'session' })))
    t.same(answers.map(a => a.status), Array(12).fill(200))
    nodes[0]!.mode = 'ok'
  })

  await t.test('no node reachable: nginx\'s own JSON 503 with Retry-After, never an HTML page', async t => {
    // Three ports that were free a moment ago; nothing listens on them.
    const down = await Promise.all([fakeNode(), fakeNode(), fakeNode()])
    const ports = down.map(n => n.port)
    await Promise.all(down.map(n => new Promise(resolve => n.server.close(resolve))))
    const { dir, port } = await writeNginxConfig(ports)
    const child = spawn('nginx', ['-p', dir, '-c', join(dir, 'nginx.conf')], { stdio: 'ignore' })
    t.teardown(() => { child.kill('SIGQUIT') })
    const url = `http://127.0.0.1:${port}`
    let response: Response | undefined
    for (let i = 0; i < 100 && response === undefined; i++) {
      response = await fetch(`${url}/mcp`, { method: 'POST', body: '{}', headers: { 'content-type': 'application/json', 'mcp-session-id': 's' } }).catch(async () => { await new Promise(resolve => setTimeout(resolve, 50)); return undefined })
    }
    await expectJsonError(t, response!, 503, -32000, true)
    await expectJsonError(t, await fetch(`${url}/health/live`), 503, -32000, true)
  })

  await t.test('session creation is rate limited per address: JSON 429 with Retry-After; requests in a session are not', async t => {
    const burst = await Promise.all(Array.from({ length: 40 }, () => initialize()))
    const limited = burst.filter(r => r.status === 429)
    t.ok(limited.length >= 10 && limited.length <= 25, `40 initializes at once from one address: ${limited.length} answered 429 (burst 20)`)
    await expectJsonError(t, limited[0]!, 429, -32000, true)
    await Promise.all(burst.map(r => r.bodyUsed ? undefined : r.body?.cancel()))
    const inSession = await Promise.all(Array.from({ length: 40 }, () => initialize({ 'mcp-session-id': 'session' })))
    t.same(inSession.filter(r => r.status !== 200).length, 0, 'POSTs with Mcp-Session-Id are not limited by nginx')
  })

  await t.test('a body above 2 MiB: JSON 413', async t => {
    const response = await fetch(lb.mcpUrl, { method: 'POST', headers: { 'content-type': 'application/json', 'mcp-session-id': 's' }, body: 'x'.repeat(3 * 1024 * 1024) })
    await expectJsonError(t, response, 413, -32600, false)
  })
})

test('/metrics passes promtool check metrics', async t => {
  const server = await startServer({ SAMPLE_TOOL_NAME: 'echo' })
  t.teardown(() => server.close())
  const { client } = await connect(server.mcpUrl)
  t.teardown(() => client.close())
  await client.callTool({ name: 'calculate', arguments: { a: 1, b: 2, op: 'add' } })
  await client.callTool({ name: 'calculate', arguments: { a: 1, b: 0, op: 'divide' } })
  const text = await (await fetch(new URL('/metrics', server.url))).text()
  for (const name of ['mcp_active_sessions', 'mcp_active_history_handles', 'mcp_cached_sessions', 'mcp_sessions_created_total', 'mcp_sessions_rebuilt_total',
    'mcp_sessions_expired_total', 'mcp_history_handles_expired_total', 'mcp_sessions_deleted_total', 'mcp_tool_calls_total', 'mcp_tool_call_duration_seconds',
    'mcp_sse_streams_open', 'mcp_sse_events_stored_total', 'mcp_sse_events_replayed_total', 'mcp_bus_messages_total',
    'mcp_rate_limited_requests_total', 'mcp_storage_errors_total', 'http_request_duration_seconds', 'process_cpu_seconds_total']) {
    t.match(text, new RegExp(`^# TYPE ${name} `, 'm'), name)
  }
  const { code, output } = await pipe('promtool', ['check', 'metrics'], text)
  t.equal(code, 0, output)
})
