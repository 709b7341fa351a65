import fp from 'fastify-plugin'
import { registerConformanceFixtures } from '../src/fixtures/conformance.js'

/** The official conformance suite's fixtures, added to the registry (the app registers this plugin only with CONFORMANCE_FIXTURES=true). */
export default fp(async function conformanceFixtures (fastify) {
  registerConformanceFixtures(fastify.mcpFeatures.feature('conformance'))
  fastify.log.info('conformance fixtures registered (test_* tools, test:// resources, test_* prompts)')
}, { name: 'conformance-fixtures', dependencies: ['mcp-features'] })
