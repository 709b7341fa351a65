import fp from 'fastify-plugin'
import { registerCalculator } from '../src/calculator/features.js'
import { counter } from './metrics.js'

/** The calculator's tools, resources and prompts, and its metric. */
export default fp(async function calculator (fastify) {
  const { config, metricsRegistry } = fastify
  const calculations = counter(metricsRegistry, 'mcp_calculations_total', 'Calculations recorded, by operation', ['operation'])
  registerCalculator(fastify.mcpFeatures.feature('calculator'), {
    historyLimit: config.HISTORY_LIMIT,
    sampleToolName: config.SAMPLE_TOOL_NAME,
    onCalculated: (operation, count) => calculations.inc({ operation }, count)
  })
}, { name: 'calculator', dependencies: ['config', 'metrics', 'mcp-features'] })
