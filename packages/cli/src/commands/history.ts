/**
 * `vitrage-persistor history alarms|rca|counts` (operators' questions) and
 * `vitrage-persistor project history` (the projection runner alone).
 */
import { randomUUID } from 'node:crypto'
import { failure, redactUrl, within } from '@vitrage-persistor/core'
import { endOpenEvents, HistoryRunner, type HistoryRunnerHooks, rca } from '@vitrage-persistor/projections'
import { type AlarmColumn, ALARM_COLUMNS, type AlarmQuery, alarmsQuery, QueryError } from '@vitrage-persistor/store-postgres'
import { Option } from 'commander'
import * as E from 'fp-ts/lib/Either.js'
import * as TE from 'fp-ts/lib/TaskEither.js'
import { collectDefaultMetrics, Registry } from 'prom-client'
import { type CommandInput, type CommandSpec, command, type Env, type Io, UsageError } from '../command.js'
import type { Config, SettingKey } from '../config.js'
import { countPage, createHistoryMetrics } from '../history-metrics.js'
import { type HttpServer, json, listenOrReport, sharedAnswer } from '../http.js'
import { stopSignal } from '../signals.js'
import { chooseFormat, formatOption, positiveIntArg, printJson, printTable, timestampArg } from '../output.js'
import { DATABASE_WAIT_MS, openLoggedStore, openStore, orReport, unrecoverableDatabase } from '../resources.js'

const QUERY_SETTINGS = ['databaseUrl', 'logLevel'] as const
type QueryConfig = Config<(typeof QUERY_SETTINGS)[number]>

const TABLE_COLUMNS = ['vitrage_id', 'name', 'vitrage_type', 'vitrage_operational_severity', 'state', 'start_timestamp', 'end_timestamp', 'vitrage_resource_id'] as const

const collect = (value: string, previous: string[] = []): string[] => [...previous, value]

/** `--filter key=value` (repeatable): values of one key are OR-ed, keys are AND-ed. */
const parseFilters = (raw: readonly string[] | undefined): Array<[AlarmColumn, string[]]> => {
  const byKey = new Map<AlarmColumn, string[]>()
  for (const f of raw ?? []) {
    const eq = f.indexOf('=')
    if (eq <= 0) throw new UsageError(`--filter: expected key=value, got ${JSON.stringify(f)}`)
    const key = f.slice(0, eq)
    if (!(ALARM_COLUMNS as readonly string[]).includes(key)) throw new UsageError(`--filter: unknown key ${JSON.stringify(key)}; use one of ${ALARM_COLUMNS.join(', ')}`)
    byKey.set(key as AlarmColumn, [...(byKey.get(key as AlarmColumn) ?? []), f.slice(eq + 1)])
  }
  return [...byKey.entries()]
}

const sortArg = (value: unknown): string[] => {
  const columns = String(value).split(',').filter((s) => s !== '')
  if (columns.length === 0) throw new UsageError(`--sort: expected columns separated by commas, got ${JSON.stringify(value)}`)
  return columns
}

/**
 * Vitrage's API pages at most 10,000 alarms. A page is built in memory before it is printed
 * (~4 KB an alarm with its payload: --limit 1000000 took 887 MB), so larger pages are refused,
 * not clamped: the answer says how to go on (--marker).
 */
const MAX_PAGE = 10_000

const pageLimit = (value: unknown): number => {
  const limit = positiveIntArg('--limit', value) ?? 1000
  if (limit > MAX_PAGE) throw new UsageError(`--limit: at most ${MAX_PAGE} alarms a page, got ${limit}; read on with --marker (JSON: next_marker)`)
  return limit
}

const alarms = async (config: QueryConfig, input: CommandInput, io: Io): Promise<number> => {
  const o = input.options
  const query: AlarmQuery = {
    ...(o['start'] !== undefined ? { start: timestampArg('--start', o['start']) as string } : {}),
    ...(o['end'] !== undefined ? { end: timestampArg('--end', o['end']) as string } : {}),
    ...(o['active'] === true ? { active: true } : {}),
    ...(o['now'] !== undefined ? { now: timestampArg('--now', o['now']) as string } : {}),
    filters: parseFilters(o['filter'] as string[] | undefined),
    ...(o['project'] !== undefined ? { project: String(o['project']) } : {}),
    ...(o['sort'] !== undefined ? { sort: sortArg(o['sort']) } : {}),
    limit: pageLimit(o['limit']),
    ...(o['marker'] !== undefined ? { marker: String(o['marker']) } : {}),
  }
  try {
    alarmsQuery(query) // validates the combination of arguments before connecting
  } catch (e) {
    if (e instanceof QueryError) throw new UsageError(e.message)
    throw e
  }
  const { store } = openStore(config.databaseUrl, 'vitrage-persistor history')
  try {
    const r = await store.queryAlarms(query)()
    if (E.isLeft(r)) {
      if (r.left instanceof QueryError) throw new UsageError(r.left.message)
      await orReport(io, 'history alarms', config.databaseUrl, TE.left(r.left))
      return 1
    }
    const rows = r.right
    const next = rows.length === query.limit ? (rows.at(-1)?.vitrage_id ?? null) : null
    if (chooseFormat(o, io) === 'json') printJson(io, { alarms: rows, next_marker: next })
    else {
      printTable(io, TABLE_COLUMNS, rows as unknown as Array<Record<string, unknown>>)
      // A full page may not be all of them: say how to get the next (JSON carries next_marker).
      if (next !== null) io.err(`vitrage-persistor history alarms: ${rows.length} shown (--limit); the next page: --marker ${next}\n`)
    }
    return 0
  } finally {
    await store.close()
  }
}

const rcaCommand = async (config: QueryConfig, input: CommandInput, io: Io): Promise<number> => {
  const [alarmId] = input.args
  const at = timestampArg('--at', input.options['at'])
  const depth = positiveIntArg('--depth', input.options['depth'])
  const { store } = openStore(config.databaseUrl, 'vitrage-persistor history')
  try {
    const r = await rca(store, alarmId as string, { ...(at ? { at } : {}), ...(depth ? { depth } : {}) })
    if (E.isLeft(r)) {
      io.err(`vitrage-persistor history rca: ${redactUrl(config.databaseUrl)}: ${r.left.message}\n`)
      return 1
    }
    if (r.right.nodes.length === 0) {
      io.err(`vitrage-persistor history rca: no alarm ${JSON.stringify(alarmId)}${at ? ` active at ${at}` : ''}\n`)
      return 1
    }
    if (chooseFormat(input.options, io) === 'json') printJson(io, r.right)
    else {
      printTable(io, ['#', ...TABLE_COLUMNS.slice(0, 5)], r.right.nodes.map((n, i) => ({ '#': i === r.right.inspected_index ? `${i}*` : String(i), ...n })))
      io.out('\n')
      printTable(io, ['source', 'target', 'label', 'start_timestamp', 'end_timestamp'], r.right.links as unknown as Array<Record<string, unknown>>)
    }
    return 0
  } finally {
    await store.close()
  }
}

const counts = async (config: QueryConfig, input: CommandInput, io: Io): Promise<number> => {
  const now = timestampArg('--now', input.options['now'])
  const project = input.options['project'] === undefined ? undefined : String(input.options['project'])
  const { store } = openStore(config.databaseUrl, 'vitrage-persistor history')
  try {
    const result = await orReport(io, 'history counts', config.databaseUrl, store.countActiveAlarms({ ...(now ? { now } : {}), ...(project ? { project } : {}) }))
    if (result === undefined) return 1
    if (chooseFormat(input.options, io) === 'json') printJson(io, result)
    else printTable(io, ['severity', 'active'], Object.entries(result).map(([severity, active]) => ({ severity, active })))
    return 0
  } finally {
    await store.close()
  }
}

/**
 * `history end-open --at T`: records a Vitrage cold start (see projections' end-open.ts) as
 * deactivation events for everything open at T. It first waits (--wait) for the projection to
 * apply what the log holds, since alarms opened in events it has not applied would be missed, and
 * runs one at a time.
 */
const endOpen = async (config: QueryConfig, input: CommandInput, io: Io): Promise<number> => {
  const at = timestampArg('--at', input.options['at'])
  if (at === undefined) throw new UsageError('--at: the time vitrage-graph started without a snapshot (its log says "Init Started", then "Starting for the first time")')
  const dryRun = input.options['dryRun'] === true
  const waitMs = (positiveIntArg('--wait', input.options['wait']) ?? 60) * 1000
  const { store } = openStore(config.databaseUrl, 'vitrage-persistor history', 3)
  const fail = (message: string): E.Either<string, never> => E.left(message)
  const orFail = async <T>(task: TE.TaskEither<{ message: string }, T>): Promise<E.Either<string, T>> => E.mapLeft((f: { message: string }) => `${redactUrl(config.databaseUrl)}: ${f.message}`)(await task())
  try {
    // One run at a time: two at once would both find the same alarms open and append them twice.
    const outcome = await store.exclusively('maintenance:history end-open', async (): Promise<E.Either<string, Record<string, unknown>>> => {
      // Everything appended up to now must be applied first (an alarm opened in an event not yet
      // applied would be missed): wait for the projection to reach this head.
      const head = await orFail(store.headId())
      if (E.isLeft(head)) return head
      for (const giveUp = Date.now() + waitMs; ; ) {
        const checkpoint = await orFail(store.historyCheckpoint('history'))
        if (E.isLeft(checkpoint)) return checkpoint
        if (checkpoint.right >= head.right) break
        if (Date.now() >= giveUp) {
          return fail(
            `the history projection is at event ${checkpoint.right} and did not reach event ${head.right} within ${waitMs / 1000} s: is it running (run, or project history --follow)? Without it, run project history first`,
          )
        }
        await new Promise((r) => setTimeout(r, 200))
      }
      const open = await orFail(store.openAt(at))
      if (E.isLeft(open)) return open
      const summary = { at, alarms: open.right.alarms.length, edges: open.right.edges.length }
      if (dryRun) return E.right({ ...summary, dryRun: true })
      const events = endOpenEvents(open.right, at, randomUUID)
      let appended = 0
      for (let i = 0; i < events.length; i += 1000) {
        const r = await orFail(store.append(events.slice(i, i + 1000).map((m) => store.prepare(m))))
        if (E.isLeft(r)) return fail(`${r.left}; ${appended} of ${events.length} events appended before the failure, running it again appends the rest`)
        appended += r.right.stored.length
      }
      return E.right({ ...summary, appended })
    })()
    if (E.isLeft(outcome)) {
      io.err(`vitrage-persistor history end-open: ${redactUrl(config.databaseUrl)}: ${outcome.left.message}\n`)
      return 1
    }
    if (E.isLeft(outcome.right)) {
      io.err(`vitrage-persistor history end-open: ${outcome.right.left}\n`)
      return 1
    }
    const result = outcome.right.right
    if (chooseFormat(input.options, io) === 'json') printJson(io, result)
    else printTable(io, Object.keys(result), [result])
    return 0
  } finally {
    await store.close()
  }
}

const PROGRESS_LOG_MS = 60_000

const PROJECT_SETTINGS = ['databaseUrl', 'logLevel', 'httpPort', 'httpHost'] as const
type ProjectConfig = Config<(typeof PROJECT_SETTINGS)[number]>

const project = async (config: ProjectConfig, input: CommandInput, io: Io, env: Env): Promise<number> => {
  const pageSize = positiveIntArg('--page-size', input.options['pageSize'])
  const derive = input.options['derive'] === 'in-node' ? 'in-node' : 'in-database'
  const partitions = positiveIntArg('--partitions', input.options['partitions']) ?? 1
  if (partitions > 32) throw new UsageError(`--partitions: at most 32 (a database connection each), got ${partitions}`)
  if (partitions > 1 && derive === 'in-node') throw new UsageError('--partitions: needs --derive in-database')
  const stop = input.options['follow'] === true ? stopSignal() : undefined
  // A connection per partition, one to read the head and wait for appends, one for the checkpoint.
  // With its logger: the store's own warnings (a connection dropped, the listener lost) reach its log.
  const { store, log } = openLoggedStore(config.databaseUrl, 'vitrage-persistor project history', partitions + 2, config.logLevel)
  // Following, it says where it is once a minute while it applies events (not per page: a page
  // per committed batch would flood the log); an idle projection says nothing more.
  let applied = 0
  let position = 0
  let lastReport = Date.now()
  const onPage = (p: { position: number; events: number }): void => {
    applied += p.events
    position = p.position
    if (input.options['follow'] === true && Date.now() - lastReport >= PROGRESS_LOG_MS) {
      log.info({ position, applied }, 'history projection applied events')
      lastReport = Date.now()
      applied = 0
    }
  }
  // Following, it serves /metrics (the history metrics `run` has when it runs the projection,
  // so that the history alerts watch this one too), /healthz and /readyz.
  const registry = new Registry()
  const count = countPage(createHistoryMetrics(registry, () => store, () => runner.position))
  const hooks: HistoryRunnerHooks = {
    onPage: (p) => {
      onPage(p)
      count(p)
    },
  }
  const runner = new HistoryRunner({ reader: store, store, signal: store, logger: log, hooks }, { derive, partitions, ...(pageSize ? { pageSize } : {}) })
  let http: HttpServer | undefined
  try {
    if (input.options['rebuild'] === true) {
      // A rebuild replays the log from its start: after a prune it would lose what the deleted
      // events had put in the history tables, so they are left as they are.
      const prunedBelow = await orReport(io, 'project history', config.databaseUrl, store.prunedBelow())
      if (prunedBelow === undefined) return 1
      if (prunedBelow > 1) {
        io.err(`vitrage-persistor project history: events below ${prunedBelow} were pruned: a rebuild from the log would lose the history they hold; the history tables are unchanged\n`)
        return 1
      }
      if ((await orReport(io, 'project history', config.databaseUrl, TE.map(() => true)(store.resetHistory('history')))) === undefined) return 1
      log.info('history tables emptied; rebuilding from the log')
    }
    if (input.options['follow'] !== true) {
      const r = await runner.catchUp()
      if (E.isLeft(r)) {
        io.err(`vitrage-persistor project history: ${redactUrl(config.databaseUrl)}: ${r.left.message}\n`)
        return 1
      }
      io.out(`history projection at event ${r.right}\n`)
      return 0
    }
    // Only when asked for (--http-port or PERSISTOR_HTTP_PORT): it listened on nothing before,
    // and an upgrade must not make it take the port of a `run` on the same host (9464).
    const asked = input.options['httpPort'] !== undefined || (env['PERSISTOR_HTTP_PORT'] ?? '').trim() !== ''
    if (asked) collectDefaultMetrics({ register: registry })
    // At most one ping a second, shared by every /readyz meanwhile (sharedAnswer).
    const databasePing = sharedAnswer(() => within(store.ping()(), 2_000, E.left(failure('transient', 'no answer within 2000 ms'))), 1_000)
    const listening = await listenOrReport(io, 'project history', asked ? config.httpPort : 0, config.httpHost, {
      '/metrics': async () => ({ status: 200, contentType: registry.contentType, body: await registry.metrics() }),
      '/healthz': () => json(200, { status: 'ok' }),
      '/readyz': async () => {
        const ping = await databasePing()
        return E.isRight(ping) ? json(200, { status: 'ready', position: runner.position }) : json(503, { status: 'not ready', reason: `the database: ${ping.left.message}` })
      },
    })
    if (!listening.ok) return 1
    http = listening.server
    if (http) log.info({ port: http.port, host: config.httpHost }, 'http endpoint listening')
    // As follow and mirror do: a database that retrying cannot fix (no such database,
    // credentials refused, no schema) ends --follow at once, rather than a warning every 15 s.
    if (await unrecoverableDatabase(io, 'project history', config.databaseUrl, store, stop?.received)) return 1
    runner.start()
    log.info({ derive, partitions }, 'history projection following the log')
    const signal = await stop?.received
    // The page in progress commits or not. Behind a database path that died it would wait for the
    // store's unanswered-query watch (the statement timeout + 15 s: 70 s measured); a page cut off
    // rolls back and is applied again at the next start, so the stop does not wait that long.
    if (!(await within(runner.close().then(() => true), PAGE_WAIT_MS, false))) {
      log.warn({ waitedMs: PAGE_WAIT_MS }, 'the page in progress did not finish; ending its database work (it is applied again at the next start)')
    }
    log.info({ signal, position: runner.position }, 'history projection stopped')
    return 0
  } finally {
    stop?.release()
    const closing = runner.close()
    await http?.close()
    // Cuts off what still runs (the page above, a readiness ping) rather than wait for it.
    await store.close({ timeoutMs: DATABASE_WAIT_MS })
    await within(closing, DATABASE_WAIT_MS, undefined)
  }
}

/** How long a stop waits for the history page in progress to commit. */
const PAGE_WAIT_MS = 5_000

const specs = [
  command({
    path: ['history', 'alarms'],
    summary: 'alarms active at some moment in [--start, --end] (Vitrage window rule), or --active now',
    keys: QUERY_SETTINGS,
    options: [
      new Option('--start <time>', 'window start (UTC unless it has a zone)'),
      new Option('--end <time>', 'window end, inclusive (needs --start)'),
      new Option('--active', 'only alarms active now (or at --now)'),
      new Option('--now <time>', 'evaluate "active" and "ended" as of this time'),
      new Option('--filter <key=value>', `substring match on a column, whole for state (repeatable): ${ALARM_COLUMNS.join(', ')}`).argParser(collect),
      new Option('--project <id>', "the alarm's or its resource's project"),
      new Option('--sort <columns>', 'comma-separated columns, "-" prefix for descending (default start_timestamp)'),
      new Option('--limit <n>', 'page size (default 1000, at most 10000)'),
      new Option('--marker <vitrage-id>', 'continue after this alarm (the last of the previous page)'),
      formatOption(),
    ],
    action: alarms,
  }),
  command({
    path: ['history', 'rca'],
    summary: 'the causal graph around an alarm: BFS over causes edges both ways',
    keys: QUERY_SETTINGS,
    arguments: '<alarm-id>',
    options: [new Option('--at <time>', 'only edges and alarms active at this time'), new Option('--depth <n>', 'levels in each direction (default unlimited)'), formatOption()],
    action: rcaCommand,
  }),
  command({
    path: ['history', 'counts'],
    summary: 'active alarms per operational severity',
    keys: QUERY_SETTINGS,
    options: [new Option('--now <time>', 'as of this time'), new Option('--project <id>', "the alarm's or its resource's project"), formatOption()],
    action: counts,
  }),
  command({
    path: ['history', 'end-open'],
    summary: 'record a Vitrage cold start: end every alarm and causal edge open at --at, as Vitrage does to its own history (appends deactivation events)',
    keys: QUERY_SETTINGS,
    options: [
      new Option('--at <time>', 'when vitrage-graph started without a snapshot (required)'),
      new Option('--dry-run', 'count what would be ended; append nothing'),
      new Option('--wait <seconds>', 'how long to wait for the history projection to apply what is already in the log (default 60)'),
      formatOption(),
    ],
    action: endOpen,
  }),
  command({
    path: ['project', 'history'],
    summary: 'run the alarm-history projection: catch up with the log (or --follow it, serving /metrics, /healthz, /readyz when given --http-port); --rebuild recomputes it from the log',
    keys: PROJECT_SETTINGS,
    defaultsShown: { httpPort: 'none: with --follow, listens only when given a port (flag or env)' },
    options: [
      new Option('--rebuild', 'empty the history tables first'),
      new Option('--follow', 'keep following the log until SIGTERM'),
      new Option('--page-size <n>', 'events per transaction at most (default 5000)'),
      new Option('--derive <where>', 'in-database (default: PostgreSQL derives the rows of events in the forms Vitrage writes) or in-node (every event through Node, the reference)').choices(['in-database', 'in-node']),
      new Option('--partitions <n>', 'in-database: apply this many partitions of the events concurrently, one connection each (default 1; for catching up on a long log)'),
    ],
    action: project,
    claimsSignals: (input) => input.options['follow'] === true,
  }),
] satisfies readonly CommandSpec<SettingKey>[]

export const historyCommands: readonly CommandSpec<SettingKey>[] = specs
