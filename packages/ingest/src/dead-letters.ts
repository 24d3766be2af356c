/**
 * The dead-letter queue for operators: what is in `<queue>.dead` and why (inspect), sending
 * dead letters back to the persistor once their cause is fixed (requeue): `--max-message-bytes`
 * raised, a database that refused rows repaired, a persistor upgraded that now takes them; and
 * deleting those no fix will store (drop: the requeue's walk, a selected letter acked with no copy).
 *
 * AMQP 0-9-1 cannot peek. Inspecting reads with basic.get and holds what it read unacked, then
 * puts it all back: nothing changes but the `redelivered` flag, and RabbitMQ requeues at the
 * original positions. Putting back costs the broker more than linear time (a classic queue,
 * RabbitMQ 3.10, measured: 2,000 messages back in 0.4 s, 10,000 in 28 s, 20,000 in 88 s), so an
 * inspection reads at most MAX_INSPECT letters.
 *
 * Requeue holds nothing back (but a letter whose headers cannot be encoded again, below). It
 * walks the queue once from its head: a selected letter is
 * published to the queue the persistor consumes, through the default exchange (only the
 * persistor gets it: republishing to oslo's exchange would copy it into every queue bound
 * there, oslo's own `<topic>.info` included); a letter not selected is published again to the
 * tail of the dead-letter queue (so, once the walk comes round, the ones left are in their order;
 * a run that ends early leaves those it passed behind those it did not reach). Either copy
 * is `mandatory`, confirmed, with at most `maxInFlight` unconfirmed, and the letter is acked only
 * once its copy is confirmed: a crash in between leaves both (at least once; the persistor stores
 * a message_id once, and a letter twice in the dead-letter queue is only listed twice). Every
 * copy carries the run's id, and the persistor keeps a message's headers when it dead-letters it
 * again, so the walk ends at the first letter of its own it meets (a letter put back, or a copy
 * that failed again: each letter is handled once per run, never in a loop), when the queue is
 * empty, at its limit, or when asked to stop. After a copy fails nothing more is read, and the
 * copies confirmed before it are settled. Memory is the window of unconfirmed copies.
 *
 * One list, requeue or drop of a queue at a time: each holds `<queue>.dead.walk`, a queue exclusive
 * to its connection, and another meanwhile is refused ('busy'). It reads the letters there when it
 * started and no more.
 *
 * A requeued copy's headers: the persistor's error headers and RabbitMQ's death records are
 * dropped, `x-persistor-original-*` kept (a message that fails again still names where it first
 * came from), `x-persistor-requeued` counts the requeues. Headers amqplib cannot encode again
 * (it writes at most 64 KiB of them) are dropped from a selected letter's copy
 * (`x-persistor-original-headers-dropped`); such a letter not selected is left in place, held
 * unacked until the end.
 */
import { randomUUID } from 'node:crypto'
import { decodeMessage, type Failure, failure, REJECTION_REASONS, requirePositiveInts, within } from '@vitrage-persistor/core'
import amqp from 'amqplib'
import * as E from 'fp-ts/lib/Either.js'
import { decompressBody } from './compression.js'
import { classifyAmqpError, closeConnection, connectUnlessStopped, cutUtf8, fallbackRepublishOptions, isAmqpUrl, queueCounts, republishOptions, STOPPED, whenAborted } from './amqp-shared.js'

const cut = (s: string | null): string | null => (s === null ? null : cutUtf8(s, 255))

/** What RabbitMQ writes in `x-death` when it dead-letters a message itself (queue TTL, length limits). */
export const BROKER_DEATH_REASONS = ['rejected', 'expired', 'maxlen', 'delivery_limit'] as const

/**
 * Every reason a dead letter can carry: the persistor's own (core REJECTION_REASONS),
 * `broker:<x-death reason>` for RabbitMQ's, and `unknown` for a message someone else put there.
 */
export const DEAD_LETTER_REASONS: readonly string[] = [...REJECTION_REASONS, ...BROKER_DEATH_REASONS.map((r) => `broker:${r}`), 'unknown']

export const REQUEUED_HEADER = 'x-persistor-requeued'
const RUN_HEADER = 'x-persistor-requeue-run'
const ORIGINAL_EXCHANGE = 'x-persistor-original-exchange'
const ORIGINAL_ROUTING_KEY = 'x-persistor-original-routing-key'

export interface DeadLetterSummary {
  /** 1-based place in the queue when it was read. */
  readonly position: number
  readonly reason: string
  readonly detail: string | null
  readonly deadLetteredAt: string | null
  readonly originalExchange: string | null
  readonly originalRoutingKey: string | null
  /** How many times it was requeued before. */
  readonly requeued: number
  readonly bytes: number
  /** From the notification itself, when it decodes that far. */
  readonly messageId: string | null
  readonly eventType: string | null
}

type Headers = Readonly<Record<string, unknown>> | undefined

/** AMQP table strings arrive as strings, or as buffers for byte arrays. */
const text = (v: unknown): string | null => (typeof v === 'string' ? v : Buffer.isBuffer(v) ? v.toString('utf8') : null)

const firstDeath = (headers: Headers): Readonly<Record<string, unknown>> | undefined => {
  const deaths = headers?.['x-death']
  return Array.isArray(deaths) && typeof deaths[0] === 'object' && deaths[0] !== null ? (deaths[0] as Record<string, unknown>) : undefined
}

/** Why the message is a dead letter: the persistor's header, else RabbitMQ's death record. */
export const deadLetterReason = (headers: Headers): string => {
  const ours = text(headers?.['x-persistor-error'])
  if (ours !== null) return ours
  const death = text(firstDeath(headers)?.['reason'])
  return death !== null ? `broker:${death}` : 'unknown'
}

/**
 * Where a message came from before the persistor got it. A requeued message arrives through the
 * default exchange, so its own headers, not its delivery, name the original.
 */
export const originOf = (fields: { readonly exchange: string; readonly routingKey: string }, headers: Headers): { exchange: string; routingKey: string } => {
  if (headers?.[REQUEUED_HEADER] !== undefined) {
    const exchange = text(headers[ORIGINAL_EXCHANGE])
    const routingKey = text(headers[ORIGINAL_ROUTING_KEY])
    if (exchange !== null && routingKey !== null) return { exchange, routingKey }
  }
  return { exchange: fields.exchange, routingKey: fields.routingKey }
}

const requeueCount = (headers: Headers): number => {
  const n = headers?.[REQUEUED_HEADER]
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0 ? n : 0
}

/**
 * A header time as ISO text, or null: amqplib gives AMQP timestamps as `{'!': 'timestamp', value:
 * seconds}` (RabbitMQ's `x-death` time), a publisher may have put anything there, and a value no
 * Date can hold must not stop a listing.
 */
const timeOf = (v: unknown): string | null => {
  const seconds = typeof v === 'number' ? v : typeof v === 'object' && v !== null && (v as Record<string, unknown>)['!'] === 'timestamp' ? (v as { value: unknown }).value : undefined
  const date = v instanceof Date ? v : typeof seconds === 'number' ? new Date(seconds * 1000) : undefined
  if (date !== undefined) return Number.isFinite(date.getTime()) ? date.toISOString() : null
  return text(v)
}

/**
 * What is decompressed to name a compressed letter's message: at most this much of one letter
 * (a body-too-large letter is over the persistor's limit, 1 MiB by default), and of all the
 * letters one listing reads, LISTING_MAX_INFLATED. A few hundred bytes of brotli inflate to
 * 60 MiB: with 64 MiB a letter and no total, a listing of such letters took seconds each (review 54).
 */
export const DESCRIBE_MAX_INFLATED = 16 * 1024 * 1024
const LISTING_MAX_INFLATED = 128 * 1024 * 1024

export interface DescribeOptions {
  /** Most a compressed letter is decompressed to (DESCRIBE_MAX_INFLATED); below 1, compressed letters are not named. */
  readonly maxInflated?: number
  /** Told how many bytes a compressed letter decompressed to (as far as it went, when it failed). */
  readonly onInflated?: (bytes: number) => void
}

/** A dead letter as an operator reads it (pure: no broker; whatever the headers hold, it does not throw). */
export const describeDeadLetter = (position: number, content: Buffer, headers: Headers, o: DescribeOptions = {}): DeadLetterSummary => {
  const death = firstDeath(headers)
  const deathKeys = death?.['routing-keys']
  // Decoded without a size limit: a body-too-large letter still names its message (a compressed
  // one only up to maxInflated bytes once decompressed).
  const maxInflated = o.maxInflated ?? DESCRIBE_MAX_INFLATED
  const plain = maxInflated >= 1 ? decompressBody(content, headers?.['compression'], maxInflated) : E.right(content)
  // What it took: a body cut off at the limit, or found corrupt on the way, may have inflated as far.
  if (E.isRight(plain)) {
    if (plain.right !== content) o.onInflated?.(plain.right.byteLength)
  } else if (plain.left.reason !== 'unsupported-compression') o.onInflated?.(maxInflated)
  const body = E.isRight(plain) ? plain.right : content
  const decoded = decodeMessage(body, { maxMessageBytes: Number.POSITIVE_INFINITY })
  const at = headers?.['x-persistor-dead-lettered-at'] ?? death?.['time']
  return {
    position,
    reason: deadLetterReason(headers),
    detail: text(headers?.['x-persistor-error-detail']),
    deadLetteredAt: timeOf(at),
    originalExchange: text(headers?.[ORIGINAL_EXCHANGE]) ?? text(death?.['exchange']),
    originalRoutingKey: text(headers?.[ORIGINAL_ROUTING_KEY]) ?? (Array.isArray(deathKeys) ? text(deathKeys[0]) : null),
    requeued: requeueCount(headers),
    bytes: content.byteLength,
    ...(E.isRight(decoded) ? { messageId: decoded.right.messageId, eventType: decoded.right.eventType } : fieldsOfUndecodable(body)),
  }
}

const FIELD_MAX = 200

/**
 * `message_id` and `event_type` of a letter that does not decode, as far as it is JSON: a bad
 * message id still shows its event type, and the reverse. Strings only, cut short; never throws.
 */
const fieldsOfUndecodable = (content: Buffer): { messageId: string | null; eventType: string | null } => {
  const none = { messageId: null, eventType: null }
  const parse = (text: string): unknown => {
    try {
      return JSON.parse(text)
    } catch {
      return undefined
    }
  }
  const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v)
  const outer = parse(content.toString('utf8'))
  if (!isObject(outer)) return none
  const inner = typeof outer['oslo.message'] === 'string' ? parse(outer['oslo.message']) : outer
  if (!isObject(inner)) return none
  const field = (v: unknown): string | null => (typeof v === 'string' ? (v.length > FIELD_MAX ? `${v.slice(0, FIELD_MAX - 1)}…` : v) : null)
  return { messageId: field(inner['message_id']), eventType: field(inner['event_type']) }
}

/**
 * What a letter carries of requeue runs (the count and the last run's id): the persistor keeps
 * them when it can keep nothing else of a message's headers, so the walk still knows its own.
 */
export const requeueMarks = (headers: Headers): Record<string, unknown> => {
  const out: Record<string, unknown> = {}
  const run = text(headers?.[RUN_HEADER])
  if (requeueCount(headers) > 0) out[REQUEUED_HEADER] = requeueCount(headers)
  // Only a run id this module could have written (a UUID): the fallback must stay small.
  if (run !== null && run.length <= 64) out[RUN_HEADER] = run
  return out
}

/**
 * The headers a requeued copy carries: the original's, without the persistor's error headers and
 * RabbitMQ's death records, with where it first came from and one more requeue counted.
 */
export const requeueHeaders = (
  headers: Headers,
  summary: Pick<DeadLetterSummary, 'originalExchange' | 'originalRoutingKey' | 'requeued'>,
  runId?: string,
): Record<string, unknown> => {
  const out: Record<string, unknown> = {}
  for (const [k, v] of Object.entries(headers ?? {})) {
    if (k === 'x-death' || k.startsWith('x-first-death-') || k.startsWith('x-last-death-')) continue
    if (k.startsWith('x-persistor-')) continue
    out[k] = v
  }
  if (summary.originalExchange !== null) out[ORIGINAL_EXCHANGE] = summary.originalExchange
  if (summary.originalRoutingKey !== null) out[ORIGINAL_ROUTING_KEY] = summary.originalRoutingKey
  out[REQUEUED_HEADER] = summary.requeued + 1
  if (runId !== undefined) out[RUN_HEADER] = runId
  return out
}

export interface DeadLetterScanOptions {
  readonly amqpUrl: string
  /** The dead-letter queue, `<queue>.dead`. */
  readonly deadLetterQueue: string
  /** Only dead letters with one of these reasons (DEAD_LETTER_REASONS); all when absent or empty. */
  readonly reasons?: readonly string[]
  /** Only dead letters whose notification has one of these message_ids; all when absent or empty. */
  readonly messageIds?: readonly string[]
  /** At most this many selected dead letters (for an inspection, at most MAX_INSPECT). */
  readonly limit: number
  readonly scrub?: (s: string) => string
}

/** An inspection reads (and holds, then puts back) at most this many letters; see the module comment. */
export const MAX_INSPECT = 1_000

export interface DeadLetterListing {
  /** Messages ready in the queue when the scan started. */
  readonly depth: number
  /** Messages read (selected or not; at most MAX_INSPECT). */
  readonly scanned: number
  /** The selected ones, in queue order. */
  readonly letters: readonly DeadLetterSummary[]
  /** Reasons of every message read. */
  readonly byReason: Readonly<Record<string, number>>
}

export interface RequeueOptions extends DeadLetterScanOptions {
  /** The queue the persistor consumes (its own, or oslo's with --compat-queue). */
  readonly targetQueue: string
  readonly maxInFlight: number
  /** The oldest unconfirmed copy waits at most this long (a broker in an alarm blocks publishers). */
  readonly confirmTimeoutMs?: number
  /**
   * Aborted: read nothing more (a read or a setup call waiting on the broker is not waited for);
   * what was published is still confirmed and its letters acked, each copy within
   * confirmTimeoutMs.
   */
  readonly signal?: AbortSignal
  /** Aborted: stop waiting for confirms now (a second Ctrl-C); their letters stay. */
  readonly abandon?: AbortSignal
  /** After each letter settled (requeued or put back). */
  readonly onProgress?: (p: { readonly scanned: number; readonly requeued: number; readonly depth: number }) => void
}

export type RequeueFailure = Failure & {
  /** Confirmed into the target queue and removed from the dead-letter queue before the failure. */
  readonly requeued: number
  /**
   * Copies published and not confirmed when it failed: their letters stay in the dead-letter
   * queue, and the copies may have arrived all the same (at least once).
   */
  readonly unconfirmed: number
  /**
   * The broker did not confirm the end (the channel's close): acks sent last may not have
   * reached it, so letters counted in `requeued` may still be in the dead-letter queue as well.
   */
  readonly acksUnconfirmed: boolean
}

export interface RequeueResult {
  /** Messages ready in the dead-letter queue when it started (undefined: stopped before it was read). */
  readonly depth: number | undefined
  readonly scanned: number
  /** Confirmed into the target queue and removed from the dead-letter queue. */
  readonly requeued: number
  readonly byReason: Readonly<Record<string, number>>
  /** Read but not selected: put back at the tail of the dead-letter queue, in their order. */
  readonly skipped: number
  readonly stopped: boolean
  /**
   * Of the `messageIds` asked for, those no letter had, once the walk went through the whole
   * queue (empty when it ended early: at its limit, stopped).
   */
  readonly notFound: readonly string[]
}

interface Scan {
  readonly connection: amqp.ChannelModel
  readonly channel: amqp.ConfirmChannel
  readonly depth: number
  /** Reads the next message; false when none is ready; STOPPED when the scan's signal aborted meanwhile. */
  readonly next: () => Promise<amqp.GetMessage | false | typeof STOPPED>
  readonly scanned: () => number
  /** Messages read and not acked (by delivery tag): they go back to their places. */
  readonly release: (held: readonly number[]) => void
  /**
   * Closes the channel, then the connection, each bounded. True when the broker confirmed the
   * channel's close: every ack sent before it reached the broker (they travel in order, unanswered).
   */
  readonly close: () => Promise<boolean>
}

/** How long closing a scan waits for the broker (its channel, then its connection) before dropping the socket. */
const CLOSE_TIMEOUT_MS = 2_000

/**
 * Connects, checks that the queues exist, and reads the dead-letter queue from its head. With a
 * signal, a stop ends every wait on the broker here (a broker that stopped answering holds each
 * call until its heartbeat gives up, minutes later): 'stopped', with nothing read.
 */
const openScan = async (
  o: DeadLetterScanOptions,
  fail: (kind: Failure['kind'], message: string, code?: string) => Failure,
  targetQueue?: string,
  signal?: AbortSignal,
): Promise<E.Either<Failure, Scan | 'stopped'>> => {
  requirePositiveInts('dead letters', { limit: o.limit })
  for (const r of o.reasons ?? []) if (!DEAD_LETTER_REASONS.includes(r)) throw new TypeError(`dead letters: unknown reason ${JSON.stringify(r)}`)
  if (!isAmqpUrl(o.amqpUrl)) return E.left(fail('fatal', 'the broker URL is not an amqp:// or amqps:// URL', 'config'))
  const stopped = whenAborted(signal)
  const unlessStopped = <T>(p: Promise<T>): Promise<T | typeof STOPPED> => Promise.race([p, stopped])
  let connection: amqp.ChannelModel
  try {
    const connected = await connectUnlessStopped(o.amqpUrl, stopped, { noDelay: true })
    if (connected === STOPPED) return E.right('stopped')
    connection = connected
  } catch (e) {
    return E.left(brokerFailure(fail, 'cannot connect to the broker', e))
  }
  connection.on('error', () => {}) // reported through the failing call
  const close = (): Promise<void> => closeConnection(connection, Date.now() + CLOSE_TIMEOUT_MS)
  const check = async (queue: string): Promise<number | undefined | typeof STOPPED> => {
    const counts = await unlessStopped(queueCounts(connection, queue))
    return counts === STOPPED ? counts : counts?.ready
  }
  try {
    const depth = await check(o.deadLetterQueue)
    if (depth === STOPPED) {
      await close()
      return E.right('stopped')
    }
    if (depth === undefined) {
      await close()
      return E.left(fail('fatal', `there is no dead-letter queue ${JSON.stringify(o.deadLetterQueue)} (the persistor declares <queue>.dead when it starts: check --queue)`, 'no-queue'))
    }
    const target = targetQueue === undefined ? 0 : await check(targetQueue)
    if (target === STOPPED) {
      await close()
      return E.right('stopped')
    }
    if (target === undefined) {
      await close()
      return E.left(fail('fatal', `the persistor's queue ${JSON.stringify(targetQueue)} does not exist: start the persistor once (it declares it), or check --queue and --compat-queue`, 'no-queue'))
    }
    // One walk or listing of a dead-letter queue at a time: two requeues or drops at once each
    // met the other's copies, stopped part-way (exit 0, each having done about half) and left the
    // letters kept interleaved (review 61). The lock is a queue exclusive to this connection, so
    // it goes with the connection however the walk ends; a user who may not declare it (no
    // configure permission) walks without it, as before.
    const locked = await unlessStopped(takeWalkLock(connection, o.deadLetterQueue))
    if (locked === STOPPED) {
      await close()
      return E.right('stopped')
    }
    if (locked === 'busy') {
      await close()
      return E.left(fail('transient', `another dead-letters list, requeue or drop is walking ${JSON.stringify(o.deadLetterQueue)} (its connection holds ${JSON.stringify(walkLockName(o.deadLetterQueue))}): run one at a time; try again when it ends`, 'busy'))
    }
    const opened = await unlessStopped(connection.createConfirmChannel())
    if (opened === STOPPED) {
      await close()
      return E.right('stopped')
    }
    const channel = opened
    channel.on('error', () => {})
    // The channel is closed before the connection: amqplib writes a connection's close ahead of
    // channel frames still queued, and acks not sent by then would be lost (the letters then
    // stay in the dead-letter queue although their copies were delivered). Both bounded: a
    // broker that stopped answering would hold either for as long as TCP does.
    const closeBoth = async (): Promise<boolean> => {
      const confirmed = await within(
        channel.close().then(
          () => true,
          () => false,
        ),
        CLOSE_TIMEOUT_MS,
        false,
      )
      await close()
      return confirmed
    }
    let scanned = 0
    return E.right({
      connection,
      channel,
      depth,
      next: async () => {
        const m = await unlessStopped(channel.get(o.deadLetterQueue, { noAck: false }))
        // Stopped while waiting for the broker's answer: a letter it delivers after this is
        // held unacked, and goes back to its place when the channel closes.
        if (m === STOPPED) return m
        if (m !== false) scanned++
        return m
      },
      scanned: () => scanned,
      release: (held) => {
        // Called once nothing else is unacked on the channel: one nack puts them all back.
        if (held.length > 0) channel.nackAll(true)
      },
      close: closeBoth,
    })
  } catch (e) {
    await close()
    return E.left(brokerFailure(fail, 'broker', e))
  }
}

const walkLockName = (deadLetterQueue: string): string => `${deadLetterQueue}.walk`

/** Declares the walk lock (see openScan): held, busy (another connection has it), or unavailable (not permitted). */
const takeWalkLock = async (connection: amqp.ChannelModel, deadLetterQueue: string): Promise<'held' | 'busy' | 'unavailable'> => {
  const channel = await connection.createChannel()
  channel.on('error', () => {})
  try {
    await channel.assertQueue(walkLockName(deadLetterQueue), { exclusive: true, durable: false, autoDelete: true })
    await channel.close().catch(() => {})
    return 'held'
  } catch (e) {
    // The broker closed the channel: 405 RESOURCE_LOCKED when another connection holds it.
    return classifyAmqpError(e).code === '405' ? 'busy' : 'unavailable'
  }
}

/**
 * Classified as the other one-off clients are (classifyAmqpError); a 403 (the user may not read
 * or write these queues, or log in) keeps the code 'access-refused' it has always had here.
 */
const brokerFailure = (fail: (kind: Failure['kind'], message: string, code?: string) => Failure, what: string, e: unknown): Failure => {
  const c = classifyAmqpError(e)
  return fail(c.kind, `${what}: ${(e as Error).message}`, c.code === '403' ? 'access-refused' : c.code)
}

const selects = (o: DeadLetterScanOptions, summary: Pick<DeadLetterSummary, 'reason' | 'messageId'>): boolean =>
  (o.reasons === undefined || o.reasons.length === 0 || o.reasons.includes(summary.reason)) &&
  (o.messageIds === undefined || o.messageIds.length === 0 || (summary.messageId !== null && o.messageIds.includes(summary.messageId)))

/**
 * Lists the dead letters (those with `reasons`, at most `limit`) without removing any. Counts
 * the reasons of every message read on the way.
 */
export const inspectDeadLetters = async (o: DeadLetterScanOptions): Promise<E.Either<Failure, DeadLetterListing>> => {
  const scrub = o.scrub ?? ((s: string) => s)
  const fail = (kind: Failure['kind'], message: string, code?: string): Failure => failure(kind, scrub(message), code)
  if (o.limit > MAX_INSPECT) throw new TypeError(`inspectDeadLetters: limit must be at most ${MAX_INSPECT}, got ${o.limit}`)
  const opened = await openScan(o, fail)
  if (E.isLeft(opened)) return opened
  // Without a signal a scan is never stopped.
  const scan = opened.right as Scan
  const held: number[] = []
  const letters: DeadLetterSummary[] = []
  const byReason: Record<string, number> = {}
  let inflatable = LISTING_MAX_INFLATED
  const describe = { onInflated: (bytes: number) => void (inflatable -= bytes) }
  try {
    while (letters.length < o.limit && scan.scanned() < MAX_INSPECT) {
      const m = await scan.next()
      if (m === false || m === STOPPED) break
      held.push(m.fields.deliveryTag)
      const summary = describeDeadLetter(scan.scanned(), m.content, m.properties.headers, { ...describe, maxInflated: Math.min(DESCRIBE_MAX_INFLATED, inflatable) })
      byReason[summary.reason] = (byReason[summary.reason] ?? 0) + 1
      if (selects(o, summary)) letters.push(summary)
    }
    scan.release(held)
    return E.right({ depth: scan.depth, scanned: scan.scanned(), letters, byReason })
  } catch (e) {
    // The channel is gone: everything it held unacked is back in the queue.
    return E.left(brokerFailure(fail, 'reading the dead-letter queue failed', e))
  } finally {
    await scan.close()
  }
}

/**
 * Sends the selected dead letters (at most `limit`) back to the persistor, in queue order; the
 * others go back to the tail of the dead-letter queue in their order. See the module comment.
 */
export const requeueDeadLetters = (o: RequeueOptions): Promise<E.Either<RequeueFailure, RequeueResult>> => walkDeadLetters(o, o.targetQueue)

export type DropOptions = Omit<RequeueOptions, 'targetQueue'>

/** What a drop did: `requeued` of a requeue is `dropped` here. */
export type DropResult = Omit<RequeueResult, 'requeued'> & { readonly dropped: number }
export type DropFailure = Omit<RequeueFailure, 'requeued'> & { readonly dropped: number }

/**
 * Deletes the selected dead letters (at most `limit`), for letters no fix will make storable
 * (`pruned-history`, a compression no decoder here reads, a producer's garbage): the walk of a
 * requeue, but a selected letter is acked without a copy. The others go back to the tail of the
 * dead-letter queue in their order, each acked once its copy is confirmed, as in a requeue; a
 * selected letter is acked in queue order after them, so a failure leaves no letter dropped past
 * one not yet put back.
 */
export const dropDeadLetters = async (o: DropOptions): Promise<E.Either<DropFailure, DropResult>> => {
  const r = await walkDeadLetters(o, undefined)
  if (E.isLeft(r)) {
    const { requeued, ...rest } = r.left
    return E.left({ ...rest, dropped: requeued })
  }
  const { requeued, ...rest } = r.right
  return E.right({ ...rest, dropped: requeued })
}

/** A requeue to `targetQueue`, or without one a drop: a selected letter is acked with no copy. */
const walkDeadLetters = async (o: DropOptions, targetQueue: string | undefined): Promise<E.Either<RequeueFailure, RequeueResult>> => {
  requirePositiveInts(targetQueue === undefined ? 'dropDeadLetters' : 'requeueDeadLetters', { maxInFlight: o.maxInFlight, confirmTimeoutMs: o.confirmTimeoutMs })
  const scrub = o.scrub ?? ((s: string) => s)
  let requeued = 0
  const fail = (kind: Failure['kind'], message: string, code?: string): Failure => failure(kind, scrub(message), code)
  const walkName = targetQueue === undefined ? 'drop' : 'requeue'
  const opened = await openScan(o, fail, targetQueue, o.signal)
  if (E.isLeft(opened)) return E.left({ ...opened.left, requeued, unconfirmed: 0, acksUnconfirmed: false })
  if (opened.right === 'stopped') return E.right({ depth: undefined, scanned: 0, requeued: 0, byReason: {}, skipped: 0, stopped: true, notFound: [] })
  const scan = opened.right
  const { channel, connection } = scan
  let outcome: E.Either<RequeueFailure, RequeueResult>
  const confirmTimeoutMs = o.confirmTimeoutMs ?? 30_000
  let blocked = false
  connection.on('blocked', () => (blocked = true))
  connection.on('unblocked', () => (blocked = false))
  // A copy the broker returns (its queue deleted since the check) is followed by its confirm:
  // the return is noted first, and that confirm counts as a failure.
  let returned: string | undefined
  channel.on('return', (m: amqp.ConsumeMessage) => (returned = m.fields.routingKey))
  const byReason: Record<string, number> = {}
  const runId = randomUUID()
  const byId = (o.messageIds?.length ?? 0) > 0
  const unmatched = new Set(o.messageIds ?? [])
  let inflatable = LISTING_MAX_INFLATED
  const inflate = { onInflated: (bytes: number) => void (inflatable -= bytes) }
  let selected = 0
  let skipped = 0
  let stopped = false
  let ownLetter: number | undefined
  // The first copy that failed: nothing more is read or published after it.
  let failed: Error | undefined
  // Letters left unacked to go back at the end: this run's own copy, and letters whose headers
  // cannot be published again (amqplib encodes at most 64 KiB of them).
  const held: number[] = []
  // Copies published and not confirmed yet, oldest first (confirms come in publish order).
  const window: Array<{ readonly message: amqp.GetMessage; readonly reason: string | undefined; readonly confirmed: Promise<void> }> = []
  const settle = (entry: (typeof window)[number]): void => {
    channel.ack(entry.message, false)
    if (entry.reason === undefined) skipped++
    else {
      requeued++
      byReason[entry.reason] = (byReason[entry.reason] ?? 0) + 1
    }
    o.onProgress?.({ scanned: requeued + skipped, requeued, depth: scan.depth })
  }
  const abandoned = whenAborted(o.abandon).then(() => Promise.reject(new Error('the wait for the broker to confirm copies was cut short')))
  abandoned.catch(() => {})
  const withDeadline = <T>(p: Promise<T>, what = 'confirm a copy'): Promise<T> => {
    let timer: NodeJS.Timeout | undefined
    return Promise.race([
      p,
      abandoned,
      new Promise<never>((_, reject) => {
        timer = setTimeout(
          () => reject(new Error(`the broker did not ${what} within ${confirmTimeoutMs} ms${blocked ? ' (it blocks this connection: a memory or disk alarm)' : ''}`)),
          confirmTimeoutMs,
        )
      }),
    ]).finally(() => clearTimeout(timer))
  }
  // Throws what publish throws (a RangeError for headers it cannot encode) to the caller, not into
  // the returned promise.
  const publishCopy = (m: amqp.GetMessage, queue: string, headers: Record<string, unknown>, options: (p: amqp.MessageProperties, h: Record<string, unknown>) => amqp.Options.Publish = republishOptions): Promise<void> => {
    const p = m.properties
    let resolve!: () => void
    let reject!: (e: Error) => void
    const confirmed = new Promise<void>((res, rej) => {
      resolve = res
      reject = rej
    })
    channel.publish(
      '',
      queue,
      m.content,
      options(p, headers),
      (err) =>
        err !== null && err !== undefined
          ? reject(new Error('the broker refused a copy (nack)'))
          : returned !== undefined
            ? reject(Object.assign(new Error(`a copy came back unroutable: the queue ${JSON.stringify(returned)} was deleted`), { unroutable: true }))
            : resolve(),
    )
    // Noted at once, so that the walk stops; awaited in order below.
    confirmed.catch((e: unknown) => (failed ??= e as Error))
    return confirmed
  }
  try {
    while (selected < o.limit && failed === undefined) {
      if (o.signal?.aborted === true) {
        stopped = true
        break
      }
      // The letters there when it started, and no more: those dead-lettered meanwhile come after
      // them, and nobody has seen them yet (review 61: `drop --all` beside a running persistor
      // dropped 509 letters that arrived during it, and with letters arriving faster than it
      // walked it would never have ended). With copies put back, its own first copy ends it there.
      if (scan.scanned() >= scan.depth) break
      // A read the broker does not answer (it blocks this connection in a memory or disk alarm
      // once it has published) fails the walk after confirmTimeoutMs, as an unconfirmed copy does;
      // it waited for ever, silently (review 61).
      const m = await withDeadline(scan.next(), 'answer a read of the dead-letter queue')
      if (m === STOPPED) {
        stopped = true
        break
      }
      if (m === false) break
      const headers = m.properties.headers
      if (headers?.[RUN_HEADER] === runId) {
        // This run's own copy (a letter put back, or a requeued one that failed again): the walk
        // went round once. It stays where it is.
        ownLetter = m.fields.deliveryTag
        held.push(ownLetter)
        break
      }
      // The reason and origin need no body: compressed letters are decompressed only to match
      // --message-id, as a listing does to name them (within the same bounds), or a letter the
      // listing named would not be found here (review 59).
      const summary = describeDeadLetter(scan.scanned(), m.content, headers, byId ? { ...inflate, maxInflated: Math.min(DESCRIBE_MAX_INFLATED, inflatable) } : { maxInflated: 0 })
      const chosen = selects(o, summary)
      if (chosen && summary.messageId !== null) unmatched.delete(summary.messageId)
      let confirmed: Promise<void> | undefined
      try {
        confirmed = chosen
          ? targetQueue === undefined
            ? Promise.resolve()
            : publishCopy(m, targetQueue, requeueHeaders(headers, summary, runId))
          : publishCopy(m, o.deadLetterQueue, { ...(headers ?? {}), [RUN_HEADER]: runId })
      } catch {
        // What the letter carried cannot be encoded again (headers near or past 64 KiB with
        // RabbitMQ's x-death, a table amqplib takes for its type marker, a timestamp past 2^64, a
        // message id of invalid UTF-8: fallbackRepublishOptions). A letter going back to the
        // persistor keeps only the headers this module writes, cut to what encodes, as the
        // persistor does for its dead letters; one not selected is left where it is, and so is
        // one whose copy cannot be written even so.
        if (chosen && targetQueue !== undefined) {
          const ours = requeueHeaders({}, { ...summary, originalExchange: cut(summary.originalExchange), originalRoutingKey: cut(summary.originalRoutingKey) }, runId)
          try {
            confirmed = publishCopy(m, targetQueue, { ...ours, 'x-persistor-original-headers-dropped': true }, fallbackRepublishOptions)
          } catch {
            held.push(m.fields.deliveryTag)
          }
        } else held.push(m.fields.deliveryTag)
      }
      if (chosen && confirmed !== undefined) selected++
      if (confirmed !== undefined) window.push({ message: m, reason: chosen ? summary.reason : undefined, confirmed })
      while (window.length >= o.maxInFlight && failed === undefined) {
        const oldest = window.shift() as (typeof window)[number]
        await withDeadline(oldest.confirmed).then(
          () => settle(oldest),
          (e: unknown) => {
            window.unshift(oldest)
            failed ??= e as Error
          },
        )
      }
    }
    // Every copy the broker confirmed is settled, also after a failure: its letter must not stay
    // behind as well. Confirms come in order, so the first one that fails ends it.
    while (window.length > 0) {
      const oldest = window[0] as (typeof window)[number]
      const ok = await withDeadline(oldest.confirmed).then(
        () => true,
        (e: unknown) => {
          failed ??= e as Error
          return false
        },
      )
      if (!ok) break
      window.shift()
      settle(oldest)
    }
    if (failed !== undefined) throw failed
    scan.release(held)
    const wholeQueue = !stopped && selected < o.limit
    outcome = E.right({ depth: scan.depth, scanned: scan.scanned() - (ownLetter === undefined ? 0 : 1), requeued, byReason, skipped, stopped, notFound: wholeQueue ? [...unmatched] : [] })
  } catch (e) {
    // Closing the connection puts every letter not acked back in its place; a copy published
    // but not confirmed may still arrive (at least once).
    const unroutable = (e as { unroutable?: boolean }).unroutable === true
    const unconfirmed = window.filter((w) => w.reason !== undefined).length
    outcome = E.left({
      ...(unroutable ? fail('fatal', `${walkName} stopped: ${(e as Error).message}`, 'unroutable') : brokerFailure(fail, `${walkName} stopped`, e)),
      requeued,
      unconfirmed,
      acksUnconfirmed: false,
    })
  }
  if (await scan.close()) return outcome
  // The broker did not confirm the close, so the last acks may not have reached it: the letters
  // of copies counted as requeued may still be dead letters as well (listed twice, requeued
  // again safely). Said, not hidden in a success.
  if (requeued === 0) return outcome
  return E.left(
    E.isLeft(outcome)
      ? { ...outcome.left, acksUnconfirmed: true }
      : { ...fail('transient', 'the broker did not confirm the end of the requeue'), requeued, unconfirmed: 0, acksUnconfirmed: true },
  )
}
