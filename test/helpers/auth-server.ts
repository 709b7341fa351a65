import { randomBytes } from 'node:crypto'
import { type IncomingMessage, type ServerResponse, createServer } from 'node:http'
import type { AddressInfo } from 'node:net'
import { type JWK, calculateJwkThumbprint, exportJWK, generateKeyPair } from 'jose'

/** What the harness uses of an oidc-provider v9 instance (the package ships no type declarations). */
export interface Provider {
  issuer: string
  /** Koa's: trust X-Forwarded-* headers (set, so the dev server works behind a TLS proxy). */
  proxy: boolean
  callback (): (req: IncomingMessage, res: ServerResponse) => void
  interactionDetails (req: IncomingMessage, res: ServerResponse): Promise<Interaction>
  interactionFinished (req: IncomingMessage, res: ServerResponse, result: object, options?: { mergeWithLastSubmission?: boolean }): Promise<void>
  Grant: GrantModel
  on (event: string, listener: (...args: any[]) => void): unknown
}

/** An oidc-provider interaction, as `provider.interactionDetails` returns it. */
export interface Interaction {
  uid: string
  grantId?: string
  session?: { accountId: string }
  params: Record<string, unknown> & { client_id: string }
  prompt: {
    name: string
    reasons: string[]
    details: {
      missingOIDCScope?: string[]
      missingOIDCClaims?: string[]
      missingResourceScopes?: Record<string, string[]>
    }
  }
}

/** An oidc-provider Grant. */
export interface Grant {
  addOIDCScope (scope: string): void
  addOIDCClaims (claims: string[]): void
  addResourceScope (resource: string, scope: string): void
  save (): Promise<string>
}

/** The Grant model of a provider. */
export interface GrantModel {
  new (properties: { accountId: string, clientId: string }): Grant
  find (id: string): Promise<Grant | undefined>
}

/** How to start a development authorization server. */
export interface AuthServerOptions {
  /** 0 = any free port (default). */
  port?: number
  /** Default '127.0.0.1'. */
  host?: string
  /** Default `http://${host}:${port}`; lets a deployment set its public issuer URL (no trailing slash). */
  issuer?: string
  /** Resource indicators (RFC 8707) the AS issues JWT access tokens for; the token's aud is the resource. */
  resources: string[]
  /** Scopes the resource servers accept, e.g. ['calculator:use', 'calculator:admin']. */
  scopes: string[]
  /** Default 600. */
  accessTokenTtlSeconds?: number
  /** Private ES256 signing JWKs; default: one freshly generated key. Lets two servers share a key. */
  keys?: JWK[]
  /** client_credentials clients registered up front. */
  clients?: Array<{ clientId: string, clientSecret: string, scope: string }>
  /** The account id every interactive login becomes, default 'dev-user'. */
  subject?: string
}

/** A running development authorization server. */
export interface AuthServer {
  issuer: string
  /** The private JWKs used (so another server can share them). */
  keys: JWK[]
  /** The oidc-provider instance. */
  provider: Provider
  /** client_credentials grant for a client registered up front; resource sets the audience. */
  clientCredentialsToken (clientId: string, clientSecret: string, scope: string, resource: string): Promise<string>
  /**
   * Follows an authorization URL (as an MCP client would open in a browser) through login and
   * consent, finished programmatically (no HTML), with a cookie jar, and returns the final redirect
   * URL to the client's redirect_uri (with code, state, iss — or error) without requesting it.
   */
  authorize (authorizationUrl: URL | string): Promise<URL>
  stop (): Promise<void>
}

type OidcProviderModule = {
  default: new (issuer: string, configuration: object) => Provider
  errors: { InvalidTarget: new (description?: string) => Error }
}

let quietDepth = 0
let loud: Pick<Console, 'warn' | 'info'> | undefined

/** Runs `fn` with oidc-provider's console notices dropped (anything else still printed), then puts the console back. */
async function quietly<T> (fn: () => T | Promise<T>): Promise<T> {
  if (quietDepth++ === 0) {
    loud = { warn: console.warn, info: console.info }
    const filter = (write: (...args: unknown[]) => void) => (...args: unknown[]) => {
      if (typeof args[0] === 'string' && args[0].includes('oidc-provider ')) return
      write(...args)
    }
    console.warn = filter(loud.warn)
    console.info = filter(loud.info)
  }
  try {
    return await fn()
  } finally {
    if (--quietDepth === 0 && loud !== undefined) Object.assign(console, loud)
  }
}

let loading: Promise<OidcProviderModule> | undefined
// Loaded on first use, quietly: on Node 20 the module warns about the runtime when it is evaluated.
const oidcProvider = () => (loading ??= quietly(() => import('oidc-provider' as string) as Promise<OidcProviderModule>))

/** One fresh ES256 private signing JWK with kid, alg and use. */
async function generateKey (): Promise<JWK> {
  const { privateKey } = await generateKeyPair('ES256', { extractable: true })
  const jwk = await exportJWK(privateKey)
  return { ...jwk, kid: await calculateJwkThumbprint(jwk), alg: 'ES256', use: 'sig' }
}

const listen = (server: ReturnType<typeof createServer>, port: number, host: string) => new Promise<number>((resolve, reject) => {
  server.once('error', reject)
  server.listen(port, host, () => {
    server.off('error', reject)
    resolve((server.address() as AddressInfo).port)
  })
})

/** A minimal cookie jar: name and path as the key, paths matched by prefix, expired cookies dropped. */
class CookieJar {
  readonly #cookies = new Map<string, { name: string, value: string, path: string }>()

  store (setCookies: string[]) {
    for (const line of setCookies) {
      const [pair = '', ...attributes] = line.split(';').map(part => part.trim())
      const eq = pair.indexOf('=')
      const name = pair.slice(0, eq)
      const value = pair.slice(eq + 1)
      let path = '/'
      let expired = value === ''
      for (const attribute of attributes) {
        const [key = '', val = ''] = attribute.split('=')
        if (key.toLowerCase() === 'path') path = val
        if (key.toLowerCase() === 'max-age' && Number(val) <= 0) expired = true
        if (key.toLowerCase() === 'expires' && Date.parse(val) <= Date.now()) expired = true
      }
      if (expired) this.#cookies.delete(`${name} ${path}`)
      else this.#cookies.set(`${name} ${path}`, { name, value, path })
    }
  }

  header (url: URL): string {
    return [...this.#cookies.values()]
      .filter(c => url.pathname === c.path || url.pathname.startsWith(c.path.endsWith('/') ? c.path : `${c.path}/`))
      .map(c => `${c.name}=${c.value}`)
      .join('; ')
  }
}

/**
 * Starts an oidc-provider v9 authorization server for tests and development: JWT access tokens
 * (ES256, typ at+jwt) for the given resource indicators, client credentials, open dynamic client
 * registration, PKCE for public clients, and an interaction endpoint that logs `subject` in and
 * consents to every requested known scope without any page.
 */
export async function startAuthServer (options: AuthServerOptions): Promise<AuthServer> {
  const { default: ProviderClass, errors } = await oidcProvider()
  const host = options.host ?? '127.0.0.1'
  const scopes = options.scopes
  const ttl = options.accessTokenTtlSeconds ?? 600
  const subject = options.subject ?? 'dev-user'
  const keys = options.keys ?? [await generateKey()]
  const resources = new Map(options.resources.map(r => [new URL(r).href, r]))
  const oidcScopes = new Set([...scopes, 'openid', 'offline_access'])

  const server = createServer()
  const port = await listen(server, options.port ?? 0, host)
  const issuer = (options.issuer ?? `http://${host.includes(':') ? `[${host}]` : host}:${port}`).replace(/\/+$/, '')
  // With a path in the issuer (behind a proxy), every route lives under it, like a mounted Koa app.
  const base = new URL(issuer).pathname.replace(/\/+$/, '')

  const provider = await quietly(() => new ProviderClass(issuer, {
    jwks: { keys },
    cookies: { keys: [randomBytes(32).toString('base64url')] },
    scopes: [...oidcScopes],
    clients: (options.clients ?? []).map(c => ({
      client_id: c.clientId,
      client_secret: c.clientSecret,
      scope: c.scope,
      grant_types: ['client_credentials'],
      response_types: [],
      redirect_uris: []
    })),
    clientDefaults: {
      grant_types: ['authorization_code'],
      id_token_signed_response_alg: 'ES256',
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic'
    },
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      registration: { enabled: true },
      resourceIndicators: {
        enabled: true,
        defaultResource: async (_ctx: unknown, _client: unknown, oneOf?: string[]) => oneOf?.[0] ?? options.resources[0],
        // A token request without resource gets the one that was granted, as a JWT access token.
        useGrantedResource: async () => true,
        getResourceServerInfo: async (_ctx: unknown, resource: string) => {
          if (!resources.has(new URL(resource).href)) throw new errors.InvalidTarget(`unknown resource ${resource}`)
          return {
            audience: resource,
            scope: scopes.join(' '),
            accessTokenTTL: ttl,
            accessTokenFormat: 'jwt',
            jwt: { sign: { alg: 'ES256' } }
          }
        }
      }
    },
    interactions: { url: (_ctx: unknown, interaction: { uid: string }) => `${base}/interaction/${interaction.uid}` },
    findAccount: async (_ctx: unknown, sub: string) => ({ accountId: sub, claims: async () => ({ sub }) }),
    // Browser-based MCP clients (an inspector) may call the token endpoint cross-origin.
    clientBasedCORS: () => true,
    renderError: async (ctx: { type: string, body: unknown }, out: object) => {
      ctx.type = 'json'
      ctx.body = out
    },
    ttl: {
      AccessToken: ttl,
      AuthorizationCode: 60,
      ClientCredentials: ttl,
      Grant: 3600,
      IdToken: 3600,
      Interaction: 600,
      RefreshToken: 86400,
      Session: 3600
    }
  }))
  provider.proxy = true
  provider.on('server_error', (_ctx: unknown, error: Error) => console.error('auth server error:', error))

  /** The interaction page: logs `subject` in, then grants what was asked for, as known to this server. */
  const interact = async (req: IncomingMessage, res: ServerResponse) => {
    const { prompt, params, grantId, session } = await provider.interactionDetails(req, res)
    if (prompt.name === 'login') {
      return provider.interactionFinished(req, res, { login: { accountId: subject } }, { mergeWithLastSubmission: false })
    }
    if (prompt.name !== 'consent' || session === undefined) throw new Error(`unexpected prompt ${prompt.name}`)
    const grant = (grantId === undefined ? undefined : await provider.Grant.find(grantId)) ??
      new provider.Grant({ accountId: session.accountId, clientId: params.client_id })
    const { missingOIDCScope, missingOIDCClaims, missingResourceScopes } = prompt.details
    const oidc = (missingOIDCScope ?? []).filter(s => oidcScopes.has(s))
    if (oidc.length > 0) grant.addOIDCScope(oidc.join(' '))
    if (missingOIDCClaims !== undefined) grant.addOIDCClaims(missingOIDCClaims)
    for (const [resource, wanted] of Object.entries(missingResourceScopes ?? {})) {
      grant.addResourceScope(resource, wanted.filter(s => scopes.includes(s)).join(' '))
    }
    const id = await grant.save()
    return provider.interactionFinished(req, res, { consent: { grantId: id } }, { mergeWithLastSubmission: true })
  }

  const metadata = `/.well-known/oauth-authorization-server${base}`
  const handle = provider.callback()
  server.on('request', (req: IncomingMessage, res: ServerResponse) => {
    if (base !== '') {
      const original = req.url ?? '/'
      const path = original.split('?')[0]!
      // RFC 8414: the metadata of an issuer with a path is at /.well-known/oauth-authorization-server/path.
      if (path === metadata) req.url = `/.well-known/oauth-authorization-server${original.slice(path.length)}`
      else if (path.startsWith(`${base}/`)) req.url = original.slice(base.length)
      else {
        res.writeHead(404).end()
        return
      }
      // As Express does for a mounted app: oidc-provider finds its mount path from originalUrl.
      Object.assign(req, { originalUrl: `${base}${req.url}` })
    }
    if (req.method === 'GET' && /^\/interaction\/[^/?]+$/.test(req.url!.split('?')[0]!)) {
      interact(req, res).catch(error => {
        if (!res.headersSent) res.writeHead(500, { 'content-type': 'text/plain' })
        res.end(`interaction failed: ${error instanceof Error ? error.message : String(error)}`)
      })
      return
    }
    handle(req, res)
  })

  const tokenEndpoint = `${issuer}/token`
  return {
    issuer,
    keys,
    provider,

    async clientCredentialsToken (clientId, clientSecret, scope, resource) {
      const credentials = Buffer.from(`${encodeURIComponent(clientId)}:${encodeURIComponent(clientSecret)}`).toString('base64')
      const response = await fetch(tokenEndpoint, {
        method: 'POST',
        headers: { authorization: `Basic ${credentials}`, 'content-type': 'application/x-www-form-urlencoded' },
        body: new URLSearchParams({ grant_type: 'client_credentials', scope, resource })
      })
      const body = await response.json() as { access_token?: string }
      if (!response.ok || typeof body.access_token !== 'string') {
        throw new Error(`client_credentials token request failed: ${response.status} ${JSON.stringify(body)}`)
      }
      return body.access_token
    },

    async authorize (authorizationUrl) {
      let url = new URL(authorizationUrl)
      const redirectUri = url.searchParams.get('redirect_uri')
      const jar = new CookieJar()
      const ours = (u: URL) => u.origin === new URL(issuer).origin && (base === '' || u.pathname.startsWith(`${base}/`))
      for (let hop = 0; hop < 10; hop++) {
        const response = await fetch(url, { redirect: 'manual', headers: { cookie: jar.header(url) } })
        jar.store(response.headers.getSetCookie())
        const location = response.headers.get('location')
        if (response.status < 300 || response.status >= 400 || location === null) {
          throw new Error(`authorization stopped at ${url.href}: ${response.status} ${await response.text()}`)
        }
        await response.body?.cancel()
        url = new URL(location, url)
        const target = `${url.origin}${url.pathname}`
        if ((redirectUri !== null && target === new URL(redirectUri).href.split('?')[0]) || !ours(url)) return url
      }
      throw new Error('authorization did not come back to the client after 10 redirects')
    },

    stop: () => new Promise<void>((resolve, reject) => {
      server.close(error => error === undefined ? resolve() : reject(error))
      server.closeAllConnections()
    })
  }
}
