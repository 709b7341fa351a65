import { Client, StreamableHTTPClientTransport } from '@modelcontextprotocol/client'
import { Client as LegacyClient } from '@modelcontextprotocol/sdk/client/index.js'
import { StreamableHTTPClientTransport as LegacyTransport } from '@modelcontextprotocol/sdk/client/streamableHttp.js'

/** One POST as a client sent it and the server answered it. */
export interface Exchange {
  /** The JSON-RPC method of the body (`response` for a client's answer, `batch` for an array). */
  method: string
  /** The tool name or resource URI of tools/call and resources/read. */
  name?: string
  /** Whether the body retries an input_required answer (carries requestState or inputResponses). */
  retry: boolean
  status: number
  servedBy: string
  /** The Mcp-Session-Id the server answered with, if any. */
  sessionId: string | null
  /** The MCP-Protocol-Version header the client sent. */
  protocolHeader: string | null
}

/**
 * A fetch for either SDK's client transport that records every POST it makes: what it asked
 * for, and which node (X-Served-By) answered with what.
 */
export function recordingFetch (exchanges: Exchange[]) {
  return async (input: string | URL | Request, init?: RequestInit): Promise<Response> => {
    const response = await fetch(input, init)
    if (init?.method === 'POST') {
      let method = '?'
      let name: string | undefined
      let retry = false
      try {
        const body = JSON.parse(String(init.body))
        if (Array.isArray(body)) method = 'batch'
        else if (typeof body.method === 'string') {
          method = body.method
          const id = body.params?.name ?? body.params?.uri
          if (typeof id === 'string') name = id
          retry = body.params?.requestState !== undefined || body.params?.inputResponses !== undefined
        } else method = 'response'
      } catch {}
      exchanges.push({
        method,
        ...(name !== undefined && { name }),
        retry,
        status: response.status,
        servedBy: response.headers.get('x-served-by') ?? '?',
        sessionId: response.headers.get('mcp-session-id'),
        protocolHeader: new Headers(init.headers).get('mcp-protocol-version')
      })
    }
    return response
  }
}

export type Confirmation = 'accept' | 'decline' | 'cancel'

export interface ModernClient {
  client: Client
  transport: StreamableHTTPClientTransport
  exchanges: Exchange[]
  /** The messages of the elicitation requests the client answered. */
  elicitations: string[]
  /** How the next elicitation is answered (accept answers confirm: true). */
  answer: Confirmation
}

/**
 * An SDK 2.4.0 client connected with version negotiation `auto` (which probes with
 * server/discover and falls back to initialize), declaring elicitation and answering it with
 * `answer`.
 */
export async function connectModern (url: URL, name = 'modern-e2e'): Promise<ModernClient> {
  const exchanges: Exchange[] = []
  const client = new Client({ name, version: '2.4.0' }, {
    capabilities: { elicitation: {} },
    versionNegotiation: { mode: 'auto' },
    inputRequired: { autoFulfill: true, maxRounds: 4 }
  })
  const modern: ModernClient = { client, transport: undefined as unknown as StreamableHTTPClientTransport, exchanges, elicitations: [], answer: 'accept' }
  client.setRequestHandler('elicitation/create', async request => {
    modern.elicitations.push(request.params.message)
    return modern.answer === 'accept' ? { action: 'accept', content: { confirm: true } } : { action: modern.answer }
  })
  modern.transport = new StreamableHTTPClientTransport(url, { fetch: recordingFetch(exchanges) })
  await client.connect(modern.transport)
  return modern
}

export interface OldClient {
  client: LegacyClient
  transport: LegacyTransport
  exchanges: Exchange[]
}

/** An SDK 1.32.2 client: initialize, a session, 2025-11-25. */
export async function connectLegacy (url: URL, name = 'legacy-e2e'): Promise<OldClient> {
  const exchanges: Exchange[] = []
  const transport = new LegacyTransport(url, { fetch: recordingFetch(exchanges) })
  const client = new LegacyClient({ name, version: '1.32.2' })
  await client.connect(transport)
  return { client, transport, exchanges }
}

/** The structured content of a tool result. */
export const structured = (result: object) => ((result as { structuredContent?: unknown }).structuredContent ?? {}) as Record<string, any>

/** The text of a tool result's first content block. */
export const text = (result: object) => ((result as { content?: Array<{ text?: string }> }).content?.[0]?.text ?? '')
