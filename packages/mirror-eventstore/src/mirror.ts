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
  StreamNotFoundError,
  WrongExpectedVersionError,
  type AppendExpectedRevision,
} from '@eventstore/db-client'
import {
  type AppendSignal,
  type BackoffPolicy,
  type CatchUpLoop,
  catchUpLoop,
  type CheckpointStore,
  type EventLogReader,
  type Failure,
  failure,
  type Logger,
  silentLogger,
  type StoredEvent,
} from '@vitrage-persistor/core'
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
  readonly idlePollMs: number
  readonly retry: BackoffPolicy
}

export const defaultMirrorOptions = (url: string): MirrorOptions => ({
  url,
  streamPerType: false,
  stream: 'vitrage-events',
  checkpointName: 'mirror-eventstore',
  pageSize: 500,
  idlePollMs: 5_000,
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

export interface MirrorDeps {
  readonly reader: EventLogReader
  readonly checkpoints: CheckpointStore
  readonly signal?: AppendSignal
  readonly logger?: Logger
  readonly onProgress?: (p: MirrorProgress) => void
  /** Removes secrets from messages. */
  readonly scrub?: (s: string) => string
}

interface StreamState {
  /** Revision of the stream's last event (what the next append expects). */
  revision: AppendExpectedRevision
  /** Highest log id the stream holds. */
  lastId: number
}

/** The stream an event goes to (pure). */
export const streamOf = (options: Pick<MirrorOptions, 'stream' | 'streamPerType'>, eventType: string): string =>
  options.streamPerType ? `${options.stream}-${eventType}` : options.stream

/** gRPC UNAVAILABLE: during an outage the client reports it as UnavailableError first, then as plain gRPC errors. */
const isUnavailable = (e: unknown): boolean => (e as { code?: unknown }).code === 14 || (e as { type?: unknown }).type === 'unavailable'

export class EventStoreMirror {
  private readonly client: EventStoreDBClient
  private readonly options: MirrorOptions
  private readonly log: Logger
  private readonly streams = new Map<string, StreamState>()
  private closed = false
  private readonly loop: CatchUpLoop
  private closing: Promise<void> | undefined

  constructor(
    private readonly deps: MirrorDeps,
    options: Partial<MirrorOptions> & { url: string },
  ) {
    this.options = { ...defaultMirrorOptions(options.url), ...options }
    this.client = EventStoreDBClient.connectionString(this.options.url)
    this.log = (deps.logger ?? silentLogger).child({ component: 'mirror-eventstore' })
    this.loop = catchUpLoop({
      step: () => this.catchUp(),
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
  private async reconcile(stream: string): Promise<StreamState> {
    const known = this.streams.get(stream)
    if (known) return known
    let state: StreamState = { revision: NO_STREAM, lastId: 0 }
    let foreign = 0
    try {
      let revision: AppendExpectedRevision | undefined
      scan: for (let from: bigint | 'end' = 'end'; ; ) {
        let last: bigint | undefined
        for await (const resolved of this.client.readStream(stream, { direction: 'backwards', fromRevision: from, maxCount: 100 })) {
          const e = resolved.event
          if (e === undefined) continue
          revision ??= e.revision
          last = e.revision
          const meta = e.metadata as { id?: unknown; collector_timestamp?: unknown } | undefined
          if (Number.isSafeInteger(meta?.id) && (meta?.id as number) > 0 && typeof meta?.collector_timestamp === 'string') {
            state = { revision, lastId: meta.id as number }
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
    this.streams.set(stream, state)
    this.log.debug({ stream, revision: String(state.revision), lastId: state.lastId }, 'stream reconciled')
    return state
  }

  private async appendPage(events: readonly StoredEvent[]): Promise<void> {
    // Per stream, in id order; streams of one page are appended one after the other.
    const byStream = new Map<string, StoredEvent[]>()
    for (const e of events) {
      const s = streamOf(this.options, e.eventType)
      const list = byStream.get(s) ?? []
      list.push(e)
      byStream.set(s, list)
    }
    for (const [stream, list] of byStream) {
      const state = await this.reconcile(stream)
      const fresh = list.filter((e) => e.id > state.lastId)
      if (fresh.length === 0) continue
      const result = await this.client.appendToStream(
        stream,
        fresh.map((e) =>
          jsonEvent({
            id: e.messageId,
            type: e.eventType,
            data: e.payload,
            metadata: { id: e.id, collector_timestamp: e.collectorTimestamp, publisher_id: e.publisherId },
          }),
        ),
        { expectedRevision: state.revision },
      )
      state.revision = result.nextExpectedRevision
      state.lastId = (fresh.at(-1) as StoredEvent).id
    }
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
    let at = start.right
    while (at < head.right && !this.closed) {
      const page = await this.deps.reader.readPage(at, this.options.pageSize, { toId: head.right })()
      if (E.isLeft(page)) return page
      const first = page.right[0]
      this.deps.onProgress?.({
        position: at,
        head: head.right,
        lagEvents: head.right - at,
        lagSeconds: first ? Math.max(0, (Date.now() - Date.parse(first.persistedAt)) / 1000) : 0,
      })
      try {
        await this.appendPage(page.right)
      } catch (e) {
        this.streams.clear()
        // Unavailable (an outage) or a wrong expected version (someone else wrote): both are
        // retried after reconciling the streams again.
        const code = e instanceof WrongExpectedVersionError ? 'wrong-expected-version' : isUnavailable(e) ? 'unavailable' : undefined
        return E.left(failure('transient', this.scrub(e instanceof Error ? e.message : String(e)), code))
      }
      const to = page.right.length < this.options.pageSize ? head.right : ((page.right.at(-1) as StoredEvent).id)
      const moved = await this.deps.checkpoints.moveCheckpoint(this.options.checkpointName, at, to)()
      if (E.isLeft(moved)) {
        this.streams.clear()
        return moved
      }
      at = to
    }
    this.deps.onProgress?.({ position: at, head: head.right, lagEvents: Math.max(0, head.right - at), lagSeconds: 0 })
    return E.right(at)
  }

  /** Mirrors until close(): catches up, waits for appends, retries failures with capped backoff. */
  start(): void {
    this.loop.start()
  }

  /** Stops after the current page; disposes the client. Idempotent. */
  close(): Promise<void> {
    this.closing ??= (async () => {
      this.closed = true
      await this.loop.close()
      await this.client.dispose()
    })()
    return this.closing
  }
}
