import type { Socket } from 'node:net'
import { STATUS_CODES } from 'node:http'
import { RpcCode, rpcErrorBody } from './errors.js'

/**
 * Answers requests that Node's HTTP parser refuses before any route runs (malformed request line
 * or headers, headers over 16 KiB, timeouts) with the same JSON-RPC error bodies as everything
 * else, then closes the connection.
 */
export function clientErrorHandler (error: NodeJS.ErrnoException, socket: Socket): void {
  if (error.code === 'ECONNRESET' || socket.destroyed) return
  const status = error.code === 'HPE_HEADER_OVERFLOW' ? 431 : error.code === 'ERR_HTTP_REQUEST_TIMEOUT' ? 408 : 400
  const message = status === 431 ? 'Request Header Fields Too Large: headers exceed 16 KiB' : status === 408 ? 'Request Timeout' : 'Bad Request: malformed HTTP request'
  const body = JSON.stringify(rpcErrorBody(status === 400 ? RpcCode.InvalidRequest : RpcCode.ServerError, message))
  if (socket.writable) {
    socket.write(`HTTP/1.1 ${status} ${STATUS_CODES[status]}\r\nContent-Length: ${Buffer.byteLength(body)}\r\nContent-Type: application/json\r\nConnection: close\r\n\r\n${body}`)
  }
  socket.destroy()
}
