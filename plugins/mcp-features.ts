import fp from 'fastify-plugin'
import { FeatureRegistry } from '../src/mcp/features.js'

declare module 'fastify' {
  interface FastifyInstance {
    /** What every session serves; feature plugins add to it at boot. */
    mcpFeatures: FeatureRegistry
  }
}

/** The feature registry: the calculator and any other feature plugin add their tools, resources and prompts here. */
export default fp(async function mcpFeatures (fastify) {
  fastify.decorate('mcpFeatures', new FeatureRegistry())
}, { name: 'mcp-features' })
