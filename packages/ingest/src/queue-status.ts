/**
 * How the persistor's queues stand (for `vitrage-persistor status`): ready messages and
 * consumers of each, read with passive declares on a connection of its own, closed before it
 * answers. A queue that does not exist is reported as such, not as a failure.
 */
import { type Failure, failure } from '@vitrage-persistor/core'
import amqp from 'amqplib'
import * as E from 'fp-ts/lib/Either.js'

export interface QueueState {
  readonly name: string
  /** Undefined when the queue does not exist. */
  readonly ready?: number
  readonly consumers?: number
}

export const queueStates = async (amqpUrl: string, queues: readonly string[], scrub: (s: string) => string = (s) => s): Promise<E.Either<Failure, QueueState[]>> => {
  let connection: amqp.ChannelModel
  try {
    connection = await amqp.connect(amqpUrl, { timeout: 10_000 })
  } catch (e) {
    return E.left(failure('transient', scrub(`cannot connect to the broker: ${(e as Error).message}`)))
  }
  connection.on('error', () => {})
  try {
    const out: QueueState[] = []
    for (const name of queues) {
      // A passive check of a missing queue closes its channel: one channel per check.
      const ch = await connection.createChannel()
      ch.on('error', () => {})
      try {
        const q = await ch.checkQueue(name)
        out.push({ name, ready: q.messageCount, consumers: q.consumerCount })
      } catch (e) {
        if ((e as { code?: number }).code !== 404) throw e
        out.push({ name })
      } finally {
        await ch.close().catch(() => {})
      }
    }
    return E.right(out)
  } catch (e) {
    return E.left(failure('transient', scrub(`broker: ${(e as Error).message}`)))
  } finally {
    await connection.close().catch(() => {})
  }
}
