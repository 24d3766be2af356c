/**
 * The EventStoreDB mirror (outbox style): reads the event log in id order from its own
 * checkpoint and appends each event to EventStoreDB, in order, exactly once.
 *
 * - ESDB event id = message_id, type = event_type, data = payload, metadata =
 *   {id, collector_timestamp, publisher_id}; one stream (`vitrage-events`) or one per event type
 *   (`vitrage-events-<event_type>`).
 * - Every append states the revision it expects (never `any`). A stream's revision and the last
 *   event id it holds are learnt from the stream itself (its last event's metadata.id) the first
 *   time the mirror writes to it after starting, or after any failure: events the stream already
 *   holds (appended before a crash that lost the checkpoint move) are skipped, so nothing is
 *   duplicated; and nothing is skipped, since the checkpoint only moves after EventStoreDB
 *   acknowledged every append of the page.
 * - A retried append after a lost acknowledgement carries the same ids at the same expected
 *   revision, which EventStoreDB treats as idempotent.
 * - Failures (server unavailable, wrong expected version: someone else wrote) forget what is
 *   known of the streams and retry with capped backoff. Ingest never waits for the mirror.
 *
 * States: reconciling (per stream, lazily) -> mirroring -> idle (caught up, waiting for an
 * append signal) -> mirroring ...; any failure -> backoff -> reconciling; close() -> closed.
 */
import {
  EventStoreDBClient,
  jsonEvent,
  NO_STREAM,
  type ResolvedEvent,
  StreamNotFoundError,
  WrongExpectedVersionError,
  type AppendExpectedRevision,
} from '@eventstore/db-client'
import {
  type AppendSignal,
  type BackoffPolicy,
  EventTypes,
  type CatchUpLoop,
  catchUpLoop,
  type CheckpointStore,
  type EventLogReader,
  type Failure,
  failure,
  requirePositiveInts,
  within,
  type Logger,
  silentLogger,
  type RawEvent,
  type StoredEvent,
} from '@vitrage-persistor/core'
import streamsGrpc from '@eventstore/db-client/generated/streams_grpc_pb.js'
import { divertingClientWarnings } from './connection-string.js'
import * as E from 'fp-ts/lib/Either.js'

export interface MirrorOptions {
  /** esdb:// or kurrentdb-style connection string. */
  readonly url: string
  /** One stream per event type instead of one stream. */
  readonly streamPerType: boolean
  readonly stream: string
  /** Checkpoint name in projection_checkpoint. */
  readonly checkpointName: string
  readonly pageSize: number
  /**
   * Pages whose appends may be awaiting EventStoreDB's acknowledgement at once. Each append
   * states its exact expected revision, computed from the appends before it, so a pipelined
   * append can only succeed after the ones before it did: the stream never gets a gap or a
   * reordering, whatever fails.
   */
  readonly pagesInFlight: number
  readonly idlePollMs: number
  /**
   * An append not acknowledged within this time counts as a failure (unavailable): a gRPC call
   * that died without a status must not hold the mirror forever. The same bound holds for the
   * reads that learn a stream's state and the server's features (a server that accepts
   * connections and never answers held the mirror at 'starting' for ever).
   */
  readonly appendTimeoutMs: number
  /**
   * close() waits this long for the step in progress and the client's disposal; calls a server
   * that never answers still holds are then abandoned (logged), not waited for.
   */
  readonly closeTimeoutMs: number
  readonly retry: BackoffPolicy
}

export const defaultMirrorOptions = (url: string): MirrorOptions => ({
  url,
  streamPerType: false,
  stream: 'vitrage-events',
  checkpointName: 'mirror-eventstore',
  pageSize: 500,
  pagesInFlight: 2,
  idlePollMs: 5_000,
  appendTimeoutMs: 60_000,
  closeTimeoutMs: 5_000,
  retry: { initialMs: 200, maxMs: 15_000 },
})

export interface MirrorProgress {
  /** Last event id mirrored (the checkpoint). */
  readonly position: number
  readonly head: number
  /** Events stored but not mirrored. */
  readonly lagEvents: number
  /** Age of the oldest event not yet mirrored (0 when caught up). */
  readonly lagSeconds: number
}

/**
 * What `/readyz` reports: `starting` until the first catch-up ends, `mirroring` while the last
 * one succeeded, `retrying` (with its failure) while the loop backs off.
 */
export type MirrorStatus =
  | { readonly state: 'starting' }
  | { readonly state: 'mirroring'; readonly position: number }
  | { readonly state: 'retrying'; readonly failure: Failure }

export interface MirrorDeps {
  readonly reader: EventLogReader
  readonly checkpoints: CheckpointStore
  readonly signal?: AppendSignal
  readonly logger?: Logger
  readonly onProgress?: (p: MirrorProgress) => void
  /** Removes secrets from messages. */
  readonly scrub?: (s: string) => string
}

/** An event as the mirror reads it: the payload parsed, or as the stored JSON text. */
type MirroredEvent = StoredEvent | RawEvent

/**
 * The event's data: the stored JSON text as UTF-8 bytes when the reader offers it (the workspace's
 * patch of the client sends such bytes as they are, see docs/mirror.md), else the parsed payload.
 * The cast is that patch's contract: the client's types know only JSON values.
 */
const dataOf = (e: MirroredEvent): Record<string, unknown> =>
  'payloadText' in e ? (Buffer.from(e.payloadText, 'utf8') as unknown as Record<string, unknown>) : e.payload

interface StreamState {
  /**
   * Revision of the stream's last event once every append started so far has landed (what the
   * next append expects); -1 for a stream that does not exist.
   */
  revision: bigint
  /** Highest log id the stream holds once every append started so far has landed. */
  lastId: number
}

/**
 * The stream holds a log event that the log no longer has at its id: the database was restored
 * or failed over behind the mirror, and the ids it lost are handed out again. Skipping them as
 * "already mirrored" would lose the new events; appending them would mix two histories.
 */
export const LOG_DIVERGED = 'log-diverged'
class LogDiverged extends Error {}

const expectedOf = (revision: bigint): AppendExpectedRevision => (revision < 0n ? NO_STREAM : revision)

/** The stream an event goes to (pure). */
export const streamOf = (options: Pick<MirrorOptions, 'stream' | 'streamPerType'>, eventType: string): string =>
  options.streamPerType ? `${options.stream}-${eventType}` : options.stream

/** gRPC UNAVAILABLE: during an outage the client reports it as UnavailableError first, then as plain gRPC errors. */
const isUnavailable = (e: unknown): boolean => (e as { code?: unknown }).code === 14 || (e as { type?: unknown }).type === 'unavailable'

export class EventStoreMirror {
  private readonly client: EventStoreDBClient
  private readonly options: MirrorOptions
  private readonly log: Logger
  /** Per stream, learnt once (reconcile) and then advanced as appends start. */
  private readonly streams = new Map<string, Promise<StreamState>>()
  /** The highest log id an append was started for since the streams were learnt. */
  private highestStarted = 0
  /** Pages take their expected revisions one after the other, in page order (see appendPage). */
  private assigning: Promise<unknown> = Promise.resolve()
  /**
   * Whether appends may overlap. The client (6.2.1) opens its BatchAppend call lazily, and two
   * appends started while it opens can reach the wire in either order: the exact revisions turn
   * that into a WrongExpectedVersion, never into a misordered stream, but it would cost a retry.
   * So after every (re)connection one append goes alone; once it is acknowledged, the call is
   * open and appends leave in the order they were started. Never on the Streams.Append path
   * (appendsKeepOrder).
   */
  private pipelined = false
  /**
   * Set as soon as an append fails, before the catch-up has seen it: appends not yet started
   * are then not started. The client keeps a failed BatchAppend call for a moment after its
   * error, and an append written to it then would never be answered.
   */
  private broken = false
  private closed = false
  private current: MirrorStatus = { state: 'starting' }
  private readonly loop: CatchUpLoop
  private closing: Promise<void> | undefined

  constructor(
    private readonly deps: MirrorDeps,
    options: Partial<MirrorOptions> & { url: string },
  ) {
    this.options = { ...defaultMirrorOptions(options.url), ...options }
    requirePositiveInts('EventStoreMirror', {
      pageSize: this.options.pageSize,
      pagesInFlight: this.options.pagesInFlight,
      idlePollMs: this.options.idlePollMs,
      appendTimeoutMs: this.options.appendTimeoutMs,
      closeTimeoutMs: this.options.closeTimeoutMs,
    })
    this.log = (deps.logger ?? silentLogger).child({ component: 'mirror-eventstore' })
    // The client prints some warnings itself, quoting the whole connection string (password
    // included): they go to the logger instead, which scrubs.
    this.client = divertingClientWarnings(
      () => EventStoreDBClient.connectionString(this.options.url),
      (warning) => this.log.warn({ warning }, 'EventStoreDB client: connection string'),
    )
    this.loop = catchUpLoop({
      step: async () => {
        const r = await this.catchUp()
        this.current = E.isRight(r) ? { state: 'mirroring', position: r.right } : { state: 'retrying', failure: r.left }
        return r
      },
      ...(deps.signal ? { signal: deps.signal } : {}),
      idlePollMs: this.options.idlePollMs,
      retry: this.options.retry,
      logger: this.log,
      what: 'mirroring',
    })
  }

  private scrub(text: string): string {
    return this.deps.scrub?.(text) ?? text
  }

  /**
   * Learns a stream's revision (of its last event) and the last log id it holds (from the
   * newest event the mirror wrote: metadata with a positive integer `id` and a
   * `collector_timestamp`). Events written by someone else are stepped over, with a warning.
   */
  private reconcile(stream: string): Promise<StreamState> {
    let state = this.streams.get(stream)
    if (state === undefined) {
      state = this.withTimeout(this.readStreamState(stream), `no answer to reading the state of ${stream}`)
      this.streams.set(stream, state)
    }
    return state
  }

  private async readStreamState(stream: string): Promise<StreamState> {
    let state: StreamState = { revision: -1n, lastId: 0 }
    let foreign = 0
    try {
      let revision: bigint | undefined
      scan: for (let from: bigint | 'end' = 'end'; ; ) {
        let last: bigint | undefined
        // Read to the end of each batch before looking at it: leaving the client's read iterator
        // early leaves its gRPC call open, and the client's dispose() then waits for it forever.
        const batch: ResolvedEvent[] = []
        for await (const resolved of this.client.readStream(stream, { direction: 'backwards', fromRevision: from, maxCount: 100 })) batch.push(resolved)
        for (const resolved of batch) {
          const e = resolved.event
          if (e === undefined) continue
          revision ??= e.revision
          last = e.revision
          const meta = e.metadata as { id?: unknown; collector_timestamp?: unknown } | undefined
          if (Number.isSafeInteger(meta?.id) && (meta?.id as number) > 0 && typeof meta?.collector_timestamp === 'string') {
            state = { revision, lastId: meta.id as number }
            await this.checkAgainstLog(stream, meta.id as number, e.id)
            break scan
          }
          foreign++
        }
        if (last === undefined || last === 0n) {
          if (revision !== undefined) state = { revision, lastId: 0 }
          break
        }
        from = last - 1n
      }
    } catch (err) {
      if (!(err instanceof StreamNotFoundError)) throw err
    }
    if (foreign > 0) this.log.warn({ stream, foreign }, 'the stream holds events the mirror did not write; appending after them')
    this.log.debug({ stream, revision: String(state.revision), lastId: state.lastId }, 'stream reconciled')
    return state
  }

  /**
   * Throws LogDiverged unless the log's event `id` is still message `messageId` (the ESDB event
   * id), or was pruned since. Checked once per stream whenever its state is learnt (at start,
   * after a failure): that is when the mirror decides what the stream already holds.
   */
  private async checkAgainstLog(stream: string, id: number, messageId: string): Promise<void> {
    if (this.deps.reader.tip === undefined) return
    const tip = await this.deps.reader.tip(id)()
    if (E.isLeft(tip)) throw new Error(tip.left.message)
    const found = tip.right.messageIdAtPosition
    if (found !== null && found.toLowerCase() === messageId.toLowerCase()) return
    if (found === null && tip.right.head >= id && this.deps.reader.prunedBelow !== undefined) {
      const below = await this.deps.reader.prunedBelow()()
      if (E.isLeft(below)) throw new Error(below.left.message)
      if (below.right > id) return // mirrored, then pruned: nothing to compare with
    }
    throw new LogDiverged(
      `EventStoreDB stream ${stream} holds log event ${id} (message ${messageId}), which the log no longer has ` +
        `(${found === null ? `no event ${id}; the newest stored is ${tip.right.head}` : `event ${id} is message ${found}`}): ` +
        'the PostgreSQL database was restored or failed over behind the mirror. Mirroring stops rather than skip the events ' +
        'that take those ids now or mix two histories in one stream: mirror into a new stream (--mirror-stream), or move this ' +
        'one aside in EventStoreDB (docs/operations.md, "Restore and failover")',
    )
  }

  /**
   * Whether appends started one after the other reach the server in that order: on the one
   * BatchAppend call (servers since 21.10), yes; with Streams.Append each append is its own call,
   * so no, and the mirror does not pipeline. `supports` is the client's own (protected) check of
   * the server's features, the one that picks the path; it is cached per connection.
   */
  private async appendsKeepOrder(): Promise<boolean> {
    const client = this.client as unknown as { supports: (method: unknown) => Promise<boolean> }
    return this.withTimeout(client.supports(streamsGrpc.StreamsService.batchAppend), "no answer to the server's features")
  }

  /** `call`, or an unavailable error (code 14) saying `what` after appendTimeoutMs. */
  private withTimeout<T>(call: Promise<T>, what: string): Promise<T> {
    let timer: NodeJS.Timeout | undefined
    const timeout = new Promise<never>((_, reject) => {
      timer = setTimeout(() => {
        const error = new Error(`${what} within ${this.options.appendTimeoutMs} ms`)
        reject(Object.assign(error, { code: 14 }))
      }, this.options.appendTimeoutMs)
    })
    call.catch(() => undefined) // settled late, after the timeout: nobody awaits it then
    return Promise.race([call, timeout]).finally(() => clearTimeout(timer))
  }

  /** One append at its exact expected revision; resolves once acknowledged at the expected end. */
  private async append(stream: string, events: readonly MirroredEvent[], expected: bigint): Promise<void> {
    const landed = expected + BigInt(events.length)
    try {
      const result = await this.withTimeout(
        this.client.appendToStream(
          stream,
          events.map((e) =>
            jsonEvent({
              id: e.messageId,
              type: e.eventType,
              data: dataOf(e),
              metadata: { id: e.id, collector_timestamp: e.collectorTimestamp, publisher_id: e.publisherId },
            }),
          ),
          { expectedRevision: expectedOf(expected) },
        ),
        `no acknowledgement of an append to ${stream}`,
      )
      // An idempotent retry answers with the revision of the same last event, so anything else
      // means the stream is not what this mirror believes: reconcile and retry.
      if (result.nextExpectedRevision !== landed) {
        throw new Error(`stream ${stream} is at revision ${result.nextExpectedRevision} after an append expected to end at ${landed}`)
      }
    } catch (e) {
      this.broken = true
      throw e
    }
  }

  /**
   * Starts the appends of a page (one per stream it touches) and resolves, with how many there
   * were, when EventStoreDB has acknowledged all of them. A page's expected revisions are
   * computed once the pages before it have computed theirs (the `assigning` chain) and each
   * append starts right after its revision is taken, so revisions follow page order even while
   * earlier appends are in flight. Until one append has been acknowledged on the connection
   * (`pipelined`), the appends go one at a time.
   */
  private appendPage(events: readonly MirroredEvent[]): Promise<number> {
    const byStream = new Map<string, MirroredEvent[]>()
    for (const e of events) {
      const s = streamOf(this.options, e.eventType)
      const list = byStream.get(s) ?? []
      list.push(e)
      byStream.set(s, list)
    }
    const started = this.assigning.then(async () => {
      const appends: Promise<void>[] = []
      for (const [stream, list] of byStream) {
        const state = await this.reconcile(stream)
        if (this.broken) throw new Error('not appended: an earlier append failed')
        const fresh = list.filter((e) => e.id > state.lastId)
        if (fresh.length === 0) continue
        const append = this.append(stream, fresh, state.revision)
        state.revision += BigInt(fresh.length)
        state.lastId = (fresh.at(-1) as MirroredEvent).id
        this.highestStarted = Math.max(this.highestStarted, state.lastId)
        appends.push(append)
        if (!this.pipelined) {
          await append
          this.pipelined = await this.appendsKeepOrder()
        }
      }
      return appends
    })
    this.assigning = started.catch(() => undefined)
    return started.then(async (appends) => (await Promise.all(appends)).length)
  }

  /**
   * Mirrors everything up to the log's current head; resolves with the checkpoint reached, or
   * the failure (after which the stream states are forgotten).
   */
  async catchUp(): Promise<E.Either<Failure, number>> {
    const head = await this.deps.reader.headId()()
    if (E.isLeft(head)) return head
    const start = await this.deps.checkpoints.checkpoint(this.options.checkpointName)()
    if (E.isLeft(start)) return start
    // Events past the checkpoint that retention already deleted can never be mirrored: say so
    // (the loop retries and logs it at error level) rather than skip them.
    if (this.deps.reader.prunedBelow !== undefined) {
      const below = await this.deps.reader.prunedBelow()()
      if (E.isLeft(below)) return below
      if (start.right + 1 < below.right) {
        // Stuck, not caught up: the lag goes on showing, from the checkpoint to the head, aged
        // by the oldest event not mirrored that is still stored.
        const first: E.Either<Failure, ReadonlyArray<{ readonly persistedAt: string }>> = await (this.deps.reader.readRawPage ?? this.deps.reader.readPage)(start.right, 1)()
        const oldest = E.isRight(first) ? first.right[0] : undefined
        this.deps.onProgress?.({
          position: start.right,
          head: head.right,
          lagEvents: Math.max(0, head.right - start.right),
          lagSeconds: oldest === undefined ? 0 : Math.max(0, (Date.now() - Date.parse(oldest.persistedAt)) / 1000),
        })
        return E.left(
          failure(
            'fatal',
            `events ${start.right + 1} to ${below.right - 1} were pruned before the mirror copied them; they cannot be mirrored (restore them from a backup, or accept the gap: vitrage-persistor checkpoint set ${this.options.checkpointName} --position ${below.right - 1})`,
            'pruned',
          ),
        )
      }
    }
    // The checkpoint only moves forward under a running mirror: below what it has appended, it
    // was moved back under it (the database restored or failed over, or by hand). And after a
    // (re)start or a failure every stream is learnt again, each checked against the log, not
    // only those the next pages touch (--stream-per-type: a stream may hold lost events of a
    // type that has none since).
    if (start.right < this.highestStarted) this.forgetStreams()
    if (this.streams.size === 0) {
      const streams = this.options.streamPerType ? Object.values(EventTypes).map((t) => streamOf(this.options, t)) : [this.options.stream]
      try {
        await Promise.all(streams.map((s) => this.reconcile(s)))
      } catch (e) {
        this.forgetStreams()
        return E.left(this.failureOf(e))
      }
    }
    const reader = this.deps.reader
    const range = { toId: head.right }
    const read = (from: number): Promise<E.Either<Failure, readonly MirroredEvent[]>> =>
      (reader.readRawPage ? reader.readRawPage(from, this.options.pageSize, range) : reader.readPage(from, this.options.pageSize, range))()
    this.broken = false
    // A pipeline: the next page is read while up to `pagesInFlight` pages await their
    // acknowledgements. The checkpoint moves over pages in order, each only after its own
    // appends were acknowledged, so a crash anywhere leaves the checkpoint at or behind what the
    // streams hold, and reconciling steps over the rest.
    let at = start.right
    let failed: Failure | undefined
    const inFlight: { to: number; acked: Promise<number> }[] = []
    const settleOldest = async (): Promise<void> => {
      const { to, acked } = inFlight.shift() as (typeof inFlight)[number]
      try {
        await acked
      } catch (e) {
        // Unavailable (an outage) or a wrong expected version (someone else wrote): both are
        // retried after reconciling the streams again.
        failed ??= this.failureOf(e)
      }
      if (failed !== undefined) return
      const moved = await this.deps.checkpoints.moveCheckpoint(this.options.checkpointName, at, to)()
      if (E.isLeft(moved)) failed = moved.left
      else at = to
    }
    let next = at < head.right ? read(at) : undefined
    while (next !== undefined && failed === undefined && !this.closed) {
      const page = await next
      next = undefined
      if (E.isLeft(page)) {
        failed = page.left
        break
      }
      const first = page.right[0]
      this.deps.onProgress?.({
        position: at,
        head: head.right,
        lagEvents: head.right - at,
        lagSeconds: first ? Math.max(0, (Date.now() - Date.parse(first.persistedAt)) / 1000) : 0,
      })
      const to = page.right.length < this.options.pageSize ? head.right : ((page.right.at(-1) as MirroredEvent).id)
      if (to < head.right) next = read(to)
      const acked = this.appendPage(page.right)
      acked.catch(() => undefined) // awaited by settleOldest
      inFlight.push({ to, acked })
      // (Until the connection's first append is acknowledged, appendPage itself sends one at a time.)
      if (inFlight.length >= this.options.pagesInFlight) await settleOldest()
    }
    // Nothing started here outlives catchUp(): in-flight appends, checkpoint moves, a read ahead.
    while (inFlight.length > 0) await settleOldest()
    await next
    if (failed !== undefined) {
      this.forgetStreams()
      this.pipelined = false
      return E.left(failed)
    }
    this.deps.onProgress?.({ position: at, head: head.right, lagEvents: Math.max(0, head.right - at), lagSeconds: 0 })
    return E.right(at)
  }

  private forgetStreams(): void {
    this.streams.clear()
    this.highestStarted = 0
  }

  /** An append's or a stream read's error as a failure: the log diverged is fatal, the rest transient. */
  private failureOf(e: unknown): Failure {
    if (e instanceof LogDiverged) return failure('fatal', e.message, LOG_DIVERGED)
    const code = e instanceof WrongExpectedVersionError ? 'wrong-expected-version' : isUnavailable(e) ? 'unavailable' : undefined
    return failure('transient', this.scrub(e instanceof Error ? e.message : String(e)), code)
  }

  /** The outcome of the latest catch-up (see MirrorStatus). */
  status(): MirrorStatus {
    return this.current
  }

  /** Mirrors until close(): catches up, waits for appends, retries failures with capped backoff. */
  start(): void {
    this.loop.start()
  }

  /**
   * Stops after the current page; disposes the client. Idempotent. Bounded by closeTimeoutMs:
   * a call to a server that never answers is abandoned, not waited for.
   */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.closed = true
      const deadline = Date.now() + this.options.closeTimeoutMs
      const stopped = await within(this.loop.close().then(() => true), this.options.closeTimeoutMs, false)
      const disposed = await within(this.client.dispose().then(() => true), Math.max(500, deadline - Date.now()), false)
      if (!stopped || !disposed) this.log.warn({ closeTimeoutMs: this.options.closeTimeoutMs }, 'EventStoreDB calls still unanswered at close; abandoned')
    })()
    return this.closing
  }
}
