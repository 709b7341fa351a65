import { execFile } from 'node:child_process'
import { dirname } from 'node:path'
import { promisify } from 'node:util'

/**
 * A Node >= 22 binary, which the conformance suite and the current MCP Inspector need: this
 * process's Node when it is recent enough, else the one CONFORMANCE_NODE names (.ci/run sets it).
 */
export const node22 = Number(process.versions.node.split('.')[0]) >= 22 ? process.execPath : process.env.CONFORMANCE_NODE

export const NEEDS_NODE22 = node22 === undefined ? 'needs Node >= 22: set CONFORMANCE_NODE to its binary' : false

const execFileAsync = promisify(execFile)

/**
 * The MCP Inspector's CLI against an MCP endpoint, on Node 22; resolves to its JSON answer.
 * MCP_INSPECTOR names the launcher of an installed copy (.ci/run installs one, so suites side by
 * side never install it at once); without it, npx fetches the pinned version.
 */
export async function inspectorCli (mcpUrl: URL, ...args: string[]): Promise<any> {
  const installed = process.env.MCP_INSPECTOR
  const [command, ...launcher] = installed ? [node22!, installed] : ['npx', '--yes', '@modelcontextprotocol/inspector@2.12.0']
  const { stdout } = await execFileAsync(command, [...launcher, '--cli', mcpUrl.href, ...args], { env: { ...process.env, PATH: `${dirname(node22!)}:${process.env.PATH ?? ''}` }, timeout: 120_000 })
  return JSON.parse(stdout)
}
