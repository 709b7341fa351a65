import { type ChildProcess, spawn } from 'node:child_process'
import { mkdtemp, readFile, writeFile } from 'node:fs/promises'
import { tmpdir } from 'node:os'
import { join } from 'node:path'
import { fileURLToPath } from 'node:url'
import { freePort, stop, waitUntil } from './processes.js'

/** The repository root, from dist/test/helpers. */
export const ROOT = fileURLToPath(new URL('../../../', import.meta.url))

export interface ServerNode {
  id: string
  port: number
  url: string
  mcpUrl: URL
  process: ChildProcess
  /** Collected stderr and stdout, for failure messages. */
  output: string[]
  kill (signal?: NodeJS.Signals): Promise<void>
  start (): Promise<void>
}

/**
 * A server process started the way `npm start` starts it (fastify start on the compiled app),
 * with its own NODE_ID and port.
 */
/** fastify-cli on the compiled app, as `npm start` runs it, its output kept (the last 200 chunks) in `output`. */
export function spawnServer (id: string, port: number, env: Record<string, string>, output: string[]): ChildProcess {
  const child = spawn(process.execPath, [
    join(ROOT, 'node_modules/fastify-cli/cli.js'), 'start', '-o', '-l', process.env.TEST_LOG_LEVEL ?? 'warn',
    '-a', '127.0.0.1', '-p', String(port), '-g', '10000', join(ROOT, 'dist/src/app.js')
  ], { env: { ...process.env, NODE_ID: id, RATE_LIMIT_MAX: '1000000', MAX_EVENT_LOOP_DELAY_MS: '0', ...env }, stdio: ['ignore', 'pipe', 'pipe'] })
  const keep = (chunk: Buffer) => { output.push(chunk.toString()); if (output.length > 200) output.shift() }
  child.stdout!.on('data', keep)
  child.stderr!.on('data', keep)
  return child
}

export async function startNode (id: string, env: Record<string, string>, port?: number): Promise<ServerNode> {
  port ??= await freePort()
  const node: ServerNode = {
    id,
    port,
    url: `http://127.0.0.1:${port}`,
    mcpUrl: new URL(`http://127.0.0.1:${port}/mcp`),
    process: undefined as unknown as ChildProcess,
    output: [],
    kill: signal => stop(node.process, signal),
    async start () {
      node.process = spawnServer(id, port!, env, node.output)
      await waitUntil(`node ${id} on ${port}`, async () => (await fetch(`${node.url}/health/live`)).ok, 20_000)
    }
  }
  await node.start()
  return node
}

export interface LoadBalancer {
  port: number
  url: string
  mcpUrl: URL
  stop (): Promise<void>
}

/**
 * nginx running docker/nginx/mcp.conf, the deployment's own load balancer configuration, with
 * the given nodes as its round-robin upstreams.
 */
export async function startNginx (ports: number[], options: NginxOptions = {}): Promise<LoadBalancer> {
  const { dir, port } = await writeNginxConfig(ports, options)
  return startNginxIn(dir, port)
}

/** nginx on a configuration writeNginxConfig wrote, listening on its port. */
export async function startNginxIn (dir: string, port: number): Promise<LoadBalancer> {
  const child = spawn('nginx', ['-p', dir, '-c', join(dir, 'nginx.conf')], { stdio: 'ignore' })
  const url = `http://127.0.0.1:${port}`
  await waitUntil(`nginx on ${port}`, async () => (await fetch(`${url}/health/live`)).ok)
  return { port, url, mcpUrl: new URL(`${url}/mcp`), stop: () => stop(child, 'SIGQUIT') }
}

export interface NginxOptions {
  /**
   * The burst of the edge's session-creation limit (20 in docker/nginx/mcp.conf) for a client
   * that opens sessions faster than one should, such as a conformance suite: the shipped
   * configuration with only that number changed.
   */
  sessionBurst?: number
}

/** A main nginx.conf in a new folder that includes docker/nginx/mcp.conf with local upstreams. */
export async function writeNginxConfig (ports: number[], options: NginxOptions = {}): Promise<{ dir: string, port: number }> {
  const dir = await mkdtemp(join(tmpdir(), 'mcp-nginx-'))
  let included = join(ROOT, 'docker/nginx/mcp.conf')
  if (options.sessionBurst !== undefined) {
    const shipped = await readFile(included, 'utf8')
    if (!shipped.includes('zone=mcp_session_create burst=20 ')) throw new Error('docker/nginx/mcp.conf no longer has the session-creation burst this helper changes')
    included = join(dir, 'mcp.conf')
    await writeFile(included, shipped.replace('zone=mcp_session_create burst=20 ', `zone=mcp_session_create burst=${options.sessionBurst} `))
  }
  const port = await freePort()
  // The shipped upstream line with its parameters (max_fails ...), each local node in place of "app".
  const shipped = await readFile(join(ROOT, 'docker/nginx/mcp-upstreams.conf'), 'utf8')
  const params = /^\s*server\s+\S+(.*);/m.exec(shipped)?.[1] ?? ''
  await writeFile(join(dir, 'mcp-upstreams.conf'), ports.map(p => `server 127.0.0.1:${p}${params};\n`).join(''))
  await writeFile(join(dir, 'mcp-listen.conf'), `listen 127.0.0.1:${port};\n`)
  await writeFile(join(dir, 'nginx.conf'), `
daemon off;
worker_processes 1;
pid ${dir}/nginx.pid;
error_log ${dir}/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path ${dir}/body;
  proxy_temp_path ${dir}/proxy;
  fastcgi_temp_path ${dir}/fastcgi;
  uwsgi_temp_path ${dir}/uwsgi;
  scgi_temp_path ${dir}/scgi;
  include ${included};
}
`)
  return { dir, port }
}

export interface Topology {
  nodes: ServerNode[]
  lb: LoadBalancer
  /** Stops nginx, then every node. */
  stop (): Promise<void>
}

/** Server nodes with the given ids, and nginx running docker/nginx/mcp.conf round-robin in front. */
export async function startTopology (ids: string[], env: Record<string, string>, nginx: NginxOptions = {}): Promise<Topology> {
  const nodes: ServerNode[] = []
  for (const id of ids) nodes.push(await startNode(id, env))
  const lb = await startNginx(nodes.map(n => n.port), nginx)
  return {
    nodes,
    lb,
    async stop () {
      await lb.stop()
      await Promise.all(nodes.map(n => n.kill()))
    }
  }
}

/** A fetch for the SDK client transport that records which node served each POST (X-Served-By). */
export function recordingServedBy (servedBy: string[]): typeof fetch {
  return async (input, init) => {
    const response = await fetch(input, init)
    if (init?.method === 'POST') servedBy.push(response.headers.get('x-served-by') ?? '?')
    return response
  }
}
