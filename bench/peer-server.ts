import { join } from 'node:path'
import { pathToFileURL } from 'node:url'
import { type Static, Type } from '@sinclair/typebox'
import Fastify, { type FastifyInstance } from 'fastify'

/**
 * The peer row's server: @platformatic/mcp, a Fastify MCP plugin, with one `calculate` tool like
 * ours. The plugin is not on the npm registry, so BENCH_PLATFORMATIC names a checkout of it built
 * outside this repository. Its sessions exist only with `enableSSE` (POSTs are still answered as
 * JSON); with REDIS_URL they live in that Redis. Prints its address on stdout.
 */
const { default: mcpPlugin } = await import(pathToFileURL(join(process.env.BENCH_PLATFORMATIC!, 'dist/index.js')).href)
const redis = process.env.REDIS_URL === undefined ? undefined : new URL(process.env.REDIS_URL)

const Input = Type.Object({
  a: Type.Number({ description: 'First operand' }),
  b: Type.Number({ description: 'Second operand' }),
  op: Type.Union(['add', 'subtract', 'multiply', 'divide'].map(op => Type.Literal(op)), { description: 'Operation' })
})
const SYMBOLS: Record<string, string> = { add: '+', subtract: '-', multiply: '×', divide: '÷' }

/** The decorator the plugin adds; its own type declarations are not imported from a path known only at run time. */
type PeerApp = FastifyInstance & {
  mcpAddTool (definition: Record<string, unknown>, handler: (args: Static<typeof Input>) => Promise<unknown>): void
}

// Same log level and origin rule as our servers in the bench.
const app = Fastify({ logger: { level: 'warn' } }) as unknown as PeerApp
await app.register(mcpPlugin, {
  serverInfo: { name: 'bench-peer', version: '1' },
  capabilities: { tools: {} },
  enableSSE: true,
  allowedOrigins: ['http://localhost', 'http://127.0.0.1'],
  ...(redis !== undefined && { redis: { host: redis.hostname, port: Number(redis.port) } })
})
app.mcpAddTool({
  name: 'calculate',
  description: 'Applies add, subtract, multiply or divide to two numbers.',
  inputSchema: Input,
  outputSchema: Type.Object({ result: Type.Number() })
}, async ({ a, b, op }) => {
  if (op === 'divide' && b === 0) return { content: [{ type: 'text', text: 'Division by zero is undefined: b must not be 0' }], isError: true }
  const result = op === 'add' ? a + b : op === 'subtract' ? a - b : op === 'multiply' ? a * b : a / b
  return { content: [{ type: 'text', text: `${a} ${SYMBOLS[op]} ${b} = ${result}` }], structuredContent: { result } }
})
const address = await app.listen({ port: 0, host: '127.0.0.1' })
process.stdout.write(`${address}\n`)
process.on('SIGTERM', () => { app.close().then(() => process.exit(0)) })
