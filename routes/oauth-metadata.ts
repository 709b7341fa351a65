import type { FastifyInstance } from 'fastify'

/**
 * OAuth 2.0 Protected Resource Metadata (RFC 9728), with access tokens required: at the path the
 * MCP endpoint's URL gives (/.well-known/oauth-protected-resource/mcp) and at the root form. A
 * client that met a 401 finds here which authorization server to ask, and for which scopes.
 */
export default async function oauthMetadataRoutes (fastify: FastifyInstance) {
  const { metadata } = fastify.authorization
  if (metadata === undefined) return
  for (const path of metadata.paths) {
    fastify.get(path, async (_request, reply) => reply.header('cache-control', 'public, max-age=3600').send(metadata.document))
  }
}
