import { type ChildProcess, spawn } from 'node:child_process'
import { Redis } from 'ioredis'
import { createServer } from 'node:net'
import { setTimeout as sleep } from 'node:timers/promises'

/** A TCP port that was free a moment ago on loopback. */
export function freePort (): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer()
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as { port: number }
      server.close(() => resolve(port))
    })
  })
}

/** Polls `check` until it resolves true, or fails after `timeoutMs`. */
export async function waitUntil (what: string, check: () => Promise<boolean>, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (Date.now() < deadline) {
    if (await check().catch(() => false)) return
    await sleep(50)
  }
  throw new Error(`timed out waiting for ${what}`)
}

/** Ends a child process and waits for it to exit. */
export function stop (child: ChildProcess, signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve()
  return new Promise(resolve => {
    child.once('exit', () => resolve())
    child.kill(signal)
  })
}

export interface RedisServer {
  port: number
  url: string
  process: ChildProcess
  /** Stops the server (data is kept in memory of nobody: it is gone). */
  stop (): Promise<void>
  /** Starts a fresh server on the same port. */
  start (): Promise<void>
}

/** A real redis-server on a free loopback port, keeping nothing on disk. */
export async function startRedis (extraArgs: string[] = [], dir?: string): Promise<RedisServer> {
  const port = await freePort()
  const redis: RedisServer = {
    port,
    url: `redis://127.0.0.1:${port}`,
    process: undefined as unknown as ChildProcess,
    stop: () => stop(redis.process),
    async start () {
      redis.process = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no', ...(dir === undefined ? [] : ['--dir', dir]), ...extraArgs], { stdio: 'ignore' })
      await waitUntil(`redis-server on ${port}`, () => ping(port))
    }
  }
  await redis.start()
  return redis
}

/** Whether a Redis answers PING on the port. */
async function ping (port: number): Promise<boolean> {
  const { Socket } = await import('node:net')
  return new Promise(resolve => {
    const socket = new Socket()
    socket.setTimeout(500)
    socket.once('error', () => resolve(false))
    socket.once('timeout', () => { socket.destroy(); resolve(false) })
    socket.connect(port, '127.0.0.1', () => socket.write('PING\r\n'))
    socket.once('data', data => { socket.destroy(); resolve(data.toString().startsWith('+PONG')) })
  })
}

/** `redis-cli` against a port, for tests that arrange a cluster. */
export async function redisCli (args: string[]): Promise<string> {
  const { execFile } = await import('node:child_process')
  return new Promise((resolve, reject) => {
    execFile('redis-cli', args, (error, stdout, stderr) => error === null ? resolve(stdout) : reject(new Error(`${error.message}\n${stderr}`)))
  })
}

/**
 * A redis-server of a test's own and a way to open connections to it; at the test's teardown the
 * connections close, then the server stops.
 */
export async function ownRedis (t: { teardown (fn: () => unknown): void }): Promise<{ redis: RedisServer, connect (): Redis }> {
  const redis = await startRedis()
  const clients: Redis[] = []
  t.teardown(async () => {
    for (const client of clients) client.disconnect()
    await redis.stop()
  })
  return {
    redis,
    connect () {
      const client = new Redis(redis.url)
      clients.push(client)
      return client
    }
  }
}
