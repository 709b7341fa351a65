import { fork } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import autocannon from 'autocannon'

/**
 * One autocannon run in a process of its own. In the bench's process, with a fresh JSON-RPC id
 * per request (`idReplacement`), autocannon itself was the bottleneck: the echo showed half of
 * what a lean client drives it to, which overstated every ratio. So each connection gets its
 * request buffers built once, and the child answers with the figures only.
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
   * A JSON-RPC message sent over and over. Each connection sends it with its own id: a session
   * refuses an id already in flight, and a connection has one request in flight (pipelining 1).
   */
  message?: Record<string, unknown>
  /**
   * With `message`: each connection cycles through its own slice of these session ids, so no
   * two connections share a session and a session comes back only after every other one.
   */
  sessions?: string[]
  /** initialize + notifications/initialized pairs instead of `message`. */
  handshake?: boolean
}

export interface Load { requests: number, p50: number, p975: number, p99: number, non2xx: number, errors: number }

const HERE = fileURLToPath(import.meta.url)

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
  const body = JSON.stringify({ ...spec.message, id: connection })
  if (spec.sessions === undefined) return [{ method: 'POST', headers: spec.headers, body }]
  const slice = Math.floor(spec.sessions.length / spec.connections)
  return spec.sessions.slice(connection * slice, (connection + 1) * slice)
    .map(sessionId => ({ method: 'POST', headers: { ...spec.headers, 'mcp-session-id': sessionId }, body }))
}

async function run (spec: LoadSpec): Promise<Load> {
  let connections = 0
  const result = await autocannon({
    url: spec.url,
    connections: spec.connections,
    pipelining: 1,
    ...(spec.amount === undefined ? { duration: spec.duration } : { amount: spec.amount }),
    // Called once per connection, before its first request.
    setupClient: client => client.setRequests(requestsFor(spec, connections++))
  })
  return { requests: result.requests.average, p50: result.latency.p50, p975: result.latency.p97_5, p99: result.latency.p99, non2xx: result.non2xx, errors: result.errors }
}

if (process.argv[1] === HERE && process.send !== undefined) {
  process.once('message', spec => {
    run(spec as LoadSpec).then(figures => process.send!(figures, () => process.exit(0)), error => {
      process.stderr.write(`${error?.stack ?? error}\n`)
      process.exit(1)
    })
  })
}
