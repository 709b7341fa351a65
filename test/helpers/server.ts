import Fastify, { type FastifyInstance } from 'fastify'
import fp from 'fastify-plugin'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import type { ClientCapabilities, JSONRPCMessage, ServerNotification } from '@modelcontextprotocol/sdk/types.js'
import app, { options } from '../../src/app.js'
import type { SessionStore } from '../../src/stores/session-store.js'

export interface TestServer {
  app: FastifyInstance
  url: string
  mcpUrl: URL
  close (): Promise<void>
}

/**
 * Builds the server exactly as `fastify start -o` does (same root plugin, same server options,
 * unencapsulated) and listens on a free loopback port; with `store`, the app uses that store.
 */
export async function startServer (env: Record<string, string> = {}, logStream?: { write (line: string): void }, store?: SessionStore): Promise<TestServer> {
  const { skipOverride, ...serverOptions } = options
  const level = logStream === undefined ? process.env.TEST_LOG_LEVEL ?? 'silent' : 'info'
  const fastify = Fastify({ ...serverOptions, logger: { ...(serverOptions.logger as object), level, ...(logStream !== undefined && { stream: logStream }) } })
  // Load shedding is off unless a test turns it on: a busy CI machine lags its event loops.
  await fastify.register(skipOverride ? fp(app) : app, { env: { MAX_EVENT_LOOP_DELAY_MS: '0', ...env }, ...(store !== undefined && { store }) })
  const url = await fastify.listen({ port: 0, host: '127.0.0.1' })
  return { app: fastify, url, mcpUrl: new URL('/mcp', url), close: () => fastify.close() }
}

export interface TestClient {
  client: Client
  transport: StreamableHTTPClientTransport
  notifications: ServerNotification[]
  /** Resolves with the first notification of `method` that `match` accepts. */
  waitFor (method: string, match?: (n: ServerNotification) => boolean, timeoutMs?: number): Promise<ServerNotification>
}

/**
 * An official SDK client connected to the server over real HTTP. With `getStream: false` it opens
 * no GET stream (the server's answer to its GET is taken as 405, as from a server without one).
 */
export async function connect (url: URL, capabilities: ClientCapabilities = {}, name = 'test-client', options: { getStream?: boolean } = {}): Promise<TestClient> {
  const client = new Client({ name, version: '1.0.0' }, { capabilities })
  const transport = new StreamableHTTPClientTransport(url, options.getStream === false
    ? { fetch: async (input, init) => init?.method === 'GET' ? new Response(null, { status: 405 }) : await fetch(input, init) }
    : undefined)
  const notifications: ServerNotification[] = []
  const waiters = new Set<(n: ServerNotification) => void>()
  client.fallbackNotificationHandler = async notification => {
    notifications.push(notification as ServerNotification)
    for (const waiter of waiters) waiter(notification as ServerNotification)
  }
  await client.connect(transport)
  return {
    client,
    transport,
    notifications,
    waitFor (method, match = () => true, timeoutMs = 5000) {
      const found = notifications.find(n => n.method === method && match(n))
      if (found !== undefined) return Promise.resolve(found)
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => { waiters.delete(waiter); reject(new Error(`no ${method} within ${timeoutMs} ms`)) }, timeoutMs)
        const waiter = (n: ServerNotification) => {
          if (n.method !== method || !match(n)) return
          clearTimeout(timer)
          waiters.delete(waiter)
          resolve(n)
        }
        waiters.add(waiter)
      })
    }
  }
}

export const MCP_HEADERS = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' }

export const INITIALIZE: JSONRPCMessage = {
  jsonrpc: '2.0',
  id: 0,
  method: 'initialize',
  params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'raw-client', version: '1.0.0' } }
}

/** Initializes a session with plain HTTP through `inject` and returns its id. */
export async function rawSession (fastify: FastifyInstance): Promise<string> {
  const response = await fastify.inject({ method: 'POST', url: '/mcp', headers: MCP_HEADERS, payload: INITIALIZE })
  const id = response.headers['mcp-session-id']
  if (typeof id !== 'string') throw new Error(`initialize failed: ${response.statusCode} ${response.body}`)
  await fastify.inject({ method: 'POST', url: '/mcp', headers: { ...MCP_HEADERS, 'mcp-session-id': id }, payload: { jsonrpc: '2.0', method: 'notifications/initialized' } })
  return id
}

/** Calls a tool through `inject` and returns the parsed JSON-RPC answer. */
export async function rawCall (fastify: FastifyInstance, sessionId: string, id: number, name: string, args: Record<string, unknown>) {
  const response = await fastify.inject({
    method: 'POST',
    url: '/mcp',
    headers: { ...MCP_HEADERS, 'mcp-session-id': sessionId },
    payload: { jsonrpc: '2.0', id, method: 'tools/call', params: { name, arguments: args } }
  })
  return { status: response.statusCode, body: response.json() }
}
