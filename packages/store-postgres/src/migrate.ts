/**
 * Numbered SQL migrations (`migrations/NNNN_name.sql`), applied in order, each in its own
 * transaction, recorded in `schema_migration` with a checksum. Concurrent migrators (two
 * persistors starting together) serialize on a session advisory lock; a migration edited after
 * it was applied is refused rather than silently diverging.
 */
import { createHash } from 'node:crypto'
import { readdirSync, readFileSync } from 'node:fs'
import { type Failure, failure } from '@vitrage-persistor/core'
import * as TE from 'fp-ts/lib/TaskEither.js'
import pg from 'pg'
import { classifyPgError, databaseUrlProblem } from './classify.js'
import { dropConnection } from './connection.js'

export interface Migration {
  readonly version: number
  readonly name: string
  readonly sql: string
  readonly checksum: string
}

export interface MigrateReport {
  readonly database: string
  readonly created: boolean
  readonly applied: readonly string[]
  readonly current: number
  /**
   * Migrations the database has that this version does not know: a newer version applied them
   * (this one was rolled back, or runs beside a newer one). Said, not hidden in "up to date".
   */
  readonly unknown: readonly string[]
}

const MIGRATIONS_DIR = new URL('../migrations/', import.meta.url)
/** The advisory lock migrations serialize on ('vitr' + 1: distinct from the append lock). */
export const MIGRATE_LOCK = 1986622579

let cached: Migration[] | undefined

export const loadMigrations = (): Migration[] => {
  cached ??= readdirSync(MIGRATIONS_DIR)
    .filter((f) => /^\d{4}_[a-z0-9_]+\.sql$/.test(f))
    .sort()
    .map((file) => {
      const sql = readFileSync(new URL(file, MIGRATIONS_DIR), 'utf8')
      return {
        version: Number(file.slice(0, 4)),
        name: file.replace(/\.sql$/, ''),
        sql,
        checksum: createHash('sha256').update(sql).digest('hex'),
      }
    })
  return cached
}

/**
 * A server that accepts the connection and never answers (a half-dead host, a wrong port behind
 * a proxy) must not hang migrate, run's start or status: node-postgres waits for ever by default.
 */
const CONNECT_TIMEOUT_MS = 10_000

/**
 * Ends `client` when `signal` aborts (run stopped during start-up): a connect or query in flight
 * then fails at once instead of running out its timeout. Returns the unsubscribe.
 */
const endOnAbort = (client: pg.Client, signal: AbortSignal | undefined): (() => void) => {
  // A connection that dies (closed here, or by the server) makes a connected client emit
  // 'error' besides failing its query in flight: unheard, that event would crash the process.
  client.on('error', () => {})
  if (signal === undefined) return () => {}
  // Not client.end(): that says goodbye and waits for the server to close, which one that never
  // answers never does, and a connect it interrupts never settles. Closing the socket under the
  // client fails what is in flight at once ("Connection terminated unexpectedly").
  const end = (): void => dropConnection(client)
  if (signal.aborted) end()
  else signal.addEventListener('abort', end, { once: true })
  return () => signal.removeEventListener('abort', end)
}

/**
 * Connects `client`, ended on abort (endOnAbort); returns the unhook. A failed connect is
 * unhooked and its client ended before the error is thrown on.
 */
const connectAbortable = async (client: pg.Client, signal: AbortSignal | undefined): Promise<() => void> => {
  const unhook = endOnAbort(client, signal)
  try {
    await client.connect()
    return unhook
  } catch (e) {
    unhook()
    await client.end().catch(() => {})
    throw e
  }
}

/**
 * The newest migration the persistor's append path needs (0001: the event table). A service role
 * that may not migrate keeps ingesting on a schema at or past it while later migrations wait for
 * `migrate` (they serve projections and retention). Raise it when a migration changes what
 * appendBatch writes to.
 */
export const INGEST_SCHEMA_VERSION = 1

/** Changes whenever any migration changes: names test templates and snapshot compatibility. */
export const schemaVersion = (): string =>
  createHash('sha256')
    .update(loadMigrations().map((m) => `${m.name}:${m.checksum}`).join('\n'))
    .digest('hex')

const quoteIdent = (name: string): string => `"${name.replaceAll('"', '""')}"`

/**
 * Creates the database named in `databaseUrl` if it does not exist, connecting to the server's
 * `postgres` database (or `template1`) with the same credentials.
 */
export const ensureDatabase = (databaseUrl: string, scrub: (s: string) => string = (s) => s, signal?: AbortSignal): TE.TaskEither<Failure, boolean> =>
  TE.tryCatch(
    async () => {
      const problem = databaseUrlProblem(databaseUrl)
      if (problem !== undefined) throw Object.assign(new Error(problem), { code: 'config' })
      const target = decodeURIComponent(new URL(databaseUrl).pathname.slice(1))
      if (target === '') throw Object.assign(new Error('the database URL names no database'), { code: 'config' })
      // Connecting to the target first covers roles that may not connect to `postgres`.
      const direct = new pg.Client({ connectionString: databaseUrl, connectionTimeoutMillis: CONNECT_TIMEOUT_MS })
      try {
        ;(await connectAbortable(direct, signal))()
        await direct.end()
        return false
      } catch (e) {
        if ((e as { code?: string }).code !== '3D000') throw e // anything but "database does not exist"
      }
      for (const maintenance of ['postgres', 'template1']) {
        const u = new URL(databaseUrl)
        u.pathname = `/${maintenance}`
        const admin = new pg.Client({ connectionString: u.toString(), connectionTimeoutMillis: CONNECT_TIMEOUT_MS })
        let adminUnhook: () => void
        try {
          adminUnhook = await connectAbortable(admin, signal)
        } catch (e) {
          if ((e as { code?: string }).code === '3D000') continue
          throw e
        }
        try {
          await admin.query(`CREATE DATABASE ${quoteIdent(target)}`)
          return true
        } catch (e) {
          // Created concurrently: 42P04, or 23505 when the two CREATE DATABASE collide in the catalog.
          const code = (e as { code?: string }).code
          if (code === '42P04' || code === '23505') return false
          // Said as what it is: a role without CREATEDB, given a database that does not exist (a
          // typo in the URL, say), was told that migrations were pending and to run migrate, which
          // failed the same way (review 56).
          if (code === '42501') {
            throw Object.assign(
              new Error(`database ${JSON.stringify(target)} does not exist, and this role may not create it (${(e as Error).message}): check the database URL, or create it as a role that may (vitrage-persistor migrate run as one does)`),
              { code: '3D000' },
            )
          }
          throw e
        } finally {
          adminUnhook()
          await admin.end().catch(() => {})
        }
      }
      throw new Error(`cannot create database ${target}: neither "postgres" nor "template1" accepts connections`)
    },
    (e) => classifyPgError(e, scrub),
  )

/**
 * What the writer and reader roles hold once every migration is applied (0002, 0003, 0004, 0006,
 * 0008, 0012, 0016), granted again by each `migrate`: idempotent, and a role that does not exist is
 * skipped. The writer appends without choosing ids (0012).
 */
const ROLE_GRANTS = `DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vitrage_persistor_writer') THEN
        REVOKE INSERT ON event FROM vitrage_persistor_writer;
        GRANT SELECT ON event, schema_migration, event_retention, graph_snapshot, history_edge TO vitrage_persistor_writer;
        GRANT INSERT (message_id, event_type, publisher_id, priority, collector_timestamp, payload) ON event TO vitrage_persistor_writer;
        GRANT SELECT, INSERT, UPDATE, DELETE, TRUNCATE ON history_alarm, history_change, history_edge_event, history_project_change,
            projection_checkpoint, projection_snapshot TO vitrage_persistor_writer;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'vitrage_persistor_reader') THEN
        GRANT SELECT ON event, schema_migration, event_retention, graph_snapshot, history_alarm, history_change, history_edge,
            history_edge_event, history_project_change, projection_checkpoint, projection_snapshot TO vitrage_persistor_reader;
    END IF;
END
$$`

/**
 * How long a migration waits for each lock before it gives way (see migrate), and how long it
 * pauses before the next try: while it waits, later readers and writers of the table queue behind
 * it, so it waits briefly and pauses longer and longer (1 s doubling to 15 s), leaving the table
 * to them most of the time (review 61: with 3 s waits 1 s apart, a writer was blocked 49 of 60 s).
 * After MIGRATION_LOCK_ATTEMPTS tries (~70 s) it fails, transient: `run` tries again later.
 */
const MIGRATION_LOCK_WAIT_MS = 2_000
const MIGRATION_LOCK_ATTEMPTS = 8
const migrationLockPauseMs = (attempt: number): number => Math.min(15_000, 1_000 * 2 ** (attempt - 1))

export interface MigrateOptions {
  readonly signal?: AbortSignal
  /** A migration gave way for a lock it was not granted and tries again after `pauseMs`. */
  readonly onLockWait?: (w: { readonly migration: string; readonly attempt: number; readonly pauseMs: number }) => void
}

/** Callers from before MigrateOptions pass the signal alone. */
const migrateOptions = (signalOrOptions?: AbortSignal | MigrateOptions): MigrateOptions =>
  signalOrOptions instanceof AbortSignal ? { signal: signalOrOptions } : (signalOrOptions ?? {})

/** Applies pending migrations, then the roles' grants. Idempotent. */
export const migrate = (databaseUrl: string, scrub: (s: string) => string = (s) => s, signalOrOptions?: AbortSignal | MigrateOptions): TE.TaskEither<Failure, MigrateReport> =>
  TE.tryCatch(
    async () => {
      const options = migrateOptions(signalOrOptions)
      const signal = options.signal
      const problem = databaseUrlProblem(databaseUrl)
      if (problem !== undefined) throw Object.assign(new Error(problem), { code: 'config' })
      const client = new pg.Client({ connectionString: databaseUrl, application_name: 'vitrage-persistor migrate', connectionTimeoutMillis: CONNECT_TIMEOUT_MS })
      // Ended on abort while it connects or waits for the migration lock; a migration's own
      // transaction then rolls back.
      const unhook = await connectAbortable(client, signal)
      try {
        await client.query('SET client_min_messages = warning')
        await client.query('SELECT pg_advisory_lock($1)', [MIGRATE_LOCK])
        await client.query(`CREATE TABLE IF NOT EXISTS schema_migration (
          version    integer PRIMARY KEY,
          name       text NOT NULL,
          checksum   text NOT NULL,
          applied_at timestamptz NOT NULL DEFAULT now())`)
        const done = new Map(
          (await client.query<{ version: number; checksum: string; name: string }>('SELECT version, name, checksum FROM schema_migration')).rows.map(
            (r) => [r.version, r],
          ),
        )
        const applied: string[] = []
        for (const m of loadMigrations()) {
          const prior = done.get(m.version)
          if (prior !== undefined) {
            if (prior.checksum !== m.checksum) {
              throw Object.assign(new Error(`migration ${m.name} was changed after it was applied (checksum differs); restore it and add a new migration instead`), { code: 'migration-drift' })
            }
            continue
          }
          for (let attempt = 1; ; attempt++) {
            await client.query('BEGIN')
            try {
              // Each lock waited for at most MIGRATION_LOCK_WAIT_MS, then the migration gives way
              // and tries again: a DDL statement waiting behind a long reader (pg_dump, a report)
              // queues every later reader and writer of its table behind itself (review 60: 0013's
              // DROP INDEX stalled the history projection and history queries for the 38 s a
              // reader ran; behind a backup, for hours).
              await client.query(`SET LOCAL lock_timeout = ${MIGRATION_LOCK_WAIT_MS}`)
              await client.query(m.sql)
              await client.query('INSERT INTO schema_migration (version, name, checksum) VALUES ($1, $2, $3)', [m.version, m.name, m.checksum])
              await client.query('COMMIT')
              break
            } catch (e) {
              await client.query('ROLLBACK').catch(() => {})
              const lockWait = (e as { code?: string }).code === '55P03'
              if (lockWait && attempt < MIGRATION_LOCK_ATTEMPTS && signal?.aborted !== true) {
                const pauseMs = migrationLockPauseMs(attempt)
                options.onLockWait?.({ migration: m.name, attempt, pauseMs })
                // A stop ends the pause (up to 15 s): the next statement then fails on the ended client.
                await new Promise<void>((resolve) => {
                  const timer = setTimeout(resolve, pauseMs)
                  signal?.addEventListener('abort', () => (clearTimeout(timer), resolve()), { once: true })
                })
                continue
              }
              throw Object.assign(e as Error, {
                message: lockWait
                  ? `migration ${m.name}: its locks were not granted within ${MIGRATION_LOCK_WAIT_MS} ms, ${attempt} times (a long transaction holds a table it changes: pg_dump, a report; pg_locks names it); it was not applied`
                  : `migration ${m.name}: ${(e as Error).message}`,
              })
            }
          }
          applied.push(m.name)
        }
        // The roles' grants as the schema now wants them, on every run: roles an administrator
        // created after the migrations that grant were applied (as operations.md tells them to,
        // then `migrate` again) got nothing before, the migrations being recorded as done.
        await client.query(ROLE_GRANTS)
        const current = loadMigrations().at(-1)?.version ?? 0
        const known = new Set(loadMigrations().map((m) => m.version))
        const unknown = [...done.values()].filter((r) => !known.has(r.version)).sort((a, b) => a.version - b.version).map((r) => r.name)
        return { database: client.database ?? '', created: false, applied, current, unknown }
      } finally {
        unhook()
        await client.query('SELECT pg_advisory_unlock($1)', [MIGRATE_LOCK]).catch(() => {})
        await client.end().catch(() => {})
      }
    },
    (e) => {
      const code = (e as { code?: string }).code
      return code === 'migration-drift' ? failure('fatal', (e as Error).message, code) : classifyPgError(e, scrub)
    },
  )

/**
 * Names of migrations not yet applied (all of them when the database or the migrations table
 * does not exist). Needs only read access, so a least-privileged service role can check that
 * the schema is current without being able to change it.
 */
export const pendingMigrations = (databaseUrl: string, scrub: (s: string) => string = (s) => s, signal?: AbortSignal): TE.TaskEither<Failure, string[]> =>
  TE.map((s: MigrationState) => [...s.pending])(migrationState(databaseUrl, scrub, signal))

export interface MigrationState {
  /** This version's migrations the database has not applied. */
  readonly pending: readonly string[]
  /** Migrations the database has that this version does not know (MigrateReport.unknown). */
  readonly unknown: readonly string[]
  /**
   * The server process of a session holding the migration lock now (another instance's `run` or
   * `migrate` applying migrations), if any: pending then means "being applied".
   */
  readonly applyingPid?: number
}

/** Where the database's schema stands against this version's migrations; see pendingMigrations. */
export const migrationState = (databaseUrl: string, scrub: (s: string) => string = (s) => s, signal?: AbortSignal): TE.TaskEither<Failure, MigrationState> =>
  TE.tryCatch(
    async () => {
      const problem = databaseUrlProblem(databaseUrl)
      if (problem !== undefined) throw Object.assign(new Error(problem), { code: 'config' })
      const all = loadMigrations()
      const client = new pg.Client({ connectionString: databaseUrl, application_name: 'vitrage-persistor migrate', connectionTimeoutMillis: CONNECT_TIMEOUT_MS })
      let unhook: () => void
      try {
        unhook = await connectAbortable(client, signal)
      } catch (e) {
        if ((e as { code?: string }).code === '3D000') return { pending: all.map((m) => m.name), unknown: [] }
        throw e
      }
      try {
        const table = await client.query<{ t: string | null }>(`SELECT to_regclass('schema_migration')::text AS t`)
        if (table.rows[0]?.t == null) return { pending: all.map((m) => m.name), unknown: [] }
        const rows = (await client.query<{ version: number; checksum: string; name: string }>('SELECT version, checksum, name FROM schema_migration ORDER BY version')).rows
        const applied = new Map(rows.map((r) => [r.version, r.checksum]))
        // A migration changed after it was applied: the schema is not what this version expects.
        const drifted = all.find((m) => applied.has(m.version) && applied.get(m.version) !== m.checksum)
        if (drifted !== undefined) {
          throw Object.assign(new Error(`migration ${drifted.name} was changed after it was applied (checksum differs); restore it and add a new migration instead`), { code: 'migration-drift' })
        }
        const known = new Set(all.map((m) => m.version))
        const pending = all.filter((m) => !applied.has(m.version)).map((m) => m.name)
        // pg_locks shows every session's locks to any role: a bigint key below 2^32 is objid.
        const holder =
          pending.length === 0
            ? undefined
            : (
                await client.query<{ pid: number }>(
                  `SELECT pid FROM pg_locks WHERE locktype = 'advisory' AND granted AND classid = 0 AND objid = $1 AND objsubid = 1
                     AND database = (SELECT oid FROM pg_database WHERE datname = current_database()) LIMIT 1`,
                  [MIGRATE_LOCK],
                )
              ).rows[0]?.pid
        return { pending, unknown: rows.filter((r) => !known.has(r.version)).map((r) => r.name), ...(holder === undefined ? {} : { applyingPid: holder }) }
      } finally {
        unhook()
        await client.end().catch(() => {})
      }
    },
    (e) => classifyPgError(e, scrub),
  )

/** `ensureDatabase` then `migrate`. */
export const setupDatabase = (databaseUrl: string, scrub?: (s: string) => string, signalOrOptions?: AbortSignal | MigrateOptions): TE.TaskEither<Failure, MigrateReport> => {
  const options = migrateOptions(signalOrOptions)
  return TE.chain((created: boolean) => TE.map((r: MigrateReport) => ({ ...r, created }))(migrate(databaseUrl, scrub, options)))(ensureDatabase(databaseUrl, scrub, options.signal))
}

/**
 * The schema as a recipe for template databases (test databases are cloned from one per schema
 * version): its version and a promise-returning migrate.
 */
export const schemaTemplate = {
  get version(): string {
    return schemaVersion()
  },
  migrate: async (databaseUrl: string): Promise<void> => {
    const r = await migrate(databaseUrl)()
    if (r._tag === 'Left') throw new Error(r.left.message)
  },
}
