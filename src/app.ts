import { LogController, type FastifyInstance, type FastifyServerOptions } from 'fastify'
import { clientErrorHandler } from './client-errors.js'
import config, { type ConfigPluginOptions } from '../plugins/config.js'
import errorBoundary, { frameworkErrors } from '../plugins/error-boundary.js'
import requestLog from '../plugins/request-log.js'
import loadShedding from '../plugins/load-shedding.js'
import cors from '../plugins/cors.js'
import redis from '../plugins/redis.js'
import sessionStore from '../plugins/session-store.js'
import metrics from '../plugins/metrics.js'
import rateLimit from '../plugins/rate-limit.js'
import calculator from '../plugins/calculator.js'
import conformanceFixtures from '../plugins/conformance-fixtures.js'
import mcpTransport from '../plugins/mcp-transport.js'
import mcpRoutes from '../routes/mcp.js'
import healthRoutes from '../routes/health.js'
import metricsRoutes from '../routes/metrics.js'

export type AppOptions = ConfigPluginOptions

/**
 * The root plugin, loaded by `fastify start`: plugins first (the error boundary before any route),
 * then the thin routes.
 */
export default async function app (fastify: FastifyInstance, opts: AppOptions) {
  await fastify.register(config, opts)
  await fastify.register(errorBoundary)
  await fastify.register(requestLog)
  await fastify.register(loadShedding)
  await fastify.register(cors)
  await fastify.register(metrics)
  await fastify.register(redis)
  await fastify.register(sessionStore)
  await fastify.register(rateLimit)
  await fastify.register(calculator)
  await fastify.register(conformanceFixtures)
  await fastify.register(mcpTransport)
  await fastify.register(mcpRoutes)
  await fastify.register(healthRoutes)
  await fastify.register(metricsRoutes)
}

/**
 * Server options for `fastify start -o`. The app is registered without encapsulation; secrets never
 * reach the log; requests are logged once, by the request-log plugin; requests Node's parser refuses
 * get JSON-RPC error bodies too; and during shutdown, requests that still arrive on open connections
 * are served (with `Connection: close`) rather than refused, so a rolling restart fails none.
 */
export const options: FastifyServerOptions & { skipOverride: boolean } = {
  skipOverride: true,
  logger: { redact: ['req.headers.authorization', 'req.headers.cookie', 'res.headers["set-cookie"]'] },
  logController: new LogController({ disableRequestLogging: true }),
  return503OnClosing: false,
  clientErrorHandler,
  frameworkErrors
}
