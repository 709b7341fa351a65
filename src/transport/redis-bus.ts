import type { Cluster, Redis } from 'ioredis'
import type { BusMessage, MessageBus } from './bus.js'

const CHANNEL = 'mcp:bus'

/**
 * The bus between nodes over Redis pub/sub: one channel that every node subscribes to once, so
 * routing costs nothing until a message actually has to cross nodes. On a cluster, Redis forwards
 * a publish to every shard.
 */
export class RedisBus implements MessageBus {
  readonly #publisher: Redis | Cluster
  readonly #subscriber: Redis | Cluster
  #handler?: (message: BusMessage) => void

  /** Both clients are borrowed; `subscriber` is given over to subscriber mode. */
  constructor (publisher: Redis | Cluster, subscriber: Redis | Cluster) {
    this.#publisher = publisher
    this.#subscriber = subscriber
    subscriber.on('message', (channel: string, data: string) => {
      if (channel !== CHANNEL) return
      let message: BusMessage
      try { message = JSON.parse(data) } catch { return }
      this.#handler?.(message)
    })
  }

  /** Subscribes; ioredis subscribes again by itself after a reconnection. */
  async start (): Promise<void> {
    await this.#subscriber.subscribe(CHANNEL)
  }

  async publish (message: BusMessage): Promise<void> {
    await this.#publisher.publish(CHANNEL, JSON.stringify(message))
  }

  onMessage (handler: (message: BusMessage) => void): void { this.#handler = handler }

  async close (): Promise<void> {
    this.#handler = undefined
  }
}
