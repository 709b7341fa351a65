import fp from 'fastify-plugin'
import proxyAddr from 'proxy-addr'
import type { FastifyRequest } from 'fastify'

declare module 'fastify' {
  interface FastifyRequest {
    /**
     * The client's address: the connection's peer, or, behind a proxy that TRUST_PROXY names, the
     * address that proxy saw. A client cannot forge it with its own X-Forwarded-For.
     */
    clientAddress: string
  }
}

/** The trust rule of proxy-addr for TRUST_PROXY: a hop count, or addresses and CIDRs; nothing when empty. */
function trust (setting: string): (address: string, hop: number) => boolean {
  if (setting === '') return () => false
  if (/^\d+$/.test(setting)) {
    const hops = Number(setting)
    return (_address, hop) => hop < hops
  }
  return proxyAddr.compile(setting.split(','))
}

/**
 * Limits of the HTTP server: requests whose headers or body arrive too slowly are cut with 408
 * (SSE streams are exempt: a GET has no body, and its response may last), connections per node are
 * bounded, and each request knows its real client address.
 */
export default fp(async function connections (fastify) {
  const { REQUEST_TIMEOUT_MS, HEADERS_TIMEOUT_MS, MAX_CONNECTIONS, TRUST_PROXY } = fastify.config
  fastify.server.requestTimeout = REQUEST_TIMEOUT_MS
  fastify.server.headersTimeout = HEADERS_TIMEOUT_MS
  fastify.server.maxConnections = MAX_CONNECTIONS
  const trusted = trust(TRUST_PROXY)
  fastify.decorateRequest('clientAddress', {
    // Without a trusted proxy the peer is the client: no X-Forwarded-For to parse on every request.
    getter: TRUST_PROXY === ''
      ? function (this: FastifyRequest) { return this.raw.socket.remoteAddress as string }
      : function (this: FastifyRequest) { return proxyAddr(this.raw, trusted) }
  })
}, { name: 'connections', dependencies: ['config'] })
