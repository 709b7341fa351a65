import fp from 'fastify-plugin'
import { FeatureRegistry } from '../src/mcp/features.js'
import { registerCalculator } from '../src/mcp/calculator-features.js'

declare module 'fastify' {
  interface FastifyInstance {
    mcpFeatures: FeatureRegistry
  }
}

/** The calculator's tools, resources and prompts, in the registry every session serves. */
export default fp(async function calculator (fastify) {
  const features = new FeatureRegistry()
  registerCalculator(features, { sampleToolName: fastify.config.SAMPLE_TOOL_NAME })
  fastify.decorate('mcpFeatures', features)
}, { name: 'calculator', dependencies: ['config'] })
