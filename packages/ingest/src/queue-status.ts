/**
 * How the persistor's queues stand (for `vitrage-persistor status`): ready messages and
 * consumers of each, read with passive declares on a connection of its own, closed before it
 * answers. A queue that does not exist is reported as such, not as a failure.
 */
import { type Failure, failure } from '@vitrage-persistor/core'
import amqp from 'amqplib'
import * as E from 'fp-ts/lib/Either.js'
import { queueCounts } from './amqp-shared.js'

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
    for (const name of queues) out.push({ name, ...(await queueCounts(connection, name)) })
    return E.right(out)
  } catch (e) {
    return E.left(failure('transient', scrub(`broker: ${(e as Error).message}`)))
  } finally {
    await connection.close().catch(() => {})
  }
}
