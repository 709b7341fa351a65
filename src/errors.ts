/**
 * Typed errors of the server. Each one carries the HTTP status and the JSON-RPC error code that the
 * error boundary answers with, so code throws and never builds error responses itself.
 */
export class McpHttpError extends Error {
  readonly statusCode: number
  readonly rpcCode: number
  readonly headers: Record<string, string>
  /** The id of the request refused, when it could be read (2026-07-28 errors carry it). */
  rpcId?: string | number
  /** The JSON-RPC error's data. */
  data?: unknown

  constructor (message: string, statusCode: number, rpcCode: number, headers: Record<string, string> = {}) {
    super(message)
    this.name = new.target.name
    this.statusCode = statusCode
    this.rpcCode = rpcCode
    this.headers = headers
  }
}

/** JSON-RPC error codes used on the HTTP layer. */
export const RpcCode = {
  ParseError: -32700,
  InvalidRequest: -32600,
  MethodNotFound: -32601,
  InternalError: -32603,
  /** Implementation-defined server error, the code the SDK uses for transport-level refusals. */
  ServerError: -32000,
  SessionNotFound: -32001
} as const

export class ParseError extends McpHttpError {
  constructor (message = 'Parse error: the body is not valid JSON') { super(message, 400, RpcCode.ParseError) }
}

export class InvalidRequestError extends McpHttpError {
  constructor (message: string) { super(`Invalid Request: ${message}`, 400, RpcCode.InvalidRequest) }
}

export class MissingSessionIdError extends McpHttpError {
  constructor () { super('Bad Request: Mcp-Session-Id header is required', 400, RpcCode.ServerError) }
}

export class UnsupportedProtocolVersionError extends McpHttpError {
  constructor (version: string, supported: readonly string[]) {
    super(`Bad Request: unsupported MCP-Protocol-Version ${JSON.stringify(version.slice(0, 64))} (supported: ${supported.join(', ')})`, 400, RpcCode.ServerError)
  }
}

export class ForbiddenOriginError extends McpHttpError {
  constructor () { super('Forbidden: Origin not allowed', 403, RpcCode.ServerError) }
}

export class SessionNotFoundError extends McpHttpError {
  constructor () { super('Session not found: it expired, was deleted or never existed; initialize a new one', 404, RpcCode.SessionNotFound) }
}

export class RouteNotFoundError extends McpHttpError {
  constructor (method: string, url: string) { super(`Not Found: ${method} ${url.slice(0, 200)}`, 404, RpcCode.MethodNotFound) }
}

export class MethodNotAllowedError extends McpHttpError {
  constructor (allow: string) { super('Method Not Allowed', 405, RpcCode.ServerError, { allow }) }
}

export class NotAcceptableError extends McpHttpError {
  constructor (needed: string) { super(`Not Acceptable: Accept must include ${needed}`, 406, RpcCode.ServerError) }
}

export class ConflictError extends McpHttpError {
  constructor (message: string) { super(`Conflict: ${message}`, 409, RpcCode.ServerError) }
}

/** Closes the connection too: the rest of the body is never read. */
export class PayloadTooLargeError extends McpHttpError {
  constructor (limit: number) { super(`Payload Too Large: the body exceeds ${limit} bytes`, 413, RpcCode.ServerError, { connection: 'close' }) }
}

export class UnsupportedMediaTypeError extends McpHttpError {
  constructor () { super('Unsupported Media Type: Content-Type must be application/json', 415, RpcCode.ServerError) }
}

export class RateLimitedError extends McpHttpError {
  /** `retryAfterMs`: until the limit lets the client in again; Retry-After says it in whole seconds, at least 1. */
  constructor (retryAfterMs: number) {
    const seconds = Math.max(1, Math.ceil(retryAfterMs / 1000))
    super(`Too Many Requests: retry in ${seconds} s`, 429, RpcCode.ServerError, { 'retry-after': String(seconds) })
  }
}

/**
 * 401: no access token, or one that does not verify. `challenge` is the WWW-Authenticate value
 * (RFC 6750 and RFC 9728: where the resource's metadata is, the scopes to ask for, the error).
 */
export class UnauthorizedError extends McpHttpError {
  constructor (message: string, challenge: string) {
    super(`Unauthorized: ${message}`, 401, RpcCode.ServerError, { 'www-authenticate': challenge })
  }
}

/** 403: a valid token without every scope the request needs; `challenge` names them all. */
export class InsufficientScopeError extends McpHttpError {
  constructor (needed: readonly string[], challenge: string) {
    super(`Forbidden: this request needs the scopes ${needed.join(' ')}`, 403, RpcCode.ServerError, { 'www-authenticate': challenge })
  }
}

export class AuthorizationServerUnavailableError extends McpHttpError {
  constructor (cause?: unknown) {
    super('Service Unavailable: the authorization server\'s keys cannot be fetched', 503, RpcCode.ServerError, { 'retry-after': '5' })
    this.cause = cause
  }
}

export class StorageUnavailableError extends McpHttpError {
  constructor (cause?: unknown) {
    super('Service Unavailable: session storage is unreachable', 503, RpcCode.ServerError, { 'retry-after': '1' })
    this.cause = cause
  }
}

export class TooManyStreamsError extends McpHttpError {
  constructor () { super('Service Unavailable: this node holds as many streams as it may, retry shortly', 503, RpcCode.ServerError, { 'retry-after': '1' }) }
}

export class OverloadedError extends McpHttpError {
  constructor () { super('Service Unavailable: the server is overloaded, retry shortly', 503, RpcCode.ServerError, { 'retry-after': '1' }) }
}

export class ShuttingDownError extends McpHttpError {
  constructor () { super('Service Unavailable: this node is shutting down, retry on another', 503, RpcCode.ServerError, { 'retry-after': '1' }) }
}

export class InternalServerError extends McpHttpError {
  constructor () { super('Internal server error', 500, RpcCode.InternalError) }
}

/** A JSON-RPC error a request is answered with as is: its code, message and data. */
export class RpcError extends Error {
  readonly code: number
  readonly data?: unknown

  constructor (code: number, message: string, data?: unknown) {
    super(message)
    this.name = 'RpcError'
    this.code = code
    if (data !== undefined) this.data = data
  }
}

/** A bad environment variable; stops the boot. */
export class ConfigError extends Error {
  override name = 'ConfigError'
}

/** Thrown by a tool for input that passes its schema but has no answer; becomes a tool result with isError. */
export class ToolInputError extends Error {
  override name = 'ToolInputError'
}

/**
 * 400 for a 2026-07-28 request the HTTP layer refuses, carrying its id: headers that disagree with
 * the body (-32020), a missing client capability (-32021), an unsupported revision (-32022), a
 * malformed `_meta` envelope (-32602).
 */
export class ModernRequestError extends McpHttpError {
  constructor (rpcCode: number, message: string, id: string | number | undefined, data?: unknown, statusCode = 400) {
    super(message, statusCode, rpcCode)
    if (id !== undefined) this.rpcId = id
    if (data !== undefined) this.data = data
  }
}

/** The JSON-RPC error body sent for an error on the HTTP layer. */
export function rpcErrorBody (code: number, message: string, id: string | number | null = null, data?: unknown) {
  return { jsonrpc: '2.0' as const, error: data === undefined ? { code, message } : { code, message, data }, id }
}
