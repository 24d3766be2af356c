/**
 * `vitrage-persistor events`: the stored events themselves, for an operator asking "did message
 * X arrive, and as what?", "what happened between T1 and T2?" or watching the log as it grows.
 *
 * Ranges are log positions, the same points `graph --at` uses: `--since T` starts after the log's
 * position at T and `--until T` ends at it, so the graph at T1 plus the events listed between T1
 * and T2 is the graph at T2. Without a start it lists the newest events (like `tail`). JSON is one
 * event per line (a stream: `--follow` goes on printing), the payload exactly as stored.
 */
import { type RawEvent, redactUrl, waker } from '@vitrage-persistor/core'
import * as TE from 'fp-ts/lib/TaskEither.js'
import { Option } from 'commander'
import * as E from 'fp-ts/lib/Either.js'
import { type CommandInput, type CommandSpec, command, type Io, UsageError } from '../command.js'
import type { Config, SettingKey } from '../config.js'
import { chooseFormat, eventIdArg, formatOption, positiveIntArg, tableCell, timestampArg } from '../output.js'
import { openStore, orReport } from '../resources.js'
import { stopSignal } from '../signals.js'

const EVENTS_SETTINGS = ['databaseUrl'] as const
type EventsConfig = Config<(typeof EVENTS_SETTINGS)[number]>

const PAGE = 500
/** A follower wakes on each committed batch (LISTEN/NOTIFY) and polls this often besides. */
const FOLLOW_POLL_MS = 5_000
const UUID = /^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$/

/** One event as a JSON line, the payload spliced in as stored (jsonb's text: exact numbers). Pure. */
export const eventJsonLine = (e: RawEvent): string =>
  `{"id":${e.id},"message_id":${JSON.stringify(e.messageId)},"event_type":${JSON.stringify(e.eventType)},` +
  `"publisher_id":${JSON.stringify(e.publisherId)},"priority":${JSON.stringify(e.priority)},` +
  `"collector_timestamp":${JSON.stringify(e.collectorTimestamp)},"persisted_at":${JSON.stringify(e.persistedAt)},"payload":${e.payloadText}}\n`

const PAYLOAD_PREVIEW = 80

/** One event as a table line: fixed columns (a followed log prints as it comes), the payload cut short. Pure. */
export const eventTableLine = (e: RawEvent, idWidth: number): string => {
  // Cut before a high surrogate whose pair would be cut off (it would print as U+FFFD).
  const high = e.payloadText.charCodeAt(PAYLOAD_PREVIEW - 2)
  const cut = high >= 0xd800 && high <= 0xdbff ? PAYLOAD_PREVIEW - 2 : PAYLOAD_PREVIEW - 1
  const payload = e.payloadText.length > PAYLOAD_PREVIEW ? `${e.payloadText.slice(0, cut)}…` : e.payloadText
  return `${String(e.id).padStart(idWidth)}  ${e.collectorTimestamp}  ${tableCell(e.eventType).padEnd(38)}  ${e.messageId}  ${tableCell(payload)}\n`
}

export const eventTableHeader = (idWidth: number): string =>
  `${'id'.padStart(idWidth)}  ${'collector_timestamp'.padEnd(27)}  ${'event_type'.padEnd(38)}  ${'message_id'.padEnd(36)}  payload\n`

interface Range {
  /** Read after this id; undefined: the newest `limit` events. */
  readonly after: number | undefined
  /** Up to this id; undefined: the head (and on, with --follow). */
  readonly upTo: number | undefined
}

const rangeFlags = (o: Readonly<Record<string, unknown>>): { fromId?: number; toId?: number; since?: string; until?: string } => {
  if (o['fromId'] !== undefined && o['since'] !== undefined) throw new UsageError('use --from-id or --since, not both')
  if (o['toId'] !== undefined && o['until'] !== undefined) throw new UsageError('use --to-id or --until, not both')
  // 0 is taken as replay takes it (ids start at 1): a script computing `last + 1` from 0 works with both.
  const explicitFrom = eventIdArg('--from-id', o['fromId'])
  const fromId = explicitFrom === undefined ? undefined : Math.max(1, explicitFrom)
  const toId = eventIdArg('--to-id', o['toId'])
  const since = timestampArg('--since', o['since'])
  const until = timestampArg('--until', o['until'])
  if (explicitFrom !== undefined && toId !== undefined && toId < explicitFrom) throw new UsageError(`--to-id (${toId}) is below --from-id (${explicitFrom})`)
  if (since !== undefined && until !== undefined && until < since) throw new UsageError(`--until (${until}) is before --since (${since})`)
  if (o['follow'] === true && (toId !== undefined || until !== undefined)) throw new UsageError('--follow goes on past the head: not with --to-id or --until')
  return { ...(fromId !== undefined ? { fromId } : {}), ...(toId !== undefined ? { toId } : {}), ...(since !== undefined ? { since } : {}), ...(until !== undefined ? { until } : {}) }
}

const events = async (config: EventsConfig, input: CommandInput, io: Io): Promise<number> => {
  const o = input.options
  const messageId = o['messageId'] as string | undefined
  const types = o['eventType'] as string[] | undefined
  const follow = o['follow'] === true
  const format = chooseFormat(o, io)
  if (messageId !== undefined) {
    if (!UUID.test(messageId)) throw new UsageError(`--message-id: a message id is a UUID, got ${JSON.stringify(messageId)}`)
    for (const f of ['fromId', 'toId', 'since', 'until', 'eventType', 'limit', 'follow']) {
      if (o[f] !== undefined) throw new UsageError('--message-id names one event: not with a range, --event-type, --limit or --follow')
    }
  }
  const flags = rangeFlags(o)
  const limit = positiveIntArg('--limit', o['limit']) ?? 100

  const { store } = openStore(config.databaseUrl, 'vitrage-persistor events', 2)
  const stop = follow ? stopSignal() : undefined
  try {
    const what = 'events'
    let idWidth = 8
    const print = (batch: readonly RawEvent[]): void => {
      for (const e of batch) io.out(format === 'json' ? eventJsonLine(e) : eventTableLine(e, idWidth))
    }
    if (messageId !== undefined) {
      const found = await orReport(io, what, config.databaseUrl, TE.map((e: RawEvent | undefined) => e ?? null)(store.eventByMessageId(messageId.toLowerCase())))
      if (found === undefined) return 1
      if (found === null) {
        io.err(`vitrage-persistor events: no event is stored for message ${messageId.toLowerCase()}\n`)
        return 1
      }
      idWidth = String(found.id).length
      if (format === 'table') io.out(eventTableHeader(idWidth))
      print([found])
      return 0
    }
    // Range ends as ids (a time is the log's position at it), fixed now: a listing is one
    // consistent slice even while events are appended.
    const head = await orReport(io, what, config.databaseUrl, store.headId())
    if (head === undefined) return 1
    const positionAt = async (t: string): Promise<number | undefined> => orReport(io, what, config.databaseUrl, store.lastEventAtOrBefore(t))
    const range: Range = {
      after: flags.fromId !== undefined ? flags.fromId - 1 : flags.since !== undefined ? await positionAt(flags.since) : undefined,
      upTo: flags.toId ?? (flags.until !== undefined ? await positionAt(flags.until) : undefined),
    }
    if ((flags.since !== undefined && range.after === undefined) || (flags.until !== undefined && range.upTo === undefined)) return 1
    const upTo = Math.min(range.upTo ?? head, head)
    const readOptions = { toId: upTo, ...(types !== undefined ? { eventTypes: types } : {}) }
    let after = range.after ?? (await orReport(io, what, config.databaseUrl, store.tailStart(limit, readOptions)))
    if (after === undefined) return 1
    const pruned = await orReport(io, what, config.databaseUrl, store.prunedBelow())
    if (pruned === undefined) return 1
    if (after + 1 < pruned) io.err(`vitrage-persistor events: events below ${pruned} were pruned; listing from there\n`)
    // An empty range by time is worth a word: an event stored late with an earlier time (a dead
    // letter requeued hours later) moves the position for its time to its own id, so the events
    // stamped after it can fall outside every --since (review 45).
    if (flags.since !== undefined && after >= upTo && !follow) {
      io.err(
        `vitrage-persistor events: no event after the log's position at --since (event ${after})${flags.until !== undefined ? ` up to its position at --until (event ${upTo})` : ''}; positions go by id, so an event stored late with an earlier time (a requeued dead letter) moves the position for its time to its own id; --from-id/--to-id list by id\n`,
      )
    }
    idWidth = Math.max(2, String(upTo).length)
    if (format === 'table') io.out(eventTableHeader(idWidth))

    // The listing, in pages (memory bounded by the page, not the range): at most `limit`, but
    // for a followed log from a start, which prints everything from it. One row past the cap is
    // asked for, to say whether more are left.
    const cap = follow && range.after !== undefined ? Number.POSITIVE_INFINITY : limit
    // A stop during a long listing (--follow from an early id) ends it between two pages.
    let stopping = false
    void stop?.received.then(() => (stopping = true))
    let listed = 0
    for (;;) {
      if (stopping || io.outputClosed?.() === true) return 0
      const want = Math.min(PAGE, cap - listed + 1)
      const page: RawEvent[] | undefined = await orReport(io, what, config.databaseUrl, store.readRawPage(after, want, readOptions))
      if (page === undefined) return 1
      const shown = page.slice(0, cap - listed)
      print(shown)
      listed += shown.length
      if (shown.length > 0) after = (shown.at(-1) as RawEvent).id
      if (page.length > shown.length) {
        io.err(`vitrage-persistor events: more events after ${after} (--from-id ${after + 1}); at most ${limit} listed (--limit)\n`)
        break
      }
      if (page.length < want) break
    }
    if (!follow || stop === undefined) return 0

    // Following: whatever is appended after what was listed, as it is committed, until stopped.
    // A commit (or the stop) cuts the poll's sleep short; one that came during a read is
    // remembered, so the next read is not a poll interval late.
    after = Math.max(after, upTo)
    const { sleep, wake } = waker()
    let signalled = false
    const appended = store.onAppend(() => {
      signalled = true
      wake()
    })
    void stop.received.then(() => wake())
    try {
      for (;;) {
        // Between pages too: a long backlog read page after page does not hold a stop back.
        if (stopping || io.outputClosed?.() === true) return 0
        signalled = false
        const page = await store.readRawPage(after, PAGE, types !== undefined ? { eventTypes: types } : {})()
        // Retrying cannot fix a fatal one (the database dropped, rights revoked): say so and end.
        if (E.isLeft(page) && page.left.kind === 'fatal') {
          io.err(`vitrage-persistor events: ${redactUrl(config.databaseUrl)}: ${page.left.message}\n`)
          return 1
        }
        if (E.isLeft(page)) io.err(`vitrage-persistor events: ${page.left.message}; retrying\n`)
        else if (page.right.length > 0) {
          print(page.right)
          after = (page.right.at(-1) as RawEvent).id
          if (page.right.length === PAGE) continue
        }
        if (!signalled && !stopping) await sleep(FOLLOW_POLL_MS)
      }
    } finally {
      await appended.close()
    }
  } finally {
    stop?.release()
    await store.close()
  }
}

const collect = (value: string, previous: string[] = []): string[] => [...previous, value]

export const eventsCommands: readonly CommandSpec<SettingKey>[] = [
  command({
    path: ['events'],
    summary: 'list stored events (the newest by default; by id range, time range or message id); --follow prints new ones as they are stored',
    keys: EVENTS_SETTINGS,
    options: [
      new Option('--from-id <id>', 'from this event id (inclusive)'),
      new Option('--to-id <id>', 'up to this event id (inclusive)'),
      new Option('--since <time>', "after the log's position at this time (what `graph --at` shows)"),
      new Option('--until <time>', "up to the log's position at this time"),
      new Option('--event-type <type>', 'only this event type (repeatable)').argParser(collect),
      new Option('--message-id <uuid>', 'the event stored for this message'),
      new Option('--limit <n>', 'list at most n (default 100); without a start, the newest n (with --follow and a start: everything from it)'),
      new Option('--follow', 'then print events as they are stored, until SIGTERM/SIGINT'),
      formatOption(),
    ],
    action: events,
    claimsSignals: (input) => input.options['follow'] === true,
  }),
]
