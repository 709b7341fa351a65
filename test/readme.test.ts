import { execFile } from 'node:child_process'
import { readFile } from 'node:fs/promises'
import { promisify } from 'node:util'
import { test } from 'tap'
import { startServer } from './helpers/server.js'

const run = promisify(execFile)

test('the README curl walkthrough works exactly as written', async t => {
  const readme = await readFile(new URL('../../README.md', import.meta.url), 'utf8')
  const script = /<!-- walkthrough -->\n```bash\n([\s\S]*?)```/.exec(readme)?.[1]
  if (script === undefined) throw new Error('the README has no walkthrough block')
  const server = await startServer()
  t.teardown(() => server.close())
  const { stdout } = await run('bash', ['-euo', 'pipefail', '-c', script], { env: { ...process.env, MCP_URL: server.mcpUrl.href } })
  t.match(stdout, /^session: [0-9a-f-]{36}$/m)
  t.match(stdout, /"structuredContent":\{"calculationId":"1","operation":"multiply","expression":"6 × 7 = 42","result":42\}/)
  t.match(stdout, /^DELETE: 200$/m)
  t.same(await server.app.sessionStore.count(), { sessions: 0, handles: 0 }, 'the session was ended')
})
