// The deployment as shipped: docker/Dockerfile built, docker/docker-compose.yml brought up (Redis,
// three replicas, nginx), an MCP client through nginx, Redis stopped and started, the replicas
// restarted one by one under load, everything torn down. Where no registry is reachable, the base
// images are stand-ins built by test/container/build-standins.sh under the tags the files name.
import { execFile, spawn } from 'node:child_process'
import { randomBytes } from 'node:crypto'
import { mkdtemp, rm, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { setTimeout as sleep } from 'node:timers/promises'
import { promisify } from 'node:util'
import t from 'tap'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { ROOT } from './helpers/nodes.js'
import { freePort, waitUntil } from './helpers/processes.js'
import { callTool, initialize, post } from './helpers/raw-client.js'

type Structured = Record<string, any>

const run = promisify(execFile)
const COMPOSE_FILE = join(ROOT, 'docker/docker-compose.yml')
const BASE_IMAGES = ['node:22-bookworm-slim', 'redis:7-bookworm', 'nginx:1.27-bookworm']
const APP_IMAGE = 'calculator-mcp-server:container-test'
const PROJECT_PREFIX = 'mcpcontainertest'
const LOAD_CLIENTS = 4

// A cold run builds a Debian root filesystem, three base images and the app image.
t.setTimeout(30 * 60_000)

async function succeeds (command: string, args: string[]): Promise<boolean> {
  return run(command, args, { timeout: 30_000 }).then(() => true, () => false)
}

/** Why this machine cannot run the suite, naming the Debian package that is missing. */
async function missing (): Promise<string | undefined> {
  if (!await succeeds('docker', ['--version'])) return 'docker is missing (Debian package: docker.io)'
  if (!await succeeds('docker-compose', ['--version'])) return 'docker-compose is missing (Debian package: docker-compose)'
  if (!await succeeds('docker', ['version', '--format', '{{.Server.Version}}'])) {
    return await succeeds('sh', ['-c', 'command -v dockerd'])
      ? 'dockerd is not running (start it: dockerd > /var/log/dockerd.log 2>&1 &)'
      : 'dockerd is missing (Debian package: docker.io)'
  }
  const present = await Promise.all(BASE_IMAGES.map(image => succeeds('docker', ['image', 'inspect', image])))
  if (present.includes(false) && !await succeeds('sh', ['-c', 'command -v debootstrap'])) {
    return 'debootstrap is missing (Debian package: debootstrap), needed to build the stand-in base images'
  }
  return undefined
}

/** Runs a command to its end, its output kept for the failure message. */
function runLogged (command: string, args: string[], env: NodeJS.ProcessEnv, timeoutMs: number): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(command, args, { env, cwd: ROOT, stdio: ['ignore', 'pipe', 'pipe'] })
    let output = ''
    child.stdout.on('data', d => { output += d })
    child.stderr.on('data', d => { output += d })
    const timer = setTimeout(() => child.kill('SIGTERM'), timeoutMs)
    child.on('error', reject)
    child.on('close', code => {
      clearTimeout(timer)
      if (code === 0) resolve(output)
      else reject(new Error(`${command} ${args.join(' ')} exited with ${code}:\n${output.slice(-6000)}`))
    })
  })
}

function alive (pid: number): boolean {
  try { process.kill(pid, 0); return true } catch { return false }
}

const seconds = (since: number) => `${((performance.now() - since) / 1000).toFixed(1)} s`

const reason = await missing()
// CI installs and starts everything the suite needs (.ci/run): there a missing piece is a failure.
if (reason !== undefined && process.env.CI === 'true') t.fail(`the container suite cannot run in CI: ${reason}`)

t.test('the compose deployment, built and run: MCP through nginx, Redis outage, rolling restart', { skip: reason ?? false }, async t => {
  const started = performance.now()
  const dir = await mkdtemp(join(tmpdir(), 'mcp-container-'))
  const envFile = join(dir, 'compose.env')
  const redisPassword = randomBytes(24).toString('hex')
  await writeFile(envFile, `REDIS_PASSWORD=${redisPassword}\nGRAFANA_ADMIN_PASSWORD=${randomBytes(12).toString('hex')}\n`, { mode: 0o600 })
  const port = await freePort()
  const authPort = await freePort()
  const issuerPort = await freePort()
  const project = `${PROJECT_PREFIX}${process.pid}`
  const subnet = `172.30.${100 + (process.pid % 150)}.0/24`
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    DOCKER_BUILDKIT: '0', // the legacy builder: BuildKit fetches its frontend image from Docker Hub
    COMPOSE_DOCKER_CLI_BUILD: '0',
    MCP_IMAGE: APP_IMAGE,
    MCP_HTTP_PORT: String(port),
    MCP_BACKEND_SUBNET: subnet,
    MCP_AUTH_IMAGE: `${APP_IMAGE}-dev-auth`,
    MCP_AUTH_HTTP_PORT: String(authPort),
    MCP_AUTH_ISSUER_PORT: String(issuerPort),
    MCP_AUTH_CLIENTS: 'ci:ci-secret:calculator:use calculator:admin'
  }
  const composeArgs = (args: string[]) => ['--env-file', envFile, '-p', project, '-f', COMPOSE_FILE, ...args]
  const compose = (args: string[], timeoutMs = 120_000) => runLogged('docker-compose', composeArgs(args), env, timeoutMs)
  const docker = async (args: string[]) => (await run('docker', args, { maxBuffer: 16 * 1024 * 1024 })).stdout.trim()

  // Projects left by an earlier run that was killed before its teardown.
  const projects = (await docker(['ps', '-a', '--format', '{{.Label "com.docker.compose.project"}}'])).split('\n')
  for (const stale of new Set(projects.filter(p => p.startsWith(PROJECT_PREFIX) && p !== project))) {
    const pid = Number(stale.slice(PROJECT_PREFIX.length))
    if (alive(pid)) continue
    await runLogged('docker-compose', ['--env-file', envFile, '-p', stale, '-f', COMPOSE_FILE, '--profile', 'auth', 'down', '-v', '--remove-orphans', '-t', '1'], env, 120_000).catch(() => {})
  }

  t.teardown(async () => {
    await compose(['--profile', 'auth', 'down', '-v', '--remove-orphans', '-t', '5']).catch(error => console.error(String(error)))
    await rm(dir, { recursive: true, force: true })
  })

  let step = performance.now()
  const standins = await runLogged('bash', [join(ROOT, 'test/container/build-standins.sh')], env, 25 * 60_000)
  t.comment(`base images ready in ${seconds(step)}: ${standins.split('\n').filter(l => l.startsWith('[stand-ins')).map(l => l.replace(/^\[stand-ins [\d:]+\] /, '')).join('; ')}`)

  step = performance.now()
  await compose(['build', 'app'], 20 * 60_000)
  t.comment(`app image built from docker/Dockerfile in ${seconds(step)}`)
  // The build stage gets a tag of its own (all cached by now), so that the images of earlier builds
  // of this Dockerfile, and only those, are left dangling and can go: a build after a change of
  // the sources then still finds its dependencies' layers.
  await runLogged('docker', ['build', '-q', '--target', 'build', '-t', `${APP_IMAGE}-build`, '-f', join(ROOT, 'docker/Dockerfile'), ROOT], env, 10 * 60_000)
  await docker(['image', 'prune', '-f', '--filter', 'label=org.opencontainers.image.title=calculator-mcp-server'])

  step = performance.now()
  const base = `http://127.0.0.1:${port}`
  const mcpUrl = new URL(`${base}/mcp`)
  try {
    await compose(['up', '-d', '--no-build'], 5 * 60_000)
    await waitUntil('nginx to answer through the published port', async () => (await fetch(`${base}/health/live`)).ok, 60_000)
  } catch (error) {
    const logs = await compose(['logs', '--no-color', '--tail', '40']).catch(e => String(e))
    throw new Error(`${String(error)}\n--- the containers' logs ---\n${logs}`)
  }
  t.comment(`stack up in ${seconds(step)}`)

  const containerIds = async (service: string) => (await docker(['ps', '-q', '--filter', `label=com.docker.compose.project=${project}`, '--filter', `label=com.docker.compose.service=${service}`])).split('\n').filter(Boolean)
  const inspect = async (id: string) => JSON.parse(await docker(['inspect', id]))[0]
  const apps = await containerIds('app')
  t.equal(apps.length, 3, 'three replicas')

  await t.test('every container runs hardened; only nginx is published, on 127.0.0.1', async t => {
    for (const service of ['redis', 'app', 'nginx']) {
      for (const id of await containerIds(service)) {
        const { HostConfig: host, Config: config, Name: name } = await inspect(id)
        t.equal(host.ReadonlyRootfs, true, `${name}: read-only root filesystem`)
        t.same(host.CapDrop, ['ALL'], `${name}: every capability dropped`)
        t.ok(host.SecurityOpt?.includes('no-new-privileges:true'), `${name}: no-new-privileges`)
        t.ok(host.Memory > 0, `${name}: memory limit ${host.Memory}`)
        t.ok(host.PidsLimit > 0, `${name}: pids limit ${host.PidsLimit}`)
        t.not(config.User, '', `${name}: runs as ${config.User}, not root`)
        const bindings = Object.values(host.PortBindings ?? {}).flat() as Array<{ HostIp: string }>
        if (service === 'nginx') t.same(bindings.map(b => b.HostIp), ['127.0.0.1'], `${name}: published on 127.0.0.1 only`)
        else t.same(bindings, [], `${name}: nothing published`)
      }
    }
    const [redis] = await containerIds('redis')
    const cli = (args: string[], auth = redisPassword) => docker(['exec', '-e', `REDISCLI_AUTH=${auth}`, redis!, 'redis-cli', ...args])
    t.match(await docker(['exec', '-e', 'REDISCLI_AUTH=', redis!, 'redis-cli', 'ping']), /NOAUTH/, 'Redis refuses a client without the password')
    t.equal(await cli(['ping']), 'PONG')
    t.equal(await cli(['config', 'get', 'maxmemory-policy']), 'maxmemory-policy\nnoeviction', 'Redis never evicts a session')
    t.equal(await cli(['config', 'get', 'maxmemory']), 'maxmemory\n268435456')
    const env = (await inspect(apps[0]!)).Config.Env as string[]
    t.ok(env.includes(`TRUST_PROXY=${subnet}`), 'the replicas trust the backend network as proxies')
  })

  await t.test('the official SDK client through nginx: initialize, calculate, get_history', async t => {
    const servedBy: string[] = []
    const transport = new StreamableHTTPClientTransport(mcpUrl, {
      fetch: async (input, init) => {
        const response = await fetch(input, init)
        if (init?.method === 'POST') servedBy.push(response.headers.get('x-served-by') ?? '?')
        return response
      }
    })
    const client = new Client({ name: 'container-test', version: '1.0.0' })
    await client.connect(transport)
    t.teardown(() => client.close())
    for (let i = 1; i <= 6; i++) {
      const result = await client.callTool({ name: 'calculate', arguments: { a: i, b: 7, op: 'multiply' } })
      t.equal((result.structuredContent as Structured).result, i * 7)
    }
    const history = await client.callTool({ name: 'get_history', arguments: { limit: 10 } })
    t.same((history.structuredContent as Structured).entries.map((e: Structured) => e.result), [7, 14, 21, 28, 35, 42])
    t.equal(new Set(servedBy).size, 3, `requests reached all three replicas: ${servedBy.join(' ')}`)
    await transport.terminateSession()
  })

  await t.test('the edge: no /metrics, no readiness detail, no nginx version, JSON errors', async t => {
    for (const path of ['/metrics', '/health']) {
      const answer = await fetch(`${base}${path}`)
      t.equal(answer.status, 404, path)
      t.equal(answer.headers.get('content-type'), 'application/json')
      t.match(await answer.json(), { jsonrpc: '2.0', error: { code: -32601 }, id: null })
    }
    const live = await fetch(`${base}/health/live`)
    t.equal(live.status, 200)
    t.equal(live.headers.get('server'), 'nginx', 'server_tokens off')
    await live.text()
  })

  await t.test('Redis paused: every replica answers 503 (command timeout), nginx passes the JSON 503 on', async t => {
    const sessionId = await initialize(mcpUrl)
    const [redis] = await containerIds('redis')
    await docker(['pause', redis!])
    try {
      const begin = performance.now()
      const answer = await post(mcpUrl, { jsonrpc: '2.0', id: 1, method: 'tools/call', params: { name: 'calculate', arguments: { a: 1, b: 1, op: 'add' } } }, sessionId)
      t.comment(`answered ${answer.status} after ${seconds(begin)} (each replica waits for its Redis command timeout)`)
      t.equal(answer.status, 503)
      t.match(answer.headers.get('content-type'), /^application\/json/)
      t.ok(Number(answer.headers.get('retry-after')) >= 1, 'Retry-After')
      t.match(answer.messages[0], { jsonrpc: '2.0', error: { code: -32000 } })
    } finally {
      await docker(['unpause', redis!])
    }
    await waitUntil('Redis to answer again', async () => (await callTool(mcpUrl, sessionId, 'calculate', { a: 1, b: 1, op: 'add' })).status === 200, 30_000)
  })

  await t.test('Redis stopped: JSON 503 with Retry-After through nginx, replicas stay live, then recovery', async t => {
    const sessionId = await initialize(mcpUrl)
    t.equal((await callTool(mcpUrl, sessionId, 'calculate', { a: 2, b: 3, op: 'add' })).status, 200)
    const [redis] = await containerIds('redis')
    await compose(['stop', '-t', '10', 'redis'])
    const stoppedAt = Date.now()
    for (let i = 0; i < 6; i++) {
      const answer = await post(mcpUrl, { jsonrpc: '2.0', id: 100 + i, method: 'tools/call', params: { name: 'calculate', arguments: { a: 1, b: 1, op: 'add' } } }, sessionId)
      t.equal(answer.status, 503)
      t.match(answer.headers.get('content-type'), /^application\/json/)
      t.ok(Number(answer.headers.get('retry-after')) >= 1, 'Retry-After')
      t.match(answer.messages[0], { jsonrpc: '2.0', error: { code: -32000 } })
    }
    // One health check of every replica ran during the outage, and passed: liveness ignores Redis.
    await waitUntil('a health check of every replica during the outage', async () => {
      const states = await Promise.all(apps.map(async id => (await inspect(id)).State.Health))
      return states.every(h => h.Log.some((l: Structured) => Date.parse(l.Start) > stoppedAt))
    }, 30_000)
    for (const id of apps) {
      const health = (await inspect(id)).State.Health
      const during = health.Log.filter((l: Structured) => Date.parse(l.Start) > stoppedAt)
      t.ok(during.every((l: Structured) => l.ExitCode === 0), `${id.slice(0, 12)} stays healthy while Redis is down`)
      t.equal(health.Status, 'healthy')
    }
    await compose(['start', 'redis'])
    t.same(await containerIds('redis'), [redis], 'the same Redis container, its data on the volume')
    await waitUntil('the replicas to reconnect to Redis', async () => {
      const answers = await Promise.all([0, 1, 2].map(() => callTool(mcpUrl, sessionId, 'get_history', {})))
      return answers.every(a => a.status === 200)
    }, 30_000)
    const history = await callTool(mcpUrl, sessionId, 'get_history', {})
    t.same(history.messages[0].result.structuredContent.entries.map((e: Structured) => e.result), [5], 'the session survived (append-only file)')
  })

  await t.test('restarting the replicas one by one under load fails no call', async t => {
    const clients = await Promise.all(Array.from({ length: LOAD_CLIENTS }, async (_, i) => {
      const client = new Client({ name: `load-${i}`, version: '1.0.0' })
      await client.connect(new StreamableHTTPClientTransport(mcpUrl))
      return { client, acknowledged: [] as string[], failures: [] as string[] }
    }))
    t.teardown(() => Promise.all(clients.map(c => c.client.close())))
    const servedBy = new Set<string>()
    const state = { running: true }
    const loops = clients.map(async (load, c) => {
      for (let i = 0; state.running; i++) {
        try {
          const result = await load.client.callTool({ name: 'calculate', arguments: { a: c, b: i, op: 'add' } })
          if (result.isError === true) load.failures.push(JSON.stringify(result.content))
          else load.acknowledged.push((result.structuredContent as Structured).calculationId)
        } catch (error) {
          load.failures.push(String(error))
        }
        // About ten calls a second per session: the history (HISTORY_LIMIT 1000) keeps every one.
        await sleep(100)
      }
    })

    await sleep(1000)
    const restarts: string[] = []
    for (const id of apps) {
      const begin = performance.now()
      await docker(['restart', '-t', '15', id])
      await waitUntil(`${id.slice(0, 12)} healthy again`, async () => (await inspect(id)).State.Health.Status === 'healthy', 60_000)
      restarts.push(seconds(begin))
      await sleep(1000)
    }
    // Every replica, restarted, serves again through nginx.
    await waitUntil('every replica to serve through nginx', async () => {
      const answer = await fetch(`${base}/health/live`)
      servedBy.add(answer.headers.get('x-served-by') ?? '?')
      await answer.text()
      return servedBy.size >= 3
    }, 10_000).catch(() => {})
    state.running = false
    await Promise.all(loops)

    const failures = clients.flatMap(c => c.failures)
    const acknowledged = clients.reduce((n, c) => n + c.acknowledged.length, 0)
    t.comment(`rolling restart: ${acknowledged} calls acknowledged, ${failures.length} failed; restart to healthy took ${restarts.join(', ')}`)
    t.same(failures, [], 'no tool call failed')
    t.ok(acknowledged > 100, 'the load kept running')
    t.ok(servedBy.size >= 3, `the restarted replicas serve through nginx: ${[...servedBy].join(' ')}`)
    for (const load of clients) {
      const history = await load.client.callTool({ name: 'get_history', arguments: { limit: 1000 } })
      const ids = (history.structuredContent as Structured).entries.map((e: Structured) => e.id) as string[]
      t.same([...ids].sort(), [...load.acknowledged].sort(), 'exactly the acknowledged calculations are in the history')
    }
  })

  await t.test('the auth profile: a protected deployment with its development authorization server', async t => {
    step = performance.now()
    await compose(['--profile', 'auth', 'build', 'auth'], 10 * 60_000)
    const protectedBase = `http://127.0.0.1:${authPort}`
    try {
      await compose(['--profile', 'auth', 'up', '-d', '--no-build', 'auth', 'app-auth', 'nginx-auth'], 5 * 60_000)
      await waitUntil('the protected deployment to answer', async () => (await fetch(`${protectedBase}/health/live`)).ok, 60_000)
    } catch (error) {
      const logs = await compose(['--profile', 'auth', 'logs', '--no-color', '--tail', '40', 'auth', 'app-auth']).catch(e => String(e))
      throw new Error(`${String(error)}\n--- the containers' logs ---\n${logs}`)
    }
    t.comment(`auth profile up in ${seconds(step)}`)
    const resource = `http://localhost:${authPort}/mcp`
    const protectedMcp = new URL(`${protectedBase}/mcp`)

    const refused = await post(protectedMcp, { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'ci', version: '1' } } })
    t.equal(refused.status, 401, 'no token: 401')
    const challenge = refused.headers.get('www-authenticate') ?? ''
    t.match(challenge, `resource_metadata="http://localhost:${authPort}/.well-known/oauth-protected-resource/mcp"`)
    const metadata = await (await fetch(`${protectedBase}/.well-known/oauth-protected-resource/mcp`)).json() as Structured
    t.same(metadata.authorization_servers, [`http://localhost:${issuerPort}`], 'the metadata names the development authorization server')

    const server = await (await fetch(`http://127.0.0.1:${issuerPort}/.well-known/oauth-authorization-server`)).json() as Structured
    const granted = await fetch(server.token_endpoint, {
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded', authorization: `Basic ${Buffer.from('ci:ci-secret').toString('base64')}` },
      body: new URLSearchParams({ grant_type: 'client_credentials', scope: 'calculator:use', resource })
    })
    t.equal(granted.status, 200, 'the authorization server grants a token for the protected deployment')
    const token = (await granted.json() as Structured).access_token as string
    const client = new Client({ name: 'ci', version: '1' })
    await client.connect(new StreamableHTTPClientTransport(protectedMcp, { requestInit: { headers: { authorization: `Bearer ${token}` } } }))
    const result = await client.callTool({ name: 'calculate', arguments: { a: 6, b: 7, op: 'multiply' } })
    t.equal((result.structuredContent as Structured).result, 42, 'the official SDK client calculates with the token')
    await client.close()
  })

  t.comment(`container suite: ${seconds(started)} before teardown`)
})
