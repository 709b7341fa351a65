import { createServer, type IncomingMessage, type ServerResponse } from 'node:http'
import { createMcpHandler, localhostAllowedOrigins, McpServer, originValidationResponse } from '@modelcontextprotocol/server'
import * as z from 'zod'
import { CalculationError, calculate, describeBinary } from '../src/calculator/math.js'

/**
 * The official SDK row's server: `createMcpHandler` from @modelcontextprotocol/server 2.x, which
 * builds an `McpServer` per request and serves the stateless 2026-07-28 revision (2025-era requests
 * get its stateless fallback), with one `calculate` tool like ours. It is mounted on bare
 * `node:http` through a lean adapter doing what the SDK's own `toNodeHandler`
 * (@modelcontextprotocol/node) does, minus its copy of the body: the body is read and parsed once
 * and handed over as `parsedBody`, the SDK's documented fast path, so the `Request` carries only
 * the method, URL, headers and an abort signal. Prints its address on stdout.
 */
const OPERATIONS = ['add', 'subtract', 'multiply', 'divide'] as const
const Input = z.object({
  a: z.number().describe('First operand'),
  b: z.number().describe('Second operand'),
  op: z.enum(OPERATIONS).describe('Operation: add, subtract, multiply or divide')
})
const Output = z.object({ operation: z.string(), expression: z.string(), result: z.number() })
/** The SDK's default bound on a request body. */
const MAX_BODY = 4 * 1024 * 1024
const ALLOWED_ORIGINS = localhostAllowedOrigins()

const handler = createMcpHandler(() => {
  const server = new McpServer({ name: 'bench-sdk2', version: '1' })
  server.registerTool('calculate', {
    title: 'Calculate',
    description: 'Applies add, subtract, multiply or divide to two numbers.',
    inputSchema: Input,
    outputSchema: Output,
    annotations: { readOnlyHint: false, destructiveHint: false, idempotentHint: false, openWorldHint: false }
  }, async ({ a, b, op }) => {
    try {
      const result = calculate(a, b, op)
      const expression = `${describeBinary(a, b, op)} = ${result}`
      return { content: [{ type: 'text', text: expression }], structuredContent: { operation: op, expression, result } }
    } catch (error) {
      if (error instanceof CalculationError) return { content: [{ type: 'text', text: error.message }], isError: true }
      throw error
    }
  })
  return server
}, { legacy: 'stateless' })

const jsonRpcError = (res: ServerResponse, status: number, code: number, message: string) => {
  res.writeHead(status, { 'content-type': 'application/json' })
  res.end(JSON.stringify({ jsonrpc: '2.0', error: { code, message }, id: null }))
}

/** The whole body as text, or undefined past MAX_BODY. */
async function readBody (req: IncomingMessage): Promise<string | undefined> {
  const chunks: Buffer[] = []
  let size = 0
  for await (const chunk of req as AsyncIterable<Buffer>) {
    size += chunk.length
    if (size > MAX_BODY) return undefined
    chunks.push(chunk)
  }
  return chunks.length === 1 ? chunks[0]!.toString('utf8') : Buffer.concat(chunks).toString('utf8')
}

async function serve (req: IncomingMessage, res: ServerResponse): Promise<void> {
  const method = req.method ?? 'GET'
  let parsedBody: unknown
  if (method === 'POST') {
    const text = await readBody(req)
    if (text === undefined) return jsonRpcError(res, 413, -32000, 'Request body too large')
    try {
      parsedBody = text.length === 0 ? undefined : JSON.parse(text)
    } catch {
      return jsonRpcError(res, 400, -32700, 'Parse error: the request body is not valid JSON')
    }
  }
  // Aborts the exchange when the client goes away before the answer is written.
  const abort = new AbortController()
  let finished = false
  res.on('close', () => { if (!finished) abort.abort() })
  const headers = new Headers()
  for (const [name, value] of Object.entries(req.headers)) {
    if (value === undefined || name === 'content-length' || name === 'transfer-encoding') continue
    if (Array.isArray(value)) for (const item of value) headers.append(name, item)
    else headers.set(name, value)
  }
  const request = new Request(`http://${req.headers.host ?? '127.0.0.1'}${req.url}`, { method, headers, signal: abort.signal })
  const response = originValidationResponse(request, ALLOWED_ORIGINS) ??
    await handler.fetch(request, parsedBody === undefined ? undefined : { parsedBody })

  const out: Record<string, string> = {}
  for (const [name, value] of response.headers) out[name] = value
  res.writeHead(response.status, out)
  if (response.body !== null) {
    // Streams SSE frame by frame, waiting for the socket to drain when it is full.
    for await (const chunk of response.body as unknown as AsyncIterable<Uint8Array>) {
      if (abort.signal.aborted) break
      if (!res.write(chunk)) await new Promise(resolve => { res.once('drain', resolve); abort.signal.addEventListener('abort', resolve, { once: true }) })
    }
  }
  finished = true
  res.end()
}

const http = createServer((req, res) => {
  if (req.url !== '/mcp' && !req.url?.startsWith('/mcp?')) {
    res.writeHead(404).end()
    return
  }
  serve(req, res).catch(error => {
    process.stderr.write(`${error instanceof Error ? error.stack : String(error)}\n`)
    if (!res.headersSent) jsonRpcError(res, 500, -32603, 'Internal server error')
    else res.destroy()
  })
})
http.listen(0, '127.0.0.1', () => {
  const address = http.address()
  if (address === null || typeof address === 'string') throw new Error('no TCP address')
  process.stdout.write(`http://127.0.0.1:${address.port}\n`)
})
process.on('SIGTERM', () => {
  handler.close().finally(() => http.close(() => process.exit(0)))
})
