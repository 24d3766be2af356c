/**
 * The persistor: a broker session state machine feeding one RxJS pipeline.
 *
 * Broker session states (`state`):
 *
 *   idle ──start()──▶ connecting ──topology declared, consumer started──▶ consuming
 *   connecting ──failure──▶ backoff ──timer──▶ connecting
 *   consuming ──connection or channel lost──▶ backoff
 *   consuming ──consumer cancelled by the broker──▶ (what it delivered is stored) ──▶ backoff
 *   any ──close()──▶ draining ──pipeline flushed (or deadline)──▶ closed
 *   consuming ──its store closed under it (onDefect, once)──▶ draining ──▶ closed
 *
 * Each connection gets a fresh `Session` with a generation number. A delivery remembers the
 * session it came on; once a session is lost its deliveries are never acked (their delivery
 * tags died with the channel: the broker has already requeued them) and batches skip them.
 *
 * A session is two connections: one consumes and acks, the other publishes dead letters. The
 * broker blocks a connection that publishes while it is in a memory or disk alarm, acks
 * included; the consuming connection never publishes, so consuming and acking (which is what
 * relieves the alarm) go on. A dead letter is acked only once the broker confirmed it into the
 * dead-letter queue; one not confirmed within DEAD_LETTER_WAIT_MS is held (not acked) while later
 * batches go on, acked one delivery at a time around it, and acked when its confirm comes. Held
 * dead letters use up the prefetch window, so they are capped at half of it: past that, while
 * earlier ones are still held, a bad message on the persistor's own queue is rejected to the
 * broker instead, which dead-letters it itself through the queue's dead-letter exchange (into the
 * same `<queue>.dead`, with `x-death` and without the reason header, which the log line gives).
 * Without that, enough bad messages during an alarm stopped ingest until it cleared. oslo's queue
 * (--compat-queue) has no dead-letter exchange: there they stay held. A dead letter the broker
 * returns (the dead-letter queue was deleted) drops the session: what is unacked comes back, and
 * the reconnect declares the queue again.
 *
 * Pipeline: deliveries ─▶ decode (Either) ─▶ batchBySizeOrTime ─▶ concatMap(processBatch).
 * Backpressure is the prefetch window: the broker sends at most `prefetch` unacked messages,
 * so memory is bounded by prefetch × message size whatever the backlog. processBatch appends
 * the valid messages in one transaction (retrying transient failures with capped backoff and
 * without acking), dead-letters the rejected ones with their reason, then acks everything up to
 * the batch's last delivery tag. Batches run one at a time, so acks never overtake commits and
 * ids follow delivery order.
 */
import type { BackoffPolicy, DecodedMessage, Failure, Logger, Rejection } from '@vitrage-persistor/core'
import { backoffDelay, decodeMessage, requireNonNegativeInts, requirePositiveInts, STORE_CLOSED, waiters, within } from '@vitrage-persistor/core'
import type { IsolatedAppendResult, PreparedEvent } from '@vitrage-persistor/store-postgres'
import amqp from 'amqplib'
import * as E from 'fp-ts/lib/Either.js'
import type * as TE from 'fp-ts/lib/TaskEither.js'
import { concatMap, defer, lastValueFrom, Subject } from 'rxjs'
import { batchBySizeOrTime } from './batch.js'
import { decompressBody } from './compression.js'
import { closeConnection, cutUtf8, fallbackRepublishOptions, onScratchChannel, republishOptions, writableRoutingKey } from './amqp-shared.js'
import { originOf, requeueMarks } from './dead-letters.js'
import { BROKER_CONNECTIONS, type IngestMetrics } from './metrics.js'
import { declareTopology, names, type Topology, type TopologyOptions } from './topology.js'

export interface PersistorOptions extends TopologyOptions {
  readonly amqpUrl: string
  /** Unacked messages the broker may send before waiting for acks. */
  readonly prefetch: number
  readonly batchSize: number
  readonly batchMaxWaitMs: number
  readonly maxMessageBytes: number
  readonly heartbeatSeconds: number
  readonly reconnect: BackoffPolicy
  readonly appendRetry: BackoffPolicy
  /** How long close() waits for held messages to be committed and acked. */
  readonly shutdownTimeoutMs: number
  /** Sampling interval of the queue depth gauge. */
  readonly queueDepthIntervalMs: number
  /** Shown in the broker's management UI. */
  readonly connectionName: string
}

/**
 * The defaults of design §8 (those of `vitrage-persistor run`), for a persistor run as a library:
 * `new Persistor({ ...defaultPersistorOptions(url), queue: 'mine' }, deps)`.
 */
export const defaultPersistorOptions = (amqpUrl: string): PersistorOptions => ({
  amqpUrl,
  exchange: 'vitrage',
  topic: 'vitrage_persistor',
  queue: 'vitrage_persistor.persistor',
  compatQueue: false,
  osloDurable: false,
  osloQuorum: false,
  osloAutoDelete: false,
  osloQuorumDeliveryLimit: 0,
  osloQuorumMaxMemoryLength: 0,
  osloQuorumMaxMemoryBytes: 0,
  prefetch: 2000,
  batchSize: 1000,
  batchMaxWaitMs: 50,
  maxMessageBytes: 1 << 20,
  heartbeatSeconds: 15,
  reconnect: { initialMs: 200, maxMs: 15_000 },
  appendRetry: { initialMs: 100, maxMs: 10_000 },
  shutdownTimeoutMs: 30_000,
  queueDepthIntervalMs: 5_000,
  connectionName: `vitrage-persistor pid ${process.pid}`,
})

/** What the persistor needs from the event store. */
export interface AppendPort {
  /** Encodes a message for append; called as each message arrives, off the commit path. */
  readonly prepare: (message: DecodedMessage) => PreparedEvent
  /** Appends; the messages at `copiesOnly` (batch indexes) are only recognised as stored, never stored. */
  readonly append: (batch: readonly PreparedEvent[], copiesOnly?: ReadonlySet<number>) => TE.TaskEither<Failure, IsolatedAppendResult>
}

export interface PersistorDeps {
  readonly store: AppendPort
  readonly logger: Logger
  readonly metrics: IngestMetrics
  /** Removes secrets from driver messages before they are logged. */
  readonly scrub: (text: string) => string
  /** A defect (a bug, not an outside failure) stopped the pipeline; the process should exit. */
  readonly onDefect: (error: unknown) => void
  /**
   * With --compat-queue: takes the lease that makes this instance the only consumer of oslo's
   * queue (undefined: another instance holds it). The broker's exclusive consumer is not enough:
   * RabbitMQ does not enforce it on a quorum queue.
   */
  readonly acquireLease?: (name: string) => Promise<E.Either<Failure, ConsumerLease | undefined>>
  /**
   * Asked of every decoded message before it is stored. A message it refuses is not stored: when
   * an event with its message_id is stored it is a duplicate (acked) or a conflict, as any other;
   * otherwise it is dead-lettered with the rejection (its reason and detail in the letter's
   * headers). `run` refuses messages from before the pruned history: a copy of a kept event is
   * still recognised, one of a pruned event is not stored again.
   */
  readonly admit?: (message: DecodedMessage) => Rejection | undefined
}

export interface ConsumerLease {
  /** Resolves when the lease is lost: stop consuming. */
  readonly lost: Promise<void>
  readonly release: () => Promise<void>
}

export type PersistorState = 'idle' | 'connecting' | 'consuming' | 'backoff' | 'draining' | 'closed'

interface Session {
  readonly generation: number
  /** Consumes and acks; never publishes (see the module comment). */
  readonly connection: amqp.ChannelModel
  readonly channel: amqp.Channel
  /** Publishes dead letters, with confirms. */
  readonly publisher: amqp.ChannelModel
  readonly deadLetters: amqp.ConfirmChannel
  readonly topology: Topology
  alive: boolean
  consumerTag?: string
  /** Delivery tags whose dead letter is not confirmed yet: no cumulative ack may cover them. */
  readonly unconfirmed: Set<number>
  /** The broker returned a dead letter as unroutable. */
  returned: boolean
}

interface Delivery {
  readonly message: amqp.ConsumeMessage
  readonly session: Session
  readonly decoded: E.Either<Rejection, PreparedEvent>
  /** What admit refused it for: it is only recognised, never stored. */
  readonly refused: Rejection | undefined
}

interface DeadLetter {
  readonly delivery: Delivery
  readonly rejection: Rejection
}

/** Resolves after `ms`, or at once when `signal` aborts. */
/** How long a consumer the broker cancelled may take to store what it delivered before it is dropped. */
const CANCEL_DRAIN_MS = 30_000

const sleep = (ms: number, signal?: AbortSignal): Promise<void> =>
  new Promise((resolve) => {
    if (signal?.aborted) return resolve()
    const done = (): void => {
      clearTimeout(timer)
      signal?.removeEventListener('abort', done)
      resolve()
    }
    const timer = setTimeout(done, ms)
    signal?.addEventListener('abort', done, { once: true })
  })

const deadLetterFailure = (s: Session): string =>
  s.returned ? 'a dead letter came back unroutable (was the dead-letter queue deleted?)' : 'dead-letter publish not confirmed'

/** How often a standby in --compat-queue mode tries to take oslo's queue over. */
const COMPAT_STANDBY_MS = 2_000

/** How long a batch waits for its dead letters' confirms before going on without them. */
const DEAD_LETTER_WAIT_MS = 2_000

/** `p`'s value, or `fallback` once `deadline` (epoch ms) has passed. */
const until = <T>(deadline: number, p: Promise<T>, fallback: T): Promise<T> => within(p, deadline - Date.now(), fallback)

/** The heartbeat goes in the URL (amqplib reads it there); one the operator set wins. */
const withHeartbeat = (url: string, seconds: number): string => {
  try {
    const u = new URL(url)
    if (!u.searchParams.has('heartbeat')) u.searchParams.set('heartbeat', String(seconds))
    return u.toString()
  } catch {
    return url
  }
}

export class Persistor {
  private state: PersistorState = 'idle'
  private session: Session | undefined
  private generation = 0
  private reconnectAttempt = 0
  private reconnectTimer: NodeJS.Timeout | undefined
  private depthTimer: NodeJS.Timeout | undefined
  private readonly deliveries = new Subject<Delivery>()
  private readonly pipeline: Promise<void>
  private closing: Promise<void> | undefined
  /** Set when the shutdown deadline passes: retry loops give up without acking. */
  private abandoned = false
  /** Deliveries received, and those processBatch has finished with (stored, dead-lettered or given up). */
  private delivered = 0
  private processed = 0
  private processedWaiters: Array<{ readonly upTo: number; readonly resolve: () => void }> = []
  /** Cuts short the append retry's wait when the shutdown deadline passes. */
  private readonly abandon = new AbortController()
  /** The failure of the batch being retried, until an append succeeds (readiness). */
  private appendFailing: Failure | undefined
  private held = 0
  /** The latest connection attempt (connect() never rejects). */
  private connecting: Promise<void> | undefined
  /** --compat-queue: held while this instance is the consumer of oslo's queue. */
  private lease: ConsumerLease | undefined
  /** Refused as a second consumer of oslo's queue (--compat-queue), and waiting for it. */
  private standingBy = false
  /** Dead letters a batch went on without (see the module comment); settled when confirmed or lost. */
  private readonly pendingDeadLetters = new Set<Promise<void>>()
  private readonly log: Logger

  constructor(
    private readonly options: PersistorOptions,
    private readonly deps: PersistorDeps,
  ) {
    // prefetch 0 is "unlimited" to AMQP: memory would no longer be bounded by configuration.
    requirePositiveInts('Persistor', {
      prefetch: options.prefetch,
      batchSize: options.batchSize,
      maxMessageBytes: options.maxMessageBytes,
      queueDepthIntervalMs: options.queueDepthIntervalMs,
    })
    // 0 is meaningful for these (no heartbeat; a batch does not wait; no drain), as in run's flags.
    requireNonNegativeInts('Persistor', { batchMaxWaitMs: options.batchMaxWaitMs, heartbeatSeconds: options.heartbeatSeconds, shutdownTimeoutMs: options.shutdownTimeoutMs })
    // Not a URL amqplib can use: a configuration defect, not a broker outage to retry for ever.
    let protocol = ''
    try {
      protocol = new URL(options.amqpUrl).protocol
    } catch {
      // protocol stays empty
    }
    if (protocol !== 'amqp:' && protocol !== 'amqps:') throw new TypeError('Persistor: amqpUrl must be an amqp:// or amqps:// URL')
    this.log = deps.logger.child({ component: 'persistor' })
    this.pipeline = lastValueFrom(
      this.deliveries.pipe(
        batchBySizeOrTime(options.batchSize, options.batchMaxWaitMs),
        concatMap((batch) => defer(() => this.processBatch(batch))),
      ),
      { defaultValue: undefined },
    ).catch((e: unknown) => {
      this.log.error({ err: this.describe(e) }, 'pipeline defect; stopping')
      deps.onDefect(e)
    })
  }

  private lastBrokerProblem: string | undefined
  /** The store was closed under it: reported once, then it closes itself. */
  private storeGone = false

  get currentState(): PersistorState {
    return this.state
  }

  /**
   * Why appends fail, while a batch is held and retried (the database answers pings but refuses
   * the append: a missing table, revoked rights, a full disk); undefined once one succeeds.
   */
  get appendFailure(): Failure | undefined {
    return this.appendFailing
  }

  /** Consuming on a live channel. */
  get consuming(): boolean {
    return this.state === 'consuming' && this.session?.alive === true
  }

  /** Why it is not consuming, as last logged (secrets removed); undefined while consuming or never failed. */
  get brokerProblem(): string | undefined {
    return this.consuming ? undefined : this.lastBrokerProblem
  }

  private readonly waiting = waiters()

  /**
   * Resolves once the persistor consumes (at once if it does). Rejects after `timeoutMs` when
   * given (an Error named TimeoutError, with the broker problem it last met) and when it is closed
   * first. Failures to connect are retried meanwhile, as always.
   */
  untilConsuming(options: { readonly timeoutMs?: number } = {}): Promise<void> {
    requireNonNegativeInts('Persistor.untilConsuming', { timeoutMs: options.timeoutMs })
    if (!this.consuming && (this.state === 'draining' || this.state === 'closed')) return Promise.reject(new Error('the persistor is closed'))
    const problem = (): string => (this.lastBrokerProblem === undefined ? '' : `: ${this.lastBrokerProblem}`)
    return this.waiting.wait(() => this.consuming, {
      timeoutMs: options.timeoutMs,
      timedOut: () => `not consuming after ${options.timeoutMs} ms${problem()}`,
      abandoned: () => `the persistor was closed before it consumed${this.lastBrokerProblem === undefined ? '' : ` (${this.lastBrokerProblem})`}`,
    })
  }

  /** Starts connecting; failures are retried in the background (see `currentState`). */
  start(): void {
    if (this.state !== 'idle') return
    this.connecting = this.connect()
  }

  /**
   * Stops consuming, commits and acks what is held, closes the channel and connection.
   * Idempotent; resolves when closed. Messages not acked by the deadline are redelivered.
   */
  close(): Promise<void> {
    this.closing ??= this.drain()
    return this.closing
  }

  private async drain(): Promise<void> {
    const wasState = this.state
    this.state = 'draining'
    clearTimeout(this.reconnectTimer)
    clearInterval(this.depthTimer)
    // One deadline for the whole drain.
    const deadline = Date.now() + this.options.shutdownTimeoutMs
    // A connection attempt in flight finishes first (it sees 'draining' and closes what it
    // opened, or leaves its session to be cancelled below), so that nothing is declared or
    // consumed after close() resolves; a broker that stopped answering mid-handshake is not
    // waited for beyond the deadline.
    await until(deadline, this.connecting ?? Promise.resolve(), undefined)
    clearTimeout(this.reconnectTimer)
    const s = this.session
    if (s?.alive && s.consumerTag !== undefined) {
      // After cancel-ok no more deliveries arrive on this channel (AMQP orders them before it).
      await until(deadline, s.channel.cancel(s.consumerTag).catch(() => {}), undefined)
    }
    this.deliveries.complete()
    // Then the dead letters still waiting for their confirms.
    const flushed = await until(deadline, this.pipeline.then(() => Promise.all(this.pendingDeadLetters)).then(() => true), false)
    if (!flushed) {
      this.abandoned = true
      this.abandon.abort()
      this.log.warn({ held: this.held, timeoutMs: this.options.shutdownTimeoutMs }, 'shutdown deadline passed; unacked messages will be redelivered')
    }
    if (s !== undefined) {
      s.alive = false
      // Closing is bounded too: a grace second past the deadline, then the sockets are dropped.
      // The channel first: its close-ok comes after the broker has taken every ack sent on it
      // (closing the connection alone lost the last acks).
      // Each connection on its own: a blocked one must not use up the other's time.
      const grace = Math.max(deadline, Date.now()) + 1_000
      const closePair = async (channel: amqp.Channel, connection: amqp.ChannelModel): Promise<void> => {
        await until(grace, channel.close().catch(() => {}), undefined)
        await closeConnection(connection, Math.max(grace, Date.now() + 500))
      }
      await Promise.all([closePair(s.channel, s.connection), closePair(s.deadLetters, s.publisher)])

    }
    const lease = this.lease
    this.lease = undefined
    await lease?.release()
    this.deps.metrics.brokerConnected.set(0)
    this.state = 'closed'
    this.waiting.abandon('closed')
    this.log.info({ from: wasState, flushed }, 'persistor closed')
  }

  private async connect(): Promise<void> {
    if (this.state === 'draining' || this.state === 'closed') return
    this.state = 'connecting'
    let connection: amqp.ChannelModel | undefined
    let publisher: amqp.ChannelModel | undefined
    // A connection that closes before its session exists is remembered here and fails the start.
    let current: Session | undefined
    let closedWhileStarting: string | undefined
    const open = async (role: (typeof BROKER_CONNECTIONS)[number]): Promise<amqp.ChannelModel> => {
      const c = await amqp.connect(withHeartbeat(this.options.amqpUrl, this.options.heartbeatSeconds), {
        // TLS settings of amqps:// URLs pass through to Node's tls (docs/operations.md).
        timeout: 10_000,
        keepAlive: true,
        clientProperties: { connection_name: `${this.options.connectionName} (${role})` },
      })
      c.on('error', (e: unknown) => this.log.warn({ err: this.describe(e), role }, 'broker connection error'))
      c.on('close', (e: unknown) => {
        const reason = e === undefined ? `${role} connection closed` : this.describe(e)
        if (current !== undefined) this.lost(current, reason)
        else closedWhileStarting ??= reason
      })
      c.on('blocked', (reason: unknown) => {
        this.deps.metrics.brokerBlocked.labels(role).set(1)
        this.log.warn({ role, reason: String(reason) }, 'broker blocked the connection (resource alarm)')
      })
      c.on('unblocked', () => {
        this.deps.metrics.brokerBlocked.labels(role).set(0)
        this.log.info({ role }, 'broker unblocked the connection')
      })
      return c
    }
    const unwanted = (): boolean => (this.state as PersistorState) === 'draining' || (this.state as PersistorState) === 'closed'
    try {
      // The lease is the persistor's, not a session's: kept across broker reconnects (this
      // instance is still the consumer), given up when closing or when it is lost.
      if (this.options.compatQueue && this.deps.acquireLease !== undefined && this.lease === undefined) {
        const taken = await this.deps.acquireLease(`consume ${names(this.options).consumeQueue}`)
        if (E.isLeft(taken)) throw new Error(`cannot take the consumer lease: ${taken.left.message}`)
        if (taken.right === undefined) throw Object.assign(new Error('another instance holds the consumer lease'), { exclusiveInUse: true })
        const lease = taken.right
        if (unwanted()) {
          await lease.release()
          return
        }
        this.lease = lease
        void lease.lost.then(() => {
          if (this.lease !== lease) return // given up on purpose
          this.lease = undefined
          this.log.warn({}, 'the consumer lease was lost (its database connection failed); stopping consuming until it is taken again')
          if (this.session !== undefined) this.lost(this.session, 'consumer lease lost')
        })
      }
      connection = await open('consume')
      if (unwanted()) {
        await connection.close().catch(() => {})
        return
      }
      const topology = await declareTopology(connection, this.options)
      publisher = await open('dead-letters')
      const deadLetters = await publisher.createConfirmChannel()
      const channel = await connection.createChannel()
      await channel.prefetch(this.options.prefetch)
      const session: Session = {
        generation: ++this.generation,
        connection,
        channel,
        publisher,
        deadLetters,
        topology,
        alive: true,
        unconfirmed: new Set(),
        returned: false,
      }
      current = session
      if (closedWhileStarting !== undefined) throw new Error(`${closedWhileStarting} while starting`)
      // A return comes before the confirm of the same message, so the confirm sees the flag.
      deadLetters.on('return', () => {
        session.returned = true
      })
      for (const [ch, role] of [
        [channel, 'consume'],
        [deadLetters, 'dead-letters'],
      ] as const) {
        ch.on('error', (e: unknown) => this.log.warn({ err: this.describe(e), role }, 'broker channel error'))
        ch.on('close', () => this.lost(session, `${role} channel closed`))
      }
      // close() ran while connecting (and may have finished): this connection is not wanted.
      if (unwanted()) {
        session.alive = false
        await Promise.all([connection.close().catch(() => {}), publisher.close().catch(() => {})])
        return
      }
      this.session = session
      // oslo's queue has no single-active-consumer: an exclusive consumer keeps a second instance
      // (or Vitrage's own persistor) off it, so deliveries are never split and reordered.
      const { consumerTag } = await channel
        .consume(topology.consumeQueue, (m) => this.onMessage(session, m), { noAck: false, exclusive: this.options.compatQueue })
        .catch((e: unknown) => {
          // Refused because another consumer has the queue (not for lack of permission, also 403).
          if (this.options.compatQueue && (e as { code?: unknown }).code === 403 && /exclusive/i.test(String((e as Error).message))) throw Object.assign(e as Error, { exclusiveInUse: true })
          throw e
        })
      session.consumerTag = consumerTag
      // close() may have begun while the consumer was starting: drain cancels it, and owns the state.
      if ((this.state as PersistorState) !== 'connecting') return
      // Either connection or channel closed while the consumer was starting (lost() leaves that
      // to this attempt): start again.
      if (!session.alive) throw new Error('a broker connection or channel closed while starting')
      if (this.options.compatQueue && this.deps.acquireLease !== undefined && this.lease === undefined) throw new Error('the consumer lease was lost while starting')
      this.state = 'consuming'
      this.waiting.check()
      this.reconnectAttempt = 0
      this.standingBy = false
      this.deps.metrics.brokerConnected.set(1)
      this.sampleDepth(session)
      this.log.info(
        { queue: topology.consumeQueue, generation: session.generation, found: topology.found, declared: topology.declared, prefetch: this.options.prefetch },
        'consuming',
      )
      if (topology.mismatched.length > 0) {
        this.log.warn(
          { mismatched: topology.mismatched },
          "oslo's exchange or queue exists with other attributes than the settings say (--amqp-durable-queues, --amqp-auto-delete, --amqp-quorum-*): left alone, but should the broker lose it, the persistor would declare it as the settings say and oslo's publisher would then fail; set them as oslo.messaging's are",
        )
      }
      if (topology.unchecked.length > 0) {
        this.log.info({ unchecked: topology.unchecked }, "could not check that oslo's exchange or queue has the attributes the settings say (the broker refused an equal declare; it changed nothing)")
      }
    } catch (e) {
      await connection?.close().catch(() => {})
      await publisher?.close().catch(() => {})
      if ((e as { exclusiveInUse?: boolean }).exclusiveInUse === true) {
        // ACCESS_REFUSED on an exclusive consume: another consumer holds oslo's queue. Standing
        // by, trying again at a steady pace (not an error that escalates).
        this.log[this.standingBy ? 'debug' : 'info'](
          { queue: names(this.options).consumeQueue, retryInMs: COMPAT_STANDBY_MS },
          "oslo's queue has another consumer (another persistor with --compat-queue, or Vitrage's own): standing by",
        )
        this.standingBy = true
        this.lastBrokerProblem = "standing by: oslo's queue has another consumer"
        this.scheduleReconnect(COMPAT_STANDBY_MS)
        return
      }
      this.lastBrokerProblem = this.describe(e)
      const attempt = this.reconnectAttempt++
      const delay = backoffDelay(this.options.reconnect, attempt)
      const topologyConflict = (e as { topology?: boolean }).topology === true
      this.log[topologyConflict || attempt >= 5 ? 'error' : 'warn']({ err: this.describe(e), attempt, retryInMs: delay }, 'cannot consume from the broker; retrying')
      this.scheduleReconnect(delay)
    }
  }

  private scheduleReconnect(delay: number): void {
    if (this.state === 'draining' || this.state === 'closed') return
    this.state = 'backoff'
    clearTimeout(this.reconnectTimer)
    this.reconnectTimer = setTimeout(() => {
      this.connecting = this.connect()
    }, delay)
  }

  private lost(session: Session, reason: string): void {
    if (!session.alive) return
    session.alive = false
    this.lastBrokerProblem = this.deps.scrub(reason)
    this.deps.metrics.brokerConnected.set(0)
    clearInterval(this.depthTimer)
    // Not sampled any more: 0, not the last value seen (a --compat-queue instance that lost its
    // lease kept its old depth for ever, and alerts take the highest over the instances).
    this.deps.metrics.queueDepth.set(0)
    this.deps.metrics.deadLetterQueueDepth.set(0)
    // While connecting, the failing step's own error reaches connect(), which retries.
    if (this.session !== session || this.state === 'draining' || this.state === 'closed' || this.state === 'connecting') return
    this.log.warn({ reason, generation: session.generation }, 'broker session lost; held messages will be redelivered')
    // Bounded: a blocked connection never answers a close; its pending confirms then fail at once.
    void closeConnection(session.connection, Date.now() + 2_000)
    void closeConnection(session.publisher, Date.now() + 2_000)
    this.scheduleReconnect(backoffDelay(this.options.reconnect, this.reconnectAttempt++))
  }

  private onMessage(session: Session, message: amqp.ConsumeMessage | null): void {
    if (message === null) {
      // The broker cancelled the consumer (queue deleted, or failover of its node). What it
      // delivered before the cancel is stored first (AMQP orders the cancel after them): with
      // the queue deleted, nothing would deliver those messages again. Then the session goes
      // and a new one declares the queue again. (After a failover their acks may be refused;
      // they are then redelivered and recognised by message_id.)
      const upTo = this.delivered
      if (this.processed >= upTo) return this.lost(session, 'consumer cancelled by the broker')
      this.log.warn({ held: upTo - this.processed, generation: session.generation }, 'consumer cancelled by the broker; storing what it delivered, then reconnecting')
      void within(this.processedUpTo(upTo), CANCEL_DRAIN_MS, undefined).then(() => this.lost(session, 'consumer cancelled by the broker'))
      return
    }
    if (message.fields.redelivered) this.deps.metrics.redelivered.inc()
    this.delivered++
    this.held++
    this.deps.metrics.inFlight.set(this.held)
    // Plain branches, not E.chain: fp-ts's chain (dual, variadic) cost 1.7 µs a message here.
    const body = decompressBody(message.content, message.properties.headers?.['compression'], this.options.maxMessageBytes)
    const decodedMessage = E.isLeft(body) ? body : decodeMessage(body.right, { maxMessageBytes: this.options.maxMessageBytes })
    const refused = this.deps.admit !== undefined && E.isRight(decodedMessage) ? this.deps.admit(decodedMessage.right) : undefined
    const decoded = E.map((m: DecodedMessage) => this.deps.store.prepare(m))(decodedMessage)
    this.deliveries.next({ message, session, decoded, refused })
  }

  private sampleDepth(session: Session): void {
    const sample = async (): Promise<void> => {
      if (!session.alive) return
      const ch = await session.connection.createChannel().catch(() => undefined)
      if (ch === undefined) return
      ch.on('error', () => {})
      try {
        this.deps.metrics.queueDepth.set((await ch.checkQueue(session.topology.consumeQueue)).messageCount)
        // Letters waiting for an operator: dead_lettered_total says they came, this that they stay.
        this.deps.metrics.deadLetterQueueDepth.set((await ch.checkQueue(session.topology.deadLetterQueue)).messageCount)
      } catch {
        // The session is going away; the next one samples again.
      } finally {
        await ch.close().catch(() => {})
      }
    }
    void sample()
    clearInterval(this.depthTimer)
    this.depthTimer = setInterval(() => void sample(), this.options.queueDepthIntervalMs)
    this.depthTimer.unref()
  }

  /** Resolves once processBatch has finished with the first `upTo` deliveries. */
  private processedUpTo(upTo: number): Promise<void> {
    if (this.processed >= upTo) return Promise.resolve()
    return new Promise((resolve) => this.processedWaiters.push({ upTo, resolve }))
  }

  private release(count: number): void {
    this.held -= count
    this.deps.metrics.inFlight.set(this.held)
  }

  private async processBatch(batch: Delivery[]): Promise<void> {
    try {
      await this.storeBatch(batch)
    } finally {
      this.processed += batch.length
      const due = this.processedWaiters.filter((w) => w.upTo <= this.processed)
      this.processedWaiters = this.processedWaiters.filter((w) => w.upTo > this.processed)
      for (const w of due) w.resolve()
    }
  }

  private async storeBatch(batch: Delivery[]): Promise<void> {
    // Deliveries of a lost session are back in the queue already; storing them now would only
    // be undone as duplicates on redelivery.
    const live = batch.filter((d) => d.session.alive)
    if (live.length < batch.length) this.release(batch.length - live.length)
    if (live.length === 0) return
    // Its store was closed under it: an earlier batch is held unacked on a live channel, and this
    // one's ack (allUpTo) would ack that one too, unstored (a batch of dead letters alone did).
    // Nothing more is acked; the close puts everything back in the queue.
    if (this.storeGone) {
      this.release(live.length)
      return
    }
    this.deps.metrics.batchSize.observe(live.length)

    const valid: Delivery[] = []
    const dead: DeadLetter[] = []
    for (const d of live) {
      if (E.isRight(d.decoded)) valid.push(d)
      else dead.push({ delivery: d, rejection: d.decoded.left })
    }

    if (valid.length > 0) {
      const result = await this.appendWithRetry(valid)
      if (result === undefined) {
        this.release(live.length)
        return // abandoned or session lost: nothing acked, everything comes back
      }
      for (const r of result.refused) {
        dead.push({ delivery: valid[r.index] as Delivery, rejection: { reason: 'database-rejected', detail: r.failure.message } })
      }
      for (const i of result.conflicts) {
        dead.push({
          delivery: valid[i] as Delivery,
          rejection: { reason: 'message-id-conflict', detail: 'an event with this message_id and a different payload is already stored' },
        })
      }
      for (const i of result.absent) {
        const d = valid[i] as Delivery
        // Only a refused one can be absent (the store's contract); a reason all the same.
        dead.push({ delivery: d, rejection: d.refused ?? { reason: 'database-rejected', detail: 'the store reported a message neither stored nor found' } })
      }
      this.deps.metrics.stored.inc(result.stored.length)
      this.deps.metrics.duplicates.inc(result.duplicates.length)
    }

    const sessions = new Set(live.map((d) => d.session))
    // Dead letters keep delivery order, whatever stage rejected them.
    const position = new Map(live.map((d, i) => [d, i]))
    dead.sort((a, b) => (position.get(a.delivery) ?? 0) - (position.get(b.delivery) ?? 0))
    const { failed, parked, rejected } = await this.deadLetter(dead)
    for (const s of sessions) {
      if (!s.alive || failed.has(s)) continue
      // Rejected ones were settled by their nack; acking them again would close the channel.
      const mine = live.filter((d) => d.session === s && !parked.has(d) && !rejected.has(d))
      const last = mine.at(-1)
      if (last === undefined) continue
      // Acking the session's last delivery with allUpTo acks the whole batch (and nothing later:
      // later deliveries have higher tags), unless a dead letter not confirmed yet lies below it.
      if (s.unconfirmed.size === 0) s.channel.ack(last.message, true)
      else for (const d of mine) s.channel.ack(d.message, false)
    }
    for (const s of failed) {
      // A dead letter the broker did not take must not be acked by a later allUpTo ack: drop the
      // session so that everything unacked on it is redelivered.
      this.lost(s, deadLetterFailure(s))
    }
    this.release(live.length - parked.size)
  }

  /** Appends until it succeeds; undefined when the batch's session is gone or shutdown gave up. */
  private async appendWithRetry(valid: Delivery[]): Promise<IsolatedAppendResult | undefined> {
    const messages = valid.map((d) => (d.decoded as E.Right<PreparedEvent>).right)
    let copiesOnly: Set<number> | undefined
    for (let i = 0; i < valid.length; i++) if ((valid[i] as Delivery).refused !== undefined) (copiesOnly ??= new Set()).add(i)
    for (let attempt = 0; ; attempt++) {
      const started = process.hrtime.bigint()
      const r = await this.deps.store.append(messages, copiesOnly)()
      if (E.isRight(r)) {
        this.deps.metrics.appendSeconds.observe(Number(process.hrtime.bigint() - started) / 1e9)
        this.deps.metrics.databaseConnected.set(1)
        this.appendFailing = undefined
        if (attempt > 0) this.log.info({ attempts: attempt + 1 }, 'database append succeeded after retries')
        return r.right
      }
      this.deps.metrics.databaseConnected.set(0)
      // The store was closed under the persistor (its owner closed them in the wrong order): no
      // retry can succeed. The batch stays unacked (redelivered), and the owner hears of it.
      // (After a shutdown that gave up on this batch, the store's bounded close cuts the append
      // off: expected, not the owner's mistake.)
      if (r.left.code === STORE_CLOSED) {
        if (this.abandoned || this.storeGone) return undefined
        this.storeGone = true
        this.log.error({ batch: messages.length }, 'the event store was closed under the persistor; holding the batch unacked and stopping')
        this.deps.onDefect(new Error('the event store was closed while the persistor was running'))
        // Nothing more can be stored: it stops consuming and closes (what it holds goes back to
        // the queue with its channel), rather than stay 'consuming' and fail every batch.
        void this.close()
        return undefined
      }
      this.appendFailing = r.left
      this.deps.metrics.appendRetries.labels(r.left.kind).inc()
      const delay = backoffDelay(this.options.appendRetry, attempt)
      this.log[r.left.kind === 'fatal' || attempt >= 5 ? 'error' : 'warn'](
        { failure: r.left, attempt, retryInMs: delay, batch: messages.length },
        'append failed; holding the batch unacked and retrying',
      )
      if (this.abandoned) return undefined
      await sleep(delay, this.abandon.signal)
      if (this.abandoned) return undefined
      if (!valid.some((d) => d.session.alive)) {
        // The batch goes back to the queue with its session: its failure is no longer a held
        // batch's (readiness would keep reporting it on a quiet queue).
        this.appendFailing = undefined
        return undefined
      }
    }
  }

  /**
   * Publishes dead letters with confirms and waits up to DEAD_LETTER_WAIT_MS for them. Returns
   * the sessions where one failed (nacked, returned, channel gone) and the deliveries not
   * confirmed yet: those stay unacked, and are acked (or given up with their session) when their
   * confirm comes.
   */
  private async deadLetter(dead: DeadLetter[]): Promise<{ failed: Set<Session>; parked: Set<Delivery>; rejected: Set<Delivery> }> {
    const failed = new Set<Session>()
    const parked = new Set<Delivery>()
    const rejected = await this.rejectPastHoldLimit(dead)
    if (dead.length === rejected.size) return { failed, parked, rejected }
    let waiting = true
    const settled = new Set<Delivery>()
    const outcomes = dead.filter(({ delivery }) => !rejected.has(delivery)).map(({ delivery, rejection }) => {
      const { session, message } = delivery
      if (!session.alive) {
        settled.add(delivery)
        return Promise.resolve()
      }
      const tag = message.fields.deliveryTag
      session.unconfirmed.add(tag)
      const confirmed = new Promise<boolean>((resolve) => {
        const p = message.properties
        // A requeued dead letter comes through the default exchange: its headers name the original.
        const origin = originOf(message.fields, p.headers)
        const ours = {
          'x-persistor-error': rejection.reason,
          'x-persistor-error-detail': rejection.detail.slice(0, 1000),
          'x-persistor-original-exchange': origin.exchange,
          'x-persistor-original-routing-key': origin.routingKey,
          'x-persistor-dead-lettered-at': new Date().toISOString(),
        }
        const publish = (routingKey: string, options: amqp.Options.Publish): void => {
          session.deadLetters.publish(
            session.topology.deadLetterExchange,
            routingKey,
            message.content,
            options,
            (err) => resolve(err === null || err === undefined ? !session.returned : false),
          )
        }
        try {
          // mandatory: unroutable (the dead-letter queue deleted) comes back as a return, not silence.
          publish(message.fields.routingKey, republishOptions(p, { ...(p.headers ?? {}), ...ours }))
        } catch {
          // What it carried cannot be encoded again (headers past 64 KiB, a table amqplib takes
          // for its type marker, a timestamp past 2^64, a message id or routing key of invalid
          // UTF-8: see fallbackRepublishOptions). Whatever the error, it goes with values of ours
          // only, each cut to what encodes: any of these stopped run at every start.
          try {
            publish(
              writableRoutingKey(message.fields.routingKey),
              fallbackRepublishOptions(p, {
                ...requeueMarks(p.headers),
                ...ours,
                'x-persistor-original-exchange': cutUtf8(origin.exchange, 255),
                'x-persistor-original-routing-key': cutUtf8(origin.routingKey, 255),
                'x-persistor-original-headers-dropped': true,
              }),
            )
          } catch (e) {
            // Only a channel that is gone is left: the session is dropped, the message redelivered.
            this.log.warn({ err: this.describe(e) }, 'a dead letter could not be published')
            resolve(false)
          }
        }
        this.log.warn(
          { reason: rejection.reason, detail: rejection.detail, routingKey: message.fields.routingKey, bytes: message.content.byteLength },
          'message dead-lettered',
        )
      })
      return confirmed.then((ok) => {
        session.unconfirmed.delete(tag)
        settled.add(delivery)
        if (ok) this.deps.metrics.deadLettered.labels(rejection.reason).inc()
        if (waiting) {
          if (!ok) failed.add(session)
          return
        }
        // The batch went on without this one: it is settled here.
        if (!ok) this.lost(session, deadLetterFailure(session))
        else if (session.alive) session.channel.ack(message, false)
        this.release(1)
      })
    })
    const all = Promise.all(outcomes).then(() => undefined)
    await until(Date.now() + DEAD_LETTER_WAIT_MS, all, undefined)
    waiting = false
    // Rejected ones were settled by their nack (they are in no outcome).
    for (const { delivery } of dead) if (!settled.has(delivery) && !rejected.has(delivery)) parked.add(delivery)
    if (parked.size > 0) {
      this.pendingDeadLetters.add(all)
      void all.finally(() => this.pendingDeadLetters.delete(all))
      this.log.warn({ unconfirmed: parked.size, waitedMs: DEAD_LETTER_WAIT_MS }, 'dead letters not confirmed yet (is the broker blocked?); holding them unacked and going on')
    }
    return { failed, parked, rejected }
  }

  /**
   * The dead letters to reject to the broker instead of publishing (see the module comment):
   * those past the hold limit while dead letters of earlier batches are still unconfirmed, on the
   * persistor's own queue, once the route the broker will use is checked to exist (a deleted
   * `<queue>.dead` would make the broker drop them: those are published and held instead).
   */
  private async rejectPastHoldLimit(dead: readonly DeadLetter[]): Promise<Set<Delivery>> {
    const rejected = new Set<Delivery>()
    if (this.options.compatQueue) return rejected
    const limit = Math.max(1, Math.floor(this.options.prefetch / 2))
    const held = new Map<Session, number>()
    const candidates: DeadLetter[] = []
    for (const d of dead) {
      const s = d.delivery.session
      if (!s.alive || s.unconfirmed.size === 0) continue
      const n = held.get(s) ?? s.unconfirmed.size
      if (n >= limit) candidates.push(d)
      else held.set(s, n + 1)
    }
    const routed = new Map<Session, boolean>()
    for (const { delivery, rejection } of candidates) {
      const { session, message } = delivery
      let ok = routed.get(session)
      if (ok === undefined) {
        ok = await this.deadLetterRouteExists(session)
        routed.set(session, ok)
      }
      if (!ok || !session.alive) continue
      session.channel.nack(message, false, false)
      rejected.add(delivery)
      this.deps.metrics.deadLettered.labels(rejection.reason).inc()
      this.log.warn(
        {
          reason: rejection.reason,
          detail: rejection.detail,
          routingKey: message.fields.routingKey,
          bytes: message.content.byteLength,
          messageId: message.properties.messageId,
          held: session.unconfirmed.size,
        },
        'message dead-lettered by the broker (too many dead letters held unconfirmed); the letter carries x-death, not this reason',
      )
    }
    return rejected
  }

  /** Passive checks on the consuming connection (which an alarm does not block). */
  private deadLetterRouteExists(session: Session): Promise<boolean> {
    const { deadLetterExchange, deadLetterQueue } = session.topology
    return onScratchChannel(session.connection, async (ch) => {
      await ch.checkExchange(deadLetterExchange)
      await ch.checkQueue(deadLetterQueue)
      return true
    }).catch(() => false)
  }

  private describe(e: unknown): string {
    return this.deps.scrub(e instanceof Error ? e.message : String(e))
  }
}
