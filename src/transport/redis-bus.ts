import type { Cluster, Redis } from 'ioredis'
import { type BroadcastMessage, type BusMessage, type MessageBus, newAddress } from './bus.js'

const channelOf = (address: string) => `mcp:bus:${address}`
/** The one channel every node hears (changes for subscriptions/listen streams: rare, and small). */
const EVERYONE = 'mcp:broadcast'

/**
 * The bus between nodes over Redis pub/sub: a channel per node, so a node receives only the
 * messages meant for it and bus traffic per node does not grow with the number of nodes. On a
 * cluster the channels are sharded (SPUBLISH / SSUBSCRIBE): a message travels only within the
 * shard that owns its channel.
 */
export class RedisBus implements MessageBus {
  readonly address = newAddress()
  readonly #publisher: Redis | Cluster
  readonly #subscriber: Redis | Cluster
  readonly #sharded: boolean
  #handler?: (message: BusMessage) => void
  #broadcastHandler?: (message: BroadcastMessage) => void

  /** Both clients are borrowed; `subscriber` is given over to subscriber mode. */
  constructor (publisher: Redis | Cluster, subscriber: Redis | Cluster, sharded: boolean) {
    this.#publisher = publisher
    this.#subscriber = subscriber
    this.#sharded = sharded
    const own = channelOf(this.address)
    subscriber.on(sharded ? 'smessage' : 'message', (channel: string, data: string) => {
      if (channel !== own && channel !== EVERYONE) return
      let message: unknown
      try { message = JSON.parse(data) } catch { return }
      if (channel === own) this.#handler?.(message as BusMessage)
      else this.#broadcastHandler?.(message as BroadcastMessage)
    })
  }

  /** Subscribes to this node's channel; ioredis subscribes again by itself after a reconnection. */
  async start (): Promise<void> {
    const channel = channelOf(this.address)
    // Apart: on a cluster the two channels live in different slots, and one SSUBSCRIBE takes one slot.
    for (const name of [channel, EVERYONE]) await (this.#sharded ? this.#subscriber.ssubscribe(name) : this.#subscriber.subscribe(name))
  }

  async publish (to: string, message: BusMessage): Promise<void> {
    const channel = channelOf(to)
    const data = JSON.stringify(message)
    await (this.#sharded ? this.#publisher.spublish(channel, data) : this.#publisher.publish(channel, data))
  }

  onMessage (handler: (message: BusMessage) => void): void { this.#handler = handler }

  async broadcast (message: BroadcastMessage): Promise<void> {
    const data = JSON.stringify(message)
    await (this.#sharded ? this.#publisher.spublish(EVERYONE, data) : this.#publisher.publish(EVERYONE, data))
  }

  onBroadcast (handler: (message: BroadcastMessage) => void): void { this.#broadcastHandler = handler }

  async close (): Promise<void> {
    this.#handler = undefined
    this.#broadcastHandler = undefined
  }
}
