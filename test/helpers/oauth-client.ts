import { type JsonWebKey, createPublicKey, randomBytes } from 'node:crypto'
import { type JWK, type JWTPayload, SignJWT, base64url, decodeJwt, decodeProtectedHeader, importJWK } from 'jose'
import type { OAuthClientProvider } from '@modelcontextprotocol/sdk/client/auth.js'
import type { OAuthClientInformationMixed, OAuthClientMetadata, OAuthTokens } from '@modelcontextprotocol/sdk/shared/auth.js'
import { spawnServer } from './nodes.js'
import { freePort } from './processes.js'
import { type Answer, post } from './raw-client.js'

/**
 * An interactive MCP client's OAuth state, kept in memory: dynamic registration as a public client
 * (PKCE, no secret), and a "browser" that is `open` (the development authorization server's
 * programmatic login and consent). It keeps the authorization URL it was sent to and the callback
 * URL the browser came back with, for the test to look at.
 */
export class InMemoryOAuthClient implements OAuthClientProvider {
  readonly redirectUrl: string
  readonly stateValue = randomBytes(16).toString('base64url')
  authorizationUrl?: URL
  callbackUrl?: URL
  #client?: OAuthClientInformationMixed
  #tokens?: OAuthTokens
  #verifier?: string
  readonly #open: (authorizationUrl: URL) => Promise<URL>

  constructor (redirectUrl: string, open: (authorizationUrl: URL) => Promise<URL>) {
    this.redirectUrl = redirectUrl
    this.#open = open
  }

  get clientMetadata (): OAuthClientMetadata {
    return {
      client_name: 'authorization test client',
      redirect_uris: [this.redirectUrl],
      grant_types: ['authorization_code', 'refresh_token'],
      response_types: ['code'],
      token_endpoint_auth_method: 'none'
    }
  }

  state () { return this.stateValue }
  clientInformation () { return this.#client }
  saveClientInformation (information: OAuthClientInformationMixed) { this.#client = information }
  tokens () { return this.#tokens }
  saveTokens (tokens: OAuthTokens) { this.#tokens = tokens }
  saveCodeVerifier (verifier: string) { this.#verifier = verifier }

  codeVerifier () {
    if (this.#verifier === undefined) throw new Error('no code verifier saved')
    return this.#verifier
  }

  async redirectToAuthorization (authorizationUrl: URL) {
    this.authorizationUrl = authorizationUrl
    this.callbackUrl = await this.#open(authorizationUrl)
  }
}

/** The parameters of a WWW-Authenticate challenge, with its scheme. */
export function parseChallenge (header: string | null): { scheme: string, params: Record<string, string> } {
  const value = header ?? ''
  const scheme = /^\S+/.exec(value)?.[0] ?? ''
  const params: Record<string, string> = {}
  for (const [, name, quoted] of value.slice(scheme.length).matchAll(/([A-Za-z_]+)="([^"]*)"/g)) params[name!] = quoted!
  return { scheme, params }
}

/** A bearer Authorization header. */
export const bearer = (token: string) => ({ authorization: `Bearer ${token}` })

/** Initializes a session as the bearer of `token` (and sends notifications/initialized); returns its id. */
export async function initializeAs (url: URL | string, token: string, name = 'raw-client'): Promise<string> {
  const answer = await post(url, { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name, version: '1.0.0' } } }, undefined, bearer(token))
  const sessionId = answer.headers.get('mcp-session-id')
  if (answer.status !== 200 || sessionId === null) throw new Error(`initialize failed with ${answer.status}: ${JSON.stringify(answer.messages)}`)
  await post(url, { jsonrpc: '2.0', method: 'notifications/initialized' }, sessionId, bearer(token))
  return sessionId
}

let nextId = 100

/** A tools/call on a session with an Authorization header (or none when `authorization` is undefined). */
export function callToolAs (url: URL | string, authorization: string | undefined, sessionId: string | undefined, name: string, args: Record<string, unknown> = {}): Promise<Answer> {
  return post(url, { jsonrpc: '2.0', id: nextId++, method: 'tools/call', params: { name, arguments: args } }, sessionId, authorization === undefined ? {} : { authorization })
}

/** A GET stream request with a bearer token; the body is not read. */
export async function openStreamAs (url: URL | string, token: string, sessionId: string): Promise<Response> {
  const response = await fetch(url, { headers: { accept: 'text/event-stream', 'mcp-session-id': sessionId, ...bearer(token) } })
  if (response.status === 200) await response.body?.cancel()
  return response
}

/** A DELETE of a session with a bearer token. */
export function deleteAs (url: URL | string, token: string, sessionId: string): Promise<Response> {
  return fetch(url, { method: 'DELETE', headers: { 'mcp-session-id': sessionId, ...bearer(token) } })
}

/** An initialize POST with the given Authorization header value (or none); the answer's status and headers. */
export function initializeWith (url: URL | string, authorization?: string): Promise<Answer> {
  return post(url, { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'attacker', version: '1' } } }, undefined, authorization === undefined ? {} : { authorization })
}

/**
 * Forged tokens, made from a genuine access token's header and claims: each differs from a token
 * the server accepts in one way only.
 */
export const forge = {
  /** The same header and signature, with claims changed (a tampered payload). */
  tampered (token: string, changes: JWTPayload): string {
    const [header, , signature] = token.split('.')
    return `${header}.${base64url.encode(JSON.stringify({ ...decodeJwt(token), ...changes }))}.${signature}`
  },
  /** An unsecured JWT (alg none, RFC 7519 section 6) with the token's claims. */
  unsigned (token: string): string {
    const { kid: _kid, ...header } = decodeProtectedHeader(token)
    return `${base64url.encode(JSON.stringify({ ...header, alg: 'none' }))}.${base64url.encode(JSON.stringify(decodeJwt(token)))}.`
  },
  /** The token's claims signed with HS256 and `secret`. */
  hs256 (token: string, secret: Uint8Array): Promise<string> {
    return new SignJWT(decodeJwt(token)).setProtectedHeader({ alg: 'HS256', typ: 'at+jwt' }).sign(secret)
  },
  /** The token's claims (with `changes`) and header (with `header`) signed with a private signing JWK (ES256). */
  async signed (token: string, key: JWK, header: { typ?: string } = {}, changes: JWTPayload = {}): Promise<string> {
    const { kid } = decodeProtectedHeader(token)
    return new SignJWT({ ...decodeJwt(token), ...changes }).setProtectedHeader({ alg: 'ES256', kid, typ: 'at+jwt', ...header }).sign(await importJWK(key, 'ES256'))
  }
}

/** The PEM (SPKI) of a signing JWK's public half: the classic HS256 "public key as secret" attack uses it. */
export function publicKeyPem (key: JWK): string {
  const { d: _d, ...publicJwk } = key
  return createPublicKey({ key: publicJwk as JsonWebKey, format: 'jwk' }).export({ type: 'spki', format: 'pem' }).toString()
}

/** `count` distinct TCP ports that were free a moment ago on loopback. */
export async function freePorts (count: number): Promise<number[]> {
  const ports = new Set<number>()
  while (ports.size < count) ports.add(await freePort())
  return [...ports]
}

/** A fetch that logs each request as "METHOD URL STATUS", for following a client's discovery. */
export function recordingFetch (log: string[]): typeof fetch {
  return async (input, init) => {
    const response = await fetch(input, init)
    const url = input instanceof Request ? input.url : String(input)
    log.push(`${init?.method ?? (input instanceof Request ? input.method : 'GET')} ${url} ${response.status}`)
    return response
  }
}

/** Starts a server process and waits for it to exit: its exit code and output (for a server that must refuse to boot). */
export async function bootRefusal (port: number, env: Record<string, string>, timeoutMs = 20_000): Promise<{ code: number | null, output: string }> {
  const output: string[] = []
  const child = spawnServer('refused', port, env, output)
  const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs)
  const code = await new Promise<number | null>(resolve => child.once('exit', resolve))
  clearTimeout(timer)
  return { code, output: output.join('') }
}
