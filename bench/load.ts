import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import autocannon from 'autocannon'
import { MAX_REMEMBERED_OPS } from '../src/stores/session-store.js'

/**
 * One autocannon run in a process of its own, off the bench's event loop and heap. A fresh
 * JSON-RPC id per request (`idReplacement`) made autocannon rebuild and re-encode every request:
 * about 37 µs of CPU each, more than the echo spends answering (about 35 µs), so autocannon ran
 * at a full core, the echo at 80%, and the baseline measured the load generator, overstating
 * every ratio. Requests built once per connection cost it about 27 µs, and the echo sets the pace.
 */
export interface LoadSpec {
  url: string
  headers: Record<string, string>
  connections: number
  /** Seconds; ignored when `amount` is set. */
  duration: number
  /** Total requests over all connections. */
  amount?: number
  /**
   * A JSON-RPC message sent over and over, each time with an id of its own, from bodies built
   * once per connection.
   */
  message?: Record<string, unknown>
  /**
   * With `message`: each connection cycles through its own slice of these session ids, so no
   * two connections share a session and a session comes back only after its whole slice.
   */
  sessions?: string[]
  /** initialize + notifications/initialized pairs instead of `message`. */
  handshake?: boolean
}

export interface Load {
  requests: number
  p50: number
  p975: number
  p99: number
  non2xx: number
  errors: number
  /** Share of one core the load generator used: near 1, it and not the server set the pace. */
  generatorCpu: number
}

const HERE = fileURLToPath(import.meta.url)
/** Distinct ids each connection cycles through on one shared session: more than it remembers over all connections. */
const IDS_PER_CONNECTION = MAX_REMEMBERED_OPS * 2

/** Runs `spec` in a child process and resolves with its figures. */
export function load (spec: LoadSpec): Promise<Load> {
  return new Promise((resolve, reject) => {
    const child = fork(HERE, { stdio: ['ignore', 'inherit', 'inherit', 'ipc'] })
    child.once('message', message => resolve(message as Load))
    child.once('error', reject)
    child.once('exit', code => reject(new Error(`load generator exited with ${code} before answering`)))
    child.send(spec)
  })
}

function requestsFor (spec: LoadSpec, connection: number): autocannon.Request[] {
  if (spec.handshake === true) {
    const initialize = { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'bench', version: '1' } } }
    // The second request needs the session the first one opened: the one scenario that pays for callbacks.
    return [
      {
        method: 'POST',
        headers: spec.headers,
        body: JSON.stringify(initialize),
        onResponse: (_status: number, _body: string, context: Record<string, unknown>, headers?: Record<string, string>) => { context.sessionId = headers?.['mcp-session-id'] }
      },
      {
        method: 'POST',
        setupRequest: (request: autocannon.Request, context: Record<string, unknown>) => ({ ...request, headers: { ...spec.headers, 'mcp-session-id': String(context.sessionId) }, body: '{"jsonrpc":"2.0","method":"notifications/initialized"}' })
      }
    ] as autocannon.Request[]
  }
  // Ids are never reused within a session while it remembers them: it takes a repeated id for a
  // retry of the same request (and answers what it stored the first time, writing nothing).
  const id = (n: number) => connection * 1_000_000 + n
  const body = (n: number) => JSON.stringify({ ...spec.message, id: id(n) })
  if (spec.sessions === undefined) return Array.from({ length: IDS_PER_CONNECTION }, (_, n) => ({ method: 'POST', headers: spec.headers, body: body(n) }))
  const size = Math.floor(spec.sessions.length / spec.connections)
  const mine = spec.sessions.slice(connection * size, (connection + 1) * size)
  return Array.from({ length: (MAX_REMEMBERED_OPS + 1) * size }, (_, n) => ({ method: 'POST', headers: { ...spec.headers, 'mcp-session-id': mine[n % size]! }, body: body(n) }))
}

async function run (spec: LoadSpec): Promise<Load> {
  let connections = 0
  const cpu = process.cpuUsage()
  const started = performance.now()
  const result = await autocannon({
    url: spec.url,
    connections: spec.connections,
    pipelining: 1,
    ...(spec.amount === undefined ? { duration: spec.duration } : { amount: spec.amount }),
    // Called once per connection, before its first request.
    setupClient: client => client.setRequests(requestsFor(spec, connections++))
  })
  const used = process.cpuUsage(cpu)
  return {
    requests: result.requests.average,
    p50: result.latency.p50,
    p975: result.latency.p97_5,
    p99: result.latency.p99,
    non2xx: result.non2xx,
    errors: result.errors,
    generatorCpu: (used.user + used.system) / 1000 / (performance.now() - started)
  }
}

if (process.argv[1] === HERE && process.send !== undefined) {
  process.once('message', spec => {
    run(spec as LoadSpec).then(figures => process.send!(figures, () => process.exit(0)), error => {
      process.stderr.write(`${error?.stack ?? error}\n`)
      process.exit(1)
    })
  })
}
