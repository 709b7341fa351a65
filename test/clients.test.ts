import { test } from 'tap'
import { Client } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'
import { CallToolResultSchema } from '@modelcontextprotocol/sdk/types.js'
import { startNode } from './helpers/nodes.js'
import { inspectorCli } from './helpers/node22.js'
import { modernPost, openStream, post } from './helpers/raw-client.js'
import { startServer } from './helpers/server.js'
import { needs } from './helpers/needs.js'

type Structured = Record<string, any>

for (const version of ['2025-03-26', '2025-06-18', '2025-11-25']) {
  test(`the SDK client negotiating ${version} runs the lifecycle`, async t => {
    const server = await startServer()
    t.teardown(() => server.close())
    const versionHeaders: string[] = []
    const transport = new StreamableHTTPClientTransport(server.mcpUrl, {
      // The SDK client always asks for its newest revision; this client asks for `version`.
      fetch: async (input, init) => {
        let body = init?.body
        if (typeof body === 'string' && body.includes('"method":"initialize"')) {
          const message = JSON.parse(body)
          message.params.protocolVersion = version
          body = JSON.stringify(message)
        } else {
          versionHeaders.push(new Headers(init?.headers).get('mcp-protocol-version') ?? 'none')
        }
        return fetch(input, { ...init, body })
      }
    })
    const client = new Client({ name: `client-${version}`, version: '1.0.0' })
    await client.connect(transport)
    t.teardown(() => client.close())
    t.equal(transport.protocolVersion, version, 'the server agreed to the version')
    t.ok((await client.listTools()).tools.length > 5)
    const progress: number[] = []
    const result = await client.callTool({ name: 'calculate', arguments: { a: 2, b: 5, op: 'power', stream: true } }, CallToolResultSchema, { onprogress: p => progress.push(p.progress) })
    t.equal((result.structuredContent as Structured).result, 32)
    t.same(progress, [1, 2, 3])
    const { contents } = await client.readResource({ uri: 'session://info' })
    t.equal(JSON.parse((contents[0] as { text: string }).text).protocolVersion, version)
    t.ok((await client.getPrompt({ name: 'calculator_assistant', arguments: { query: 'x' } })).messages.length > 0)
    t.ok(versionHeaders.every(v => v === version), `every later request said ${version}`)
    await transport.terminateSession()
  })
}

test('priming events go to 2025-11-25 clients only', async t => {
  const server = await startServer()
  t.teardown(() => server.close())
  for (const [version, primed] of [['2025-06-18', false], ['2025-11-25', true]] as const) {
    const init = await post(server.mcpUrl, { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: version, capabilities: {}, clientInfo: { name: 'raw', version: '1' } } })
    const sessionId = init.headers.get('mcp-session-id')!
    const answer = await post(server.mcpUrl, { jsonrpc: '2.0', id: 2, method: 'tools/call', params: { name: 'demo_progress', arguments: { steps: 1 }, _meta: { progressToken: 'p' } } }, sessionId, { 'mcp-protocol-version': version })
    const first = answer.events[0]!
    t.equal(first.message === undefined && first.id !== undefined, primed, `${version}: ${primed ? 'a priming event first' : 'no priming event'}`)
    t.ok(answer.events.every(e => e.id !== undefined), `${version}: every event has an id`)
  }
})

test('a raw client that never sends MCP-Protocol-Version is served as 2025-03-26', async t => {
  const server = await startServer()
  t.teardown(() => server.close())
  const url = server.mcpUrl
  const init = await post(url, { jsonrpc: '2.0', id: 1, method: 'initialize', params: { protocolVersion: '2025-03-26', capabilities: {}, clientInfo: { name: 'headerless', version: '1' } } })
  t.equal(init.status, 200)
  t.equal(init.messages[0].result.protocolVersion, '2025-03-26')
  const sessionId = init.headers.get('mcp-session-id')!
  t.equal((await post(url, { jsonrpc: '2.0', method: 'notifications/initialized' }, sessionId)).status, 202)
  const stream = await openStream(url, sessionId)
  t.equal(stream.status, 200)
  const subscribe = await post(url, { jsonrpc: '2.0', id: 2, method: 'resources/subscribe', params: { uri: 'calculator://history' } }, sessionId)
  t.same(subscribe.messages[0].result, {})
  const call = await post(url, { jsonrpc: '2.0', id: 3, method: 'tools/call', params: { name: 'calculate', arguments: { a: 9, b: 3, op: 'divide' } } }, sessionId)
  t.equal(call.messages[0].result.structuredContent.result, 3)
  await stream.until(es => es.some(e => e.message?.method === 'notifications/resources/updated'))
  t.notOk(stream.events.some(e => e.id !== undefined && e.message === undefined), 'no priming event for 2025-03-26')
  stream.close()
  const batch = await post(url, [
    { jsonrpc: '2.0', id: 4, method: 'tools/list' },
    { jsonrpc: '2.0', id: 5, method: 'ping' }
  ], sessionId)
  t.same(batch.messages[0].map((m: Structured) => m.id), [4, 5], 'a 2025-03-26 batch is answered as a batch')
  const deleted = await fetch(url, { method: 'DELETE', headers: { 'mcp-session-id': sessionId } })
  t.equal(deleted.status, 200)
})

test('both revisions on one endpoint: a 2026-07-28 request is served on its own, initialize opens a 2025 session', async t => {
  const server = await startServer()
  t.teardown(() => server.close())
  const modern = async (method: string, params: Record<string, unknown>) => {
    const answer = await modernPost(server.mcpUrl, method, params)
    t.equal(answer.headers.get('mcp-session-id'), null, `${method}: no session`)
    return answer
  }
  const discover = await modern('server/discover', {})
  t.equal(discover.status, 200)
  t.same(discover.body.result.supportedVersions, ['2026-07-28'])
  t.equal(discover.body.result.resultType, 'complete')
  const call = await modern('tools/call', { name: 'calculate', arguments: { a: 1, b: 1, op: 'add' } })
  t.equal(call.body.result.structuredContent.result, 2)
  t.equal(call.body.result.structuredContent.calculationId, undefined, 'no handle, no history: nothing stored')
  const initialize = await post(server.mcpUrl, { jsonrpc: '2.0', id: 2, method: 'initialize', params: { protocolVersion: '2025-11-25', capabilities: {}, clientInfo: { name: 'legacy', version: '1' } } })
  t.equal(initialize.status, 200, 'initialize still opens a session')
  t.type(initialize.headers.get('mcp-session-id'), 'string')
})

test('the MCP Inspector CLI lists and calls tools, reads resources and gets prompts', { skip: needs('node22') }, async t => {
  const node = await startNode('inspector', {})
  t.teardown(() => node.kill())
  const inspector = (...args: string[]) => inspectorCli(node.mcpUrl, ...args)
  const { tools } = await inspector('--method', 'tools/list')
  t.ok(tools.some((tool: Structured) => tool.name === 'calculate'))
  const call = await inspector('--method', 'tools/call', '--tool-name', 'calculate', '--tool-arg', 'a=6', '--tool-arg', 'b=7', '--tool-arg', 'op=multiply')
  t.equal(call.structuredContent.result, 42)
  const constants = await inspector('--method', 'resources/read', '--uri', 'calculator://constants')
  t.equal(JSON.parse(constants.contents[0].text).pi.value, Math.PI)
  const { resourceTemplates } = await inspector('--method', 'resources/templates/list')
  t.equal(resourceTemplates[0].uriTemplate, 'calculator://history/{calculationId}')
  const prompt = await inspector('--method', 'prompts/get', '--prompt-name', 'explain-calculation', '--prompt-args', 'operation=add')
  t.match(prompt.messages[0].content.text, /add operation/)
})
