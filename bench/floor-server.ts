import Fastify from 'fastify'
import app, { options } from '../src/app.js'

/**
 * This server's floor, for the bench: the whole app with its production hooks (X-Served-By, CORS,
 * load shedding, the route histogram, the rate limit), configured from the environment like `fastify
 * start`, plus a route that echoes a JSON body and does no MCP work. What it answers per second, as
 * a share of the bare echo, is the most any /mcp call can reach on this machine. Prints its address.
 */
const server = Fastify({ ...options, logger: { ...options.logger as object, level: process.env.LOG_LEVEL ?? 'info' } })
await server.register(async instance => {
  await app(instance, {})
  instance.post('/echo', { config: { rateLimit: {} } }, async request => request.body)
})
const address = await server.listen({ port: 0, host: '127.0.0.1' })
process.stdout.write(`${address}\n`)
process.on('SIGTERM', () => { server.close().then(() => process.exit(0)) })
