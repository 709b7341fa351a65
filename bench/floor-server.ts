import Fastify from 'fastify'
import app, { options } from '../src/app.js'
import type { SessionRecord } from '../src/stores/session-store.js'

/**
 * This server's floor, for the bench: the whole app with its production hooks (X-Served-By, CORS,
 * load shedding, the route histogram, the rate limit), configured from the environment like `fastify
 * start`, plus a route that echoes a JSON body and does no MCP work. What it answers per second, as
 * a share of the bare echo, is the most any /mcp call can reach on this machine. `/echo-stored`
 * adds what a warm `tools/call` that keeps state cannot do without: the session's touch before the
 * tool runs and one entry appended to a log after, each a round trip to the app's session store.
 * `/echo-written` makes the one round trip of a 2026-07-28 call with a history handle: the append,
 * which touches its scope in the same step. Prints its address.
 */
const server = Fastify({ ...options, logger: { ...options.logger as object, level: process.env.LOG_LEVEL ?? 'info' } })
const FLOOR_LOG = { name: 'floor', maxEntries: 100 }
await server.register(async instance => {
  await app(instance, {})
  instance.post('/echo', { config: { rateLimit: {} } }, async request => request.body)
  const now = Date.now()
  const record: SessionRecord = { id: `floor-${now}`, createdAt: now, lastActivityAt: now, protocolVersion: '2025-11-25', initializeParams: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'floor', version: '1' } }, subscriptions: [], requestCount: 1 }
  instance.addHook('onReady', () => instance.sessionStore.create(record))
  instance.post('/echo-stored', { config: { rateLimit: {} } }, async request => {
    await instance.sessionStore.touch(record.id, record)
    await instance.sessionStore.append(record.id, FLOOR_LOG, [request.body])
    return request.body
  })
  instance.post('/echo-written', { config: { rateLimit: {} } }, async request => {
    await instance.sessionStore.append(record.id, FLOOR_LOG, [request.body], undefined, { touch: {} })
    return request.body
  })
})
const address = await server.listen({ port: 0, host: '127.0.0.1' })
process.stdout.write(`${address}\n`)
process.on('SIGTERM', () => { server.close().then(() => process.exit(0)) })
