import type { Server } from 'node:http'
import { LogController, type FastifyHttpOptions, type FastifyInstance } from 'fastify'
import { clientErrorHandler } from './client-errors.js'
import config, { type ConfigPluginOptions } from '../plugins/config.js'
import errorBoundary, { frameworkErrors } from '../plugins/error-boundary.js'
import requestLog from '../plugins/request-log.js'
import loadShedding from '../plugins/load-shedding.js'
import cors from '../plugins/cors.js'
import connections from '../plugins/connections.js'
import metrics from '../plugins/metrics.js'
import redis from '../plugins/redis.js'
import sessionStore, { type SessionStorePluginOptions } from '../plugins/session-store.js'
import mcpFeatures from '../plugins/mcp-features.js'
import calculator from '../plugins/calculator.js'
import conformanceFixtures from '../plugins/conformance-fixtures.js'
import authorization from '../plugins/authorization.js'
import mcpSessions from '../plugins/mcp-sessions.js'
import rateLimit from '../plugins/rate-limit.js'
import mcpRoutes from '../routes/mcp.js'
import healthRoutes from '../routes/health.js'
import metricsRoutes from '../routes/metrics.js'
import oauthMetadataRoutes from '../routes/oauth-metadata.js'

export type AppOptions = ConfigPluginOptions & SessionStorePluginOptions

/**
 * The root plugin, loaded by `fastify start`. Plugins register in this order, each after what it
 * depends on, then the thin routes (the error boundary is set before any route):
 *   config -> error boundary -> request log -> load shedding -> CORS -> connection limits
 *   -> metrics registry -> Redis
 *   -> session store and bus -> feature registry -> calculator (-> conformance fixtures)
 *   -> authorization -> rate limit -> sessions (dispatcher, transport cache)
 *   -> /mcp, /health, /metrics, /.well-known/oauth-protected-resource.
 * Shutdown, in one place: `preClose` ends GET streams (clients resume them on another node) while
 * requests in flight finish; then `onClose` closes live sessions on this node, the bus and the
 * store (which keeps every session), and Redis last.
 */
export default async function app (fastify: FastifyInstance, opts: AppOptions) {
  await fastify.register(config, opts)
  await fastify.register(errorBoundary)
  await fastify.register(requestLog)
  await fastify.register(loadShedding)
  await fastify.register(cors)
  await fastify.register(connections)
  await fastify.register(metrics)
  await fastify.register(redis)
  await fastify.register(sessionStore, opts)
  await fastify.register(mcpFeatures)
  await fastify.register(calculator)
  if (fastify.config.CONFORMANCE_FIXTURES) await fastify.register(conformanceFixtures)
  await fastify.register(authorization)
  await fastify.register(rateLimit)
  await fastify.register(mcpSessions)
  await fastify.register(mcpRoutes)
  await fastify.register(healthRoutes)
  await fastify.register(metricsRoutes)
  await fastify.register(oauthMetadataRoutes)
}

/**
 * Server options for `fastify start -o`. The app is registered without encapsulation; secrets never
 * reach the log; requests are logged once, by the request-log plugin; requests Node's parser refuses
 * get JSON-RPC error bodies too; and during shutdown, requests that still arrive on open connections
 * are served (with `Connection: close`) rather than refused, so a rolling restart fails none.
 */
export const options: FastifyHttpOptions<Server> & { skipOverride: boolean } = {
  skipOverride: true,
  logger: { redact: ['req.headers.authorization', 'req.headers.cookie', 'res.headers["set-cookie"]'] },
  logController: new LogController({ disableRequestLogging: true }),
  return503OnClosing: false,
  clientErrorHandler,
  frameworkErrors,
  // Request and header timeouts (plugins/connections.ts sets them) are checked every second.
  http: { connectionsCheckingInterval: 1000 }
}
