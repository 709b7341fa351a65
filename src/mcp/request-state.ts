import { createHmac, timingSafeEqual } from 'node:crypto'

/** What a request's `requestState` is bound to: a retry of the same operation, by the same principal. */
export interface StateBinding {
  method: string
  /** The tool or prompt name, or the resource URI. */
  name: string
  principal: string
}

/**
 * What a tool keeps across rounds of input_required: its own state, the answers so far, and what
 * this round asked. Questions are named by their key and a digest of what they asked.
 */
export interface RoundState {
  state: unknown
  answers: Record<string, unknown>
  asked: string[]
}

/**
 * The `requestState` of 2026-07-28 multi round-trip requests: what a tool keeps between rounds,
 * travelling through the client, which may change it. Each state is signed (HMAC-SHA256, with a key
 * every node shares, so the retry may land on any node) together with the operation and principal
 * it belongs to and when it expires; anything else that comes back is refused.
 */
export class RequestStateCodec {
  readonly #key: () => Promise<Buffer>
  readonly #ttlMs: number

  /** `key` is asked for once, when first needed (it may come from the shared store). */
  constructor (key: () => Promise<Buffer>, ttlMs: number) {
    let loaded: Promise<Buffer> | undefined
    this.#key = () => {
      loaded ??= key()
      loaded.catch(() => { loaded = undefined })
      return loaded
    }
    this.#ttlMs = ttlMs
  }

  async mint (binding: StateBinding, round: RoundState): Promise<string> {
    const payload = Buffer.from(JSON.stringify({ ...binding, exp: Date.now() + this.#ttlMs, ...round })).toString('base64url')
    return `${payload}.${await this.#sign(payload)}`
  }

  /** The round state, or undefined when the token was not minted for `binding` with the shared key, was changed or has expired. */
  async verify (token: unknown, binding: StateBinding): Promise<RoundState | undefined> {
    if (typeof token !== 'string') return undefined
    const dot = token.indexOf('.')
    if (dot < 0) return undefined
    const payload = token.slice(0, dot)
    // Compared as text: decoding would ignore characters appended to a valid signature.
    const signature = Buffer.from(token.slice(dot + 1))
    const expected = Buffer.from(await this.#sign(payload))
    if (signature.length !== expected.length || !timingSafeEqual(signature, expected)) return undefined
    let decoded: StateBinding & RoundState & { exp: number }
    try {
      decoded = JSON.parse(Buffer.from(payload, 'base64url').toString('utf8'))
    } catch {
      return undefined
    }
    if (decoded.exp < Date.now() || decoded.method !== binding.method || decoded.name !== binding.name || decoded.principal !== binding.principal) return undefined
    return { state: decoded.state, answers: decoded.answers ?? {}, asked: decoded.asked ?? [] }
  }

  async #sign (payload: string): Promise<string> {
    return createHmac('sha256', await this.#key()).update(payload).digest('base64url')
  }
}
