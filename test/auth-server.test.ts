import { createHash, randomBytes } from 'node:crypto'
import { test } from 'tap'
import { createRemoteJWKSet, decodeProtectedHeader, jwtVerify } from 'jose'
import { type AuthServer, startAuthServer } from './helpers/auth-server.js'

const resource = 'http://127.0.0.1:1/mcp'
const scopes = ['calculator:use', 'calculator:admin']

/** Verifies an access token as a resource server would, with the JWKS found by discovery. */
async function verify (issuer: string, token: string, audience = resource, metadata = 'oauth-authorization-server') {
  const { jwks_uri: jwksUri } = await (await fetch(`${issuer}/.well-known/${metadata}`)).json() as { jwks_uri: string }
  return jwtVerify(token, createRemoteJWKSet(new URL(jwksUri)), { issuer, audience, algorithms: ['ES256'] })
}

const form = (params: Record<string, string>) => ({
  method: 'POST',
  headers: { 'content-type': 'application/x-www-form-urlencoded' },
  body: new URLSearchParams(params)
})

test('development authorization server', async t => {
  const server = await startAuthServer({
    resources: [resource, 'http://127.0.0.1:2/mcp'],
    scopes,
    clients: [{ clientId: 'robot', clientSecret: 'robot-secret', scope: 'calculator:use calculator:admin' }]
  })
  t.teardown(() => server.stop())

  t.test('metadata at both well-known URLs', async t => {
    for (const path of ['openid-configuration', 'oauth-authorization-server']) {
      const response = await fetch(`${server.issuer}/.well-known/${path}`)
      t.equal(response.status, 200, path)
      const metadata = await response.json() as Record<string, unknown>
      t.equal(metadata.issuer, server.issuer, `${path}: issuer`)
      t.equal(metadata.jwks_uri, `${server.issuer}/jwks`, `${path}: jwks_uri`)
      t.equal(metadata.registration_endpoint, `${server.issuer}/reg`, `${path}: open registration`)
      t.same(metadata.code_challenge_methods_supported, ['S256'], `${path}: PKCE S256`)
      t.equal(metadata.authorization_response_iss_parameter_supported, true, `${path}: iss in responses`)
      t.same(metadata.scopes_supported, [...scopes, 'openid', 'offline_access'], `${path}: scopes`)
    }
    t.notOk(server.issuer.endsWith('/'), 'issuer without trailing slash')
  })

  t.test('a client-credentials token is an ES256 JWT for the resource', async t => {
    const token = await server.clientCredentialsToken('robot', 'robot-secret', 'calculator:use', resource)
    const { payload, protectedHeader } = await verify(server.issuer, token)
    t.ok(await verify(server.issuer, token, resource, 'openid-configuration'), 'verified with the JWKS from OpenID discovery too')
    t.equal(protectedHeader.typ, 'at+jwt')
    t.equal(protectedHeader.alg, 'ES256')
    t.equal(protectedHeader.kid, server.keys[0]!.kid)
    t.equal(payload.iss, server.issuer)
    t.equal(payload.aud, resource)
    t.equal(payload.scope, 'calculator:use')
    t.equal(payload.client_id, 'robot')
    t.equal(payload.sub, 'robot', 'sub is the client for client credentials')
    t.equal(payload.exp! - payload.iat!, 600, 'default lifetime')
    t.type(payload.jti, 'string')

    const other = await server.clientCredentialsToken('robot', 'robot-secret', 'calculator:admin', 'http://127.0.0.1:2/mcp')
    t.equal((await verify(server.issuer, other, 'http://127.0.0.1:2/mcp')).payload.scope, 'calculator:admin', 'the second resource')
  })

  t.test('a token for an unknown resource is refused', async t => {
    await t.rejects(server.clientCredentialsToken('robot', 'robot-secret', 'calculator:use', 'http://127.0.0.1:3/other'), /invalid_target/)
    await t.rejects(server.clientCredentialsToken('robot', 'wrong', 'calculator:use', resource), /invalid_client/)
  })

  t.test('authorization code flow of a dynamically registered public client', async t => {
    const redirectUri = 'http://127.0.0.1:1/callback'
    const registration = await fetch(`${server.issuer}/reg`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({
        client_name: 'test MCP client',
        redirect_uris: [redirectUri],
        grant_types: ['authorization_code', 'refresh_token'],
        response_types: ['code'],
        token_endpoint_auth_method: 'none'
      })
    })
    t.equal(registration.status, 201, 'registered')
    const client = await registration.json() as { client_id: string, client_secret?: string }
    t.notOk(client.client_secret, 'a public client has no secret')

    const verifier = randomBytes(32).toString('base64url')
    const authorization = new URL(`${server.issuer}/auth`)
    authorization.search = new URLSearchParams({
      response_type: 'code',
      client_id: client.client_id,
      redirect_uri: redirectUri,
      scope: 'calculator:use calculator:admin offline_access',
      // Without prompt=consent oidc-provider drops offline_access (OIDC Core 11); the MCP SDK sends it.
      prompt: 'consent',
      resource,
      state: 'some-state',
      code_challenge: createHash('sha256').update(verifier).digest('base64url'),
      code_challenge_method: 'S256'
    }).toString()

    const callback = await server.authorize(authorization)
    t.equal(`${callback.origin}${callback.pathname}`, redirectUri, 'back at the client')
    t.equal(callback.searchParams.get('iss'), server.issuer, 'RFC 9207 iss')
    t.equal(callback.searchParams.get('state'), 'some-state')
    const code = callback.searchParams.get('code')
    t.ok(code, `a code (${callback.search})`)

    const exchange = (params: Record<string, string>) => fetch(`${server.issuer}/token`, form({
      grant_type: 'authorization_code', code: code!, redirect_uri: redirectUri, client_id: client.client_id, resource, ...params
    }))
    const withoutVerifier = await exchange({})
    t.equal(withoutVerifier.status, 400, 'PKCE is required')

    const response = await exchange({ code_verifier: verifier })
    const tokens = await response.json() as { access_token: string, refresh_token?: string, token_type: string, scope: string }
    t.equal(response.status, 200, response.ok ? 'tokens' : JSON.stringify(tokens))
    t.equal(tokens.token_type, 'Bearer')
    const { payload, protectedHeader } = await verify(server.issuer, tokens.access_token)
    t.equal(protectedHeader.typ, 'at+jwt')
    t.equal(payload.aud, resource)
    t.equal(payload.sub, 'dev-user')
    t.equal(payload.client_id, client.client_id)
    t.same(String(payload.scope).split(' ').sort(), ['calculator:admin', 'calculator:use'], 'the requested resource scopes')
    t.ok(tokens.refresh_token, 'offline_access gives a refresh token')

    const refreshed = await fetch(`${server.issuer}/token`, form({
      grant_type: 'refresh_token', refresh_token: tokens.refresh_token!, client_id: client.client_id, resource
    }))
    const again = await refreshed.json() as { access_token: string }
    t.equal(refreshed.status, 200, refreshed.ok ? 'refreshed' : JSON.stringify(again))
    t.equal((await verify(server.issuer, again.access_token)).payload.aud, resource, 'a refreshed token is for the resource too')
  })

  t.test('an authorization request for an unknown resource is refused', async t => {
    const registration = await fetch(`${server.issuer}/reg`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ redirect_uris: ['http://127.0.0.1:1/callback'], token_endpoint_auth_method: 'none' })
    })
    const { client_id: clientId } = await registration.json() as { client_id: string }
    const authorization = new URL(`${server.issuer}/auth`)
    authorization.search = new URLSearchParams({
      response_type: 'code',
      client_id: clientId,
      redirect_uri: 'http://127.0.0.1:1/callback',
      scope: 'calculator:use',
      resource: 'http://127.0.0.1:3/other',
      code_challenge: createHash('sha256').update('x'.repeat(43)).digest('base64url'),
      code_challenge_method: 'S256'
    }).toString()
    const callback = await server.authorize(authorization)
    t.equal(callback.searchParams.get('error'), 'invalid_target')
  })
})

test('two servers sharing keys sign verifiable tokens with different issuers', async t => {
  const servers: AuthServer[] = []
  t.teardown(() => Promise.all(servers.map(s => s.stop())))
  const clients = [{ clientId: 'robot', clientSecret: 'robot-secret', scope: 'calculator:use' }]
  servers.push(await startAuthServer({ resources: [resource], scopes, clients }))
  servers.push(await startAuthServer({ resources: [resource], scopes, clients, keys: servers[0]!.keys, accessTokenTtlSeconds: 60 }))
  const [first, second] = servers as [AuthServer, AuthServer]
  t.not(first.issuer, second.issuer)
  t.same(second.keys, first.keys)

  const token = await second.clientCredentialsToken('robot', 'robot-secret', 'calculator:use', resource)
  t.equal(decodeProtectedHeader(token).kid, first.keys[0]!.kid, 'signed with the shared key')
  const { payload } = await verify(second.issuer, token)
  t.equal(payload.exp! - payload.iat!, 60, 'its own lifetime')
  // The first server's JWKS verifies the signature, but not the issuer.
  await t.rejects(verify(first.issuer, token), { code: 'ERR_JWT_CLAIM_VALIDATION_FAILED', claim: 'iss' })
})
