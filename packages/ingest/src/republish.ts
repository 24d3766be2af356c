/**
 * Republishing stored events to a broker, in id order, as oslo.messaging v2 notifications (same
 * message_id, event_type, publisher_id, priority and payload; the payload text byte for byte as
 * stored), so a standby vitrage-graph can be fed from history.
 *
 * Publisher confirms with a bounded window: at most `maxInFlight` messages are unconfirmed, and
 * the channel's write buffer is respected ('drain'), so memory is bounded whatever the range.
 * The result names the last id the broker confirmed: a failed run is resumed with `fromId` set
 * to it (the CLI's `--from-id`, inclusive, is that id + 1). The target exchange must exist; it is checked, never declared (it may
 * belong to oslo.messaging, whose publisher fails on a declare with other attributes).
 */
import {
  encodeEnvelopeV2,
  encodeMessageText,
  type Failure,
  failure,
  formatOsloTimestamp,
  OSLO_PUBLISH_PROPERTIES,
  type EventLogReader,
  type RawEvent,
  requireNonNegativeInts,
  requirePositiveInts,
} from '@vitrage-persistor/core'
import amqp from 'amqplib'
import * as E from 'fp-ts/lib/Either.js'
import { classifyAmqpError, closeConnection, connectUnlessStopped, isAmqpUrl, STOPPED, whenAborted } from './amqp-shared.js'

/**
 * What republishing needs of the log: core's raw page read, not optional here; and, where the
 * log can be pruned, its watermark, so that a prune during the replay is seen (see republish).
 */
export type RawEventReader = Required<Pick<EventLogReader, 'readRawPage'>> & Pick<EventLogReader, 'prunedBelow' | 'readRawPageWithWatermark'>

/** Where each event is published. */
export type RepublishRoute =
  /** Every event under one routing key (e.g. `vitrage_persistor.info`). */
  | { readonly routingKey: string }
  /** Each event under `<topic>.<its priority in lower case>`, as oslo's Notifier routes it. */
  | { readonly topic: string }

export interface RepublishProgress {
  /** The last id read and published. */
  readonly lastId: number
  readonly published: number
  /** Every event up to this id is confirmed by the broker. */
  readonly confirmedId: number
  /** Published and not confirmed yet. */
  readonly unconfirmed: number
  /** The broker blocks publishing (a memory or disk alarm): its reason. */
  readonly blocked: string | undefined
}

export interface RepublishOptions {
  readonly amqpUrl: string
  readonly exchange: string
  readonly route: RepublishRoute
  /** Start after this id (exclusive: the CLI's `--from-id A` is `fromId: A - 1`). */
  readonly fromId: number
  /** Up to this id, inclusive. */
  readonly toId: number
  readonly eventTypes?: readonly string[]
  readonly maxInFlight: number
  readonly pageSize: number
  /** After each page, every second meanwhile (so a run waiting on the broker still reports), and at the end. */
  readonly onProgress?: (p: RepublishProgress) => void
  readonly scrub?: (s: string) => string
  /** Aborted: publish nothing more, and wait for what was published to be confirmed, up to settleTimeoutMs. */
  readonly signal?: AbortSignal
  /** Aborted: stop waiting for confirms now (a second Ctrl-C). */
  readonly abandon?: AbortSignal
  /** How long a stopped or failed run waits for the broker to confirm what it published (default 30 s). */
  readonly settleTimeoutMs?: number
}

/** What `vitrage-persistor replay` runs with: a window of 1,000 unconfirmed messages, pages of 2,000 events. */
export const defaultRepublishOptions = { maxInFlight: 1_000, pageSize: 2_000 } as const satisfies Partial<RepublishOptions>

export interface RepublishResult {
  readonly published: number
  /** Every event up to this id is confirmed by the broker (fromId when none was). */
  readonly lastConfirmedId: number
  /** Stopped on request before the end of the range. */
  readonly stopped: boolean
  /** Published but not confirmed when the run gave up waiting: a resume may publish these again. */
  readonly unconfirmed: number
  /**
   * Events published under a routing key that names another priority than theirs (`--routing-key
   * x.info` for an ERROR event): an oslo listener dispatches by the message's priority, so an
   * endpoint with only `info()` drops them.
   */
  readonly priorityMismatches: number
}

export type RepublishFailure = Failure & { readonly lastConfirmedId: number; readonly unconfirmed: number }

/** The notification body for a stored event (pure). */
export const notificationBody = (e: RawEvent): Buffer =>
  Buffer.from(
    encodeEnvelopeV2(
      encodeMessageText(
        { messageId: e.messageId, eventType: e.eventType, publisherId: e.publisherId, priority: e.priority, timestamp: formatOsloTimestamp(e.collectorTimestamp) },
        e.payloadText,
      ),
    ),
  )

/** oslo.messaging's priorities, in the lower case of its routing keys. */
const OSLO_PRIORITIES = new Set(['audit', 'debug', 'info', 'warn', 'error', 'critical', 'sample'])

/** The routing key of an event (pure). An event stored without a priority goes to `<topic>.info`. */
export const routingKeyOf = (route: RepublishRoute, e: Pick<RawEvent, 'priority'>): string =>
  'routingKey' in route ? route.routingKey : `${route.topic}.${(e.priority ?? 'info').toLowerCase()}`

/**
 * Whether an oslo listener on `routingKey` would drop the event: the key ends in a priority
 * other than the event's (pure; a key that names no priority says nothing).
 */
export const priorityMismatch = (routingKey: string, e: Pick<RawEvent, 'priority'>): boolean => {
  const suffix = routingKey.slice(routingKey.lastIndexOf('.') + 1)
  return OSLO_PRIORITIES.has(suffix) && (e.priority ?? '').toLowerCase() !== suffix
}

/*
 * The confirm window, as a state machine per published message: pending -> confirmed | failed.
 * Confirms arrive in publish order on one channel, so `lastConfirmedId` is the id before the
 * oldest message not confirmed. The first failure (a nack, a return, the channel closing) ends
 * the run; every wait (window space, the socket draining, the final settle) also ends when the
 * run is stopped and settleTimeoutMs has passed, or when it is abandoned, so a broker that
 * blocks publishing (a memory alarm) or stops answering cannot hold a stopped run for ever.
 */
export const republish = async (reader: RawEventReader, o: RepublishOptions): Promise<E.Either<RepublishFailure, RepublishResult>> => {
  requirePositiveInts('republish', { maxInFlight: o.maxInFlight, pageSize: o.pageSize })
  requireNonNegativeInts('republish', { fromId: o.fromId, toId: o.toId })
  const scrub = o.scrub ?? ((s: string) => s)
  const settleTimeoutMs = o.settleTimeoutMs ?? 30_000
  let lastConfirmedId = o.fromId
  let published = 0
  let lastId = o.fromId
  let priorityMismatches = 0
  let blocked: string | undefined
  // Published ids from `head` on, with their outcome; `dropped` entries were forgotten before index 0.
  const ids: number[] = []
  const outcome: Array<'pending' | 'confirmed'> = []
  let head = 0
  let dropped = 0
  let failed: { kind: Failure['kind']; message: string; code?: string; fromChannel?: boolean } | undefined
  let closeReason: string | undefined
  let drained = true
  let closed = false
  let wake: () => void = () => {}
  let changed = new Promise<void>((r) => (wake = r))
  const notify = (): void => {
    const w = wake
    changed = new Promise<void>((r) => (wake = r))
    w()
  }
  // Published and not confirmed (a failed one stays counted: it may or may not have arrived). Not
  // the window's length: after a failure, later messages may have been confirmed all the same.
  let pending = 0
  const unconfirmed = (): number => pending
  const advance = (): void => {
    while (head < ids.length && outcome[head] === 'confirmed') lastConfirmedId = ids[head++] as number
    // Forget what is settled, now and then, so the arrays stay as large as the window.
    if (head > 4096 && head * 2 > ids.length) {
      ids.splice(0, head)
      outcome.splice(0, head)
      dropped += head
      head = 0
    }
  }
  const progress = (): RepublishProgress => ({ lastId, published, confirmedId: lastConfirmedId, unconfirmed: unconfirmed(), blocked })
  // Giving up on confirms: settleTimeoutMs after a stop or a failure, or at once when abandoned.
  let givenUp = false
  let giveUpTimer: NodeJS.Timeout | undefined
  const giveUpIn = (ms: number): void => {
    if (giveUpTimer !== undefined || givenUp) return
    giveUpTimer = setTimeout(() => {
      givenUp = true
      notify()
    }, ms)
  }
  const onStop = (): void => {
    giveUpIn(settleTimeoutMs)
    notify()
  }
  const onAbandon = (): void => {
    givenUp = true
    notify()
  }
  o.signal?.addEventListener('abort', onStop)
  o.abandon?.addEventListener('abort', onAbandon)
  if (o.signal?.aborted === true) onStop()
  if (o.abandon?.aborted === true) onAbandon()
  const stopRequested = (): boolean => o.signal?.aborted === true
  // A read of the log the stop does not wait for (a table locked, a database that stopped
  // answering: only the statement timeout would end it); the caller closes the store.
  const whenStopped = whenAborted(o.signal)
  const unlessStopped = <T>(read: Promise<T>): Promise<T | typeof STOPPED> => Promise.race([read, whenStopped])
  const waitUntil = async (done: () => boolean): Promise<void> => {
    while (!done() && failed === undefined && !givenUp) await changed
  }
  const ticker = o.onProgress === undefined ? undefined : setInterval(() => o.onProgress?.(progress()), 1_000)
  ticker?.unref()
  const result = (kind: Failure['kind'], message: string, code?: string): E.Either<RepublishFailure, RepublishResult> =>
    E.left({ ...failure(kind, scrub(message), code), lastConfirmedId, unconfirmed: unconfirmed() })
  /** After a failure of our own (the log's, say): what was published is still confirmed, within the settle time. */
  const settleThen = async (kind: Failure['kind'], message: string, code?: string): Promise<E.Either<RepublishFailure, RepublishResult>> => {
    giveUpIn(settleTimeoutMs)
    await waitUntil(() => unconfirmed() === 0)
    return result(kind, message, code)
  }
  try {
    // A URL that is not one is configuration: fatal now, not a connection failure to retry.
    if (!isAmqpUrl(o.amqpUrl)) return result('fatal', 'the target broker URL is not an amqp:// or amqps:// URL', 'config')
    // Pruned before the replay began: said as such (the per-page check below would call it "during").
    if (reader.prunedBelow !== undefined) {
      const below = await reader.prunedBelow()()
      if (E.isLeft(below)) return E.left({ ...below.left, lastConfirmedId, unconfirmed: 0 })
      if (below.right > o.fromId + 1) {
        return result('rejected', `events ${o.fromId + 1} to ${below.right - 1} were pruned; they cannot be republished (start after event ${below.right - 1})`, 'pruned')
      }
    }
    // Stopped before anything was published: nothing to settle, so the stop does not wait for
    // the broker at all (one that stopped answering would hold each setup call until its
    // heartbeat gives up, minutes later).
    const stoppedBeforePublishing = (): E.Either<RepublishFailure, RepublishResult> =>
      E.right({ published: 0, lastConfirmedId, stopped: true, unconfirmed: 0, priorityMismatches: 0 })
    let connection: amqp.ChannelModel
    try {
      const connected = await connectUnlessStopped(o.amqpUrl, whenStopped)
      if (connected === STOPPED) return stoppedBeforePublishing()
      connection = connected
    } catch (e) {
      const c = classifyAmqpError(e)
      return result(c.kind, `cannot connect to the target broker: ${(e as Error).message}`, c.code)
    }
    // The broker's reason for closing (a deleted exchange: NOT_FOUND, a forced close) is what the
    // operator needs; the failing confirm itself only says that the channel closed.
    connection.on('error', (e: Error) => (closeReason ??= e.message))
    connection.on('blocked', (reason: string) => {
      blocked = reason || 'blocked'
      o.onProgress?.(progress())
    })
    connection.on('unblocked', () => {
      blocked = undefined
      o.onProgress?.(progress())
    })
    try {
      // The default exchange ('') always exists (and may not be declared, even passively).
      if (o.exchange !== '') {
        const check = await unlessStopped(connection.createChannel())
        if (check === STOPPED) return stoppedBeforePublishing()
        check.on('error', () => {})
        try {
          if ((await unlessStopped(check.checkExchange(o.exchange))) === STOPPED) return stoppedBeforePublishing()
          if ((await unlessStopped(check.close())) === STOPPED) return stoppedBeforePublishing()
        } catch (e) {
          const c = classifyAmqpError(e)
          if (c.code !== '404') return result(c.kind, `cannot check exchange ${JSON.stringify(o.exchange)} on the target broker: ${(e as Error).message}`, c.code)
          return result('fatal', `exchange ${JSON.stringify(o.exchange)} does not exist on the target broker; create it (or start the consumer that declares it) first`, c.code)
        }
      }
      const opened = await unlessStopped(connection.createConfirmChannel())
      if (opened === STOPPED) return stoppedBeforePublishing()
      const channel = opened
      channel.on('error', (e: Error) => (closeReason ??= e.message))
      channel.on('drain', () => {
        drained = true
        notify()
      })
      channel.on('close', () => {
        closed = true
        notify()
      })
      // Published `mandatory`: a message no queue takes comes back (a return, sent before its
      // confirm) instead of being confirmed and dropped. The first one stops the replay.
      let returned: string | undefined
      channel.on('return', (m: amqp.ConsumeMessage) => (returned ??= m.fields.routingKey))
      const publishOne = (event: RawEvent): void => {
        const key = routingKeyOf(o.route, event)
        if ('routingKey' in o.route && priorityMismatch(key, event)) priorityMismatches++
        const seq = dropped + ids.length
        pending++
        ids.push(event.id)
        outcome.push('pending')
        const ok = channel.publish(o.exchange, key, notificationBody(event), { ...OSLO_PUBLISH_PROPERTIES, mandatory: true }, (err) => {
          if (err === null || err === undefined) {
            if (returned !== undefined && failed === undefined) {
              failed = {
                kind: 'fatal',
                code: 'unroutable',
                message: `a message was returned unroutable: no queue is bound to exchange ${JSON.stringify(o.exchange)} for routing key ${JSON.stringify(returned)}`,
              }
            } else {
              outcome[seq - dropped] = 'confirmed'
              pending--
            }
          } else if (failed === undefined) {
            // The broker's reason may come after the failed confirm: it is read when reported.
            failed = { kind: 'transient', message: err.message, fromChannel: true }
          }
          advance()
          notify()
        })
        published++
        lastId = event.id
        // The socket's buffer is full: wait until it drains rather than queue more in memory.
        if (!ok) drained = false
      }
      let after = o.fromId
      let stopped = false
      pages: while (after < o.toId) {
        if (stopRequested()) {
          stopped = true
          break
        }
        const pageOptions = { toId: o.toId, ...(o.eventTypes ? { eventTypes: o.eventTypes } : {}) }
        // With the watermark of the page's own snapshot, a prune during the replay is seen exactly:
        // past `after + 1` then, events of the range were deleted before this page was read.
        const checkedOrStop = reader.readRawPageWithWatermark === undefined ? undefined : await unlessStopped(reader.readRawPageWithWatermark(after, o.pageSize, pageOptions)())
        if (checkedOrStop === STOPPED) {
          stopped = true
          break
        }
        const checked = checkedOrStop
        if (checked !== undefined && E.isLeft(checked)) return await settleThen(checked.left.kind, `reading the log failed: ${checked.left.message}`, checked.left.code)
        if (checked !== undefined && E.isRight(checked) && checked.right.prunedBelow > after + 1) {
          return await settleThen('rejected', `events ${after + 1} to ${checked.right.prunedBelow - 1} were pruned during the replay; they cannot be republished (the range is incomplete from event ${after + 1})`, 'pruned')
        }
        const pageOrStop = checked !== undefined && E.isRight(checked) ? E.right(checked.right.events) : await unlessStopped(reader.readRawPage(after, o.pageSize, pageOptions)())
        if (pageOrStop === STOPPED) {
          stopped = true
          break
        }
        const page = pageOrStop
        if (E.isLeft(page)) return await settleThen(page.left.kind, `reading the log failed: ${page.left.message}`, page.left.code)
        // A prune may run during a long replay (a follower's snapshots move the oldest one up). A
        // keyset read after it silently starts past the deleted events, so the watermark is read
        // after each page: past `after + 1`, with the page starting at or past it, the page may
        // have been read after the prune, and events of the range are gone. (A page holding ids
        // below the watermark was read before the prune, whole; the next page is checked then.)
        if (checked === undefined && reader.prunedBelow !== undefined) {
          const below = await reader.prunedBelow()()
          if (E.isLeft(below)) return await settleThen(below.left.kind, `reading the log failed: ${below.left.message}`, below.left.code)
          const first = page.right[0]?.id
          if (below.right > after + 1 && (first === undefined || first >= below.right)) {
            return await settleThen('rejected', `events ${after + 1} to ${below.right - 1} were pruned during the replay; they cannot be republished (the range is incomplete from event ${after + 1})`, 'pruned')
          }
        }
        if (page.right.length === 0) break
        for (const event of page.right) {
          if (stopRequested()) {
            stopped = true
            break pages
          }
          publishOne(event)
          await waitUntil(() => (drained || closed) && unconfirmed() < o.maxInFlight)
          if (failed !== undefined) break pages
          if (givenUp) {
            stopped = true
            break pages
          }
        }
        after = page.right.at(-1)?.id ?? o.toId
        o.onProgress?.(progress())
      }
      // What was published is confirmed (or the run gives up: stopped and settleTimeoutMs passed, or abandoned).
      if (stopped || stopRequested()) giveUpIn(settleTimeoutMs)
      await waitUntil(() => unconfirmed() === 0)
      o.onProgress?.(progress())
      if (failed !== undefined) return result(failed.kind, `publishing stopped: ${failed.fromChannel === true ? (closeReason ?? failed.message) : failed.message}`, failed.code)
      if (unconfirmed() > 0 && !stopRequested()) return result('transient', `the broker confirmed nothing more for ${settleTimeoutMs / 1000} s`)
      // A stop that came after the last publish, and the wait for it was kept, completed the range.
      return E.right({ published, lastConfirmedId, stopped: stopped || unconfirmed() > 0, unconfirmed: unconfirmed(), priorityMismatches })
    } catch (e) {
      const c = classifyAmqpError(e)
      return result(c.kind, `publishing stopped: ${closeReason ?? (e as Error).message}`, c.code)
    } finally {
      // Bounded: a broker that blocks us or stopped answering would hold the close as long as TCP does.
      await closeConnection(connection, Date.now() + 2_000)
    }
  } finally {
    if (ticker !== undefined) clearInterval(ticker)
    if (giveUpTimer !== undefined) clearTimeout(giveUpTimer)
    o.signal?.removeEventListener('abort', onStop)
    o.abandon?.removeEventListener('abort', onAbandon)
  }
}
