import type { JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js'

export const HEADERS = { 'content-type': 'application/json', accept: 'application/json, text/event-stream' }

export interface SseEvent {
  id?: string
  data: string
  message?: any
}

/** Parses SSE text into events (comments and retry lines skipped). */
export function parseEvents (text: string): SseEvent[] {
  const events: SseEvent[] = []
  for (const block of text.split('\n\n')) {
    let id: string | undefined
    const data: string[] = []
    for (const line of block.split('\n')) {
      if (line.startsWith('id: ')) id = line.slice(4)
      else if (line.startsWith('data: ')) data.push(line.slice(6))
      else if (line.startsWith('data:')) data.push(line.slice(5))
    }
    if (id === undefined && data.length === 0) continue
    const joined = data.join('\n')
    events.push({ ...(id !== undefined && { id }), data: joined, ...(joined.trim() !== '' && { message: JSON.parse(joined) }) })
  }
  return events
}

export interface Answer {
  status: number
  servedBy: string | null
  headers: Headers
  /** The JSON body, or the messages of an SSE body. */
  messages: any[]
  events: SseEvent[]
}

/** One POST of one message, answered as JSON or SSE. */
export async function post (url: URL | string, message: JSONRPCMessage | JSONRPCMessage[], sessionId?: string, extraHeaders: Record<string, string> = {}): Promise<Answer> {
  const response = await fetch(url, {
    method: 'POST',
    headers: { ...HEADERS, ...(sessionId !== undefined && { 'mcp-session-id': sessionId }), ...extraHeaders },
    body: JSON.stringify(message)
  })
  const text = await response.text()
  const sse = response.headers.get('content-type')?.startsWith('text/event-stream') === true
  const events = sse ? parseEvents(text) : []
  const messages = sse ? events.filter(e => e.message !== undefined).map(e => e.message) : text === '' ? [] : [JSON.parse(text)]
  return { status: response.status, servedBy: response.headers.get('x-served-by'), headers: response.headers, messages, events }
}

let nextId = 1

/** Initializes a session (and sends notifications/initialized); returns its id. */
export async function initialize (url: URL | string, capabilities: Record<string, unknown> = {}, protocolVersion = '2025-11-25'): Promise<string> {
  const answer = await post(url, { jsonrpc: '2.0', id: nextId++, method: 'initialize', params: { protocolVersion, capabilities, clientInfo: { name: 'raw-client', version: '1.0.0' } } })
  const sessionId = answer.headers.get('mcp-session-id')
  if (answer.status !== 200 || sessionId === null) throw new Error(`initialize failed with ${answer.status}`)
  await post(url, { jsonrpc: '2.0', method: 'notifications/initialized' }, sessionId)
  return sessionId
}

/** Sends one request and returns its answer. */
export function request (url: URL | string, sessionId: string, method: string, params: Record<string, unknown> = {}, headers: Record<string, string> = {}): Promise<Answer> {
  return post(url, { jsonrpc: '2.0', id: nextId++, method, params }, sessionId, headers)
}

export function callTool (url: URL | string, sessionId: string, name: string, args: Record<string, unknown>): Promise<Answer> {
  return request(url, sessionId, 'tools/call', { name, arguments: args })
}

export interface OpenStream {
  status: number
  servedBy: string | null
  events: SseEvent[]
  /** Resolves with the events once `predicate` holds for them. */
  until (predicate: (events: SseEvent[]) => boolean, timeoutMs?: number): Promise<SseEvent[]>
  close (): void
  /** Resolves when the server ended the stream. */
  ended: Promise<void>
}

/** A GET stream read as it arrives. */
export async function openStream (url: URL | string, sessionId: string, lastEventId?: string): Promise<OpenStream> {
  const controller = new AbortController()
  const response = await fetch(url, {
    headers: { accept: 'text/event-stream', 'mcp-session-id': sessionId, ...(lastEventId !== undefined && { 'last-event-id': lastEventId }) },
    signal: controller.signal
  })
  return readStream(response, controller)
}

/** An SSE response read as it arrives; `controller` aborts its request. */
export function readStream (response: Response, controller: AbortController): OpenStream {
  const events: SseEvent[] = []
  const listeners = new Set<() => void>()
  let buffer = ''
  const ended = (async () => {
    if (response.body === null) return
    const decoder = new TextDecoder()
    try {
      for await (const chunk of response.body) {
        buffer += decoder.decode(chunk as Uint8Array, { stream: true })
        const complete = buffer.lastIndexOf('\n\n')
        if (complete === -1) continue
        events.push(...parseEvents(buffer.slice(0, complete)))
        buffer = buffer.slice(complete + 2)
        for (const listener of listeners) listener()
      }
    } catch {}
  })()
  return {
    status: response.status,
    servedBy: response.headers.get('x-served-by'),
    events,
    ended,
    close: () => controller.abort(),
    until (predicate, timeoutMs = 5000) {
      if (predicate(events)) return Promise.resolve(events)
      return new Promise((resolve, reject) => {
        const timer = setTimeout(() => { listeners.delete(check); reject(new Error(`stream condition not met in ${timeoutMs} ms; got ${JSON.stringify(events)}`)) }, timeoutMs)
        const check = () => {
          if (!predicate(events)) return
          clearTimeout(timer)
          listeners.delete(check)
          resolve(events)
        }
        listeners.add(check)
      })
    }
  }
}

/** The `_meta` envelope a 2026-07-28 request carries. */
export const modernMeta = (clientCapabilities: Record<string, unknown> = {}) =>
  ({ 'io.modelcontextprotocol/protocolVersion': '2026-07-28', 'io.modelcontextprotocol/clientCapabilities': clientCapabilities })

export interface ModernOptions {
  id?: string | number
  capabilities?: Record<string, unknown>
  headers?: Record<string, string>
  signal?: AbortSignal
}

/** A 2026-07-28 request, with the headers that name it (Mcp-Name from params.name or params.uri). */
export function modernFetch (url: URL | string, method: string, params: Record<string, unknown> = {}, options: ModernOptions = {}): Promise<Response> {
  const named = typeof params.name === 'string' ? params.name : typeof params.uri === 'string' ? params.uri : undefined
  return fetch(url, {
    method: 'POST',
    headers: { ...HEADERS, 'mcp-protocol-version': '2026-07-28', 'mcp-method': method, ...(named !== undefined && { 'mcp-name': named }), ...options.headers },
    body: JSON.stringify({ jsonrpc: '2.0', id: options.id ?? nextId++, method, params: { ...params, _meta: modernMeta(options.capabilities) } }),
    ...(options.signal !== undefined && { signal: options.signal })
  })
}

/** A 2026-07-28 request answered as JSON: its status, headers and body. */
export async function modernPost (url: URL | string, method: string, params: Record<string, unknown> = {}, options: ModernOptions = {}): Promise<{ status: number, headers: Headers, body: any }> {
  const response = await modernFetch(url, method, params, options)
  return { status: response.status, headers: response.headers, body: await response.json() }
}
