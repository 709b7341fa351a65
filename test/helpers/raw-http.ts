import { connect } from 'node:net'

export interface RawResponse {
  status: number
  headers: Record<string, string>
  body: Buffer
  /** True when the connection ended before a complete response. */
  truncated: boolean
}

function dechunk (data: Buffer): { body: Buffer, complete: boolean } {
  const parts: Buffer[] = []
  let offset = 0
  while (offset < data.length) {
    const lineEnd = data.indexOf('\r\n', offset)
    if (lineEnd === -1) break
    const size = Number.parseInt(data.subarray(offset, lineEnd).toString(), 16)
    if (size === 0) return { body: Buffer.concat(parts), complete: true }
    if (!Number.isFinite(size) || lineEnd + 2 + size > data.length) break
    parts.push(data.subarray(lineEnd + 2, lineEnd + 2 + size))
    offset = lineEnd + 2 + size + 2
  }
  return { body: Buffer.concat(parts), complete: false }
}

/**
 * Sends exactly the given bytes as one HTTP/1.1 request on a new connection and reads the answer.
 * An SSE answer to a GET is read only up to its headers, since such a stream stays open; so is
 * any answer to HEAD, which has no body.
 */
export function rawRequest (port: number, head: Buffer, body: Buffer = Buffer.alloc(0), timeoutMs = 5000): Promise<RawResponse> {
  const isGet = head.subarray(0, 4).toString('latin1') === 'GET '
  const isHead = head.subarray(0, 5).toString('latin1') === 'HEAD '
  return new Promise((resolve, reject) => {
    const socket = connect(port, '127.0.0.1')
    const chunks: Buffer[] = []
    let settled = false
    const done = (result: RawResponse | Error) => {
      if (settled) return
      settled = true
      socket.destroy()
      if (result instanceof Error) reject(result)
      else resolve(result)
    }
    const parse = (final: boolean) => {
      const data = Buffer.concat(chunks)
      const split = data.indexOf('\r\n\r\n')
      if (split === -1) {
        if (final) done(new Error(`no complete response head: ${JSON.stringify(data.toString('latin1').slice(0, 200))}`))
        return
      }
      const [statusLine, ...lines] = data.subarray(0, split).toString('latin1').split('\r\n')
      const headers: Record<string, string> = {}
      for (const line of lines) {
        const colon = line.indexOf(':')
        headers[line.slice(0, colon).trim().toLowerCase()] = line.slice(colon + 1).trim()
      }
      const status = Number(statusLine!.split(' ')[1])
      const content = data.subarray(split + 4)
      if (isHead || (isGet && headers['content-type']?.startsWith('text/event-stream') === true)) {
        done({ status, headers, body: Buffer.alloc(0), truncated: false })
        return
      }
      const length = headers['content-length']
      if (length !== undefined) {
        if (content.length >= Number(length)) done({ status, headers, body: content.subarray(0, Number(length)), truncated: false })
        else if (final) done({ status, headers, body: content, truncated: true })
        return
      }
      if (headers['transfer-encoding'] === 'chunked') {
        const { body, complete } = dechunk(content)
        if (complete || final) done({ status, headers, body, truncated: !complete })
        return
      }
      if (final) done({ status, headers, body: content, truncated: false })
    }
    socket.setTimeout(timeoutMs, () => done(new Error('no answer in time')))
    socket.on('data', chunk => { chunks.push(chunk); parse(false) })
    socket.on('end', () => parse(true))
    socket.on('close', () => parse(true))
    socket.on('error', () => parse(true))
    socket.write(Buffer.concat([head, body]))
  })
}
