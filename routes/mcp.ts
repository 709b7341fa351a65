import type { ServerResponse } from 'node:http'
import { Transform } from 'node:stream'
import type { FastifyInstance, FastifyReply, FastifyRequest, preParsingHookHandler } from 'fastify'
import type { JSONRPCMessage, JSONRPCRequest } from '@modelcontextprotocol/sdk/types.js'
import {
  ForbiddenOriginError, InvalidRequestError, McpHttpError, MethodNotAllowedError, MissingSessionIdError, PayloadTooLargeError, SessionNotFoundError,
  RateLimitedError, ShuttingDownError, TooManyStreamsError, rpcErrorBody
} from '../src/errors.js'
import { clientKey } from '../plugins/rate-limit.js'
import { HANDLE_PREFIX } from '../src/mcp/features.js'
import { type Envelope, checkEnvelope, checkParamHeaders, eraOf, isModernHeader } from '../src/mcp/modern.js'
import { MAX_URI_LENGTH } from '../src/mcp/dispatcher.js'
import { MAX_LISTEN_SUBSCRIPTIONS, MAX_LISTEN_URI_BYTES } from '../src/transport/listeners.js'
import { originMatcher } from '../src/origins.js'
import { checkProtocolVersion, readMessages, requireAccept } from '../src/transport/http-rules.js'
import type { LiveSession } from '../src/transport/session-cache.js'
import { sseHeaders } from '../src/transport/sse.js'

const POST_ACCEPT = ['application/json', 'text/event-stream'] as const
const GET_ACCEPT = ['text/event-stream'] as const
/** Longer ids were never minted here; they are refused without a store lookup. */
const MAX_SESSION_ID_LENGTH = 128
const STREAMED = Symbol('streamed')
/**
 * Largest body of a POST without a session id (initialize, whose parts are bounded far below
 * this): a flood of large bodies is refused before it is read and parsed.
 */
export const SESSIONLESS_BODY_LIMIT = 65_536

/** A body stream that fails with 413 past `limit` bytes, for bodies without a Content-Length. */
function limited (payload: NodeJS.ReadableStream, limit: number): Transform {
  let received = 0
  const counted = new Transform({
    transform (chunk: Buffer, _encoding, callback) {
      received += chunk.length
      callback(received > limit ? new PayloadTooLargeError(limit) : null, chunk)
    }
  })
  payload.on('error', error => counted.destroy(error))
  return payload.pipe(counted)
}

/** The resources a listen request subscribes to; undefined when its filter is malformed. */
function listenFilter (notifications: unknown): string[] | undefined {
  if (typeof notifications !== 'object' || notifications === null || Array.isArray(notifications)) return undefined
  const resources = (notifications as { resourceSubscriptions?: unknown }).resourceSubscriptions ?? []
  if (!Array.isArray(resources) || resources.length > MAX_LISTEN_SUBSCRIPTIONS) return undefined
  if (!resources.every(uri => typeof uri === 'string' && uri.length <= MAX_URI_LENGTH)) return undefined
  if (resources.reduce((bytes: number, uri: string) => bytes + Buffer.byteLength(uri), 0) > MAX_LISTEN_URI_BYTES) return undefined
  return resources
}

/** Whether a header value could be a session id of ours (a handle's never is). */
const couldBeSessionId = (id: unknown): id is string => typeof id === 'string' && id !== '' && id.length <= MAX_SESSION_ID_LENGTH && !id.startsWith(HANDLE_PREFIX)

/**
 * The session id a request names; undefined when it is longer than any id minted here.
 * @throws {MissingSessionIdError} when the request names none.
 */
function sessionIdOf (request: FastifyRequest): string | undefined {
  const id = request.headers['mcp-session-id']
  if (typeof id !== 'string' || id === '') throw new MissingSessionIdError()
  return couldBeSessionId(id) ? id : undefined
}

/**
 * Starts an SSE response (with the headers hooks already set, such as CORS). A GET stream sends
 * its headers at once; a POST's leave with its first events.
 */
function openSse (reply: FastifyReply, sessionId: string | undefined, flush: boolean) {
  reply.hijack()
  // Copied one by one: spreading both into one literal took V8's slow path.
  const headers = reply.getHeaders() as Record<string, string>
  const sse = sseHeaders(sessionId)
  for (const name in sse) headers[name] = sse[name]!
  reply.raw.writeHead(200, headers)
  if (flush) reply.raw.flushHeaders()
  return reply.raw
}

/**
 * The one MCP endpoint, Streamable HTTP: POST (messages), GET (the server's stream), DELETE (end the
 * session). Bodies are JSON-RPC messages, checked by the transport's own compiled test rather than a
 * route schema, so the hot path parses once.
 */
export default async function mcpRoutes (fastify: FastifyInstance) {
  const { sessionCache: cache, sessionLimits: limits, authorization, modernServer: modern, listeners, config, mcpFeatures: features } = fastify
  const originAllowed = originMatcher(config.ALLOWED_ORIGINS)
  // Only JSON bodies reach the endpoint; any other Content-Type gets 415.
  fastify.removeAllContentTypeParsers()
  fastify.addContentTypeParser('application/json', { parseAs: 'string', bodyLimit: config.BODY_LIMIT_BYTES }, fastify.getDefaultJsonParser('error', 'error'))

  /** A present Origin that is not allowed gets 403. */
  function verifyOrigin (request: FastifyRequest, _reply: FastifyReply, done: (error?: Error) => void) {
    const origin = request.headers.origin
    done(origin !== undefined && !originAllowed(origin) ? new ForbiddenOriginError() : undefined)
  }

  /** With access tokens required, a request without a valid one gets 401 (see plugins/authorization.ts). */
  const authenticate = (request: FastifyRequest) => authorization.authenticate(request)
  // Without tokens there is nothing to check, and no hook (each async one costs a promise and a turn).
  const authenticated = authorization.mode === 'jwt' ? [authenticate] : []

  /**
   * Starts the store round trip of the session a POST or GET names as it arrives: the rate limiter,
   * whose hook runs next, counts the request from its answer, and the handler awaits it. Only a
   * session the request's principal opened is found.
   */
  function touchSession (request: FastifyRequest, _reply: FastifyReply, done: () => void) {
    const id = request.headers['mcp-session-id']
    // 2026-07-28 requests have no session: an Mcp-Session-Id they carry is ignored.
    if (couldBeSessionId(id) && request.method !== 'DELETE' && !isModernHeader(request.headers['mcp-protocol-version'])) {
      request.sessionTouched = cache.touch(id, request.principal?.id)
      // Awaited by the handler; a request refused before it (406) leaves it unread.
      request.sessionTouched.catch(() => {})
    }
    done()
  }

  /**
   * Runs `use` on the session the request names, live on this node and leased until `use` has
   * handed over the request (so a cache eviction meanwhile cannot close it under the request).
   * @throws {MissingSessionIdError} without a session id; {SessionNotFoundError} for an unknown one.
   */
  async function withSession<T> (request: FastifyRequest, use: (live: LiveSession) => T | Promise<T>): Promise<T> {
    const id = sessionIdOf(request)
    const live = id === undefined ? undefined : await cache.acquire(id, request.principal?.id, request.sessionTouched)
    if (live === undefined) throw new SessionNotFoundError()
    try {
      return await use(live)
    } finally {
      live.transport.release()
    }
  }

  /** A POST without a session id (but a 2026-07-28 request's) may carry SESSIONLESS_BODY_LIMIT bytes at most. */
  const limitSessionless: preParsingHookHandler = (request, _reply, payload, done) => {
    if (request.headers['mcp-session-id'] !== undefined || isModernHeader(request.headers['mcp-protocol-version'])) return done(null, payload)
    const declared = request.headers['content-length']
    if (declared === undefined) return done(null, limited(payload, SESSIONLESS_BODY_LIMIT))
    done(Number(declared) > SESSIONLESS_BODY_LIMIT ? new PayloadTooLargeError(SESSIONLESS_BODY_LIMIT) : null, payload)
  }

  // The rate limiter appends its hook after these.
  const shared = { onRequest: [verifyOrigin, ...authenticated, touchSession], config: { rateLimit: {} } }

  /**
   * A 2026-07-28 request: checked against its headers, authorized, answered on its own (or, for
   * subscriptions/listen, with a stream); notifications get 202. Every refusal carries the
   * request's id.
   */
  async function serveModern (request: FastifyRequest, reply: FastifyReply) {
    const { messages } = readMessages(request.body)
    const message = messages[0] as JSONRPCRequest
    const envelope = checkEnvelope(message, request.headers)
    checkParamHeaders(message, request.headers, features)
    try {
      authorization.authorize(request, [message])
      if (!('id' in message)) return reply.code(202).send()
      if (message.method === 'subscriptions/listen') return await listen(request, reply, message)
      return await answerModern(request, reply, message, envelope)
    } catch (error) {
      if (error instanceof McpHttpError && error.rpcId === undefined) error.rpcId = message.id
      throw error
    }
  }

  /**
   * Answers a 2026-07-28 request: one JSON body, or an SSE stream when the request's notifications
   * (progress, log messages) come before the answer.
   */
  async function answerModern (request: FastifyRequest, reply: FastifyReply, message: JSONRPCRequest, envelope: Envelope) {
    let raw: NodeJS.WritableStream | undefined
    const send = (answer: JSONRPCMessage) => raw!.write(`event: message\ndata: ${JSON.stringify(answer)}\n\n`)
    // Made when a tool first asks for it: most calls never do.
    let abort: AbortController | undefined
    const signal = () => {
      if (abort === undefined) {
        const controller = abort = new AbortController()
        const left = () => { if (!reply.raw.writableFinished) controller.abort() }
        // The client may have left before a tool first asked, its 'close' gone by.
        if (reply.raw.destroyed) left()
        else reply.raw.once('close', left)
      }
      return abort.signal
    }
    let answer: JSONRPCMessage
    try {
      const who = { client: clientKey(request), principal: request.principal?.id }
      answer = await modern.answer(message, envelope, who, signal, {
        send: notification => {
          raw ??= openSse(reply, undefined, true)
          send(notification)
        }
      })
    } catch (error) {
      // Refused once the stream has begun: the refusal is its last event.
      if (raw === undefined || !(error instanceof McpHttpError)) throw error
      answer = rpcErrorBody(error.rpcCode, error.message, message.id, error.data) as JSONRPCMessage
    }
    if (raw === undefined) return answer
    send(answer)
    raw.end()
    return reply
  }

  /**
   * subscriptions/listen: a stream of the changes the client asks for (the resources it names;
   * nothing else is offered), acknowledged first, each frame tagged with the request's id.
   */
  async function listen (request: FastifyRequest, reply: FastifyReply, message: JSONRPCRequest) {
    if (cache.closing) throw new ShuttingDownError()
    const resources = listenFilter(message.params?.notifications)
    if (resources === undefined) {
      return { jsonrpc: '2.0', id: message.id, error: { code: -32602, message: `Invalid params: notifications must be an object; resourceSubscriptions, when given, at most ${MAX_LISTEN_SUBSCRIPTIONS} URIs of ${MAX_LISTEN_URI_BYTES} bytes together` } }
    }
    const unknown = await modern.unlistenable(resources, request.principal?.id)
    if (unknown !== undefined) return { jsonrpc: '2.0', id: message.id, error: { code: -32602, message: `Resource not found: ${unknown.slice(0, MAX_URI_LENGTH)}`, data: { uri: unknown } } }
    const opened = listeners.open(() => openSse(reply, undefined, true) as ServerResponse, message.id, resources, clientKey(request))
    if (opened === 'node') throw new TooManyStreamsError()
    if (opened === 'client') throw new RateLimitedError(5000)
    return reply
  }

  fastify.post('/mcp', { ...shared, preParsing: limitSessionless, bodyLimit: config.BODY_LIMIT_BYTES }, async (request, reply) => {
    requireAccept(request.headers.accept, POST_ACCEPT)
    if (eraOf(request.body, request.headers['mcp-protocol-version']) === 'modern') return serveModern(request, reply)
    checkProtocolVersion(request.headers['mcp-protocol-version'])
    const { messages, batch } = readMessages(request.body)
    authorization.authorize(request, messages)
    const initialize = messages.find(m => 'method' in m && m.method === 'initialize')
    if (initialize !== undefined) {
      if (messages.length > 1 || !('id' in initialize)) throw new InvalidRequestError('initialize must be sent alone, as a request')
      const client = clientKey(request)
      await limits.sessionCreation(client)
      const { sessionId, response } = await cache.initialize(initialize as JSONRPCRequest, request.principal?.id, client)
      if (sessionId !== undefined) reply.header('mcp-session-id', sessionId)
      return batch ? [response] : response
    }
    const answer = await withSession(request, async live => {
      if (batch) await limits.batch(live.transport.sessionId, messages.length)
      return new Promise<unknown>((resolve, reject) => {
        const answered = live.transport.post(messages, batch, {
          json: resolve,
          fail: reject,
          stream: () => {
            const raw = openSse(reply, live.transport.sessionId, false)
            resolve(STREAMED)
            return raw
          }
        })
        if (!answered) resolve(undefined)
      })
    })
    if (answer === STREAMED) return reply
    if (answer === undefined) return reply.code(202).send()
    return answer
  })

  fastify.get('/mcp', { ...shared, exposeHeadRoute: false }, async (request, reply) => {
    // A stream opened now would hold the shutdown up; the client reconnects to another node.
    if (cache.closing) throw new ShuttingDownError()
    requireAccept(request.headers.accept, GET_ACCEPT)
    checkProtocolVersion(request.headers['mcp-protocol-version'])
    authorization.authorize(request, [])
    const lastEventId = request.headers['last-event-id']
    await withSession(request, live => live.transport.serveGet(() => openSse(reply, live.transport.sessionId, true), typeof lastEventId === 'string' && lastEventId !== '' ? lastEventId : undefined))
    return reply
  })

  fastify.delete('/mcp', shared, async (request, reply) => {
    checkProtocolVersion(request.headers['mcp-protocol-version'])
    authorization.authorize(request, [])
    const id = sessionIdOf(request)
    if (id === undefined || !await cache.delete(id, request.principal?.id)) throw new SessionNotFoundError()
    return reply.code(200).send()
  })

  fastify.route({
    method: ['PUT', 'PATCH', 'HEAD'],
    url: '/mcp',
    // Refused before the body is read, whatever it holds.
    onRequest: async () => { throw new MethodNotAllowedError('GET, POST, DELETE') },
    handler: async () => {}
  })
}
