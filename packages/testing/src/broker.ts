/** Broker helpers for tests: a connection per test file, and cleanup of what a test declared. */
import amqp from 'amqplib'
import { TEST_AMQP_URL } from './env.js'

export interface TestBroker {
  readonly url: string
  readonly connection: amqp.ChannelModel
  /** A confirm channel for publishing test input. */
  readonly channel: amqp.ConfirmChannel
  /** Publishes and waits for the broker's confirm. */
  readonly publish: (exchange: string, routingKey: string, body: Buffer | string, options?: amqp.Options.Publish) => Promise<void>
  /** Number of messages ready in a queue (0 when it does not exist). */
  readonly depth: (queue: string) => Promise<number>
  /** Gets up to `max` messages from a queue, acking them. */
  readonly drain: (queue: string, max?: number) => Promise<amqp.GetMessage[]>
  /** Deletes queues and exchanges (missing ones are fine), then closes. Idempotent. */
  readonly cleanup: (names: { queues?: string[]; exchanges?: string[] }) => Promise<void>
  readonly close: () => Promise<void>
}

export const connectTestBroker = async (url = TEST_AMQP_URL): Promise<TestBroker> => {
  const connection = await amqp.connect(url)
  const channel = await connection.createConfirmChannel()
  let closed = false
  // A passive check of a missing queue closes the channel it runs on, so checks use their own.
  const withScratch = async <T>(fn: (ch: amqp.Channel) => Promise<T>, fallback: T): Promise<T> => {
    const ch = await connection.createChannel()
    ch.on('error', () => {})
    try {
      return await fn(ch)
    } catch {
      return fallback
    } finally {
      await ch.close().catch(() => {})
    }
  }
  const close = async (): Promise<void> => {
    if (closed) return
    closed = true
    await connection.close().catch(() => {})
  }
  return {
    url,
    connection,
    channel,
    publish: (exchange, routingKey, body, options) =>
      new Promise((resolve, reject) => {
        channel.publish(exchange, routingKey, Buffer.isBuffer(body) ? body : Buffer.from(body), options ?? {}, (err) =>
          err ? reject(err) : resolve(),
        )
      }),
    depth: (queue) => withScratch(async (ch) => (await ch.checkQueue(queue)).messageCount, 0),
    drain: async (queue, max = 10_000) => {
      const out: amqp.GetMessage[] = []
      const ch = await connection.createChannel()
      try {
        while (out.length < max) {
          const m = await ch.get(queue, { noAck: true })
          if (m === false) break
          out.push(m)
        }
      } finally {
        await ch.close().catch(() => {})
      }
      return out
    },
    cleanup: async ({ queues = [], exchanges = [] }) => {
      if (closed) return
      for (const q of queues) await withScratch((ch) => ch.deleteQueue(q), undefined)
      for (const x of exchanges) await withScratch((ch) => ch.deleteExchange(x), undefined)
      await close()
    },
    close,
  }
}
