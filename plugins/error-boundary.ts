import fp from 'fastify-plugin'
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify'
import {
  InternalServerError, McpHttpError, ParseError, PayloadTooLargeError, RouteNotFoundError,
  RpcCode, UnsupportedMediaTypeError, rpcErrorBody
} from '../src/errors.js'
import { sessionIdForLog } from './request-log.js'

/** Fastify's own errors, as the typed error a client should see. */
function fromFastify (error: FastifyError, bodyLimit: number): McpHttpError | undefined {
  switch (error.code) {
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE': return new UnsupportedMediaTypeError()
    case 'FST_ERR_CTP_BODY_TOO_LARGE': return new PayloadTooLargeError(bodyLimit)
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
    case 'FST_ERR_CTP_EMPTY_JSON_BODY': return new ParseError()
  }
  if (error instanceof SyntaxError && error.statusCode === 400) return new ParseError()
  const status = error.statusCode ?? 500
  if (status >= 400 && status < 500) {
    return new McpHttpError(error.message, status, status === 404 ? RpcCode.MethodNotFound : RpcCode.InvalidRequest)
  }
  return undefined
}

function send (reply: FastifyReply, error: McpHttpError) {
  return reply.code(error.statusCode).headers(error.headers).send(rpcErrorBody(error.rpcCode, error.message, error.rpcId ?? null, error.data))
}

/**
 * Errors Fastify meets before any route is chosen (a URL that does not decode, an unsupported
 * Content-Type for the route lookup): the server option `frameworkErrors` sends them here, so they
 * get the same JSON-RPC bodies as everything else.
 */
export function frameworkErrors (error: FastifyError, _request: FastifyRequest, reply: FastifyReply) {
  return send(reply, fromFastify(error, Number.NaN) ?? new InternalServerError())
}

/**
 * The one error boundary: every error thrown by a hook, plugin or route becomes a JSON-RPC error
 * body with the status its type carries. Unknown errors become a generic 500; their detail goes to
 * the log only.
 */
export default fp(async function errorBoundary (fastify) {
  const bodyLimit = fastify.config.BODY_LIMIT_BYTES

  fastify.setErrorHandler(function (error: FastifyError, request, reply) {
    const known = error instanceof McpHttpError ? error : fromFastify(error, bodyLimit)
    if (known !== undefined) {
      if (known.statusCode >= 500) request.log.warn({ err: error, sessionId: sessionIdForLog(request) }, known.message)
      return send(reply, known)
    }
    request.log.error({ err: error, sessionId: sessionIdForLog(request) }, 'unhandled error')
    return send(reply, new InternalServerError())
  })

  fastify.setNotFoundHandler(function (request, reply) {
    return send(reply, new RouteNotFoundError(request.method, request.url))
  })
}, { name: 'error-boundary', dependencies: ['config'] })
