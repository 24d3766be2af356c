/**
 * Republishing stored events to a broker, in id order, as oslo.messaging v2 notifications (same
 * message_id, event_type, publisher_id, priority and payload; the payload text byte for byte as
 * stored), so a standby vitrage-graph can be fed from history.
 *
 * Publisher confirms with a bounded window: at most `maxInFlight` messages are unconfirmed, and
 * the channel's write buffer is respected ('drain'), so memory is bounded whatever the range.
 * The result names the last id the broker confirmed: a failed run is resumed with
 * `--from-id <that id>`. The target exchange must exist; it is checked, never declared (it may
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
import { isAmqpUrl } from './amqp-shared.js'

/**
 * What republishing needs of the log: core's raw page read, not optional here; and, where the
 * log can be pruned, its watermark, so that a prune during the replay is seen (see republish).
 */
export type RawEventReader = Required<Pick<EventLogReader, 'readRawPage'>> & Pick<EventLogReader, 'prunedBelow' | 'readRawPageWithWatermark'>

export interface RepublishOptions {
  readonly amqpUrl: string
  readonly exchange: string
  readonly routingKey: string
  /** Start after this id. */
  readonly fromId: number
  /** Up to this id, inclusive. */
  readonly toId: number
  readonly eventTypes?: readonly string[]
  readonly maxInFlight: number
  readonly pageSize: number
  /** After each page: the last id read, how many were published, and the last id the broker confirmed. */
  readonly onProgress?: (p: { readonly lastId: number; readonly published: number; readonly confirmedId: number }) => void
  readonly scrub?: (s: string) => string
  /** Asked before each message: true stops publishing; what was published is still confirmed. */
  readonly stopRequested?: () => boolean
}

export interface RepublishResult {
  readonly published: number
  /** Last id confirmed by the broker (fromId when nothing was). */
  readonly lastConfirmedId: number
  /** Stopped on request before the end of the range. */
  readonly stopped: boolean
}

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

export const republish = async (reader: RawEventReader, o: RepublishOptions): Promise<E.Either<Failure & { readonly lastConfirmedId: number }, RepublishResult>> => {
  requirePositiveInts('republish', { maxInFlight: o.maxInFlight, pageSize: o.pageSize })
  requireNonNegativeInts('republish', { fromId: o.fromId, toId: o.toId })
  const scrub = o.scrub ?? ((s: string) => s)
  let lastConfirmedId = o.fromId
  let published = 0
  const fail = (kind: Failure['kind'], message: string, code?: string): E.Either<Failure & { lastConfirmedId: number }, RepublishResult> =>
    E.left({ ...failure(kind, scrub(message), code), lastConfirmedId })
  // A URL that is not one is configuration: fatal now, not a connection failure to retry.
  if (!isAmqpUrl(o.amqpUrl)) return fail('fatal', 'the target broker URL is not an amqp:// or amqps:// URL', 'invalid-url')
  let unroutableSeen = false
  // Pruned before the replay began: said as such (the per-page check below would call it "during").
  if (reader.prunedBelow !== undefined) {
    const below = await reader.prunedBelow()()
    if (E.isLeft(below)) return E.left({ ...below.left, lastConfirmedId })
    if (below.right > o.fromId + 1) {
      return fail('fatal', `events ${o.fromId + 1} to ${below.right - 1} were pruned; they cannot be republished (start after event ${below.right - 1})`, 'pruned')
    }
  }
  let connection: amqp.ChannelModel
  try {
    connection = await amqp.connect(o.amqpUrl, { timeout: 10_000 })
  } catch (e) {
    return fail('transient', `cannot connect to the target broker: ${(e as Error).message}`)
  }
  connection.on('error', () => {}) // reported through the failing publish or confirm
  try {
    const check = await connection.createChannel()
    check.on('error', () => {})
    try {
      await check.checkExchange(o.exchange)
      await check.close()
    } catch {
      return fail('fatal', `exchange ${JSON.stringify(o.exchange)} does not exist on the target broker; create it (or start the consumer that declares it) first`)
    }
    const channel = await connection.createConfirmChannel()
    channel.on('error', () => {})
    // Published `mandatory`: a message no queue takes comes back (a return, sent before its
    // confirm) instead of being confirmed and dropped. The first one stops the replay.
    let returned = false
    channel.on('return', () => {
      returned = true
    })
    const unroutable = (): Error =>
      new Error(`a message was returned unroutable: no queue is bound to exchange ${JSON.stringify(o.exchange)} for routing key ${JSON.stringify(o.routingKey)}`)
    let after = o.fromId
    let stopped = false
    // Ids published but not yet confirmed, in order: confirms arrive in publish order on one channel.
    const window: Array<Promise<number>> = []
    while (after < o.toId && !stopped) {
      const pageOptions = { toId: o.toId, ...(o.eventTypes ? { eventTypes: o.eventTypes } : {}) }
      // With the watermark of the page's own snapshot, a prune during the replay is seen exactly:
      // past `after + 1` then, events of the range were deleted before this page was read.
      const checked = reader.readRawPageWithWatermark === undefined ? undefined : await reader.readRawPageWithWatermark(after, o.pageSize, pageOptions)()
      if (checked !== undefined && E.isLeft(checked)) return E.left({ ...checked.left, lastConfirmedId })
      if (checked !== undefined && E.isRight(checked) && checked.right.prunedBelow > after + 1) {
        for (const p of window) lastConfirmedId = Math.max(lastConfirmedId, await p.catch(() => lastConfirmedId))
        return E.left({
          ...failure('fatal', `events ${after + 1} to ${checked.right.prunedBelow - 1} were pruned during the replay; they cannot be republished (the range is incomplete from event ${after + 1})`, 'pruned'),
          lastConfirmedId,
        })
      }
      const page = checked !== undefined && E.isRight(checked) ? E.right(checked.right.events) : await reader.readRawPage(after, o.pageSize, pageOptions)()
      if (E.isLeft(page)) return E.left({ ...page.left, lastConfirmedId })
      // A prune may run during a long replay (a follower's snapshots move the oldest one up). A
      // keyset read after it silently starts past the deleted events, so the watermark is read
      // after each page: past `after + 1`, with the page starting at or past it, the page may
      // have been read after the prune, and events of the range are gone. (A page holding ids
      // below the watermark was read before the prune, whole; the next page is checked then.)
      if (checked === undefined && reader.prunedBelow !== undefined) {
        const below = await reader.prunedBelow()()
        if (E.isLeft(below)) return E.left({ ...below.left, lastConfirmedId })
        const first = page.right[0]?.id
        if (below.right > after + 1 && (first === undefined || first >= below.right)) {
          for (const p of window) lastConfirmedId = Math.max(lastConfirmedId, await p.catch(() => lastConfirmedId))
          return E.left({
            ...failure('fatal', `events ${after + 1} to ${below.right - 1} were pruned during the replay; they cannot be republished (the range is incomplete from event ${after + 1})`, 'pruned'),
            lastConfirmedId,
          })
        }
      }
      if (page.right.length === 0) break
      for (const event of page.right) {
        if (o.stopRequested?.() === true) {
          stopped = true
          break
        }
        let ok = true
        const confirmed = new Promise<number>((resolve, reject) => {
          ok = channel.publish(o.exchange, o.routingKey, notificationBody(event), { ...OSLO_PUBLISH_PROPERTIES, mandatory: true }, (err) =>
            err ? reject(err) : returned ? ((unroutableSeen = true), reject(unroutable())) : resolve(event.id),
          )
        })
        // When the channel dies every pending confirm rejects at once; only the oldest is awaited.
        confirmed.catch(() => {})
        window.push(confirmed)
        published++
        // The socket's buffer is full: wait until it drains rather than queue more in memory.
        // (A channel that closes meanwhile never drains: its confirms reject instead.)
        if (!ok) {
          await new Promise<void>((resolve) => {
            const done = (): void => {
              channel.off('drain', done)
              channel.off('close', done)
              resolve()
            }
            channel.once('drain', done)
            channel.once('close', done)
          })
        }
        while (window.length >= o.maxInFlight) lastConfirmedId = Math.max(lastConfirmedId, await (window.shift() as Promise<number>))
      }
      if (stopped) break
      after = page.right.at(-1)?.id ?? o.toId
      o.onProgress?.({ lastId: after, published, confirmedId: lastConfirmedId })
    }
    for (const p of window) lastConfirmedId = Math.max(lastConfirmedId, await p)
    return E.right({ published, lastConfirmedId, stopped })
  } catch (e) {
    // Nothing bound for the routing key: retrying fails the same way until someone binds a queue.
    return unroutableSeen ? fail('fatal', `publishing stopped: ${(e as Error).message}`, 'unroutable') : fail('transient', `publishing stopped: ${(e as Error).message}`)
  } finally {
    await connection.close().catch(() => {})
  }
}
