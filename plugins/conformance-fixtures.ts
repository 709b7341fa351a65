import fp from 'fastify-plugin'
import { registerConformanceFixtures } from '../src/mcp/conformance-features.js'

/** With CONFORMANCE_FIXTURES=true, adds the official conformance suite's fixtures to the registry. */
export default fp(async function conformanceFixtures (fastify) {
  if (!fastify.config.CONFORMANCE_FIXTURES) return
  registerConformanceFixtures(fastify.mcpFeatures)
  fastify.log.info('conformance fixtures registered (test_* tools, test:// resources, test_* prompts)')
}, { name: 'conformance-fixtures', dependencies: ['config', 'calculator'] })
