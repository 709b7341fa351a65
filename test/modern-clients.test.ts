import { test } from 'tap'
import { startNode, startTopology } from './helpers/nodes.js'
import { startRedis } from './helpers/processes.js'
import { needs } from './helpers/needs.js'
import { connectLegacy, connectModern, structured, text } from './helpers/modern-client.js'

const MODERN = '2026-07-28'
const LEGACY = '2025-11-25'
const SERVER_NAME = 'calculator-mcp-server'

test('the SDK 2.4.0 client (auto) speaks 2026-07-28 to one node, the SDK 1.32.2 client 2025-11-25', async t => {
  const node = await startNode('modern-a', {})
  t.teardown(() => node.kill())

  await t.test('version negotiation ends on 2026-07-28, without initialize or a session', async t => {
    const { client, exchanges } = await connectModern(node.mcpUrl)
    t.teardown(() => client.close())
    t.equal(client.getProtocolEra(), 'modern')
    t.equal(client.getNegotiatedProtocolVersion(), MODERN)
    t.same(client.getDiscoverResult()?.supportedVersions, [MODERN])
    t.equal(client.getServerVersion()?.name, SERVER_NAME, 'serverInfo from discover\'s _meta')
    const tools = await client.listTools()
    t.ok(['calculate', 'create_history', 'get_history', 'clear_history'].every(name => tools.tools.some(tool => tool.name === name)), 'the tools are listed')
    t.equal(exchanges[0]?.method, 'server/discover', 'the first POST is the probe')
    t.notOk(exchanges.some(e => e.method === 'initialize'), 'no initialize')
    t.ok(exchanges.every(e => e.sessionId === null), 'no Mcp-Session-Id in any answer')
    t.ok(exchanges.every(e => e.protocolHeader === MODERN), 'every POST says 2026-07-28')
  })

  await t.test('calculate with progress, a history handle, its resource, and clear_history through input_required', async t => {
    const modern = await connectModern(node.mcpUrl)
    const { client, exchanges } = modern
    t.teardown(() => client.close())

    const progress: number[] = []
    const streamed = await client.callTool({ name: 'calculate', arguments: { a: 6, b: 7, op: 'multiply', stream: true } }, { onprogress: p => progress.push(p.progress) })
    t.equal(structured(streamed).result, 42)
    t.notOk('calculationId' in structured(streamed), 'without a handle nothing is recorded')
    t.same(progress, [1, 2, 3], 'onprogress saw three notifications')

    const handle = structured(await client.callTool({ name: 'create_history', arguments: {} })).history as string
    t.type(handle, 'string')
    for (const [a, b] of [[1, 2], [3, 4], [5, 6]] as const) {
      const result = await client.callTool({ name: 'calculate', arguments: { a, b, op: 'add', history: handle } })
      t.notOk(result.isError, text(result))
      t.equal(structured(result).result, a + b)
    }
    const read = await client.callTool({ name: 'get_history', arguments: { history: handle } })
    t.same(structured(read).entries.map((e: Record<string, any>) => e.result), [3, 7, 11])
    t.equal(structured(read).total, 3)
    const resource = await client.readResource({ uri: `calculator://histories/${handle}` })
    t.same(JSON.parse((resource.contents[0] as { text: string }).text).map((e: Record<string, any>) => e.result), [3, 7, 11], 'the handle\'s resource')

    // Declined: the history stays.
    modern.answer = 'decline'
    const declined = await client.callTool({ name: 'clear_history', arguments: { history: handle } })
    t.notOk(declined.isError, text(declined))
    t.same(structured(declined), { cleared: 0, confirmed: false })
    t.equal(structured(await client.callTool({ name: 'get_history', arguments: { history: handle } })).entries.length, 3, 'nothing cleared')

    // Accepted: the first call ends input_required, the client answers and retries on its own.
    modern.answer = 'accept'
    const before = exchanges.length
    const cleared = await client.callTool({ name: 'clear_history', arguments: { history: handle } })
    t.notOk(cleared.isError, text(cleared))
    t.same(structured(cleared), { cleared: 3, confirmed: true })
    t.same(exchanges.slice(before).map(e => [e.method, e.retry, e.status]), [['tools/call', false, 200], ['tools/call', true, 200]], 'one call, one retry carrying the answer')
    t.same(modern.elicitations, ['Delete all 3 entries of the calculation history?', 'Delete all 3 entries of the calculation history?'], 'asked once per clear_history')
    const after = await client.callTool({ name: 'get_history', arguments: { history: handle } })
    t.same(structured(after).entries, [], 'the history is empty')
  })

  await t.test('a handle that does not exist gives an isError result', async t => {
    const { client } = await connectModern(node.mcpUrl)
    t.teardown(() => client.close())
    for (const [name, args] of [['calculate', { a: 1, b: 1, op: 'add' }], ['get_history', {}], ['clear_history', {}]] as const) {
      const result = await client.callTool({ name, arguments: { ...args, history: 'no-such-handle' } })
      t.equal(result.isError, true, `${name}: isError`)
      t.match(text(result), /Unknown handle no-such-handle/)
    }
    // Its resource is not found: -32602 with the URI in 2026 (-32002 is a 2025 code).
    await t.rejects(client.readResource({ uri: 'calculator://histories/no-such-handle' }), { code: -32602, data: { uri: 'calculator://histories/no-such-handle' } })
  })

  await t.test('the SDK 1.32.2 client initializes a 2025-11-25 session on the same node', async t => {
    const { client, transport, exchanges } = await connectLegacy(node.mcpUrl)
    t.teardown(() => client.close())
    t.equal(exchanges[0]?.method, 'initialize', 'no probe: initialize first')
    t.equal(transport.protocolVersion, LEGACY, 'negotiated 2025-11-25')
    t.type(transport.sessionId, 'string', 'a session id')
    t.ok(transport.sessionId!.length > 0)
    t.equal(client.getServerVersion()?.name, SERVER_NAME)
    t.equal(structured(await client.callTool({ name: 'calculate', arguments: { a: 2, b: 3, op: 'power' } })).result, 8)
    t.same(structured(await client.callTool({ name: 'get_history', arguments: {} })).entries.map((e: Record<string, any>) => e.result), [8], 'the session keeps history without a handle')
    await transport.terminateSession()
  })
})

test('three Redis nodes behind nginx: a 2026-07-28 client and a 2025-11-25 client at the same time', { skip: needs('redis-server', 'nginx') }, async t => {
  const redis = await startRedis()
  t.teardown(() => redis.stop())
  const topology = await startTopology(['node-a', 'node-b', 'node-c'], { USE_REDIS: 'true', REDIS_URL: redis.url })
  t.teardown(() => topology.stop())
  const { lb } = topology

  const modern = await connectModern(lb.mcpUrl, 'modern-through-nginx')
  t.teardown(() => modern.client.close())
  const legacy = await connectLegacy(lb.mcpUrl, 'legacy-through-nginx')
  t.teardown(() => legacy.client.close())
  t.equal(modern.client.getProtocolEra(), 'modern')
  t.equal(modern.client.getNegotiatedProtocolVersion(), MODERN)
  t.equal(legacy.transport.protocolVersion, LEGACY)
  t.type(legacy.transport.sessionId, 'string')

  const handle = structured(await modern.client.callTool({ name: 'create_history', arguments: {} })).history as string
  t.type(handle, 'string')
  // Both clients at once: 20 calculations into the handle, 10 into the legacy session.
  const modernRun = (async () => {
    const results: number[] = []
    for (let i = 1; i <= 20; i++) {
      const result = await modern.client.callTool({ name: 'calculate', arguments: { a: i, b: 100, op: 'add', history: handle } })
      if (result.isError === true) throw new Error(`calculate ${i}: ${text(result)}`)
      results.push(structured(result).result)
    }
    return results
  })()
  const legacyRun = (async () => {
    const results: number[] = []
    for (let i = 1; i <= 10; i++) {
      const result = await legacy.client.callTool({ name: 'calculate', arguments: { a: i, b: 2, op: 'multiply' } })
      if (result.isError === true) throw new Error(`legacy calculate ${i}: ${JSON.stringify(result.content)}`)
      results.push(structured(result).result)
    }
    return results
  })()
  const [modernResults, legacyResults] = await Promise.all([modernRun, legacyRun])
  t.same(modernResults, Array.from({ length: 20 }, (_, i) => i + 101))
  t.same(legacyResults, Array.from({ length: 10 }, (_, i) => (i + 1) * 2))

  const calculated = modern.exchanges.filter(e => e.method === 'tools/call' && e.name === 'calculate')
  t.equal(calculated.length, 20)
  const servedBy = new Set(calculated.map(e => e.servedBy))
  t.ok(servedBy.size > 1, `the 20 calls were served by more than one node: ${[...servedBy].join(', ')}`)
  t.ok(modern.exchanges.every(e => e.sessionId === null), 'no session id on modern answers, whichever node')

  const history = await modern.client.callTool({ name: 'get_history', arguments: { history: handle, limit: 100 } })
  t.same(structured(history).entries.map((e: Record<string, any>) => e.result), modernResults, 'all 20 read back')
  t.same(structured(history).entries.map((e: Record<string, any>) => e.id), Array.from({ length: 20 }, (_, i) => String(i + 1)), 'numbered 1 to 20')
  const legacyHistory = await legacy.client.callTool({ name: 'get_history', arguments: { limit: 100 } })
  t.same(structured(legacyHistory).entries.map((e: Record<string, any>) => e.result), legacyResults, 'the legacy session kept its own history')
  const handleFromLegacy = await legacy.client.callTool({ name: 'get_history', arguments: { history: handle, limit: 100 } })
  t.same(structured(handleFromLegacy).entries.map((e: Record<string, any>) => e.result), modernResults, 'the 2025 session reads the handle too')

  // clear_history: the retry carrying the confirmation goes to the next node in the round robin.
  const before = modern.exchanges.length
  const cleared = await modern.client.callTool({ name: 'clear_history', arguments: { history: handle } })
  t.notOk(cleared.isError, text(cleared))
  t.same(structured(cleared), { cleared: 20, confirmed: true })
  const round = modern.exchanges.slice(before)
  t.same(round.map(e => [e.method, e.retry, e.status]), [['tools/call', false, 200], ['tools/call', true, 200]], 'call, then retry')
  t.not(round[0]?.servedBy, round[1]?.servedBy, `the retry landed on another node (${round.map(e => e.servedBy).join(' then ')})`)
  t.same(modern.elicitations, ['Delete all 20 entries of the calculation history?'])
  t.same(structured(await modern.client.callTool({ name: 'get_history', arguments: { history: handle } })).entries, [], 'the handle\'s history is empty')
  t.same(structured(await legacy.client.callTool({ name: 'get_history', arguments: { limit: 100 } })).entries.map((e: Record<string, any>) => e.result), legacyResults, 'the legacy session\'s history is untouched')

  // Every 2026-07-28 request is a POST without a session id: at the edge it must not count as creating a session.
  const burst = await Promise.allSettled(Array.from({ length: 30 }, (_, i) => modern.client.callTool({ name: 'calculate', arguments: { a: i, b: 1, op: 'add' } })))
  const refused = burst.flatMap(r => r.status === 'rejected' ? [String((r.reason as Error).message)] : [])
  t.same(refused, [], '30 concurrent 2026-07-28 calls through nginx all served')
  await legacy.transport.terminateSession()
})
