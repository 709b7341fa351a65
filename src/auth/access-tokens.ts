import { createHash } from 'node:crypto'
import { createRemoteJWKSet, errors, jwtVerify, type JWTPayload, type JWTVerifyGetKey } from 'jose'

/** Who a request acts for: the subject of a verified access token, at its issuer. */
export interface Principal {
  /**
   * A digest of issuer and subject: what sessions, feature state and rate limits are bound to. It
   * names nobody: stores and logs never see the subject itself.
   */
  readonly id: string
  readonly issuer: string
  readonly subject: string
  readonly clientId?: string
  readonly scopes: ReadonlySet<string>
}

export interface AccessTokenOptions {
  /** The authorization server's issuer identifier; its metadata gives the keys (jwks_uri). */
  issuer: string
  /** What the token's `aud` must contain: this resource server. */
  audience: string
  /** JWS algorithms accepted; anything else (`none`, HS256 with a public key as secret, ...) is refused. */
  algorithms: readonly string[]
  /** The `typ` header required (RFC 9068: at+jwt), so an ID token is no access token; '' accepts any. */
  tokenType: string
  clockToleranceSeconds: number
  /** Where the issuer's metadata is fetched instead of its well-known URLs (see metadataUrls). */
  metadataUrl?: string
}

/** A token that does not verify; `message` says why in words safe to send back (no token content). */
export class InvalidTokenError extends Error {}

/** The authorization server's metadata or keys cannot be fetched: not the client's fault. */
export class KeysUnavailableError extends Error {}

const FETCH_TIMEOUT_MS = 5000
/** After a failed metadata lookup, requests are refused (503) for this long before the next try. */
const RETRY_DISCOVERY_AFTER_MS = 5000

/**
 * The URLs where an issuer publishes its metadata: RFC 8414 first (the well-known segment goes
 * before the issuer's path), then OpenID Connect discovery (after it).
 */
export function metadataUrls (issuer: string): URL[] {
  const url = new URL(issuer)
  const path = url.pathname === '/' ? '' : url.pathname.replace(/\/$/, '')
  return [
    new URL(`/.well-known/oauth-authorization-server${path}`, url.origin),
    new URL(`${path}/.well-known/openid-configuration`, url.origin)
  ]
}

/**
 * Verifies bearer access tokens issued as JWTs by one authorization server (RFC 9068): signature
 * by a key of the server's JWK set (fetched, cached and refreshed by jose when an unknown key id
 * appears), algorithm in the allow-list, `typ`, issuer, audience, expiry and not-before.
 */
export class AccessTokenVerifier {
  readonly #options: AccessTokenOptions
  #keys?: Promise<JWTVerifyGetKey>

  constructor (options: AccessTokenOptions) {
    this.#options = options
  }

  /**
   * The principal a token speaks for.
   * @throws {InvalidTokenError} when it does not verify; {KeysUnavailableError} when the issuer's keys cannot be fetched.
   */
  async verify (token: string): Promise<Principal> {
    const { issuer, audience, algorithms, tokenType, clockToleranceSeconds } = this.#options
    const keys = await this.#jwks()
    let payload: JWTPayload
    try {
      ({ payload } = await jwtVerify(token, keys, {
        issuer,
        audience,
        algorithms: [...algorithms],
        clockTolerance: clockToleranceSeconds,
        // RFC 9068: an access token without an expiry would be good forever.
        requiredClaims: ['exp'],
        ...(tokenType !== '' && { typ: tokenType })
      }))
    } catch (error) {
      if (keysUnavailable(error)) {
        throw new KeysUnavailableError('the authorization server\'s keys cannot be fetched', { cause: error })
      }
      throw new InvalidTokenError(describe(error))
    }
    if (typeof payload.sub !== 'string' || payload.sub === '') throw new InvalidTokenError('the token names no subject')
    return {
      id: createHash('sha256').update(`${issuer}\n${payload.sub}`).digest('base64url').slice(0, 32),
      issuer,
      subject: payload.sub,
      ...(typeof payload.client_id === 'string' && { clientId: payload.client_id }),
      scopes: scopesOf(payload)
    }
  }

  /**
   * The issuer's JWK set, found through its metadata once. A failed lookup is kept for
   * RETRY_DISCOVERY_AFTER_MS, so a flood of requests while the issuer is down does not become a
   * flood of lookups.
   */
  #jwks (): Promise<JWTVerifyGetKey> {
    if (this.#keys === undefined) {
      const keys = this.#discover()
      keys.catch(() => setTimeout(() => { if (this.#keys === keys) this.#keys = undefined }, RETRY_DISCOVERY_AFTER_MS).unref())
      this.#keys = keys
    }
    return this.#keys
  }

  async #discover (): Promise<JWTVerifyGetKey> {
    const { issuer, metadataUrl } = this.#options
    const urls = metadataUrl === undefined ? metadataUrls(issuer) : [new URL(metadataUrl)]
    for (const url of urls) {
      let metadata: { issuer?: unknown, jwks_uri?: unknown }
      try {
        const response = await fetch(url, { signal: AbortSignal.timeout(FETCH_TIMEOUT_MS), headers: { accept: 'application/json' } })
        if (!response.ok) continue
        metadata = await response.json() as typeof metadata
      } catch {
        continue
      }
      // RFC 8414 section 3.3: metadata naming another issuer must not be used.
      if (metadata.issuer !== issuer || typeof metadata.jwks_uri !== 'string') continue
      return createRemoteJWKSet(new URL(metadata.jwks_uri), { timeoutDuration: FETCH_TIMEOUT_MS })
    }
    throw new KeysUnavailableError(`no metadata for issuer ${issuer} at ${urls.join(' or ')}`)
  }
}

/** Scopes granted: the space-separated `scope` claim (RFC 9068), or an `scp` array as some servers send. */
function scopesOf (payload: JWTPayload): Set<string> {
  if (typeof payload.scope === 'string') return new Set(payload.scope.split(' ').filter(s => s !== ''))
  if (Array.isArray(payload.scp)) return new Set(payload.scp.filter((s): s is string => typeof s === 'string'))
  return new Set()
}

/** Errors of fetching the key set (a network failure, a timeout, a bad answer), not of the token. */
function keysUnavailable (error: unknown): boolean {
  return error instanceof errors.JWKSTimeout || error instanceof errors.JWKSInvalid ||
    !(error instanceof errors.JOSEError) || error.constructor === errors.JOSEError
}

function describe (error: unknown): string {
  if (error instanceof errors.JWTExpired) return 'the token has expired'
  if (error instanceof errors.JWTClaimValidationFailed) return `the token's ${error.claim} claim is not accepted`
  if (error instanceof errors.JOSEAlgNotAllowed) return 'the token\'s signing algorithm is not accepted'
  if (error instanceof errors.JWSSignatureVerificationFailed) return 'the token\'s signature does not verify'
  if (error instanceof errors.JWKSNoMatchingKey) return 'the token is not signed by a key of the issuer'
  return 'the token is malformed'
}

/**
 * A WWW-Authenticate challenge (RFC 6750 section 3, RFC 9728 section 5.1): where the protected
 * resource's metadata is, the scopes to ask for, and for a refused token the error and why.
 */
export function bearerChallenge (metadataUrl: string, scopes: readonly string[], error?: { code: string, description: string }): string {
  const quote = (value: string) => `"${value.replace(/[\\"]/g, '')}"`
  const parts = [`resource_metadata=${quote(metadataUrl)}`]
  if (scopes.length > 0) parts.push(`scope=${quote(scopes.join(' '))}`)
  if (error !== undefined) parts.push(`error=${quote(error.code)}`, `error_description=${quote(error.description)}`)
  return `Bearer ${parts.join(', ')}`
}
