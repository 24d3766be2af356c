/**
 * The PostgreSQL event store: owns one connection pool and exposes the operations other
 * packages need as TaskEithers whose errors are already classified.
 */
import type {
  AlarmRecord,
  AppendSignal,
  CheckpointStore,
  CausalEdge,
  DecodedMessage,
  EventLogReader,
  Failure,
  HistoryCommand,
  HistoryPartition,
  HistoryRangeResult,
  HistoryReader,
  HistoryStore,
  LogClock,
  LogEntry,
  Logger,
  LogTip,
  NewSnapshot,
  Snapshot,
  SnapshotMeta,
  SnapshotStore,
  StoredEvent,
} from '@vitrage-persistor/core'
import { failure, NOT_IN_LOG, parseTimeArgument, partitionCheckpoint, requireNonNegativeInts, requirePositiveInts, STORE_CLOSED, within } from '@vitrage-persistor/core'
import * as E from 'fp-ts/lib/Either.js'
import { pipe } from 'fp-ts/lib/function.js'
import * as TE from 'fp-ts/lib/TaskEither.js'
import pg from 'pg'
import { appendIsolating, type IsolatedAppendResult, type PreparedEvent, prepareEvent } from './append.js'
import { classifyPgError, databaseUrlProblem } from './classify.js'
import { dropConnection, END_WHEN_CLIENT_GONE, endWithin, keepIdleSession, PROBE_WHEN_SILENT, UNANSWERED, UnansweredQueryWatch } from './connection.js'
import { type CheckpointInfo, listCheckpoints, moveCheckpoint, raiseCheckpoint, readCheckpoint, registerCheckpoint, removeCheckpoint, setCheckpoint, settlePartitionCheckpoints } from './checkpoints.js'
import { applyHistory, resetHistory } from './history.js'
import { applyHistoryRange } from './history-range.js'
import { type AlarmQuery, alarmsById, causalEdges, countActiveAlarms, openAt, QueryError, queryAlarms } from './history-queries.js'
import { type Lease, tryLease } from './lease.js'
import { type AppendListener, listenForAppends } from './notifications.js'
import { type RawEvent, type ReadOptions, readEventByMessageId, readPage, readRawPage, tailStart } from './read.js'
import { StreamConsumerDefect, type StreamOptions, streamRange } from './stream.js'
import { foreignSnapshots, lastEventAtOrBefore, latestSnapshot, listSnapshots, prunedBelow, pruneEvents, retainSnapshots, retentionWatermark, saveSnapshot } from './snapshots.js'

// How long ending sessions left on the server may take (its statement; twice that in all).
const END_SESSIONS_MS = 5_000
// The session's own application_name (a database URL's application_name overrides the one given
// here, and the server may shorten or rewrite it), so the ender, on the same URL, compares alike.
const END_LEFT_SESSION = `SELECT pid, pg_terminate_backend(pid) AS ended FROM pg_stat_activity
WHERE pid = $1 AND application_name = current_setting('application_name') AND backend_type = 'client backend'
  AND state <> 'idle' AND pid <> pg_backend_pid()`
// Any appender's in this database (run, follow, history end-open; another instance's): $1 in
// milliseconds. An append's COPY (into event or its staging table, as append.ts words them)
// reading from its client.
const END_STUCK_APPENDS = `SELECT pid, pg_terminate_backend(pid) AS ended FROM pg_stat_activity
WHERE datname = current_database() AND backend_type = 'client backend' AND state = 'active' AND wait_event = 'ClientRead'
  AND (query LIKE 'COPY event (%' OR query LIKE 'COPY event\\_staging (%')
  AND query_start < now() - $1 * interval '1 millisecond' AND pid <> pg_backend_pid()`
// An append that waited for a lock until its statement or lock timeout.
const LOCK_WAIT_FAILURES = new Set(['57014', '55P03'])

export interface HeadEvent {
  readonly id: number
  readonly collectorTimestamp: string
  /** When PostgreSQL stored it. */
  readonly persistedAt: string
}

export interface EventStoreOptions {
  readonly connectionString: string
  /** Pool size. Ingest needs 2 (appends, health); keep it small: PostgreSQL allows ~100 in all. */
  readonly maxConnections?: number
  readonly applicationName?: string
  /** Server-side limit for one statement; a stuck append is cancelled and retried. */
  readonly statementTimeoutMs?: number
  /**
   * How long a query may go unanswered before its connection is dropped and the query fails
   * (transient): the server or the path to it is gone (connection.ts, UnansweredQueryWatch).
   * Default: the statement timeout + 15 s; 0 turns it off (the default without a statement
   * timeout, which nothing would then bound).
   */
  readonly unansweredQueryMs?: number
  readonly connectTimeoutMs?: number
  /** Removes secrets from driver messages. */
  readonly scrub?: (text: string) => string
  /** Errors on idle connections (server restart, network); the pool replaces the connection. */
  readonly onIdleError?: (failure: Failure) => void
  readonly logger?: Logger
}

/** A page's position and size (a limit of 0 read nothing and looked like the end of the log). */
const pageArguments = (call: string, afterId: number, limit: number): void => {
  requireNonNegativeInts(`PgEventStore.${call}`, { afterId })
  requirePositiveInts(`PgEventStore.${call}`, { limit })
}

/**
 * A time a caller asks about, in canonical UTC (core parseTimeArgument): PostgreSQL reads a naive
 * text in the session's TimeZone and words such as `yesterday` by its own rules, so the answer
 * depended on the URL's options. A malformed one is the caller's defect (a TypeError naming it).
 */
const timeArgument = (call: string, name: string, value: string): string => {
  const r = parseTimeArgument(String(value))
  if (E.isLeft(r)) throw new TypeError(`PgEventStore.${call}: ${name}: ${r.left}`)
  return r.right
}

export class PgEventStore implements EventLogReader, SnapshotStore, LogClock, AppendSignal, HistoryStore, HistoryReader, CheckpointStore {
  readonly pool: pg.Pool
  private readonly scrub: (text: string) => string
  private closing: Promise<void> | undefined
  /** LISTEN connections not ended yet (also those whose owner is closing them). */
  private readonly listeners = new Set<AppendListener>()
  /** The append listeners, each called once more at close(): a reader waiting for its next poll reads at once, meets store-closed, and stops. */
  private readonly wakeOnClose = new Set<() => void>()
  private readonly options: EventStoreOptions
  /** Clients checked out of the pool: a bounded close() ends the ones still busy. */
  private readonly busy = new Set<pg.PoolClient>()
  /** Every client the pool opened whose connection has not ended yet (see the constructor). */
  private readonly open = new Set<pg.PoolClient>()
  /** Connections ending sessions left on the server (endSessions): close() cuts them. */
  private readonly enders = new Set<pg.Client>()
  private closed = false
  /** When endStuckAppends last looked (performance.now()). */
  private stuckCheckedAt: number | undefined
  /** application_name of its sessions, as the server keeps it. */
  private readonly application: string
  /** Its sessions' statement_timeout in milliseconds (0: none). */
  private readonly statementMs: number
  private readonly unanswered: { readonly watch: UnansweredQueryWatch; readonly ms: number } | undefined
  /** Calls waiting for a connection, woken by close() (see withClient). */
  private readonly closeWaiters = new Set<() => void>()

  constructor(options: EventStoreOptions) {
    // Configuration, checked once: otherwise every call fails as an unreachable host, retried.
    const problem = databaseUrlProblem(options.connectionString)
    if (problem !== undefined) throw new TypeError(`PgEventStore: ${problem}`)
    this.options = options
    this.scrub = options.scrub ?? ((s) => s)
    this.application = (options.applicationName ?? 'vitrage-persistor').slice(0, 63)
    this.statementMs = options.statementTimeoutMs ?? 60_000
    // Every client is tracked from its creation until its connection has ended: the pool
    // forgets the ones it removes (idle too long, released broken, all of them at pool.end())
    // before the server acknowledges their goodbye, and does not list a connect in progress;
    // with a server that stopped answering, either would keep its socket open, and the process
    // alive, after a bounded close().
    const open = this.open
    class TrackedClient extends pg.Client {
      /** Why this client cannot connect, found as it was made (see the constructor). */
      private unusable: unknown
      constructor(config?: string | pg.ClientConfig) {
        // pg reads the URL's sslrootcert/sslcert/sslkey files as it makes a client, and throws
        // there: in the pool's queue (a client made for a waiting call) that throw escaped every
        // handler and ended the process (review 66: a file removed while the service ran). The
        // client is made without the URL instead, and its connect fails with the reason.
        let unusable: unknown
        try {
          super(config)
        } catch (e) {
          unusable = e
          super({ ...(typeof config === 'object' ? config : {}), connectionString: undefined, host: '/nonexistent' })
        }
        this.unusable = unusable
        open.add(this as unknown as pg.PoolClient)
        this.once('end', () => open.delete(this as unknown as pg.PoolClient))
      }

      override connect(): Promise<pg.Client>
      override connect(callback: ((err: Error) => void) | ((err: null, c: pg.Client) => void)): void
      override connect(callback?: ((err: Error) => void) | ((err: null, c: pg.Client) => void)): Promise<pg.Client> | undefined {
        if (this.unusable !== undefined) {
          const error = this.unusable as Error
          if (callback === undefined) return Promise.reject(error)
          process.nextTick(() => (callback as (err: Error) => void)(error))
          return undefined
        }
        if (callback === undefined) return super.connect()
        super.connect(callback)
        return undefined
      }
    }
    this.pool = new pg.Pool({
      Client: TrackedClient,
      connectionString: options.connectionString,
      max: options.maxConnections ?? 2,
      application_name: this.application,
      connectionTimeoutMillis: options.connectTimeoutMs ?? 5_000,
      statement_timeout: this.statementMs,
      // A transaction of ours is never idle for long (nothing external is awaited inside one):
      // one idle for twice the statement timeout lost its client behind a dead path, and the
      // server ends it rather than keep its locks (the history lock, checkpoint rows) until
      // its TCP gives up. 0 (none) with no statement timeout.
      idle_in_transaction_session_timeout: Math.max(0, 2 * this.statementMs),
      keepAlive: true,
      idleTimeoutMillis: 30_000,
    })
    this.pool.on('error', (e) => options.onIdleError?.(classifyPgError(e, this.scrub)))
    // The server probes a silent session (as a lease's, lease.ts): one its client left behind a
    // dead path, idle or waiting for COPY data, ends within ~25 s instead of at the OS's two-hour
    // keepalive, and does not hold a connection slot meanwhile (ignored on a Unix socket). Queued
    // before the client's first query; if it fails, that query reports why.
    this.pool.on('connect', (client) => {
      client.query(`SELECT ${PROBE_WHEN_SILENT}, ${END_WHEN_CLIENT_GONE}`).catch(() => {})
    })
    const unansweredMs = options.unansweredQueryMs ?? (this.statementMs > 0 ? this.statementMs + 15_000 : 0)
    this.unanswered =
      unansweredMs > 0
        ? {
            ms: unansweredMs,
            watch: new UnansweredQueryWatch(unansweredMs, () => this.busy, (client, ms) => {
              options.logger?.warn({ unansweredMs: ms }, 'the database has not answered a query; dropping its connection')
              this.endLeftSession(client)
            }),
          }
        : undefined
  }

  private withClient<T>(fn: (client: pg.PoolClient) => Promise<T>): TE.TaskEither<Failure, T> {
    return async () => {
      // A value, not pg's "Cannot use a pool after calling end": readers looping until closed
      // recognise it and stop (core STORE_CLOSED).
      if (this.closed) return E.left(failure('fatal', 'the event store is closed', STORE_CLOSED))
      const closedMeanwhile = (): E.Either<Failure, T> => E.left(failure('fatal', 'the event store is closed', STORE_CLOSED))
      // pg-pool never settles a connect() that an end() overtook (an idle client handed out on
      // the next tick, ended in between): without the race a call made just before close()
      // hung for ever, and with it whatever awaited it (a reader's loop, its owner's shutdown).
      // One waiter per call, dropped when the call settles: a handler on a promise that lives
      // until close() would be kept for every call (~650 bytes each, a leak of ~1 GB a day).
      // A TLS file the URL names that cannot be read fails the connect (TrackedClient), not here.
      const connecting = this.pool.connect()
      let onClose: () => void = () => {}
      const closedFirst = new Promise<{ closedFirst: true }>((resolve) => {
        onClose = () => resolve({ closedFirst: true })
      })
      this.closeWaiters.add(onClose)
      let raced: { client: pg.PoolClient } | { error: unknown } | { closedFirst: true }
      try {
        raced = await Promise.race([
          connecting.then(
            (c) => ({ client: c }),
            (e: unknown) => ({ error: e }),
          ),
          closedFirst,
        ])
      } finally {
        this.closeWaiters.delete(onClose)
      }
      if ('closedFirst' in raced) {
        connecting.then((c) => c.release(), () => {})
        return closedMeanwhile()
      }
      if ('error' in raced) return this.closed ? closedMeanwhile() : E.left(classifyPgError(raced.error, this.scrub))
      const client: pg.PoolClient = raced.client
      // A checked-out client emits 'error' when its connection dies between two queries (the
      // pool listens only to idle ones); unhandled, that would crash the process. The next
      // query then fails with "not queryable", which is classified and retried.
      let broken: unknown
      const onError = (e: unknown): void => {
        broken = e
      }
      client.on('error', onError)
      this.busy.add(client)
      try {
        const value = await fn(client)
        this.busy.delete(client)
        client.off('error', onError)
        client.release(broken as Error | undefined)
        return E.right(value)
      } catch (e) {
        this.busy.delete(client)
        client.off('error', onError)
        // A defect of the caller's code, not of the database: its connection (mid-COPY) is
        // dropped and the defect thrown, as defects are (not retried as a fatal Failure).
        if (e instanceof StreamConsumerDefect) {
          client.release(e)
          throw e.defect
        }
        const f = this.closed
          ? failure('fatal', 'the event store is closed', STORE_CLOSED)
          : this.unanswered?.watch.droppedIt(client)
            ? failure('transient', `the database did not answer a query for ${this.unanswered.ms / 1000} s (a frozen server, or a path that died under the connection); its connection was dropped`, UNANSWERED)
            : classifyPgError(e, this.scrub)
        // A connection that failed is not reused, unless the input was refused: a session can
        // carry what failed (read-only after a failover, a role's search_path or settings since
        // changed), and the pool keeps a busy connection for ever, so the retries would fail on it.
        client.release(f.kind !== 'rejected' || broken !== undefined ? ((broken ?? e) as Error) : undefined)
        return E.left(f)
      }
    }
  }

  /**
   * Ends on the server the session of a connection the watch dropped, when the server is still
   * there. A path that died without either side hearing of it (a NAT or firewall that forgot the
   * flow) leaves that session running: an append's waits for COPY data a query cancel cannot
   * interrupt (statement_timeout included), holding the event table's append lock, so every later
   * append times out behind it until the server's TCP gives up (retransmissions ~15 min, keepalive
   * ~2 h by default). Only that pid, of this application, not idle (an idle one holds nothing, and
   * its query did finish). Behind a pooler (PgBouncer) the pid is the pooler's, which no session
   * here has, or by chance another busy session of this application, whose query then fails and
   * is retried as any transient failure.
   */
  private endLeftSession(dropped: pg.PoolClient): void {
    const pid = (dropped as unknown as { processID?: unknown }).processID
    if (typeof pid !== 'number') return
    this.endSessions(END_LEFT_SESSION, [pid], 'ended the server session of a dropped connection')
  }

  /**
   * Ends appends stuck waiting for their COPY data for twice this store's statement timeout,
   * which they would have been cancelled by were they not reading from their client: sessions
   * left by a connection whose path died, this process's (dropped at a bounded close, before the
   * unanswered-query watch saw them), an earlier instance's or another appending command's. Each
   * holds the append lock (or soon would), so appends here time out behind it: called when one
   * does (statement or lock timeout), at most once per statement timeout. Sessions of this role
   * only, unless it may read and signal others' (pg_read_all_stats, pg_signal_backend).
   */
  private endStuckAppends(): void {
    const now = performance.now()
    if (this.statementMs <= 0 || (this.stuckCheckedAt !== undefined && now - this.stuckCheckedAt < this.statementMs)) return
    this.stuckCheckedAt = now
    this.endSessions(END_STUCK_APPENDS, [2 * this.statementMs], 'ended a session stuck in an append, waiting for COPY data from a client that is gone')
  }

  /**
   * Runs `query` (pid, ended) from a connection of its own, bounded, best effort; logs what it
   * ended, and a refusal (a role that may not end them) at warn. close() cuts it.
   */
  private endSessions(query: string, params: unknown[], ended: string): void {
    if (this.closed) return
    const ender = new pg.Client({
      connectionString: this.options.connectionString,
      application_name: this.application,
      connectionTimeoutMillis: this.options.connectTimeoutMs ?? 5_000,
      statement_timeout: END_SESSIONS_MS,
    })
    this.enders.add(ender)
    ender.once('end', () => this.enders.delete(ender))
    ender.on('error', () => {})
    const log = this.options.logger
    void within(
      (async () => {
        await ender.connect()
        return (await ender.query<{ pid: number; ended: boolean }>(query, params)).rows.filter((r) => r.ended).map((r) => r.pid)
      })().catch((e: unknown) => ({ failure: classifyPgError(e, this.scrub) })),
      2 * END_SESSIONS_MS,
      undefined,
    ).then((outcome) => {
      if (Array.isArray(outcome)) {
        if (outcome.length > 0) log?.warn({ pids: outcome }, ended)
      } else if (outcome !== undefined && outcome.failure.kind !== 'transient') {
        // Answered, and refused: the role may not see or signal those sessions.
        log?.warn({ failure: outcome.failure }, 'could not end a session left on the server by a client that is gone (see docs/operations.md: one login role for every instance)')
      } else {
        // The server did not answer, or not yet: an outage, reported as such elsewhere.
        log?.debug({ failure: outcome?.failure }, 'could not reach the database to end a session left on it')
      }
      void endWithin(ender, 1_000)
    })
  }

  /**
   * Runs `task` holding the session-level advisory lock `key` (waiting for it as long as it
   * takes), on a connection of its own outside the pool (no statement timeout): one-off
   * maintenance commands run one at a time. If that connection fails meanwhile the lock is gone:
   * the task's result is then a failure saying so (what it did stays done).
   */
  readonly exclusively =
    <T>(key: string, task: () => Promise<T>): TE.TaskEither<Failure, T> =>
    async () => {
      const client = new pg.Client({
        connectionString: this.options.connectionString,
        application_name: `${this.options.applicationName ?? 'vitrage-persistor'} lock`.slice(0, 63),
        connectionTimeoutMillis: this.options.connectTimeoutMs ?? 5_000,
      })
      let broken: unknown
      client.on('error', (e) => {
        broken ??= e
      })
      try {
        await client.connect()
        await keepIdleSession(client)
        // It waits as long as it takes, whatever the role or database sets (operations.md has
        // PgBouncer users set statement_timeout on the role). And as a lease does (lease.ts), the
        // server probes it when silent, so a holder behind a dead path frees the lock within ~25 s
        // rather than at the OS's two-hour keepalive (ignored on a Unix socket).
        await client.query(`SELECT set_config('statement_timeout', '0', false), set_config('lock_timeout', '0', false), ${PROBE_WHEN_SILENT}`)
        await client.query('SELECT pg_advisory_lock(1986622578, hashtext($1))', [key])
      } catch (e) {
        await client.end().catch(() => {})
        return E.left(classifyPgError(e, this.scrub))
      }
      try {
        const value = await task()
        if (broken !== undefined) return E.left(failure('transient', `the connection holding the lock failed while the command ran: ${this.scrub(String((broken as Error).message ?? broken))}`))
        return E.right(value)
      } finally {
        // Ending the session releases the lock.
        await client.end().catch(() => {})
      }
    }

  /** Takes lease `name` on a connection of its own if nobody holds it (lease.ts). */
  readonly tryLease = (name: string): Promise<E.Either<Failure, Lease | undefined>> => tryLease(this.options.connectionString, name, this.scrub)

  /** Encodes a message for `append` (pure; call it as messages arrive). */
  prepare(message: DecodedMessage): PreparedEvent {
    return prepareEvent(message)
  }

  /**
   * Appends a batch in one transaction; refused rows are isolated (see appendIsolating). The
   * messages at `copiesOnly` are only recognised, never stored (appendBatch).
   */
  append(batch: readonly PreparedEvent[], copiesOnly?: ReadonlySet<number>): TE.TaskEither<Failure, IsolatedAppendResult> {
    const appending = this.withClient((client) => appendIsolating(client, batch, this.scrub, copiesOnly))
    return async () => {
      const r = await appending()
      if (E.isLeft(r) && r.left.code !== undefined && LOCK_WAIT_FAILURES.has(r.left.code)) this.endStuckAppends()
      return r
    }
  }

  readonly readPage = (afterId: number, limit: number, options?: ReadOptions): TE.TaskEither<Failure, StoredEvent[]> => {
    pageArguments('readPage', afterId, limit)
    return this.withClient((client) => readPage(client, afterId, limit, options))
  }

  /** Streams a range with binary COPY (see stream.ts); the fast path for replays. */
  readonly streamRange = (afterId: number, toId: number, options: StreamOptions, onEntry: (entry: LogEntry) => void): TE.TaskEither<Failure, number> =>
    this.withClient((client) => streamRange(client, afterId, toId, options, onEntry))

  /** Like readPage, with each payload as its stored JSON text (for republishing it exactly). */
  readonly readRawPage = (afterId: number, limit: number, options?: ReadOptions): TE.TaskEither<Failure, RawEvent[]> => {
    pageArguments('readRawPage', afterId, limit)
    return this.withClient((client) => readRawPage(client, afterId, limit, options))
  }

  /** readRawPage and the pruned watermark from one snapshot (REPEATABLE READ, read only). */
  readonly readRawPageWithWatermark = (afterId: number, limit: number, options?: ReadOptions): TE.TaskEither<Failure, { events: RawEvent[]; prunedBelow: number }> => {
    pageArguments('readRawPageWithWatermark', afterId, limit)
    return this.withClient(async (client) => {
      await client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY')
      try {
        const below = await prunedBelow(client)
        const events = await readRawPage(client, afterId, limit, options)
        await client.query('COMMIT')
        return { events, prunedBelow: below }
      } catch (e) {
        await client.query('ROLLBACK').catch(() => {})
        throw e
      }
    })
  }

  /** The event stored for this message id (a UUID), or undefined. */
  readonly eventByMessageId = (messageId: string): TE.TaskEither<Failure, RawEvent | undefined> => this.withClient((c) => readEventByMessageId(c, messageId))

  /** The id to read after for the newest `n` events (of `eventTypes`, up to `toId`); 0 when fewer are stored. */
  readonly tailStart = (n: number, options?: ReadOptions): TE.TaskEither<Failure, number> => this.withClient((c) => tailStart(c, n, options))

  /** The highest stored id (0 when empty). */
  readonly headId = (): TE.TaskEither<Failure, number> =>
    this.withClient(async (c) => Number((await c.query<{ max: string | null }>('SELECT max(id) AS max FROM event')).rows[0]?.max ?? 0))

  /** The newest stored event's id and times (ISO, UTC), or undefined when none is stored. */
  readonly headEvent = (): TE.TaskEither<Failure, HeadEvent | undefined> =>
    this.withClient(async (c) => {
      const r = (
        await c.query<{ id: string; collector_timestamp: Date; persisted_at: Date }>('SELECT id, collector_timestamp, persisted_at FROM event ORDER BY id DESC LIMIT 1')
      ).rows[0]
      return r === undefined ? undefined : { id: Number(r.id), collectorTimestamp: r.collector_timestamp.toISOString(), persistedAt: r.persisted_at.toISOString() }
    })

  /**
   * The head and the message_id at `position`, in one statement (one snapshot of the log), so a
   * follower compares what it applied with what the log holds now.
   */
  readonly tip = (position: number): TE.TaskEither<Failure, LogTip> =>
    this.withClient(async (c) => {
      const r = (
        await c.query<{ id: string | null; message_id: string | null; at_position: string | null }>(
          `SELECT h.id, h.message_id, (SELECT message_id FROM event WHERE id = $1) AS at_position
           FROM (SELECT 1) AS one LEFT JOIN LATERAL (SELECT id, message_id FROM event ORDER BY id DESC LIMIT 1) AS h ON true`,
          [position],
        )
      ).rows[0]
      return { head: Number(r?.id ?? 0), headMessageId: r?.message_id ?? null, messageIdAtPosition: r?.at_position ?? null }
    })

  /**
   * A snapshot past the newest stored event is `rejected`, code `beyond-head` (once the log grew
   * past its id, graphAt would start from it and skip every event in between); one whose
   * `eventMessageId` is not the log's event at its id (past the head too) is `rejected`, code
   * `not-in-log`.
   */
  readonly saveSnapshot = (snapshot: NewSnapshot): TE.TaskEither<Failure, SnapshotMeta> =>
    pipe(
      this.withClient(async (c) => {
        // The head only grows (a restore is what not-in-log is for), so a check before the insert holds.
        const head = Number((await c.query<{ head: string }>('SELECT coalesce(max(id), 0) AS head FROM event')).rows[0]?.head ?? 0)
        // With its message, a snapshot past the head names a message the log does not hold: not-in-log.
        return snapshot.eventId > head && snapshot.eventMessageId === undefined ? { beyondHead: head } : await saveSnapshot(c, snapshot)
      }),
      TE.chain((saved) =>
        saved === undefined
          ? TE.left(failure('rejected', `snapshot at event ${snapshot.eventId} not saved: the log's event ${snapshot.eventId} is no longer message ${snapshot.eventMessageId ?? '?'} (the database was restored or failed over, or the event was pruned)`, NOT_IN_LOG))
          : 'beyondHead' in saved
            ? TE.left(failure('rejected', `snapshot at event ${snapshot.eventId} not saved: the newest stored event is ${saved.beyondHead}`, 'beyond-head'))
            : TE.right(saved),
      ),
    )

  readonly latestSnapshot = (kind: string, atOrBeforeEventId?: number): TE.TaskEither<Failure, Snapshot | undefined> =>
    this.withClient((c) => latestSnapshot(c, kind, atOrBeforeEventId))

  readonly listSnapshots = (kind: string): TE.TaskEither<Failure, SnapshotMeta[]> => this.withClient((c) => listSnapshots(c, kind))

  /** Snapshots whose event the log no longer holds (restored or failed over without them); see snapshots.ts. */
  readonly foreignSnapshots = (kind: string): TE.TaskEither<Failure, SnapshotMeta[]> => this.withClient((c) => foreignSnapshots(c, kind))

  readonly retainSnapshots = (kind: string, keep: number): TE.TaskEither<Failure, number> => this.withClient((c) => retainSnapshots(c, kind, keep))

  readonly lastEventAtOrBefore = (timestamp: string): TE.TaskEither<Failure, number> => {
    const at = timeArgument('lastEventAtOrBefore', 'timestamp', timestamp)
    return this.withClient((c) => lastEventAtOrBefore(c, at))
  }

  /** Deletes events below the oldest graph snapshot (and below every checkpoint); see migration 0003. */
  readonly prune = (below?: number): TE.TaskEither<Failure, number> => this.withClient((c) => pruneEvents(c, below))

  /** Every event with an id below this was deleted by `prune` (1 when none was). */
  readonly prunedBelow = (): TE.TaskEither<Failure, number> => this.withClient((c) => prunedBelow(c))

  /** The pruned watermark and the newest collector_timestamp a prune deleted (see retentionWatermark). */
  readonly retention = (): TE.TaskEither<Failure, { prunedBelow: number; prunedThrough: string | null }> => this.withClient((c) => retentionWatermark(c))

  readonly historyCheckpoint = (name: string): TE.TaskEither<Failure, number> => this.withClient((c) => readCheckpoint(c, name))

  /** The reader's checkpoint, registered at 0 on first use so that prune waits for it (checkpoints.ts). */
  readonly checkpoint = (name: string): TE.TaskEither<Failure, number> => this.withClient((c) => registerCheckpoint(c, name))

  /** Every registered checkpoint, slowest first (what holds `prune` back). */
  readonly listCheckpoints = (): TE.TaskEither<Failure, CheckpointInfo[]> => this.withClient((c) => listCheckpoints(c))

  /** An operator's move of checkpoint `name` to `position`: where it was, or undefined when there is none. */
  readonly setCheckpoint = (name: string, position: number): TE.TaskEither<Failure, number | undefined> =>
    pipe(
      this.withClient((c) => setCheckpoint(c, name, position)),
      TE.chainEitherK((r) =>
        'prunedBelow' in r
          ? E.left(failure('rejected', `events below ${r.prunedBelow} were pruned: a reader at ${position} would need events ${position + 1} to ${r.prunedBelow - 1}; ${r.prunedBelow - 1} is the lowest position it can take`, 'pruned'))
          : E.right('from' in r ? r.from : undefined),
      ),
    )

  /** Removes checkpoint `name` (retention stops waiting for it): where it was, or undefined. */
  readonly removeCheckpoint = (name: string): TE.TaskEither<Failure, number | undefined> => this.withClient((c) => removeCheckpoint(c, name))

  /**
   * Compare-and-set, never past the newest stored event (a transient 'checkpoint-past-head': the
   * log lost what the reader read); a conflict is a `rejected` failure with code 'checkpoint-conflict'.
   */
  readonly moveCheckpoint = (name: string, from: number, to: number): TE.TaskEither<Failure, void> => this.withClient((c) => moveCheckpoint(c, name, from, to, true))

  readonly applyHistory = (name: string, commands: readonly HistoryCommand[], from: number, to: number): TE.TaskEither<Failure, void> =>
    this.withClient((c) => applyHistory(c, name, commands, from, to))

  /** The range's plain events derived by PostgreSQL (history-range.ts), the others by `commandsFor`. */
  readonly applyHistoryRange = (
    name: string,
    from: number,
    to: number,
    commandsFor: (events: readonly StoredEvent[]) => readonly HistoryCommand[],
    partition?: HistoryPartition,
  ): TE.TaskEither<Failure, HistoryRangeResult> => this.withClient((c) => applyHistoryRange(c, name, from, to, commandsFor, partition))

  readonly resumeHistoryPartition = (name: string, partition: HistoryPartition): TE.TaskEither<Failure, number> =>
    this.withClient((c) => raiseCheckpoint(c, partitionCheckpoint(name, partition), name))

  readonly settleHistoryPartitions = (name: string, of: number): TE.TaskEither<Failure, number> =>
    this.withClient((c) => settlePartitionCheckpoints(c, name, Array.from({ length: of }, (_, index) => partitionCheckpoint(name, { index, of }))))

  /** Refused (`rejected`, code 'pruned', nothing changed) once events were pruned: the rebuild could not replay them. */
  readonly resetHistory = (name: string): TE.TaskEither<Failure, void> =>
    pipe(
      this.withClient((c) => resetHistory(c, name)),
      TE.chainEitherK((r) =>
        r === undefined
          ? E.right(undefined)
          : E.left(failure('rejected', `events below ${r.prunedBelow} were pruned: a rebuild from the log would lose the history they hold; the history tables are unchanged`, 'pruned')),
      ),
    )

  /** Empties the history tables and removes the projection's checkpoints: retention stops waiting for it. */
  readonly retireHistory = (name: string): TE.TaskEither<Failure, void> => this.withClient((c) => resetHistory(c, name, { retire: true }).then(() => undefined))

  /**
   * A query the arguments make impossible (an unknown marker, a malformed time, a limit below 1)
   * answers a QueryError: a `rejected` Failure (code 'invalid-query') that is also an Error.
   */
  readonly queryAlarms = (q: AlarmQuery): TE.TaskEither<Failure, AlarmRecord[]> => async () => {
    const r = await this.withClient((c) =>
      queryAlarms(c, q).then(E.right, (e: unknown) => {
        if (e instanceof QueryError) return E.left(e)
        throw e
      }),
    )()
    return E.isLeft(r) ? r : r.right
  }

  readonly openAt = (at: string): TE.TaskEither<Failure, { alarms: string[]; edges: Array<{ source: string; target: string; label: string }> }> => {
    const time = timeArgument('openAt', 'at', at)
    return this.withClient((c) => openAt(c, time))
  }

  readonly countActiveAlarms = (options: { now?: string; project?: string } = {}): TE.TaskEither<Failure, Record<string, number>> => {
    const now = options.now === undefined ? undefined : timeArgument('countActiveAlarms', 'now', options.now)
    return this.withClient((c) => countActiveAlarms(c, { ...options, ...(now !== undefined ? { now } : {}) }))
  }

  readonly causalEdges = (ids: readonly string[], direction: 'forward' | 'backward', at?: string): TE.TaskEither<Failure, CausalEdge[]> => {
    const time = at === undefined ? undefined : timeArgument('causalEdges', 'at', at)
    return this.withClient((c) => causalEdges(c, ids, direction, time))
  }

  readonly alarmsById = (ids: readonly string[], at?: string): TE.TaskEither<Failure, AlarmRecord[]> => {
    const time = at === undefined ? undefined : timeArgument('alarmsById', 'at', at)
    return this.withClient((c) => alarmsById(c, ids, time))
  }

  /** Wake-ups on append over a dedicated LISTEN connection; closed with the handle or the store. */
  readonly onAppend = (listener: () => void): { readonly close: () => Promise<void> } => {
    // A LISTEN connection opened after close() would have no owner and keep the process alive.
    if (this.closed) throw new Error('onAppend: the event store is closed')
    const handle = listenForAppends(
      { connectionString: this.options.connectionString, applicationName: `${this.application} listen`, ...(this.options.logger ? { logger: this.options.logger } : {}) },
      listener,
    )
    this.listeners.add(handle)
    this.wakeOnClose.add(listener)
    return {
      close: async () => {
        this.wakeOnClose.delete(listener)
        await handle.close()
        this.listeners.delete(handle)
      },
    }
  }

  ping(): TE.TaskEither<Failure, void> {
    return this.withClient(async (c) => void (await c.query('SELECT 1')))
  }

  /**
   * Ends the pool after in-flight queries finish. Idempotent. With `timeoutMs`, queries still
   * running then are cut off (their connections closed, so their transactions roll back): a
   * shutdown must not wait for an append stuck behind a lock until the statement timeout. Each
   * call's own `timeoutMs` counts: a later call with a deadline cuts short an earlier close that
   * had none ("graceful, then forced").
   */
  close(options: { readonly timeoutMs?: number } = {}): Promise<void> {
    const first = !this.closed
    this.closed = true
    for (const wake of this.closeWaiters) wake()
    // A follower or history loop closed under waited for its next poll (5 s by default, or its
    // pollMs: a minute) before it learnt; woken, its next read answers store-closed at once.
    if (first) for (const listener of this.wakeOnClose) queueMicrotask(listener)
    this.wakeOnClose.clear()
    // Best effort, and the server may not answer: a session left on it is ended by the next
    // appender's check instead (endStuckAppends).
    for (const ender of this.enders) dropConnection(ender)
    // The watch stays on until the pool has ended: a query that will never be answered would
    // otherwise hold an unbounded close() for ever.
    const ended = (this.closing ??= Promise.all([...[...this.listeners].map((l) => l.close()), this.pool.end().catch(() => {})]).then(() => this.unanswered?.watch.close()))
    if (options.timeoutMs === undefined) return ended
    const inTime = (ms: number): Promise<boolean> => within(ended.then(() => true), ms, false)
    const timeoutMs = options.timeoutMs
    return (async () => {
      if (await inTime(timeoutMs)) return
      // Busy connections (and, with a server that stopped answering, idle ones whose goodbye is
      // never acknowledged) are dropped; their transactions roll back on the server.
      this.options.logger?.warn({ busy: this.busy.size, timeoutMs }, 'database work still running at close; ending its connections')
      for (const c of new Set([...this.busy, ...this.open])) dropConnection(c)
      for (const l of this.listeners) l.drop()
      await inTime(1_000)
    })()
  }
}

