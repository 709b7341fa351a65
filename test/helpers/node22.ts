import { dirname } from 'node:path'

/**
 * A Node >= 22 binary, which the conformance suite and the current MCP Inspector need: this
 * process's Node when it is recent enough, else the one CONFORMANCE_NODE names (.ci/run sets it).
 */
export const node22 = Number(process.versions.node.split('.')[0]) >= 22 ? process.execPath : process.env.CONFORMANCE_NODE

export const NEEDS_NODE22 = node22 === undefined ? 'needs Node >= 22: set CONFORMANCE_NODE to its binary' : false

/** An environment whose PATH finds that Node first, for npx-launched tools. */
export function node22Env (): NodeJS.ProcessEnv {
  return { ...process.env, PATH: `${dirname(node22!)}:${process.env.PATH ?? ''}` }
}
