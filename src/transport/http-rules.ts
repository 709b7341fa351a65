import { SUPPORTED_PROTOCOL_VERSIONS, type JSONRPCMessage } from '@modelcontextprotocol/sdk/types.js'
import { InvalidRequestError, NotAcceptableError, UnsupportedProtocolVersionError } from '../errors.js'

/** Largest batch accepted from clients of the 2025-03-26 revision, the last one with batches. */
export const MAX_BATCH_MESSAGES = 100
/** Deepest nesting of arrays and objects accepted in a message; MCP messages need a handful of levels. */
export const MAX_NESTING = 64
/** Longest string request id accepted: ids are echoed in answers and key a request's writes. */
export const MAX_REQUEST_ID_LENGTH = 256

/** Whether a parsed value nests arrays or objects deeper than `limit`; recursion stops at `limit`. */
export function nestedDeeperThan (value: unknown, limit: number): boolean {
  if (typeof value !== 'object' || value === null) return false
  if (limit === 0) return true
  if (Array.isArray(value)) {
    for (const child of value) if (nestedDeeperThan(child, limit - 1)) return true
  } else {
    for (const key in value) if (nestedDeeperThan((value as Record<string, unknown>)[key], limit - 1)) return true
  }
  return false
}

/** Whether an Accept header admits a media type, by exact type, `type/*` or `*\/*`. */
export function accepts (header: string | undefined, type: string): boolean {
  if (header === undefined) return false
  const family = type.slice(0, type.indexOf('/'))
  for (const part of header.split(',')) {
    const range = part.split(';', 1)[0]!.trim().toLowerCase()
    if (range === type || range === '*/*' || range === `${family}/*`) return true
  }
  return false
}

/** Accept headers already judged, per list of types: a client sends the same one every time. */
const judged = new WeakMap<readonly string[], Map<string, boolean>>()
const MAX_JUDGED = 100

/** @throws {NotAcceptableError} unless the Accept header admits every type. */
export function requireAccept (header: string | undefined, types: readonly string[]): void {
  let seen = judged.get(types)
  if (seen === undefined) judged.set(types, seen = new Map())
  let ok = header === undefined ? false : seen.get(header)
  if (ok === undefined) {
    ok = types.every(type => accepts(header, type))
    if (seen.size < MAX_JUDGED) seen.set(header!, ok)
  }
  if (!ok) throw new NotAcceptableError(types.join(' and '))
}

/**
 * A missing MCP-Protocol-Version header means 2025-03-26, as the specification says.
 * @throws {UnsupportedProtocolVersionError} for a version this server does not speak.
 */
export function checkProtocolVersion (header: string | string[] | undefined): void {
  if (header === undefined) return
  const version = Array.isArray(header) ? header.join(',') : header
  if (!SUPPORTED_PROTOCOL_VERSIONS.includes(version)) throw new UnsupportedProtocolVersionError(version, SUPPORTED_PROTOCOL_VERSIONS)
}

const isId = (id: unknown) => (typeof id === 'string' && id.length <= MAX_REQUEST_ID_LENGTH) || Number.isSafeInteger(id)
const isObject = (value: unknown): value is Record<string, unknown> =>
  typeof value === 'object' && value !== null && !Array.isArray(value)

/** Whether a parsed value is a JSON-RPC 2.0 request, notification or response in MCP's shape. */
export function isJsonRpcMessage (value: unknown): value is JSONRPCMessage {
  if (!isObject(value) || value.jsonrpc !== '2.0') return false
  if (typeof value.method === 'string') {
    return (!('id' in value) || isId(value.id)) && (value.params === undefined || isObject(value.params))
  }
  if ('result' in value) return isId(value.id) && isObject(value.result)
  if ('error' in value) {
    const error = value.error
    return (isId(value.id) || value.id === null) && isObject(error) && Number.isInteger(error.code) && typeof error.message === 'string'
  }
  return false
}

/**
 * The messages of one POST body, which is one message or (before 2025-06-18) a batch.
 * @throws {InvalidRequestError} for anything else.
 */
export function readMessages (body: unknown): { messages: JSONRPCMessage[], batch: boolean } {
  const batch = Array.isArray(body)
  const messages: unknown[] = batch ? body : [body]
  if (messages.length === 0) throw new InvalidRequestError('an empty batch')
  if (messages.length > MAX_BATCH_MESSAGES) throw new InvalidRequestError(`a batch holds at most ${MAX_BATCH_MESSAGES} messages`)
  for (const message of messages) {
    if (!isJsonRpcMessage(message)) {
      const id = (message as { id?: unknown } | null)?.id
      throw new InvalidRequestError(typeof id === 'string' && id.length > MAX_REQUEST_ID_LENGTH
        ? `a request id is at most ${MAX_REQUEST_ID_LENGTH} characters`
        : 'expected a JSON-RPC 2.0 request, notification or response')
    }
    if (nestedDeeperThan(message, MAX_NESTING)) throw new InvalidRequestError(`a message nests deeper than ${MAX_NESTING} levels`)
  }
  return { messages: messages as JSONRPCMessage[], batch }
}
