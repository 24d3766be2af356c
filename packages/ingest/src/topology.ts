/**
 * Broker topology (design §3).
 *
 * oslo.messaging declares the exchange (topic) and a queue named after the routing key
 * (`<topic>.info`, classic, no arguments), both non-durable by default and durable when the
 * deployment sets `amqp_durable_queues = true`; its publisher fails on any declare whose
 * attributes differ from its own. So for anything oslo owns we check first (passively) and
 * declare only what is missing, exactly as oslo would with the deployment's settings (durable,
 * auto-delete, quorum and the quorum queue's limits), which the operator passes on.
 *
 * What the persistor owns:
 * - `<queue>`: durable, single active consumer (a second instance is a hot standby), bound to
 *   `<topic>.*` (every priority), dead-lettering to `<queue>.dlx`;
 * - `<queue>.dlx` (fanout, durable) -> `<queue>.dead` (durable): rejected messages, each with an
 *   `x-persistor-error` header.
 * In compatibility mode the persistor consumes oslo's `<topic>.info` instead (a drop-in for
 * Vitrage's own persistor); dead letters still go to `<queue>.dead`.
 */
import type amqp from 'amqplib'
import { isNotFound, onScratchChannel, queueCounts } from './amqp-shared.js'

export interface TopologyOptions {
  readonly exchange: string
  readonly topic: string
  readonly queue: string
  readonly compatQueue: boolean
  /** oslo's `amqp_durable_queues`: how to declare oslo's exchange/queue if they are missing. */
  readonly osloDurable: boolean
  /**
   * oslo's `rabbit_quorum_queue`: its queues are then quorum queues (`x-queue-type: quorum`) and,
   * like its exchanges, durable whatever amqp_durable_queues says (impl_rabbit.py).
   */
  readonly osloQuorum?: boolean
  /**
   * oslo's `amqp_auto_delete`: its exchange and queue are then auto-delete (the exchange goes
   * with its last binding, the queue with its last consumer).
   */
  readonly osloAutoDelete?: boolean
  /**
   * oslo's `rabbit_quorum_delivery_limit`, `rabbit_quroum_max_memory_length` and
   * `rabbit_quroum_max_memory_bytes` (0: unset, as in oslo): arguments of its quorum queue.
   */
  readonly osloQuorumDeliveryLimit?: number
  readonly osloQuorumMaxMemoryLength?: number
  readonly osloQuorumMaxMemoryBytes?: number
}

/**
 * The arguments oslo gives its `<topic>.info` queue (impl_rabbit.py, `_get_queue_arguments` with
 * the notification TTL of 0): the quorum type and its limits, each only when set. Pure.
 */
export const osloQueueArguments = (o: TopologyOptions): Record<string, unknown> => {
  if (o.osloQuorum !== true) return {}
  const args: Record<string, unknown> = { 'x-queue-type': 'quorum' }
  if ((o.osloQuorumDeliveryLimit ?? 0) > 0) args['x-delivery-limit'] = o.osloQuorumDeliveryLimit
  if ((o.osloQuorumMaxMemoryLength ?? 0) > 0) args['x-max-in-memory-length'] = o.osloQuorumMaxMemoryLength
  if ((o.osloQuorumMaxMemoryBytes ?? 0) > 0) args['x-max-in-memory-bytes'] = o.osloQuorumMaxMemoryBytes
  return args
}

export interface Topology {
  /** The queue to consume. */
  readonly consumeQueue: string
  readonly deadLetterExchange: string
  readonly deadLetterQueue: string
  /** What existed before (left untouched) and what was declared. */
  readonly found: readonly string[]
  readonly declared: readonly string[]
  /**
   * oslo's objects found with other attributes than the settings say (the broker's words): the
   * persistor leaves them alone, but were the broker to lose them (a restart, for non-durable
   * ones) it would declare them as the settings say, and oslo's publisher would then fail.
   */
  readonly mismatched: readonly string[]
  /** oslo's objects that check could not be made on (the broker's refusal: a user without configure rights). */
  readonly unchecked: readonly string[]
}

export const names = (o: TopologyOptions): { consumeQueue: string; deadLetterExchange: string; deadLetterQueue: string; osloQueue: string } => ({
  consumeQueue: o.compatQueue ? `${o.topic}.info` : o.queue,
  deadLetterExchange: `${o.queue}.dlx`,
  deadLetterQueue: `${o.queue}.dead`,
  osloQueue: `${o.topic}.info`,
})

export const persistorQueueArguments = (o: TopologyOptions): Record<string, unknown> => ({
  'x-single-active-consumer': true,
  'x-dead-letter-exchange': names(o).deadLetterExchange,
})

const isPreconditionFailed = (e: unknown): boolean => (e as { code?: unknown }).code === 406

const exchangeExists = (c: amqp.ChannelModel, name: string): Promise<boolean> =>
  onScratchChannel(c, (ch) => ch.checkExchange(name)).then(
    () => true,
    (e: unknown) => (isNotFound(e) ? false : Promise.reject(e)),
  )

const queueExists = async (c: amqp.ChannelModel, name: string): Promise<boolean> => (await queueCounts(c, name)) !== undefined

/**
 * Declares what is missing for oslo (as oslo would) and what the persistor owns. Idempotent.
 * If oslo declares the same object between our check and our declare with other attributes,
 * our declare fails with 406; we then find it exists and leave it alone.
 */
export const declareTopology = async (connection: amqp.ChannelModel, o: TopologyOptions): Promise<Topology> => {
  const n = names(o)
  const found: string[] = []
  const declared: string[] = []
  const mismatched: string[] = []
  const unchecked: string[] = []
  const osloObject = async (kind: 'exchange' | 'queue', name: string, declare: (ch: amqp.Channel) => Promise<unknown>): Promise<void> => {
    const exists = kind === 'exchange' ? exchangeExists : queueExists
    if (await exists(connection, name)) {
      found.push(`${kind} ${name}`)
      // A declare equal to the object changes nothing; an unequal one is refused (406) and changes
      // nothing either: so this only asks whether the settings describe what oslo declared. Any
      // other refusal (403: a user without configure rights on oslo's objects) leaves it unasked.
      await onScratchChannel(connection, declare).catch((e: unknown) => {
        if (isPreconditionFailed(e)) mismatched.push(`${kind} ${name}: ${(e as Error).message}`)
        else unchecked.push(`${kind} ${name}: ${(e as Error).message}`)
      })
      return
    }
    try {
      await onScratchChannel(connection, declare)
      declared.push(`${kind} ${name}`)
    } catch (e) {
      if (isPreconditionFailed(e) && (await exists(connection, name))) found.push(`${kind} ${name}`)
      else throw e
    }
  }
  const osloDurable = o.osloDurable || o.osloQuorum === true
  const osloAutoDelete = o.osloAutoDelete === true
  await osloObject('exchange', o.exchange, (ch) => ch.assertExchange(o.exchange, 'topic', { durable: osloDurable, autoDelete: osloAutoDelete }))
  await onScratchChannel(connection, async (ch) => {
    await ch.assertExchange(n.deadLetterExchange, 'fanout', { durable: true, autoDelete: false })
    await ch.assertQueue(n.deadLetterQueue, { durable: true, autoDelete: false })
    await ch.bindQueue(n.deadLetterQueue, n.deadLetterExchange, '')
  }).catch((e: unknown) => {
    if (isPreconditionFailed(e)) {
      throw Object.assign(
        new Error(
          `"${n.deadLetterExchange}" (a durable fanout exchange) or "${n.deadLetterQueue}" (a durable queue, no arguments) exists with other attributes; delete it or choose another --queue. Broker said: ${(e as Error).message}`,
        ),
        { code: 406, topology: true },
      )
    }
    throw e
  })
  declared.push(`exchange ${n.deadLetterExchange}`, `queue ${n.deadLetterQueue}`)
  if (o.compatQueue) {
    await osloObject('queue', n.osloQueue, (ch) =>
      ch.assertQueue(n.osloQueue, { durable: osloDurable, autoDelete: osloAutoDelete, exclusive: false, arguments: osloQueueArguments(o) }),
    )
    // oslo binds its queue with the queue name as routing key; binding again is a no-op.
    await onScratchChannel(connection, (ch) => ch.bindQueue(n.osloQueue, o.exchange, n.osloQueue))
  } else {
    await onScratchChannel(connection, async (ch) => {
      await ch.assertQueue(o.queue, { durable: true, autoDelete: false, arguments: persistorQueueArguments(o) })
      await ch.bindQueue(o.queue, o.exchange, `${o.topic}.*`)
    }).catch((e: unknown) => {
      if (isPreconditionFailed(e)) {
        throw Object.assign(
          new Error(`queue "${o.queue}" exists with other arguments than the persistor's (durable, x-single-active-consumer, x-dead-letter-exchange=${n.deadLetterExchange}); delete it or choose another --queue. Broker said: ${(e as Error).message}`),
          { code: 406, topology: true },
        )
      }
      throw e
    })
    declared.push(`queue ${o.queue}`)
  }
  return { consumeQueue: n.consumeQueue, deadLetterExchange: n.deadLetterExchange, deadLetterQueue: n.deadLetterQueue, found, declared, mismatched, unchecked }
}
