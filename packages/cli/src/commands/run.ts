/**
 * `run`: composes the persistor. Owns every long-lived resource it creates (event store pool,
 * persistor with its broker connection, HTTP server) and closes them in reverse order on
 * SIGTERM/SIGINT: stop consuming, flush and commit, ack, close. A second SIGINT exits at once
 * (unacked messages are redelivered; nothing is lost either way).
 */
import { backoffDelay, type Failure, failure, type Logger, makeScrubber, pastPrunedHistory, redactUrl, secretsOf, waker, within } from '@vitrage-persistor/core'
import { createIngestMetrics, defaultPersistorOptions, Persistor, type PersistorOptions } from '@vitrage-persistor/ingest'
import { INGEST_SCHEMA_VERSION, type MigrationState, migrationState, PgEventStore, setupDatabase } from '@vitrage-persistor/store-postgres'
import * as E from 'fp-ts/lib/Either.js'
import { HistoryRunner } from '@vitrage-persistor/projections'
import { collectDefaultMetrics, Registry } from 'prom-client'
import type { Config } from '../config.js'
import { countPage, createHistoryMetrics } from '../history-metrics.js'
import { json, listenOrReport, sharedAnswer } from '../http.js'
import { checkMirrorUrl, type RunningMirror, startMirror } from './mirror.js'
import { createLogger } from '../logger.js'
import { endHold } from '../signals.js'
import { DATABASE_WAIT_MS } from '../resources.js'
import type { CommandInput, Env, Io } from '../command.js'

/** The settings `run` takes. */
export const RUN_SETTINGS = [
  'amqpUrl',
  'databaseUrl',
  'exchange',
  'topic',
  'queue',
  'compatQueue',
  'amqpDurableQueues',
  'amqpQuorumQueues',
  'amqpAutoDelete',
  'amqpQuorumDeliveryLimit',
  'amqpQuorumMaxMemoryLength',
  'amqpQuorumMaxMemoryBytes',
  'prefetch',
  'batchSize',
  'batchMaxWaitMs',
  'maxMessageBytes',
  'httpPort',
  'httpHost',
  'shutdownTimeoutMs',
  'logLevel',
  'historyProjection',
  'mirrorUrl',
  'mirrorStreamPerType',
  'mirrorStream',
] as const

export type RunConfig = Config<(typeof RUN_SETTINGS)[number]>

const DATABASE_RETRY = { initialMs: 200, maxMs: 10_000 }
const LOCK_NOT_AVAILABLE = '55P03'
const MIGRATION_RETRY_MS = 30_000
const INSUFFICIENT_PRIVILEGE = '42501'


/**
 * Brings the schema up to date before consuming. Transient failures (database not up yet) are
 * retried; a fatal one (authentication, permissions) ends the program with its reason.
 *
 * Rolling upgrades under a least-privilege role: a service role may not apply migrations. When
 * every pending one is past what ingest needs (INGEST_SCHEMA_VERSION), run goes on ingesting and
 * says which are pending (the projections that need them fail and retry until `migrate` has run
 * as the schema owner); otherwise it stops with that instruction.
 */
const prepareDatabase = async (
  config: RunConfig,
  scrub: (s: string) => string,
  log: Logger,
  stop: AbortSignal,
  onRetry: (failure: Failure) => void,
): Promise<Failure | undefined> => {
  // A stop request (SIGTERM during start-up) cuts the retry wait short.
  const { sleep, wake } = waker()
  stop.addEventListener('abort', wake, { once: true })
  for (let attempt = 0; !stop.aborted; attempt++) {
    const state = await migrationState(config.databaseUrl, scrub, stop)()
    const pending = E.map((s: MigrationState) => s.pending)(state)
    // A newer version migrated this database (a rollback, or one running beside it): said once.
    if (E.isRight(state) && state.right.unknown.length > 0 && attempt === 0) {
      log.warn({ unknown: state.right.unknown }, 'the database has migrations this version does not know: a newer version applied them; running without what they add')
    }
    let failure: Failure | undefined
    if (E.isLeft(pending)) failure = pending.left
    else if (pending.right.length > 0) {
      log.info({ pending: pending.right }, 'applying migrations')
      const started = Date.now()
      const r = await setupDatabase(config.databaseUrl, scrub, {
        signal: stop,
        onLockWait: (w) => log.warn(w, 'a migration was not granted a lock within 2 s (a long transaction on its table: pg_dump, a report?); giving way to the table\'s readers and writers, then trying again'),
      })()
      // With how long they took: a migration waits its turn behind another instance's, and gives
      // way to long readers of the tables it changes (review 60: only "applying" was said).
      if (E.isRight(r)) log.info({ applied: r.right.applied, ms: Date.now() - started }, 'migrations applied')
      if (E.isLeft(r) && r.left.code === INSUFFICIENT_PRIVILEGE) {
        const ingestNeeds = pending.right.filter((name) => Number(name.slice(0, 4)) <= INGEST_SCHEMA_VERSION)
        if (ingestNeeds.length === 0) {
          log.warn(
            { pending: pending.right, failure: r.left },
            'this role may not apply the pending migrations; ingesting anyway (the event table is current); until they are applied prune refuses and the history projection and queries run on the older schema: run `vitrage-persistor migrate` as the schema owner',
          )
          return undefined
        }
        return { ...r.left, message: `migrations ${pending.right.join(', ')} are pending and this role may not apply them (${r.left.message}): run \`vitrage-persistor migrate\` as the schema owner first` }
      }
      if (E.isLeft(r)) failure = r.left
    }
    if (failure === undefined) return undefined
    // Stopped meanwhile: the attempt was cut off (its connection ended), not refused.
    if (stop.aborted) return undefined
    if (failure.kind !== 'transient') return failure
    // A migration that gave way to a long transaction several times already: not again at once
    // (review 61: retried 0.2 s later, for as long as the transaction ran).
    const delay = failure.code === LOCK_NOT_AVAILABLE ? MIGRATION_RETRY_MS : backoffDelay(DATABASE_RETRY, attempt)
    log.warn({ failure, retryInMs: delay }, failure.code === LOCK_NOT_AVAILABLE ? 'migrations not applied: their locks were not granted; retrying' : 'database not available; retrying')
    onRetry(failure)
    await sleep(delay)
  }
  return undefined
}

/** What closing may take past the shutdown deadline, all steps together. */
const CLOSE_GRACE_MS = 1_000


/** How often run checks the database for the `database_connected` gauge. */
const DATABASE_PROBE_MS = 5_000

export const runCommand = async (config: RunConfig, _input: CommandInput, io: Io, _env: Env): Promise<number> => {
  if (config.amqpQuorumQueues && config.amqpAutoDelete) {
    // RabbitMQ refuses an auto-delete quorum queue: the topology could never be declared.
    io.err('vitrage-persistor run: --amqp-quorum-queues with --amqp-auto-delete: RabbitMQ refuses auto-delete quorum queues (oslo.messaging fails to declare its queue with both set, too); set them as your oslo.messaging has them\n')
    return 2
  }
  const scrub = makeScrubber(secretsOf([config.amqpUrl, config.databaseUrl, config.mirrorUrl]))
  // A mirror URL the client cannot use stops run before anything starts (exit 2).
  if (config.mirrorUrl !== '' && !(await checkMirrorUrl('run', config.mirrorUrl, io, scrub))) return 2
  const log = createLogger(config.logLevel, scrub)
  log.info({ config: { ...config, amqpUrl: redactUrl(config.amqpUrl), databaseUrl: redactUrl(config.databaseUrl), mirrorUrl: redactUrl(config.mirrorUrl) } }, 'starting')
  if (config.prefetch < config.batchSize) {
    log.warn({ prefetch: config.prefetch, batchSize: config.batchSize }, 'prefetch is below batch size: batches close on time only; set prefetch to about twice the batch size')
  }
  // The broker drops these messages, out of the persistor's sight (docs/operations.md).
  if (config.compatQueue && config.amqpAutoDelete) {
    log.warn("oslo's queue is auto-delete (amqp_auto_delete): each stop or restart of the persistor deletes it with the messages waiting in it; the persistor's own queue (without --compat-queue) does not")
  }
  if (config.compatQueue && config.amqpQuorumQueues && config.amqpQuorumDeliveryLimit > 0) {
    log.warn({ deliveryLimit: config.amqpQuorumDeliveryLimit }, "oslo's quorum queue drops a message delivered more often than its delivery limit (it has no dead-letter exchange): each crash or restart while the persistor holds one counts; the persistor's own queue (without --compat-queue) has no limit")
  }

  let signalled: string | undefined
  let finish: (code: number) => void = () => {}
  const finished = new Promise<number>((r) => {
    finish = r
  })
  // Until the persistor runs, a stop request ends the start-up (its waits included).
  const startup = new AbortController()
  let shutdown: (reason: string, code: number) => void = (reason) => {
    signalled = reason
    log.info({ reason }, 'shutting down: nothing consumed yet')
    startup.abort()
  }
  const onSignal = (signal: NodeJS.Signals): void => {
    if (signalled !== undefined) {
      // A second Ctrl-C means "now". A repeated SIGTERM (a supervisor signalling the whole
      // process group, say) does not: the drain is bounded by --shutdown-timeout-ms anyway.
      if (signal !== 'SIGINT') return log.info({ signal }, 'already shutting down')
      log.warn({ signal }, 'second interrupt: exiting without waiting; unacked messages will be redelivered')
      process.exit(1)
    }
    shutdown(signal, 0)
  }
  process.on('SIGTERM', onSignal)
  process.on('SIGINT', onSignal)
  const stopListening = (): void => {
    process.off('SIGTERM', onSignal)
    process.off('SIGINT', onSignal)
  }

  const registry = new Registry()
  collectDefaultMetrics({ register: registry })
  const metrics = createIngestMetrics(registry)
  // Registered only where the projection runs: a position that never moves would read as a
  // projection stuck at 0 beside `project history` doing the work.
  // Set once the runner exists (a scrape may come before: the position is then unknown).
  let historyRunner: HistoryRunner | undefined
  const historyMetrics = config.historyProjection ? createHistoryMetrics(registry, () => running?.store, () => historyRunner?.position) : undefined
  // What /readyz says before the persistor exists: the database being prepared, and why not yet.
  let preparing = 'connecting'
  let running: { readonly store: PgEventStore; readonly persistor: Persistor; readonly ping: () => Promise<E.Either<Failure, void>> } | undefined
  // Listening first: a taken port fails at once, and while the database is not there yet a probe
  // sees the process alive (/healthz), not ready (/readyz, with the reason) and its metrics.
  const listening = await listenOrReport(io, 'run', config.httpPort, config.httpHost, {
    '/metrics': async () => ({ status: 200, contentType: registry.contentType, body: await registry.metrics() }),
    '/healthz': () => json(200, { status: 'ok' }),
    '/readyz': async () => {
      if (running === undefined) return json(503, { status: 'starting', checks: { broker: 'not started', database: preparing } })
      const { persistor } = running
      const database = await running.ping()
      // The database may answer a ping and still refuse every append (a missing table, revoked
      // rights): held batches then make the persistor not ready, with the append's reason.
      const appending = persistor.appendFailure
      const checks = {
        broker: persistor.consuming ? 'ok' : persistor.brokerProblem === undefined ? persistor.currentState : `${persistor.currentState}: ${persistor.brokerProblem}`,
        database: E.isRight(database) ? (appending === undefined ? 'ok' : `append failing (${appending.kind}): ${appending.message}`) : database.left.message,
      }
      const ready = checks.broker === 'ok' && checks.database === 'ok'
      return json(ready ? 200 : 503, { status: ready ? 'ready' : 'not ready', checks })
    },
  })
  if (!listening.ok) {
    stopListening()
    return 1
  }
  const http = listening.server
  if (http) log.info({ port: http.port, host: config.httpHost }, 'http endpoint listening')
  // A signal held while the program was loading (signals.ts) is ours now.
  const held = endHold()
  if (held !== undefined) onSignal(held)

  const prepared = await prepareDatabase(config, scrub, log, startup.signal, (f) => {
    preparing = f.message
  })
  if (prepared !== undefined || signalled !== undefined) {
    if (prepared !== undefined) {
      io.err(`vitrage-persistor run: database ${redactUrl(config.databaseUrl)}: ${prepared.message}\n`)
      log.error({ failure: prepared }, 'cannot prepare the database')
    }
    await http?.close()
    stopListening()
    if (prepared === undefined) log.info({ reason: signalled }, 'stopped')
    return prepared === undefined ? 0 : 1
  }

  const store = new PgEventStore({
    connectionString: config.databaseUrl,
    // appends, the history projection, readiness checks
    maxConnections: 3,
    logger: log,
    applicationName: 'vitrage-persistor run',
    scrub,
    onIdleError: (failure) => log.warn({ failure }, 'idle database connection failed; it will be replaced'),
  })
  const options: PersistorOptions = {
    ...defaultPersistorOptions(config.amqpUrl),
    exchange: config.exchange,
    topic: config.topic,
    queue: config.queue,
    compatQueue: config.compatQueue,
    osloDurable: config.amqpDurableQueues,
    osloQuorum: config.amqpQuorumQueues,
    osloAutoDelete: config.amqpAutoDelete,
    osloQuorumDeliveryLimit: config.amqpQuorumDeliveryLimit,
    osloQuorumMaxMemoryLength: config.amqpQuorumMaxMemoryLength,
    osloQuorumMaxMemoryBytes: config.amqpQuorumMaxMemoryBytes,
    prefetch: config.prefetch,
    batchSize: config.batchSize,
    batchMaxWaitMs: config.batchMaxWaitMs,
    maxMessageBytes: config.maxMessageBytes,
    shutdownTimeoutMs: config.shutdownTimeoutMs,
  }
  let defect = false
  // The newest collector_timestamp a prune deleted, read at start and with every database probe
  // (5 s): messages at or before it are dead-lettered (pruned-history), since their message_ids
  // can no longer be recognised. Unknown (an older schema, a failed read): the last value read.
  let prunedThrough: string | null = null
  const refreshRetention = async (): Promise<void> => {
    const r = await store.retention()()
    if (E.isRight(r)) prunedThrough = r.right.prunedThrough
  }
  const persistor = new Persistor(options, {
    store,
    logger: log,
    metrics,
    scrub,
    onDefect: () => {
      defect = true
      shutdown('defect', 70)
    },
    acquireLease: (name) => store.tryLease(name),
    admit: (m) => pastPrunedHistory(m.collectorTimestamp, prunedThrough),
  })
  // At most one ping a second, shared by every /readyz meanwhile (sharedAnswer).
  const ping = sharedAnswer(() => within(store.ping()(), DATABASE_WAIT_MS, E.left(failure('transient', 'ping timed out'))), 1_000)
  running = { store, persistor, ping }

  const history = historyMetrics
    ? new HistoryRunner(
        {
          reader: store,
          store,
          signal: store,
          logger: log,
          hooks: { onPage: countPage(historyMetrics) },
        },
        { name: 'history' },
      )
    : undefined
  historyRunner = history
  // The mirror reads through its own small pool: an EventStoreDB outage never holds ingest's connections.
  const mirrorStore =
    config.mirrorUrl === ''
      ? undefined
      : new PgEventStore({ connectionString: config.databaseUrl, maxConnections: 2, applicationName: 'vitrage-persistor mirror', scrub, logger: log })
  let mirror: RunningMirror | undefined
  let closing: Promise<void> | undefined
  let databaseProbe: NodeJS.Timeout | undefined
  shutdown = (reason, code) => {
    signalled ??= reason
    closing ??= (async () => {
      log.info({ reason }, 'shutting down: draining held messages')
      clearInterval(databaseProbe)
      const deadline = Date.now() + config.shutdownTimeoutMs
      // Past the deadline, whatever still runs is abandoned: nothing unacked is lost, the broker
      // redelivers it. The steps after it share one grace period, not one each (with a database
      // that stopped answering, each step would otherwise wait out its own).
      const left = (): number => Math.max(100, deadline + CLOSE_GRACE_MS - Date.now())
      const bounded = (closing: Promise<void>): Promise<void> => within(closing, left(), undefined)
      await persistor.close()
      // The projection's and the mirror's work in flight may wait on the database; the store's
      // bounded close below ends their connections, and then they end too.
      const projections = [history?.close(), mirror?.close()]
      await Promise.all([bounded(Promise.all(projections).then(() => undefined)), http?.close()])
      // What is held was committed (or abandoned) and the projections had their time above: what
      // still runs on the database now is a ping or a read, not worth the rest of the deadline
      // (with the database path dead, a stop holding nothing took the whole 30 s).
      await mirrorStore?.close({ timeoutMs: Math.min(left(), DATABASE_WAIT_MS) })
      await store.close({ timeoutMs: Math.min(left(), DATABASE_WAIT_MS) })
      await bounded(Promise.all(projections).then(() => undefined))
      stopListening()
      log.info({ reason }, 'stopped')
      finish(defect ? 70 : code)
    })()
  }
  // Before the first delivery: a restart after a prune must not store a redelivered pruned event.
  await within(refreshRetention(), DATABASE_WAIT_MS, undefined)
  persistor.start()
  history?.start()
  // The database gauge follows a ping every few seconds as well as the appends, so an idle
  // persistor's database is watched too (it stayed 0 until the first append, or 1 after a loss).
  const probeDatabase = (): void =>
    void store.ping()().then((r) => {
      metrics.databaseConnected.set(E.isRight(r) ? 1 : 0)
      if (E.isRight(r)) void refreshRetention()
    })
  probeDatabase()
  databaseProbe = setInterval(probeDatabase, DATABASE_PROBE_MS)
  databaseProbe.unref()
  if (mirrorStore) {
    try {
      const started = await startMirror(config, mirrorStore, log, registry, scrub)
      // A signal while the mirror package was loading: shutdown has run without it.
      if (closing !== undefined) await started.close()
      else mirror = started
    } catch (e) {
      // A connection string the client cannot parse: stop what started, with the reason.
      io.err(`vitrage-persistor run: --mirror-url: ${scrub(e instanceof Error ? e.message : String(e))}\n`)
      log.error({ err: scrub(String(e)) }, 'cannot start the mirror; shutting down')
      shutdown('mirror', 1)
    }
  }
  if (signalled !== undefined) shutdown(signalled, 0)
  return finished
}
