import fp from 'fastify-plugin'
import underPressure from '@fastify/under-pressure'
import { OverloadedError } from '../src/errors.js'

/**
 * Sheds load when the event loop lags past MAX_EVENT_LOOP_DELAY_MS: requests get 503 with
 * Retry-After at once instead of timing out in a queue. Routes may opt out with their own
 * `config.pressureHandler` (the liveness probe does).
 */
export default fp(async function loadShedding (fastify) {
  const { MAX_EVENT_LOOP_DELAY_MS } = fastify.config
  if (MAX_EVENT_LOOP_DELAY_MS === 0) return
  await fastify.register(underPressure, {
    maxEventLoopDelay: MAX_EVENT_LOOP_DELAY_MS,
    sampleInterval: 250,
    pressureHandler: async () => { throw new OverloadedError() }
  })
}, { name: 'load-shedding', dependencies: ['config'] })
