import { randomBytes } from 'node:crypto'
import { setTimeout as sleep } from 'node:timers/promises'
import { test } from 'tap'
import { type JWK, decodeJwt, decodeProtectedHeader, exportJWK, generateKeyPair } from 'jose'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { UnauthorizedError } from '@modelcontextprotocol/sdk/client/auth.js'
import { ClientCredentialsProvider } from '@modelcontextprotocol/sdk/client/auth-extensions.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { type AuthServer, startAuthServer } from './helpers/auth-server.js'
import { needs } from './helpers/needs.js'
import { inspectorCli } from './helpers/node22.js'
import { type ServerNode, recordingServedBy, startNginxIn, startNode, writeNginxConfig } from './helpers/nodes.js'
import {
  InMemoryOAuthClient, bearer, bootRefusal, callToolAs, deleteAs, forge, freePorts, initializeAs, initializeWith, openStreamAs,
  parseChallenge, publicKeyPem, recordingFetch
} from './helpers/oauth-client.js'
import { startRedis } from './helpers/processes.js'
import { type Answer, modernPost } from './helpers/raw-client.js'

type Structured = Record<string, any>

const SCOPES = ['calculator:use', 'calculator:admin']
const ALL_SCOPES = SCOPES.join(' ')
/** Principal A may use the calculator; principal B may also clear histories. */
const A = { clientId: 'client-a', clientSecret: 'secret-a', scope: 'calculator:use' }
const B = { clientId: 'client-b', clientSecret: 'secret-b', scope: ALL_SCOPES }
const CLIENTS = [A, B]
/** A resource the authorization server also issues tokens for: not this server. */
const OTHER_RESOURCE = 'http://127.0.0.1:1/other/mcp'
/** Where the authorization-code client's "browser" is sent back to; never requested. */
const REDIRECT_URL = 'http://127.0.0.1:1/oauth/callback'

const tokenFor = (server: AuthServer, client: typeof A, resource: string, scope = client.scope) =>
  server.clientCredentialsToken(client.clientId, client.clientSecret, scope, resource)

const metadataUrlOf = (node: ServerNode) => `${node.url}/.well-known/oauth-protected-resource/mcp`
const structured = (answer: Answer): Structured => answer.messages[0]?.result?.structuredContent
const historyResults = (history: Structured) => (history.entries as Structured[]).map(e => e.result)

/** An official SDK client authenticating with client credentials (discovering everything from the server's 401). */
async function credentialsClient (url: URL, issuer: string, client: typeof A, name: string, fetchFn?: typeof fetch) {
  const authProvider = new ClientCredentialsProvider({ ...client, expectedIssuer: issuer })
  const transport = new StreamableHTTPClientTransport(url, { authProvider, ...(fetchFn !== undefined && { fetch: fetchFn }) })
  const sdk = new Client({ name, version: '1.0.0' })
  await sdk.connect(transport)
  return { client: sdk, transport, authProvider }
}

test('authorization on one node (memory mode)', async t => {
  const [mainPort, limitedPort, expiryPort] = await freePorts(3) as [number, number, number]
  const mainResource = `http://127.0.0.1:${mainPort}/mcp`
  const limitedResource = `http://127.0.0.1:${limitedPort}/mcp`
  const expiryResource = `http://127.0.0.1:${expiryPort}/mcp`

  const servers: AuthServer[] = []
  const nodes: ServerNode[] = []
  t.teardown(async () => {
    await Promise.all(nodes.map(n => n.kill()))
    await Promise.all(servers.map(s => s.stop()))
  })
  const authServer = async (options: Parameters<typeof startAuthServer>[0]) => {
    const server = await startAuthServer(options)
    servers.push(server)
    return server
  }
  // The issuer the nodes trust; a rogue one holding the same signing keys; one whose tokens live 1 s.
  const auth = await authServer({ resources: [mainResource, limitedResource, OTHER_RESOURCE], scopes: SCOPES, clients: CLIENTS })
  const rogue = await authServer({ resources: [mainResource], scopes: SCOPES, clients: CLIENTS, keys: auth.keys })
  const shortLived = await authServer({ resources: [expiryResource], scopes: SCOPES, clients: CLIENTS, accessTokenTtlSeconds: 1 })

  const node = async (id: string, port: number, env: Record<string, string>) => {
    const started = await startNode(id, env, port)
    nodes.push(started)
    return started
  }
  const [main, limited, expiry] = await Promise.all([
    node('main', mainPort, { AUTH_ISSUER: auth.issuer, PUBLIC_URL: mainResource }),
    node('limited', limitedPort, { AUTH_ISSUER: auth.issuer, PUBLIC_URL: limitedResource, AUTH_FAILURE_LIMIT: '3', RATE_LIMIT_WINDOW_MS: '2000' }),
    node('expiry', expiryPort, { AUTH_ISSUER: shortLived.issuer, PUBLIC_URL: expiryResource })
  ])

  // A token that expires in a second, used once now; its expiry is checked later, once past the
  // 5 s clock tolerance (the subtests in between take that long anyway).
  const shortToken = await tokenFor(shortLived, A, expiryResource)
  const shortTokenFresh = await initializeWith(expiry.mcpUrl, `Bearer ${shortToken}`)

  const tokenA = await tokenFor(auth, A, mainResource)
  const tokenB = await tokenFor(auth, B, mainResource)

  await t.test('/health says auth: jwt', async t => {
    t.match(await (await fetch(`${main.url}/health`)).json(), { status: 'ok', auth: 'jwt' })
  })

  await t.test('protected resource metadata at the MCP endpoint\'s well-known URL and the root one', async t => {
    for (const path of ['/.well-known/oauth-protected-resource/mcp', '/.well-known/oauth-protected-resource']) {
      const response = await fetch(`${main.url}${path}`)
      t.equal(response.status, 200, path)
      const metadata = await response.json() as Structured
      t.equal(metadata.resource, mainResource, `${path}: resource is PUBLIC_URL`)
      t.same(metadata.authorization_servers, [auth.issuer], `${path}: the issuer`)
      t.same([...metadata.scopes_supported].sort(), [...SCOPES].sort(), `${path}: scopes`)
      t.same(metadata.bearer_methods_supported, ['header'], `${path}: header only`)
    }
  })

  await t.test('no token: 401 with a challenge naming the metadata and the base scope, no error', async t => {
    const answers = [
      await initializeWith(main.mcpUrl),
      await fetch(main.mcpUrl, { headers: { accept: 'text/event-stream', 'mcp-session-id': 'x' } }),
      await fetch(main.mcpUrl, { method: 'DELETE', headers: { 'mcp-session-id': 'x' } })
    ]
    for (const [i, answer] of answers.entries()) {
      const what = ['POST', 'GET', 'DELETE'][i]!
      t.equal(answer.status, 401, `${what}: 401`)
      const { scheme, params } = parseChallenge(answer.headers.get('www-authenticate'))
      t.equal(scheme, 'Bearer', `${what}: Bearer`)
      t.equal(params.resource_metadata, metadataUrlOf(main), `${what}: resource_metadata`)
      t.equal(params.scope, 'calculator:use', `${what}: scope`)
      t.notOk('error' in params, `${what}: no error parameter`)
    }
  })

  await t.test('the SDK client with client credentials discovers the authorization server from the 401 and uses the tools', async t => {
    const log: string[] = []
    const { client, authProvider } = await credentialsClient(main.mcpUrl, auth.issuer, A, 'machine', recordingFetch(log))
    t.teardown(() => client.close())
    const tools = (await client.listTools()).tools.map(tool => tool.name)
    t.ok(tools.includes('calculate') && tools.includes('clear_history'), 'tools listed')
    const result = await client.callTool({ name: 'calculate', arguments: { a: 2, b: 3, op: 'add' } })
    t.equal((result.structuredContent as Structured).result, 5)

    const at = (pattern: RegExp) => log.findIndex(line => pattern.test(line))
    const steps = [
      at(new RegExp(`^POST ${main.mcpUrl.href} 401$`)),
      at(new RegExp(`^GET ${metadataUrlOf(main)} 200$`)),
      at(new RegExp(`^GET ${auth.issuer}/\\.well-known/(oauth-authorization-server|openid-configuration) 200$`)),
      at(new RegExp(`^POST ${auth.issuer}/token 200$`)),
      at(new RegExp(`^POST ${main.mcpUrl.href} 200$`))
    ]
    t.ok(steps.every((step, i) => step >= 0 && (i === 0 || step > steps[i - 1]!)), `401, resource metadata, AS metadata, token, retry, in order:\n${log.join('\n')}`)
    const claims = decodeJwt(authProvider.tokens()!.access_token)
    t.equal(claims.aud, mainResource, 'the token is for PUBLIC_URL (resource indicator)')
    t.equal(claims.scope, 'calculator:use')
  })

  await t.test('the SDK client\'s authorization-code flow: registration, PKCE with resource, consent, iss, token', async t => {
    const oauth = new InMemoryOAuthClient(REDIRECT_URL, url => auth.authorize(url))
    const log: string[] = []
    const first = new StreamableHTTPClientTransport(main.mcpUrl, { authProvider: oauth, fetch: recordingFetch(log) })
    t.teardown(() => first.close())
    const refused = await new Client({ name: 'interactive', version: '1.0.0' }).connect(first).then(() => undefined, (error: unknown) => error)
    t.ok(refused instanceof UnauthorizedError, `the first connection needs the user (${String(refused)})`)

    t.ok(log.some(line => line === `POST ${auth.issuer}/reg 201`), 'registered dynamically')
    const registered = oauth.clientInformation()
    t.ok(registered?.client_id, 'a client id')
    t.notOk(registered && 'client_secret' in registered && registered.client_secret, 'a public client: no secret')

    const url = oauth.authorizationUrl!
    t.ok(url, 'sent to the authorization endpoint')
    t.equal(`${url.origin}${url.pathname}`, `${auth.issuer}/auth`)
    const param = (name: string) => url.searchParams.get(name)
    t.equal(param('response_type'), 'code')
    t.equal(param('client_id'), registered?.client_id)
    t.equal(param('redirect_uri'), REDIRECT_URL)
    t.equal(param('resource'), mainResource, 'resource indicator = PUBLIC_URL')
    t.equal(param('code_challenge_method'), 'S256')
    t.match(param('code_challenge'), /^[A-Za-z0-9_-]{43}$/, 'a S256 code challenge')
    t.equal(param('scope'), 'calculator:use', 'the scope the 401 challenge named')
    t.equal(param('state'), oauth.stateValue)

    const callback = oauth.callbackUrl!
    t.equal(`${callback.origin}${callback.pathname}`, REDIRECT_URL, 'back at the redirect URI')
    t.equal(callback.searchParams.get('iss'), auth.issuer, 'RFC 9207: iss names the issuer the client started with')
    t.equal(callback.searchParams.get('state'), oauth.stateValue, 'state round trip')
    t.notOk(callback.searchParams.get('error'), callback.search)
    const code = callback.searchParams.get('code')
    t.ok(code, 'an authorization code')

    await first.finishAuth(code!)
    t.ok(log.some(line => line === `POST ${auth.issuer}/token 200`), 'code exchanged')
    const claims = decodeJwt(oauth.tokens()!.access_token)
    t.equal(claims.aud, mainResource)
    t.equal(claims.iss, auth.issuer)
    t.equal(claims.sub, 'dev-user', 'the user who consented')
    t.equal(claims.client_id, registered?.client_id)
    t.equal(claims.scope, 'calculator:use')

    const transport = new StreamableHTTPClientTransport(main.mcpUrl, { authProvider: oauth })
    const client = new Client({ name: 'interactive', version: '1.0.0' })
    await client.connect(transport)
    t.teardown(() => client.close())
    t.ok((await client.listTools()).tools.some(tool => tool.name === 'calculate'), 'tools listed')
    const result = await client.callTool({ name: 'calculate', arguments: { a: 6, b: 7, op: 'multiply' } })
    t.equal((result.structuredContent as Structured).result, 42)
  })

  await t.test('refused tokens: 401 with an invalid_token challenge saying why', async t => {
    const key = auth.keys[0]!
    const now = Math.floor(Date.now() / 1000)
    const { privateKey } = await generateKeyPair('ES256', { extractable: true })
    const strangerKey: JWK = { ...await exportJWK(privateKey), kid: 'not-a-key-of-the-issuer' }
    const rogueToken = await tokenFor(rogue, A, mainResource)
    t.equal(decodeProtectedHeader(rogueToken).kid, key.kid, 'the rogue issuer signs with the real issuer\'s key')

    const control = await initializeWith(main.mcpUrl, `Bearer ${tokenA}`)
    t.equal(control.status, 200, 'the genuine token the forgeries start from is accepted')
    const resigned = await forge.signed(tokenA, key, { typ: 'at+jwt' })
    t.equal((await initializeWith(main.mcpUrl, `Bearer ${resigned}`)).status, 200, 'so are its claims re-signed with the issuer\'s key (the signing below is sound)')
    const withinTolerance = await forge.signed(tokenA, key, {}, { exp: now - 2 })
    t.equal((await initializeWith(main.mcpUrl, `Bearer ${withinTolerance}`)).status, 200, 'and a token expired 2 s ago, within the 5 s clock tolerance')

    const refused: Array<[string, string, RegExp]> = [
      ['wrong audience (a token for another resource)', `Bearer ${await tokenFor(auth, A, OTHER_RESOURCE)}`, /aud/],
      ['wrong issuer (another server with the same keys)', `Bearer ${rogueToken}`, /iss/],
      ['tampered payload (scope widened, signature kept)', `Bearer ${forge.tampered(tokenA, { scope: ALL_SCOPES })}`, /signature/],
      ['alg none', `Bearer ${forge.unsigned(tokenA)}`, /algorithm/],
      ['HS256 with a random secret', `Bearer ${await forge.hs256(tokenA, randomBytes(32))}`, /algorithm/],
      ['HS256 with the issuer\'s public key as the secret', `Bearer ${await forge.hs256(tokenA, new TextEncoder().encode(publicKeyPem(key)))}`, /algorithm/],
      ['typ JWT rather than at+jwt (an ID-token-like JWT)', `Bearer ${await forge.signed(tokenA, key, { typ: 'JWT' })}`, /typ/],
      ['expired beyond the clock tolerance (signed with the issuer\'s key)', `Bearer ${await forge.signed(tokenA, key, {}, { iat: now - 660, exp: now - 60 })}`, /expired/],
      ['not yet valid (nbf in a minute)', `Bearer ${await forge.signed(tokenA, key, {}, { nbf: now + 60 })}`, /nbf/],
      ['signed by a key the issuer does not publish', `Bearer ${await forge.signed(tokenA, strangerKey)}`, /key of the issuer|signature/],
      ['garbage', 'Bearer not-a-jwt', /malformed/],
      ['a non-Bearer scheme', `Basic ${Buffer.from(`${A.clientId}:${A.clientSecret}`).toString('base64')}`, /Bearer/]
    ]
    for (const [name, authorization, why] of refused) {
      await t.test(name, async t => {
        const answer = await initializeWith(main.mcpUrl, authorization)
        t.equal(answer.status, 401)
        const { scheme, params } = parseChallenge(answer.headers.get('www-authenticate'))
        t.equal(scheme, 'Bearer')
        t.equal(params.resource_metadata, metadataUrlOf(main), 'resource_metadata')
        t.equal(params.error, 'invalid_token')
        t.match(params.error_description, why, `error_description: ${params.error_description}`)
        t.equal(answer.headers.get('mcp-session-id'), null, 'no session')
        t.equal(answer.messages[0]?.error?.code, -32000, 'a JSON-RPC error body')
      })
    }
  })

  await t.test('a token the authorization server issued with a 1 s lifetime is refused once past the clock tolerance', async t => {
    t.equal(shortTokenFresh.status, 200, 'it worked while fresh')
    const { exp } = decodeJwt(shortToken)
    t.equal(exp! - decodeJwt(shortToken).iat!, 1, 'a 1 s lifetime')
    const wait = (exp! + 5) * 1000 + 300 - Date.now()
    if (wait > 0) await sleep(wait)
    const answer = await initializeWith(expiry.mcpUrl, `Bearer ${shortToken}`)
    t.equal(answer.status, 401)
    const { params } = parseChallenge(answer.headers.get('www-authenticate'))
    t.equal(params.error, 'invalid_token')
    t.match(params.error_description, /expired/)
    t.equal(params.resource_metadata, metadataUrlOf(expiry))
  })

  await t.test('clear_history needs calculator:admin: 403 insufficient_scope naming every scope needed', async t => {
    const session = await initializeAs(main.mcpUrl, tokenA)
    t.equal(structured(await callToolAs(main.mcpUrl, `Bearer ${tokenA}`, session, 'calculate', { a: 1, b: 1, op: 'add' })).result, 2, 'calculator:use is enough to calculate')
    const denied = await callToolAs(main.mcpUrl, `Bearer ${tokenA}`, session, 'clear_history')
    t.equal(denied.status, 403)
    const { scheme, params } = parseChallenge(denied.headers.get('www-authenticate'))
    t.equal(scheme, 'Bearer')
    t.equal(params.error, 'insufficient_scope')
    t.equal(params.scope, 'calculator:use calculator:admin')
    t.equal(params.resource_metadata, metadataUrlOf(main))
    t.same(historyResults(structured(await callToolAs(main.mcpUrl, `Bearer ${tokenA}`, session, 'get_history'))), [2], 'nothing was cleared')

    const adminSession = await initializeAs(main.mcpUrl, tokenB)
    await callToolAs(main.mcpUrl, `Bearer ${tokenB}`, adminSession, 'calculate', { a: 2, b: 2, op: 'add' })
    const cleared = await callToolAs(main.mcpUrl, `Bearer ${tokenB}`, adminSession, 'clear_history')
    t.equal(cleared.status, 200, 'with both scopes: allowed')
    t.equal(structured(cleared).cleared, 1)
  })

  await t.test('a session is bound to its principal: another valid principal gets 404 and changes nothing', async t => {
    const { client, transport } = await credentialsClient(main.mcpUrl, auth.issuer, A, 'owner')
    t.teardown(() => client.close())
    await client.callTool({ name: 'calculate', arguments: { a: 20, b: 22, op: 'add' } })
    const sessionId = transport.sessionId!
    t.ok(sessionId, 'A has a session')

    const asB = `Bearer ${tokenB}`
    for (const [name, args] of [['calculate', { a: 1, b: 1, op: 'add' }], ['clear_history', {}], ['get_history', {}]] as const) {
      const answer = await callToolAs(main.mcpUrl, asB, sessionId, name, args)
      t.equal(answer.status, 404, `B's POST tools/call ${name}: 404`)
      t.equal(answer.messages[0]?.error?.code, -32001, 'session not found')
    }
    t.equal((await openStreamAs(main.mcpUrl, tokenB, sessionId)).status, 404, 'B\'s GET stream: 404')
    t.equal((await deleteAs(main.mcpUrl, tokenB, sessionId)).status, 404, 'B\'s DELETE: 404')

    const history = await client.callTool({ name: 'get_history', arguments: {} })
    t.same(historyResults(history.structuredContent as Structured), [42], 'A\'s history unchanged')
    const again = await client.callTool({ name: 'calculate', arguments: { a: 1, b: 2, op: 'add' } })
    t.equal((again.structuredContent as Structured).result, 3, 'A\'s session still works')
    const otherToken = await callToolAs(main.mcpUrl, `Bearer ${await tokenFor(auth, A, mainResource)}`, sessionId, 'get_history')
    t.same(historyResults(structured(otherToken)), [42, 3], 'another token of the same principal reaches the session')
  })

  await t.test('a 2026-07-28 history handle is bound to its principal too', async t => {
    const modern = (token: string, method: string, params: Record<string, unknown>) => modernPost(main.mcpUrl, method, params, { headers: { authorization: `Bearer ${token}` } })
    const created = await modern(tokenA, 'tools/call', { name: 'create_history', arguments: {} })
    const history = created.body.result.structuredContent.history as string
    t.match(history, /^h-/, 'A made a handle')
    t.equal((await modern(tokenA, 'tools/call', { name: 'calculate', arguments: { a: 2, b: 3, op: 'add', history } })).body.result.structuredContent.calculationId, '1')
    const asB = await modern(tokenB, 'tools/call', { name: 'calculate', arguments: { a: 1, b: 1, op: 'add', history } })
    t.equal(asB.body.result.isError, true, 'B cannot write into A\'s handle')
    t.match(asB.body.result.content[0].text, /Unknown handle/, 'exactly as for a handle that never existed')
    const readAsB = await modern(tokenB, 'resources/read', { uri: `calculator://histories/${history}` })
    t.equal(readAsB.body.error?.code, -32602, 'B cannot read it: not found')
    const read = await modern(tokenA, 'resources/read', { uri: `calculator://histories/${history}` })
    t.same(JSON.parse(read.body.result.contents[0].text).map((e: Structured) => e.result), [5], 'A\'s handle holds only A\'s calculation')
    const listenAsB = await modern(tokenB, 'subscriptions/listen', { notifications: { resourceSubscriptions: [`calculator://histories/${history}`] } })
    t.equal(listenAsB.body.error?.code, -32602, 'B cannot listen to A\'s handle either')
  })

  await t.test('refused tokens are rate limited per address: 429 then, even with a valid token, until the window ends', async t => {
    const valid = `Bearer ${await tokenFor(auth, B, limitedResource)}`
    t.equal((await initializeWith(limited.mcpUrl, valid)).status, 200, 'a valid token works at first')
    const answers: Answer[] = []
    for (let i = 1; i <= 5; i++) answers.push(await initializeWith(limited.mcpUrl, `Bearer bad-token-${i}`))
    t.same(answers.map(a => a.status), [401, 401, 401, 401, 429], 'AUTH_FAILURE_LIMIT=3: the 5th bad token gets 429')
    const retryAfter = Number(answers[4]!.headers.get('retry-after'))
    t.ok(retryAfter >= 1 && retryAfter <= 2, `Retry-After within the 2 s window (${retryAfter})`)
    const blocked = await initializeWith(limited.mcpUrl, valid)
    t.equal(blocked.status, 429, 'a valid token from the blocked address: 429 too')
    t.ok(Number(blocked.headers.get('retry-after')) >= 1, 'with Retry-After')
    await sleep(retryAfter * 1000 + 200)
    t.equal((await initializeWith(limited.mcpUrl, valid)).status, 200, 'after the window, the valid token works again')
  })

  await t.test('the MCP Inspector CLI lists and calls tools with a bearer token', { skip: needs('node22') }, async t => {
    const inspector = (...args: string[]) => inspectorCli(main.mcpUrl, '--transport', 'http', '--header', `Authorization: Bearer ${tokenA}`, ...args)
    const { tools } = await inspector('--method', 'tools/list')
    t.ok(tools.some((tool: Structured) => tool.name === 'calculate'), 'tools listed')
    const call = await inspector('--method', 'tools/call', '--tool-name', 'calculate', '--tool-arg', 'a=2', '--tool-arg', 'b=3', '--tool-arg', 'op=add')
    t.equal(call.structuredContent.result, 5)
  })
})

test('boot: a non-loopback HOST needs an issuer, or AUTH_DISABLED', async t => {
  const [refusedPort, disabledPort, noPublicUrlPort, openPort] = await freePorts(4) as [number, number, number, number]
  const unset = { AUTH_ISSUER: '', PUBLIC_URL: '', AUTH_DISABLED: '', HOST: '' }
  const nodes: ServerNode[] = []
  t.teardown(() => Promise.all(nodes.map(n => n.kill())))

  await t.test('HOST=0.0.0.0 without AUTH_ISSUER exits non-zero, naming AUTH_ISSUER and AUTH_DISABLED', async t => {
    const { code, output } = await bootRefusal(refusedPort, { ...unset, HOST: '0.0.0.0' })
    t.not(code, 0, `exit code ${code}`)
    t.match(output, /AUTH_ISSUER/)
    t.match(output, /AUTH_DISABLED/)
  })

  await t.test('HOST=0.0.0.0 with AUTH_DISABLED=true boots: /health says auth: disabled', async t => {
    const node = await startNode('disabled', { ...unset, HOST: '0.0.0.0', AUTH_DISABLED: 'true' }, disabledPort)
    nodes.push(node)
    t.match(await (await fetch(`${node.url}/health`)).json(), { status: 'ok', auth: 'disabled' })
    t.equal((await initializeWith(node.mcpUrl)).status, 200, 'no token needed')
    t.equal((await fetch(`${node.url}/.well-known/oauth-protected-resource`)).status, 404, 'no protected resource metadata')
  })

  await t.test('AUTH_ISSUER without PUBLIC_URL exits non-zero, naming PUBLIC_URL', async t => {
    const { code, output } = await bootRefusal(noPublicUrlPort, { ...unset, AUTH_ISSUER: 'http://127.0.0.1:1' })
    t.not(code, 0, `exit code ${code}`)
    t.match(output, /PUBLIC_URL is required with AUTH_ISSUER/)
  })

  await t.test('the default loopback HOST without an issuer boots open: /health says auth: open', async t => {
    const node = await startNode('open', unset, openPort)
    nodes.push(node)
    t.match(await (await fetch(`${node.url}/health`)).json(), { status: 'ok', auth: 'open' })
    t.equal((await initializeWith(node.mcpUrl)).status, 200, 'no token needed')
  })
})

test('three nodes in Redis mode behind nginx, PUBLIC_URL the nginx URL', { skip: needs('redis-server', 'nginx') }, async t => {
  const stops: Array<() => Promise<void>> = []
  t.teardown(async () => { for (const stop of stops.reverse()) await stop() })
  const redis = await startRedis()
  stops.push(() => redis.stop())
  const ports = await freePorts(3)
  // nginx's port is chosen (and its configuration written) first, so that PUBLIC_URL can name it.
  const { dir, port: lbPort } = await writeNginxConfig(ports)
  const publicUrl = `http://127.0.0.1:${lbPort}/mcp`
  const auth = await startAuthServer({ resources: [publicUrl], scopes: SCOPES, clients: CLIENTS })
  stops.push(() => auth.stop())
  const env = { USE_REDIS: 'true', REDIS_URL: redis.url, AUTH_ISSUER: auth.issuer, PUBLIC_URL: publicUrl }
  const nodes: ServerNode[] = []
  stops.push(() => Promise.all(nodes.map(n => n.kill())).then(() => {}))
  await Promise.all(['node-a', 'node-b', 'node-c'].map(async (id, i) => { nodes.push(await startNode(id, env, ports[i]!)) }))
  const lb = await startNginxIn(dir, lbPort)
  stops.push(() => lb.stop())

  await t.test('every node publishes the nginx URL as the resource', async t => {
    for (const node of nodes) {
      const metadata = await (await fetch(metadataUrlOf(node))).json() as Structured
      t.equal(metadata.resource, publicUrl, node.id)
    }
  })

  await t.test('the SDK client with client credentials works through nginx, on every node', async t => {
    const servedBy: string[] = []
    const { client, transport } = await credentialsClient(lb.mcpUrl, auth.issuer, A, 'through-nginx', recordingServedBy(servedBy))
    t.teardown(() => client.close())
    t.ok((await client.listTools()).tools.some(tool => tool.name === 'calculate'))
    for (let i = 1; i <= 6; i++) {
      const result = await client.callTool({ name: 'calculate', arguments: { a: i, b: 10, op: 'multiply' } })
      t.equal((result.structuredContent as Structured).result, i * 10)
    }
    const served = servedBy.filter(id => id !== '?')
    t.same(new Set(served), new Set(['node-a', 'node-b', 'node-c']), `requests reached all three nodes: ${served.join(' ')}`)
    await transport.terminateSession()
  })

  await t.test('A\'s session with B\'s token answers 404 on every node; A is served on every node, its history unchanged', async t => {
    const { client, transport } = await credentialsClient(lb.mcpUrl, auth.issuer, A, 'owner')
    t.teardown(() => client.close())
    for (const a of [3, 4]) await client.callTool({ name: 'calculate', arguments: { a, b: a, op: 'multiply' } })
    const sessionId = transport.sessionId!
    const tokenA = await tokenFor(auth, A, publicUrl)
    const tokenB = await tokenFor(auth, B, publicUrl)

    for (const [where, url] of [...nodes.map(n => [n.id, n.mcpUrl] as const), ['nginx', lb.mcpUrl] as const]) {
      for (const name of ['calculate', 'clear_history']) {
        const answer = await callToolAs(url, `Bearer ${tokenB}`, sessionId, name, name === 'calculate' ? { a: 1, b: 1, op: 'add' } : {})
        t.equal(answer.status, 404, `${where}: B's tools/call ${name}: 404`)
      }
      t.equal((await openStreamAs(url, tokenB, sessionId)).status, 404, `${where}: B's GET: 404`)
      t.equal((await deleteAs(url, tokenB, sessionId)).status, 404, `${where}: B's DELETE: 404`)
      const own = await callToolAs(url, `Bearer ${tokenA}`, sessionId, 'get_history')
      t.equal(own.status, 200, `${where}: A's own token is served`)
      t.same(historyResults(structured(own)), [9, 16], `${where}: A's history unchanged`)
    }
    const after = await client.callTool({ name: 'calculate', arguments: { a: 5, b: 5, op: 'multiply' } })
    t.equal((after.structuredContent as Structured).result, 25, 'A\'s SDK session still works')
    t.equal((await fetch(lb.mcpUrl, { method: 'DELETE', headers: { 'mcp-session-id': sessionId, ...bearer(tokenA) } })).status, 200, 'A may end it')
  })
})
