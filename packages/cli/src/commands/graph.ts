/**
 * Entity-graph commands: `graph`, `snapshot create|list`, `prune`, `follow` (a warm standby),
 * and `replay --to-amqp` (republish history to a broker).
 */
import { type Failure, failure, redactUrl, within } from '@vitrage-persistor/core'
import { defaultRepublishOptions, republish, type RepublishProgress } from '@vitrage-persistor/ingest'
import {
  canonicalJson,
  captureGraphSnapshot,
  encodeGraphSnapshot,
  type FollowState,
  followGraph,
  GRAPH_SNAPSHOT_FORMAT,
  GRAPH_SNAPSHOT_FORMAT_CANONICAL,
  GRAPH_SNAPSHOT_KIND,
  type GraphAt,
  graphAt,
  type GraphTarget,
  summarize,
} from '@vitrage-persistor/projections'
import { pendingMigrations } from '@vitrage-persistor/store-postgres'
import { Option } from 'commander'
import * as E from 'fp-ts/lib/Either.js'
import * as TE from 'fp-ts/lib/TaskEither.js'
import { collectDefaultMetrics, Counter, Gauge, Registry } from 'prom-client'
import { type CommandInput, type CommandSpec, command, type Io, UsageError } from '../command.js'
import { type Config, type SettingKey, url } from '../config.js'
import { json, listenOrReport, sharedAnswer } from '../http.js'
import { stopSignal } from '../signals.js'
import { chooseFormat, eventIdArg, formatOption, positiveIntArg, printJson, printTable, timestampArg } from '../output.js'
import { startProgress } from '../progress.js'
import { DATABASE_WAIT_MS, openLoggedStore, openStore, orReport, unrecoverableDatabase } from '../resources.js'

const DB_SETTINGS = ['databaseUrl', 'logLevel'] as const
type DbConfig = Config<(typeof DB_SETTINGS)[number]>
const FOLLOW_SETTINGS = ['databaseUrl', 'logLevel', 'httpPort', 'httpHost'] as const
type FollowConfig = Config<(typeof FOLLOW_SETTINGS)[number]>

const report = (io: Io, what: string, databaseUrl: string, f: Failure): number => {
  io.err(`vitrage-persistor ${what}: ${redactUrl(databaseUrl)}: ${f.message}\n`)
  // A target past the head is a wrong flag value (exit 2 like any); the rest are the log's state.
  return f.code === 'beyond-head' ? 2 : 1
}

const targetOf = (o: Readonly<Record<string, unknown>>): GraphTarget => {
  const atEvent = o['atEvent']
  const at = o['at']
  if (atEvent !== undefined && at !== undefined) throw new UsageError('use --at-event or --at, not both')
  if (atEvent !== undefined) {
    return { eventId: eventIdArg('--at-event', atEvent) as number }
  }
  if (at !== undefined) return { timestamp: timestampArg('--at', at) as string }
  return 'head'
}

/** The graph at a target, with a progress bar while replaying. */
const buildGraph = async (io: Io, store: ReturnType<typeof openStore>['store'], target: GraphTarget, useSnapshots: boolean): Promise<E.Either<Failure, GraphAt>> => {
  const bar = startProgress(io, 'replaying the log, by event id')
  let base: number | undefined
  const r = await graphAt({ reader: store, snapshots: store, clock: store }, target, {
    useSnapshots,
    onProgress: (p) => {
      base ??= p.position - p.applied
      bar.update(p.position - base, p.target - base)
    },
  })
  bar.finish()
  if (E.isRight(r)) for (const u of r.right.unreadable) io.err(`vitrage-persistor: warning: passed over ${u.reason}\n`)
  return r
}

const graph = async (config: DbConfig, input: CommandInput, io: Io): Promise<number> => {
  const target = targetOf(input.options)
  const format = (input.options['format'] as string | undefined) ?? 'json'
  const { store } = openStore(config.databaseUrl, 'vitrage-persistor graph')
  try {
    const r = await buildGraph(io, store, target, input.options['snapshots'] !== false)
    if (E.isLeft(r)) return report(io, 'graph', config.databaseUrl, r.left)
    if (typeof target === 'object' && 'timestamp' in target && r.right.position === 0) {
      // The empty graph is right, and easily taken for a wrong answer: an alarm's time (the
      // payload's clock) asked of a log whose notifications were sent later.
      const first = await store.readPage(0, 1)()
      const event = E.isRight(first) ? first.right[0] : undefined
      if (event !== undefined) {
        io.err(
          `vitrage-persistor graph: no event was stored at or before ${target.timestamp}: the log starts with event ${event.id}, sent at ${event.collectorTimestamp}, so the graph then is empty (--at goes by the time a notification was sent, not by the times in its payload)\n`,
        )
      }
    }
    if (format === 'summary') {
      const s = summarize(r.right.graph)
      printJson(io, { position: r.right.position, snapshot: r.right.snapshot ?? null, ...s })
    } else {
      io.out(canonicalJson(r.right.graph, 'pretty'))
    }
    return 0
  } finally {
    await store.close()
  }
}

const snapshotCreate = async (config: DbConfig, input: CommandInput, io: Io): Promise<number> => {
  const target = targetOf(input.options)
  const keep = positiveIntArg('--keep', input.options['keep']) ?? 5
  const encoding = input.options['encoding'] ?? 'columnar'
  if (encoding !== 'columnar' && encoding !== 'canonical') throw new UsageError(`--encoding: columnar or canonical, got ${JSON.stringify(encoding)}`)
  const { store } = openStore(config.databaseUrl, 'vitrage-persistor snapshot')
  try {
    const r = await buildGraph(io, store, target, true)
    if (E.isLeft(r)) return report(io, 'snapshot create', config.databaseUrl, r.left)
    // Retention keeps the newest --keep by event id: one taken further back would be deleted at once.
    const existing = await orReport(io, 'snapshot create', config.databaseUrl, store.listSnapshots(GRAPH_SNAPSHOT_KIND))
    if (existing === undefined) return 1
    const newer = existing.filter((s) => s.eventId > r.right.position).map((s) => s.eventId)
    if (newer.length >= keep) {
      throw new UsageError(
        `a snapshot at event ${r.right.position} would be removed at once: --keep ${keep} keeps the newest ${keep}, and ${newer.length} are newer (at ${newer.sort((a, b) => a - b).join(', ')}); raise --keep to keep it`,
      )
    }
    const snapshot = await encodeGraphSnapshot(r.right.graph, r.right.position, encoding === 'canonical' ? GRAPH_SNAPSHOT_FORMAT_CANONICAL : GRAPH_SNAPSHOT_FORMAT)
    if (E.isLeft(snapshot)) {
      io.err(`vitrage-persistor snapshot create: ${snapshot.left}\n`)
      return 1
    }
    // Named by the message of its event: refused, and later passed over, once the log no longer
    // holds it (a restore or failover meanwhile).
    const at = await orReport(io, 'snapshot create', config.databaseUrl, store.tip(r.right.position))
    if (at === undefined) return 1
    const named = at.messageIdAtPosition === null ? snapshot.right : { ...snapshot.right, eventMessageId: at.messageIdAtPosition }
    const saved = await orReport(io, 'snapshot create', config.databaseUrl, store.saveSnapshot(named))
    if (saved === undefined) return 1
    const removed = await orReport(io, 'snapshot create', config.databaseUrl, store.retainSnapshots(GRAPH_SNAPSHOT_KIND, keep))
    // One snapshot per event id: taking it again replaces the one there (same id, new bytes).
    const replaced = existing.some((s) => s.eventId === saved.eventId)
    if (replaced) io.err(`vitrage-persistor snapshot create: replaced the snapshot at event ${saved.eventId}\n`)
    printJson(io, { snapshot: saved, replaced, removedOlder: removed ?? 0 })
    return 0
  } finally {
    await store.close()
  }
}

const snapshotList = async (config: DbConfig, input: CommandInput, io: Io): Promise<number> => {
  const { store } = openStore(config.databaseUrl, 'vitrage-persistor snapshot')
  try {
    const list = await orReport(io, 'snapshot list', config.databaseUrl, store.listSnapshots(GRAPH_SNAPSHOT_KIND))
    if (list === undefined) return 1
    if (chooseFormat(input.options, io) === 'json') printJson(io, list)
    else printTable(io, ['id', 'eventId', 'collectorTimestamp', 'createdAt', 'format', 'bytes', 'vertices', 'edges'], list.map((s) => ({ ...s, ...s.stats })))
    return 0
  } finally {
    await store.close()
  }
}

const prune = async (config: DbConfig, input: CommandInput, io: Io): Promise<number> => {
  const below = positiveIntArg('--below', input.options['below'])
  const { store, scrub } = openStore(config.databaseUrl, 'vitrage-persistor prune')
  try {
    // What prune may delete is decided by the database's functions, as the schema has them: one
    // not yet migrated to 0014 counted a snapshot of another history (review 60: this version's
    // prune said it did not count it, and the database deleted 333,580 events below it). Prune
    // runs as the schema's owner, who may migrate.
    const pending = await orReport(io, 'prune', config.databaseUrl, pendingMigrations(config.databaseUrl, scrub))
    if (pending === undefined) return 1
    if (pending.length > 0) {
      io.err(`vitrage-persistor prune: migrations ${pending.join(', ')} are pending: run \`vitrage-persistor migrate\` first (prune deletes by the schema's rules, and these change them); nothing was deleted\n`)
      return 1
    }
    // What limits this prune (event_prune takes the lowest): said with the result, so that a
    // prune that deletes nothing is explained (a stale reader's checkpoint holds it back for ever).
    const listed = await orReport(io, 'prune', config.databaseUrl, store.listSnapshots(GRAPH_SNAPSHOT_KIND))
    if (listed === undefined) return 1
    // A snapshot of another history (the event table restored without its snapshots) holds
    // nothing back: every reader passes it over (migration 0014).
    const foreign = await orReport(io, 'prune', config.databaseUrl, store.foreignSnapshots(GRAPH_SNAPSHOT_KIND))
    if (foreign === undefined) return 1
    const foreignIds = new Set(foreign.map((m) => m.id))
    const snapshots = listed.filter((m) => !foreignIds.has(m.id))
    if (foreign.length > 0) {
      io.err(
        `vitrage-persistor prune: not counting ${foreign.length} graph snapshot${foreign.length === 1 ? '' : 's'} (at event ${foreign.map((m) => m.eventId).join(', ')}) whose event the log no longer holds (the event table was restored or failed over without them; graph and follow pass them over; docs/operations.md, "Restore and failover")\n`,
      )
    }
    const before = await orReport(io, 'prune', config.databaseUrl, store.prunedBelow())
    if (before === undefined) return 1
    const checkpoints = await orReport(io, 'prune', config.databaseUrl, store.listCheckpoints())
    if (checkpoints === undefined) return 1
    // Only the schema's owner may delete events (docs/operations.md, roles): say so with the refusal.
    const asOwner = TE.mapLeft((f: Failure) => (f.code === '42501' ? { ...f, message: `${f.message}; prune runs as the schema's owner (the role that ran migrate), not as the service role` } : f))
    const deleted = await orReport(io, 'prune', config.databaseUrl, asOwner(store.prune(below)))
    if (deleted === undefined) return 1
    const limits = [
      ...(snapshots.length > 0 ? [{ at: Math.min(...snapshots.map((m) => m.eventId)), what: 'the oldest kept snapshot' }] : []),
      ...checkpoints.map((c) => ({ at: c.position + 1, what: `checkpoint ${c.name} (at event ${c.position}, moved ${c.updatedAt})`, checkpoint: c.name })),
      ...(below !== undefined ? [{ at: below, what: '--below' }] : []),
    ].sort((a, b) => a.at - b.at)
    const limit = limits[0]
    // A limit below what earlier prunes reached (a checkpoint left at 0) deletes nothing: said
    // so, rather than "below event 1".
    io.out(
      limit === undefined
        ? `deleted ${deleted} events\n`
        : limit.at < before
          ? `deleted ${deleted} events: events below ${before} were pruned before, and ${limit.what} stops this prune at event ${limit.at}\n`
          : `deleted ${deleted} events below event ${limit.at}: ${limit.what}\n`,
    )
    if (limit !== undefined && 'checkpoint' in limit && limit.at < (limits.find((l) => !('checkpoint' in l))?.at ?? Number.POSITIVE_INFINITY)) {
      const name = limit.checkpoint
      io.err(
        name === 'history' || name.startsWith('history/')
          ? `vitrage-persistor prune: the alarm-history projection (checkpoint ${name}) holds retention back: keep it running (run, or project history --follow); to retire it: vitrage-persistor checkpoint remove history --drop-history\n`
          : `vitrage-persistor prune: checkpoint ${name} holds retention back; if its reader no longer runs, remove it: vitrage-persistor checkpoint remove '${name.replaceAll("'", "'\\''")}'\n`,
      )
    }
    return 0
  } finally {
    await store.close()
  }
}

/**
 * How long the follower may go without moving while the log is ahead before it is not ready: a
 * catch-up moves with every change applied and an idle follower reads at least every 5 s, so
 * only a read that does not finish stays still this long.
 */
const STALL_MS = 15_000
/** How long a shutdown lets a snapshot being saved finish. */
const SNAPSHOT_WAIT_MS = 5_000
/** How old a /graph text may be served again while a tail is applied (see graphBody). */
const GRAPH_REUSE_MS = 1_000
const unanswered: E.Either<Failure, never> = E.left(failure('transient', `no answer within ${DATABASE_WAIT_MS} ms`))

const follow = async (config: FollowConfig, input: CommandInput, io: Io): Promise<number> => {
  const every = positiveIntArg('--snapshot-every', input.options['snapshotEvery'])
  const keep = positiveIntArg('--keep-snapshots', input.options['keepSnapshots']) ?? 5
  const stop = stopSignal()
  try {
    const { store, log } = openLoggedStore(config.databaseUrl, 'vitrage-persistor follow', 3, config.logLevel)
    const registry = new Registry()
    collectDefaultMetrics({ register: registry })
    const metrics = {
      position: new Gauge({ name: 'vitrage_persistor_graph_position', help: 'Last event id applied to the followed graph.', registers: [registry] }),
      vertices: new Gauge({ name: 'vitrage_persistor_graph_vertices', help: 'Vertices in the followed graph.', registers: [registry] }),
      edges: new Gauge({ name: 'vitrage_persistor_graph_edges', help: 'Edges in the followed graph.', registers: [registry] }),
      snapshot: new Gauge({ name: 'vitrage_persistor_graph_snapshot_position', help: 'Event id of the newest snapshot written.', registers: [registry] }),
      lag: new Gauge({
        name: 'vitrage_persistor_graph_lag_events',
        help: "Events stored past the followed graph's position (the head read at each scrape).",
        registers: [registry],
        async collect() {
          if (latest === undefined) return
          const head = await within(store.headId()(), DATABASE_WAIT_MS, unanswered)
          // Unknown, not the last value read: a follower cut off from its database showed 0.
          this.set(E.isRight(head) && latest !== undefined ? Math.max(0, head.right - latest.position) : Number.NaN)
        },
      }),
      readable: new Gauge({
        name: 'vitrage_persistor_graph_log_readable',
        help: '1 while the follower reads the log (its last read succeeded, the database answers within 2 s, and it has moved within 15 s when the log is ahead), else 0.',
        registers: [registry],
        async collect() {
          this.set((await unreadyBecause()) === undefined ? 1 : 0)
        },
      }),
      rebuilds: new Counter({
        name: 'vitrage_persistor_graph_rebuilds_total',
        help: 'Times the follower rebuilt its graph from the log: events it had applied were pruned, or are no longer in the log (database restored or failed over).',
        registers: [registry],
      }),
    }
    let latest: FollowState | undefined
    // The event id the shared graph is the state of, moved by each change a catch-up applies.
    let applied = 0
    // When the follower last moved (applied a change, or finished a read): a read that hangs
    // (a path to the database gone dead: the watch ends it after the statement timeout + 15 s;
    // a lock) while the log is ahead makes it not ready well before that.
    let movedAt = Date.now()
    let readFailing: Failure | undefined
    // Set while a rebuild runs: `latest` is then the graph of a log that no longer is.
    let rebuilding: string | undefined
    // Why the follower cannot keep its graph current: its reads fail, or the database does not
    // answer at all (a frozen server, a partition: a read in progress then just waits).
    // At most one ping a second, shared by every /readyz meanwhile (sharedAnswer).
    const databasePing = sharedAnswer(() => within(store.ping()(), DATABASE_WAIT_MS, unanswered), 1_000)
    const unreadyBecause = async (): Promise<string | undefined> => {
      if (readFailing !== undefined) return `reading the log fails: ${readFailing.message}`
      const ping = await databasePing()
      if (E.isLeft(ping)) return `the database: ${ping.left.message}`
      const still = Date.now() - movedAt
      // Not while rebuilding: that loads a snapshot and replays without reporting each change.
      if (latest === undefined || rebuilding !== undefined || still <= STALL_MS) return undefined
      // The head only when it has stood still that long (a failure to read it is the read's to report).
      const head = await within(store.headId()(), DATABASE_WAIT_MS, unanswered)
      return E.isRight(head) && head.right > applied
        ? `the follower has not moved for ${Math.round(still / 1000)} s at event ${applied} while the log is at ${head.right} (a read that does not finish)`
        : undefined
    }
    // The canonical text of the graph, made once per state (`applied` moves with every change,
    // the generation with a rebuild) and shared by every response: it took ~0.24 s and 16 MB a
    // request for 30,000 vertices, for each of as many requests as came.
    // While a tail is applied `applied` moves with every change, so each request encoded the
    // whole graph again (200,000 vertices: 69 MB and ~1.4 s with the event loop stopped, a poller
    // slowing the tail it watched; review 57): then a text up to GRAPH_REUSE_MS old is served
    // again, under the position it was made at. Once the tail is done, the state emitted is.
    let served: { readonly at: number; readonly generation: number; readonly body: Buffer; readonly madeAt: number } | undefined
    const graphBody = (state: FollowState): { readonly at: number; readonly body: Buffer } => {
      const reusable =
        served !== undefined &&
        served.generation === state.generation &&
        (served.at === applied || (applied > state.position && served.at >= state.position && Date.now() - served.madeAt < GRAPH_REUSE_MS))
      if (!reusable) served = { at: applied, generation: state.generation, body: Buffer.from(canonicalJson(state.graph, 'pretty')), madeAt: Date.now() }
      return served as NonNullable<typeof served>
    }
    // Listening before loading: a taken port fails at once, and /readyz says "loading" meanwhile.
    const listening = await listenOrReport(io, 'follow', config.httpPort, config.httpHost, {
      // The graph as it is now, with the event id it is the state of: while a long tail is
      // applied that is past `position` (which moves once the tail is read and checked), so
      // the header is what to compare with `graph --at-event` (review 44). Not while rebuilding:
      // the graph held then skipped pruned events or is of a log that no longer is.
      '/graph': () =>
        latest === undefined
          ? json(503, { status: 'loading' })
          : rebuilding !== undefined
            ? json(503, { status: 'rebuilding', reason: rebuilding })
            : ((b) => ({ status: 200, contentType: 'application/json', headers: { 'x-graph-position': String(b.at) }, body: b.body }))(graphBody(latest)),
      '/position': async () => {
        const head = await within(store.headId()(), DATABASE_WAIT_MS, unanswered)
        return json(200, {
          position: latest?.position ?? null,
          ...(latest !== undefined && applied > latest.position ? { applied } : {}),
          head: E.isRight(head) ? head.right : null,
          lag: latest && E.isRight(head) ? Math.max(0, head.right - latest.position) : null,
        })
      },
      '/metrics': async () => ({ status: 200, contentType: registry.contentType, body: await registry.metrics() }),
      '/healthz': () => json(200, { status: 'ok' }),
      '/readyz': async () => {
        if (latest === undefined) return json(503, { status: 'loading', position: null })
        if (rebuilding !== undefined) return json(503, { status: 'rebuilding', position: latest.position, reason: rebuilding })
        const reason = await unreadyBecause()
        return reason === undefined ? json(200, { status: 'ready', position: latest.position }) : json(503, { status: 'not ready', position: latest.position, reason })
      },
    })
    if (!listening.ok) {
      await store.close()
      return 1
    }
    const http = listening.server
    if (http) log.info({ port: http.port, host: config.httpHost }, 'http endpoint listening')
    if (await unrecoverableDatabase(io, 'follow', config.databaseUrl, store, stop.received)) {
      await http?.close()
      await store.close()
      return 1
    }
    const bar = startProgress(io, 'loading the graph, by event id')
    const follow$ = followGraph(
      { reader: store, snapshots: store, clock: store, signal: store },
      {
        logger: log,
        onInitialProgress: (p) => bar.update(p.applied, p.applied + (p.target - p.position)),
        onRead: (f) => {
          readFailing = f
          movedAt = Date.now()
        },
        onApplied: (position) => {
          applied = position
          movedAt = Date.now()
        },
        onRebuild: (reason) => {
          rebuilding =
            reason === 'pruned'
              ? 'events this follower had not applied were pruned; rebuilding from the newest snapshot'
              : 'the log no longer holds events this follower applied (restored or failed over); rebuilding from the log as it is'
        },
      },
    )
    // Counted from the newest stored snapshot, not from where this process loaded: a follower
    // restarted more often than every N events would otherwise never write one, and its load
    // (snapshot + tail) would grow with every restart. Unknown (the database failing): from 0,
    // so the first emission past N writes one.
    // Bounded, and not in a stop's way (a locked table held SIGTERM for the statement timeout).
    const stored = every === undefined ? E.right([]) : await Promise.race([within(store.listSnapshots(GRAPH_SNAPSHOT_KIND)(), DATABASE_WAIT_MS, unanswered), stop.received.then(() => unanswered)])
    let lastSnapshot = E.isRight(stored) ? Math.max(0, ...stored.right.map((m) => m.eventId)) : 0
    // The newest written, also by an earlier run (it read 0 until this run wrote one).
    if (lastSnapshot > 0) metrics.snapshot.set(lastSnapshot)
    let failedSaves = 0
    let snapshotting: Promise<void> = Promise.resolve()
    let saving = false
    let stopping = false
    let failed: (code: number) => void = () => {}
    const stopped = new Promise<number>((resolve) => {
      failed = resolve
    })
    // One snapshot at a time: while one is compressed and saved, later positions wait for it
    // (captured snapshots would otherwise pile up in memory); one that came due meanwhile is
    // taken when it is saved (review 44: a quiet log left the newest snapshot 3N events behind).
    // Taken only of an emitted state: between two emissions the graph may be part-way through
    // a tail not yet checked against retention.
    const maybeSnapshot = (s: FollowState): void => {
      if (every === undefined || s.position - lastSnapshot < every || saving) return
      const previous = lastSnapshot
      lastSnapshot = s.position
      saving = true
      // Captured now, synchronously: the graph moves on with the next events while this one
      // is compressed and saved in the background.
      const captured = captureGraphSnapshot(s.graph, s.position)
      const eventMessageId = s.messageId
      if (E.isLeft(captured)) {
        saving = false
        log.warn({ reason: captured.left }, 'snapshot not taken')
        return
      }
      let savedOk = false
      const compress = captured.right
      snapshotting = (async () => {
        try {
          // Saved only while the log still holds the event it was taken at.
          const snap = { ...(await compress()), ...(eventMessageId === undefined ? {} : { eventMessageId }) }
          const saved = await store.saveSnapshot(snap)()
          if (E.isLeft(saved)) return log.warn({ failure: saved.left }, 'snapshot not saved; trying again with the next event')
          savedOk = true
          metrics.snapshot.set(snap.eventId)
          const retained = await store.retainSnapshots(GRAPH_SNAPSHOT_KIND, keep)()
          if (E.isLeft(retained)) log.warn({ failure: retained.left, keep }, 'older snapshots not deleted; trying again with the next snapshot')
          log.info({ position: snap.eventId, bytes: snap.data.byteLength }, 'snapshot saved')
        } finally {
          // Not saved: due again with the next event once (a passing failure costs no more
          // than N events of tail); failing again, every N events as usual, so a lasting
          // failure (no INSERT right, a full disk) does not capture the graph on every batch.
          if (savedOk) failedSaves = 0
          else if (++failedSaves === 1) lastSnapshot = previous
          saving = false
          // Due meanwhile, and the graph is still the state emitted last (no tail part-applied):
          // now. Otherwise the emission that ends the tail takes it.
          if (savedOk && latest !== undefined && applied === latest.position && !stopping) maybeSnapshot(latest)
        }
      })()
    }
    const subscription = follow$.subscribe({
      next: (s) => {
        if (latest === undefined) {
          bar.finish()
          log.info({ position: s.position, vertices: s.graph.vertexCount }, 'graph loaded; following')
        }
        // Rebuilt below the last snapshot (the log lost what the follower had applied): count
        // from where it is now.
        if (s.position < lastSnapshot) lastSnapshot = s.position
        if (latest !== undefined && s.generation > latest.generation) metrics.rebuilds.inc(s.generation - latest.generation)
        rebuilding = undefined
        latest = s
        applied = s.position
        movedAt = Date.now()
        metrics.position.set(s.position)
        metrics.vertices.set(s.graph.vertexCount)
        metrics.edges.set(s.graph.edgeCount)
        maybeSnapshot(s)
      },
      // The follower retries what the log's failures; an error here is a defect: stop, non-zero.
      error: (e: unknown) => {
        log.error({ err: String(e) }, 'graph follower stopped')
        failed(1)
      },
    })
    const code = await Promise.race([stop.received.then(() => 0), stopped])
    stopping = true
    bar.finish()
    subscription.unsubscribe()
    // Bounded: a database that stopped answering held the exit for as long as it did.
    await within(snapshotting, SNAPSHOT_WAIT_MS, undefined)
    await http?.close()
    await store.close({ timeoutMs: DATABASE_WAIT_MS })
    // As run and project history say theirs (review 56: follow ended without a word).
    if (code === 0) log.info({ position: latest?.position ?? null, snapshot: lastSnapshot || null }, 'follow stopped')
    return code
  } finally {
    stop.release()
  }
}

const collect = (value: string, previous: string[] = []): string[] => [...previous, value]

/** Where a replay from `fromId` resumes, having had events up to `confirmedId` confirmed (pure). */
export const resumeHint = (confirmedId: number, fromId: number): string =>
  confirmedId < fromId ? `nothing confirmed yet (resume with --from-id ${fromId})` : `confirmed up to event ${confirmedId} (resume with --from-id ${confirmedId + 1})`

const REPLAY_SETTINGS = ['databaseUrl', 'logLevel', 'amqpUrl', 'shutdownTimeoutMs'] as const
type ReplayConfig = Config<(typeof REPLAY_SETTINGS)[number]>

/** Unconfirmed messages at most: each costs a callback, not its body, but the bound must be one. */
const MAX_IN_FLIGHT = 100_000

const replay = async (config: ReplayConfig, input: CommandInput, io: Io): Promise<number> => {
  const o = input.options
  const toAmqp = (o['toAmqp'] as string | undefined) ?? config.amqpUrl
  const toAmqpValid = url(['amqp:', 'amqps:'])(toAmqp)
  if (E.isLeft(toAmqpValid)) throw new UsageError(`--to-amqp: ${toAmqpValid.left}`)
  const exchange = o['exchange'] as string | undefined
  const routingKey = o['routingKey'] as string | undefined
  const toTopic = o['toTopic'] as string | undefined
  if (exchange === undefined || (routingKey === undefined) === (toTopic === undefined)) {
    throw new UsageError('--exchange is required, and one of --routing-key (every event under that key) or --to-topic (each under <topic>.<its priority>)')
  }
  const route = toTopic !== undefined ? { topic: toTopic } : { routingKey: routingKey as string }
  const maxInFlight = positiveIntArg('--max-in-flight', o['maxInFlight']) ?? defaultRepublishOptions.maxInFlight
  if (maxInFlight > MAX_IN_FLIGHT) throw new UsageError(`--max-in-flight: at most ${MAX_IN_FLIGHT.toLocaleString('en-US')}, got ${maxInFlight}`)
  // The range is inclusive at both ends: --from-id 5 --to-id 9 republishes events 5 to 9.
  const explicitFrom = eventIdArg('--from-id', o['fromId'])
  let fromId = Math.max(1, explicitFrom ?? 1)
  const requestedToId = positiveIntArg('--to-id', o['toId'])
  if (requestedToId !== undefined && fromId > requestedToId) throw new UsageError(`--from-id ${fromId} is after --to-id ${requestedToId}`)
  const { store, scrub } = openStore(config.databaseUrl, 'vitrage-persistor replay')
  const stop = stopSignal()
  // Ctrl-C or SIGTERM: publish nothing more, wait up to --shutdown-timeout-ms for the broker to
  // confirm what was published, say where to resume. A second one stops the wait.
  const stopping = new AbortController()
  const abandoning = new AbortController()
  let stoppedBy: NodeJS.Signals | undefined
  const again = (): void => abandoning.abort()
  let latest: RepublishProgress | undefined
  void stop.received.then((s) => {
    stoppedBy = s
    process.on('SIGTERM', again)
    process.on('SIGINT', again)
    stopping.abort()
    io.err(
      `vitrage-persistor replay: stopping (${s}): publishing nothing more, waiting up to ${config.shutdownTimeoutMs / 1000} s for the broker to confirm ${latest?.unconfirmed ?? 0} messages; ${s} again stops the wait\n`,
    )
  })
  // Before publishing, a stop does not wait for the log's answer (a locked table, a database that
  // stopped answering: only the statement timeout would end the read), nor reports its failure.
  const beforeStop = async <T>(read: TE.TaskEither<Failure, T>): Promise<T | undefined | 'stopped'> => {
    const r = await Promise.race([read(), stop.received.then(() => 'stopped' as const)])
    return r === 'stopped' ? r : orReport(io, 'replay', config.databaseUrl, TE.fromEither(r))
  }
  const stoppedBeforePublishing = (): number => {
    io.err(`vitrage-persistor replay: stopped by ${stoppedBy} before publishing anything (resume with --from-id ${fromId})\n`)
    return 1
  }
  try {
    const head = await beforeStop(store.headId())
    if (head === 'stopped') return stoppedBeforePublishing()
    if (head === undefined) return 1
    const prunedBelow = await beforeStop(store.prunedBelow())
    if (prunedBelow === 'stopped') return stoppedBeforePublishing()
    if (prunedBelow === undefined) return 1
    // Part of the range is gone: say so rather than republish the rest as if it were whole (a
    // resume hint followed after a prune). --allow-pruned takes what is stored.
    // Without --from-id the range starts at the first stored event; a --to-id below it names
    // only pruned events.
    if (requestedToId !== undefined && requestedToId < prunedBelow) {
      io.err(`vitrage-persistor replay: events below ${prunedBelow} were pruned: nothing of the range up to event ${requestedToId} is stored\n`)
      return 1
    }
    if (explicitFrom === undefined) fromId = Math.max(fromId, prunedBelow)
    if (fromId < prunedBelow) {
      if (o['allowPruned'] !== true) {
        io.err(
          `vitrage-persistor replay: events below ${prunedBelow} were pruned, so events ${fromId} to ${prunedBelow - 1} cannot be republished; pass --from-id ${prunedBelow} (or --allow-pruned) to republish what is stored from there\n`,
        )
        return 1
      }
      io.err(`vitrage-persistor replay: events below ${prunedBelow} were pruned; republishing what is stored from there (--allow-pruned)\n`)
      fromId = prunedBelow
    }
    const toId = Math.min(requestedToId ?? head, head)
    // A resume after the last run reached the head is not an error: it has nothing to do.
    if (fromId > toId) io.err(`vitrage-persistor replay: nothing to republish: the log ends at event ${head}\n`)
    const after = fromId - 1
    const bar = startProgress(io, 'republishing, by event id')
    let blocked: string | undefined
    const r = await republish(store, {
      signal: stopping.signal,
      abandon: abandoning.signal,
      settleTimeoutMs: config.shutdownTimeoutMs,
      amqpUrl: toAmqp,
      exchange,
      route,
      fromId: after,
      toId: Math.max(toId, after),
      ...(o['eventType'] !== undefined ? { eventTypes: o['eventType'] as string[] } : {}),
      maxInFlight,
      pageSize: defaultRepublishOptions.pageSize,
      // Where to resume is in every progress line: a replay killed without a word (kill -9, OOM)
      // is resumed from the last line logged instead of from the start.
      onProgress: (p) => {
        latest = p
        if (p.blocked !== blocked) {
          blocked = p.blocked
          io.err(
            blocked !== undefined
              ? `vitrage-persistor replay: the target broker blocks publishing (${blocked}); waiting, ${p.unconfirmed} messages not confirmed yet\n`
              : 'vitrage-persistor replay: the target broker takes messages again\n',
          )
        }
        const waiting = stoppedBy !== undefined ? `; stopping (${stoppedBy}), ${p.unconfirmed} messages to be confirmed` : blocked !== undefined ? '; the broker blocks publishing' : ''
        bar.update(p.lastId - after, toId - after, `${resumeHint(p.confirmedId, fromId)}${waiting}`)
      },
      scrub: (s) => scrub(s).replaceAll(toAmqp, redactUrl(toAmqp)),
    })
    bar.finish()
    if (E.isLeft(r)) {
      const pending = r.left.unconfirmed > 0 ? `; ${r.left.unconfirmed} published messages were not confirmed, and a resume may publish them again` : ''
      io.err(`vitrage-persistor replay: ${r.left.message}; ${resumeHint(r.left.lastConfirmedId, fromId)}${pending}\n`)
      return 1
    }
    const { published, lastConfirmedId, stopped, unconfirmed, priorityMismatches } = r.right
    printJson(io, {
      published,
      fromId,
      toId,
      lastConfirmedId,
      ...(stopped ? { stopped: stoppedBy } : {}),
      ...(unconfirmed > 0 ? { unconfirmed } : {}),
      ...(priorityMismatches > 0 ? { priorityMismatches } : {}),
    })
    if (published === 0 && fromId <= toId && o['eventType'] !== undefined && !stopped) {
      io.err(`vitrage-persistor replay: no event of type ${(o['eventType'] as string[]).map((t) => JSON.stringify(t)).join(' or ')} between ${fromId} and ${toId}\n`)
    }
    if (priorityMismatches > 0) {
      io.err(
        `vitrage-persistor replay: ${priorityMismatches} events were published under ${JSON.stringify(routingKey)} with another priority than the key names; an oslo.messaging listener dispatches by the message's priority and drops those its endpoints do not take (--to-topic <topic> routes each under <topic>.<its priority>, as oslo does)\n`,
      )
    }
    if (stopped) {
      const pending =
        unconfirmed > 0
          ? `; ${unconfirmed} published messages were not confirmed ${abandoning.signal.aborted ? 'when the wait was cut short' : `within ${config.shutdownTimeoutMs / 1000} s`} (the broker may still deliver them: a resume publishes them again)`
          : ''
      io.err(`vitrage-persistor replay: stopped by ${stoppedBy} before the end; ${resumeHint(lastConfirmedId, fromId)}${pending}\n`)
      return 1
    }
    return 0
  } finally {
    process.off('SIGTERM', again)
    process.off('SIGINT', again)
    stop.release()
    // Bounded: a read the stop left behind is cut off.
    await store.close({ timeoutMs: 2_000 })
  }
}

const at = [new Option('--at-event <id>', 'the state after this event id'), new Option('--at <time>', 'the state after the last event whose collector_timestamp <= time')]

export const graphCommands: readonly CommandSpec<SettingKey>[] = [
  command({
    path: ['graph'],
    summary: 'the entity graph (canonical JSON, byte-stable: docs/graph-and-history.md) or a summary, now or at a point in time',
    keys: DB_SETTINGS,
    options: [
      ...at,
      new Option('--format <format>', 'json (canonical) or summary (counts by vitrage_type and category)').choices(['json', 'summary']),
      new Option('--no-snapshots', 'replay from the first event instead of the nearest snapshot'),
    ],
    action: graph,
  }),
  command({
    path: ['snapshot', 'create'],
    summary: 'save a compressed snapshot of the graph (at the head, or at a point in time); keep the newest --keep',
    keys: DB_SETTINGS,
    options: [
      ...at,
      new Option('--keep <n>', 'snapshots to keep (default 5)'),
      new Option('--encoding <e>', 'columnar (default) or canonical (the format versions before 2026-11-30 read: for a rollback)'),
    ],
    action: snapshotCreate,
  }),
  command({ path: ['snapshot', 'list'], summary: 'list graph snapshots', keys: DB_SETTINGS, options: [formatOption()], action: snapshotList }),
  command({
    path: ['prune'],
    summary: 'delete events below the oldest kept graph snapshot (never past a projection checkpoint); explicit only',
    keys: DB_SETTINGS,
    options: [new Option('--below <id>', 'delete only below this id as well')],
    action: prune,
  }),
  command({
    path: ['follow'],
    summary: 'keep the graph warm (a standby): follow the log, serve /graph, /position and /metrics, snapshot periodically',
    keys: FOLLOW_SETTINGS,
    options: [new Option('--snapshot-every <n>', 'save a snapshot every n events'), new Option('--keep-snapshots <n>', 'snapshots to keep (default 5)')],
    action: follow,
    claimsSignals: () => true,
  }),
  command({
    path: ['replay'],
    summary: 'republish stored events in id order as oslo.messaging notifications (publisher confirms, bounded in flight)',
    keys: REPLAY_SETTINGS,
    options: [
      new Option('--to-amqp <url>', 'target broker (default: --amqp-url / AMQP_URL)'),
      new Option('--exchange <name>', 'target exchange (must exist)'),
      new Option('--routing-key <key>', 'every event under this routing key, e.g. vitrage_persistor.info'),
      new Option('--to-topic <topic>', 'each event under <topic>.<its priority in lower case>, as oslo.messaging routes it (instead of --routing-key)'),
      new Option('--from-id <id>', 'the first event id to republish (default: the first stored)'),
      new Option('--to-id <id>', 'the last event id to republish, inclusive (default: the head when starting)'),
      new Option('--event-type <type>', 'only this event type (repeatable)').argParser(collect),
      new Option('--max-in-flight <n>', 'unconfirmed messages at most (default 1000, at most 100,000)'),
      new Option('--allow-pruned', 'with a --from-id below the pruned watermark, republish what is stored from there instead of refusing'),
    ],
    action: replay,
    claimsSignals: () => true,
  }),
]
