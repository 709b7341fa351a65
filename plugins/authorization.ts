import fp from 'fastify-plugin'
import type { FastifyRequest } from 'fastify'
import { LRUCache } from 'lru-cache'
import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js'
import { AccessTokenVerifier, InvalidTokenError, bearerChallenge, type Principal } from '../src/auth/access-tokens.js'
import { authMode } from '../src/config.js'
import { AuthorizationServerUnavailableError, InsufficientScopeError, RateLimitedError, UnauthorizedError } from '../src/errors.js'
import { counter } from './metrics.js'

/** How the /mcp routes authorize requests. */
export interface Authorization {
  /** `jwt`: AUTH_ISSUER's access tokens required; `open`: none, on loopback; `disabled`: none, by AUTH_DISABLED. */
  readonly mode: 'jwt' | 'open' | 'disabled'
  /** Protected resource metadata (RFC 9728) and where it is served, with tokens required. */
  readonly metadata?: { url: string, paths: string[], document: Record<string, unknown> }
  /**
   * An onRequest hook: with tokens required, verifies the request's bearer token and sets
   * `request.principal`.
   * @throws {UnauthorizedError} (401) without a valid token; {AuthorizationServerUnavailableError} (503).
   */
  authenticate (request: FastifyRequest): Promise<void>
  /**
   * Checks the principal holds every scope the messages need (the base scopes when there are none).
   * @throws {InsufficientScopeError} (403) naming them all.
   */
  authorize (request: FastifyRequest, messages: readonly JSONRPCMessage[]): void
}

declare module 'fastify' {
  interface FastifyInstance {
    authorization: Authorization
  }
  interface FastifyRequest {
    /** Who the request acts for, with tokens required; undefined otherwise. */
    principal?: Principal
  }
}

const BEARER = /^Bearer +([A-Za-z0-9\-._~+/]+=*) *$/i
/** Client addresses this node remembers as over their limit of refused tokens. */
const MAX_BLOCKED_ADDRESSES = 10_000

/**
 * Authorization as an OAuth 2.1 protected resource (the MCP authorization specification): with
 * AUTH_ISSUER set, every /mcp request carries an access token of that issuer for this resource
 * (PUBLIC_URL, or AUTH_AUDIENCE), and each operation needs the scopes its feature declares. The
 * principal a token speaks for is what sessions and rate limits are bound to (routes/mcp.ts).
 * Tokens are never stored, passed on or logged (the logger redacts the header).
 */
export default fp(async function authorization (fastify) {
  const { config, mcpFeatures: features, sessionStore: store } = fastify
  const mode = authMode(config)
  fastify.decorateRequest('principal', undefined)

  if (mode !== 'jwt') {
    if (mode === 'disabled') fastify.log.warn(`authorization is disabled (AUTH_DISABLED=true): anyone who reaches ${config.HOST}:${config.PORT} can use every session whose id they learn`)
    fastify.decorate('authorization', { mode, async authenticate () {}, authorize () {} } satisfies Authorization)
    return
  }

  const refused = counter(fastify.metricsRegistry, 'mcp_auth_refused_total', 'Requests refused by authorization, by reason', ['reason'])
  const verifier = new AccessTokenVerifier({
    issuer: config.AUTH_ISSUER,
    audience: config.AUTH_AUDIENCE,
    algorithms: config.AUTH_ALGORITHMS.split(','),
    tokenType: config.AUTH_TOKEN_TYPE,
    clockToleranceSeconds: config.AUTH_CLOCK_TOLERANCE_SECONDS,
    ...(config.AUTH_METADATA_URL !== '' && { metadataUrl: config.AUTH_METADATA_URL })
  })
  const resource = new URL(config.PUBLIC_URL)
  const path = resource.pathname === '/' ? '' : resource.pathname.replace(/\/$/, '')
  const metadataUrl = `${resource.origin}/.well-known/oauth-protected-resource${path}`
  const metadata = {
    url: metadataUrl,
    paths: [...new Set([`/.well-known/oauth-protected-resource${path}`, '/.well-known/oauth-protected-resource'])],
    document: {
      resource: config.PUBLIC_URL,
      authorization_servers: [config.AUTH_ISSUER],
      scopes_supported: features.scopes.all,
      bearer_methods_supported: ['header'],
      resource_name: 'Calculator MCP server'
    }
  }

  const unauthorized = (reason: string, error?: InvalidTokenError) => {
    refused.inc({ reason })
    const challenge = bearerChallenge(metadataUrl, features.scopes.base, error && { code: 'invalid_token', description: error.message })
    return new UnauthorizedError(error?.message ?? 'this endpoint needs a bearer access token', challenge)
  }

  // Requests are rate limited once authenticated; refused tokens are limited here, per client
  // address (AUTH_FAILURE_LIMIT per window, counted in the store, so across nodes): an address
  // over it gets 429 without its tokens being verified until the window ends.
  const blocked = new LRUCache<string, true>({ max: MAX_BLOCKED_ADDRESSES, ttlAutopurge: false })
  async function refuse (request: FastifyRequest, error: UnauthorizedError): Promise<never> {
    const { hits, resetMs } = await store.hit(`authfail:${request.clientAddress}`).catch(() => ({ hits: 0, resetMs: 0 }))
    if (hits > config.AUTH_FAILURE_LIMIT) blocked.set(request.clientAddress, true, { ttl: resetMs })
    throw error
  }

  fastify.decorate('authorization', {
    mode,
    metadata,
    async authenticate (request) {
      if (blocked.has(request.clientAddress)) {
        refused.inc({ reason: 'blocked' })
        throw new RateLimitedError(blocked.getRemainingTTL(request.clientAddress))
      }
      const header = request.headers.authorization
      if (header === undefined || header === '') throw unauthorized('missing')
      const token = BEARER.exec(header)?.[1]
      if (token === undefined) return refuse(request, unauthorized('invalid', new InvalidTokenError('the Authorization header is not "Bearer <token>"')))
      try {
        request.principal = await verifier.verify(token)
      } catch (error) {
        if (error instanceof InvalidTokenError) return refuse(request, unauthorized('invalid', error))
        refused.inc({ reason: 'unavailable' })
        throw new AuthorizationServerUnavailableError(error)
      }
    },
    authorize (request, messages) {
      const granted = request.principal?.scopes
      if (granted === undefined) return
      const needed = new Set(features.scopes.base)
      for (const message of messages) {
        if ('method' in message && 'id' in message) for (const scope of features.scopesFor(message.method, message.params)) needed.add(scope)
      }
      for (const scope of needed) {
        if (!granted.has(scope)) {
          refused.inc({ reason: 'scope' })
          const all = [...needed]
          throw new InsufficientScopeError(all, bearerChallenge(metadataUrl, all, { code: 'insufficient_scope', description: `this request needs the scopes ${all.join(' ')}` }))
        }
      }
    }
  } satisfies Authorization)
  fastify.log.info(`authorization: access tokens of ${config.AUTH_ISSUER} for ${config.AUTH_AUDIENCE}, scopes ${features.scopes.all.join(' ')}`)
}, { name: 'authorization', dependencies: ['config', 'metrics', 'mcp-features', 'session-store', 'connections'] })
