import { createEmptyDatabase, databaseUrl, eventually, type TestDatabase, uniqueName } from '@vitrage-persistor/testing'
import * as E from 'fp-ts/lib/Either.js'
import pg from 'pg'
import t, { type Test } from 'tap'
import type { HistoryCommand } from '@vitrage-persistor/core'
import { applyHistory, resetHistory } from './history.js'
import { queryAlarms } from './history-queries.js'
import { applyHistoryRange } from './history-range.js'
import { loadMigrations, MIGRATE_LOCK, migrate, migrationState, pendingMigrations, setupDatabase } from './migrate.js'

/** The URL of a database that does not exist yet, dropped at teardown whatever the test made of it. */
const missingDatabase = async (t: Test, prefix: string): Promise<string> => {
  const name = uniqueName(prefix)
  const admin = new pg.Client({ connectionString: databaseUrl('test') })
  await admin.connect()
  t.teardown(async () => {
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
    await admin.end()
  })
  return databaseUrl(name)
}

t.test('setup creates a missing database and migrates it; running it again changes nothing', async (t) => {
  const url = await missingDatabase(t, 'vp_setup')
  const first = await setupDatabase(url)()
  t.ok(E.isRight(first))
  if (E.isRight(first)) {
    t.equal(first.right.created, true)
    t.same(first.right.applied, loadMigrations().map((m) => m.name))
  }
  const second = await setupDatabase(url)()
  t.ok(E.isRight(second))
  if (E.isRight(second)) {
    t.equal(second.right.created, false)
    t.same(second.right.applied, [])
  }
})

t.test('concurrent migrators apply each migration once', async (t) => {
  const db = await createEmptyDatabase()
  t.teardown(db.drop)
  const results = await Promise.all([migrate(db.url)(), migrate(db.url)(), migrate(db.url)()])
  const applied = results.flatMap((r) => (E.isRight(r) ? r.right.applied : ['failed']))
  t.same(applied.sort(), loadMigrations().map((m) => m.name).sort())
})

t.test('a migration edited after it was applied is refused', async (t) => {
  const db = await createEmptyDatabase()
  t.teardown(db.drop)
  t.ok(E.isRight(await migrate(db.url)()))
  const c = new pg.Client({ connectionString: db.url })
  await c.connect()
  await c.query(`UPDATE schema_migration SET checksum = 'edited' WHERE version = 1`)
  await c.end()
  const r = await migrate(db.url)()
  t.ok(E.isLeft(r))
  if (E.isLeft(r)) {
    t.equal(r.left.kind, 'fatal')
    t.match(r.left.message, /0001_event was changed after it was applied/)
  }
  // run's start-up check sees it too (it compared versions only, and started on that schema).
  const pending = await pendingMigrations(db.url)()
  t.ok(E.isLeft(pending) && /0001_event was changed after it was applied/.test(pending.left.message), 'pendingMigrations refuses a drifted schema')
})

t.test('migrate four times at once on a database that does not exist yet: all succeed', async (t) => {
  const name = uniqueName('vp_test_concurrent')
  const url = databaseUrl(name)
  const admin = new pg.Client({ connectionString: databaseUrl('test') })
  await admin.connect()
  t.teardown(async () => {
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
    await admin.end()
  })
  for (let round = 0; round < 3; round++) {
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
    const results = await Promise.all([0, 1, 2, 3].map(() => setupDatabase(url)()))
    t.same(results.filter(E.isLeft).map((r) => (r as E.Left<{ message: string }>).left.message), [], `round ${round}: none failed`)
  }
})

t.test('an unreachable server is a transient failure, not a throw', async (t) => {
  const r = await migrate('postgres://root@127.0.0.1:1/none')()
  t.ok(E.isLeft(r))
  if (E.isLeft(r)) t.equal(r.left.kind, 'transient')
})

/** Events 1-10, in one statement. */
/** A database with the schema an earlier version left: the migrations before `version`, applied the way migrate() does. */
const databaseBefore = async (t: Test, version: number): Promise<{ db: TestDatabase; sql: pg.Client }> => {
  const db = await createEmptyDatabase()
  t.teardown(db.drop)
  const sql = new pg.Client({ connectionString: db.url })
  await sql.connect()
  t.teardown(() => sql.end())
  await sql.query('CREATE TABLE schema_migration (version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())')
  for (const m of loadMigrations().filter((m) => m.version < version)) {
    await sql.query(m.sql)
    await sql.query('INSERT INTO schema_migration (version, name, checksum) VALUES ($1, $2, $3)', [m.version, m.name, m.checksum])
  }
  return { db, sql }
}

const tenEvents = (sql: pg.Client): Promise<unknown> =>
  sql.query(`INSERT INTO event (message_id, event_type, collector_timestamp, payload) SELECT gen_random_uuid(), 'e', now(), '{}' FROM generate_series(1, 10)`)

t.test('0008 on a database of an earlier version: the watermark from what is missing, snapshots past the head dropped', async (t) => {
  // pruned: the old prune deleted below a snapshot at 8. gap: ids 1-4 went to a rolled-back
  // append, no snapshot, nothing pruned. emptied: a snapshot saved past the head (a mistyped
  // --at-event) let the old prune delete the whole log.
  const cases = [
    { name: 'pruned', snapshotAt: 8, watermark: 8, snapshotsAfter: 1 },
    { name: 'gap', snapshotAt: undefined, watermark: 1, snapshotsAfter: 0 },
    { name: 'emptied', snapshotAt: 9_999_999, watermark: 11, snapshotsAfter: 0 },
  ]
  for (const c of cases) {
    const { db, sql } = await databaseBefore(t, 8)
    await tenEvents(sql)
    if (c.snapshotAt !== undefined) {
      await sql.query(`INSERT INTO projection_snapshot (kind, event_id, format, data) VALUES ('graph', $1, 'test/1', '\\x00')`, [c.snapshotAt])
      await sql.query('SELECT event_prune()')
    } else {
      await sql.query(`SELECT set_config('vitrage_persistor.retention', 'on', false)`)
      await sql.query('DELETE FROM event WHERE id < 5')
    }
    const r = await migrate(db.url)()
    t.ok(E.isRight(r) && r.right.applied.includes('0008_retention_watermark'), `${c.name}: migrated`)
    t.equal(Number((await sql.query('SELECT pruned_below FROM event_retention')).rows[0].pruned_below), c.watermark, `${c.name}: watermark`)
    t.equal(Number((await sql.query('SELECT count(*) AS n FROM graph_snapshot')).rows[0].n), c.snapshotsAfter, `${c.name}: graph snapshots kept`)
  }
})

t.test('prune trusts no snapshot past the head', async (t) => {
  const db = await createEmptyDatabase()
  t.teardown(db.drop)
  t.ok(E.isRight(await migrate(db.url)()))
  const sql = new pg.Client({ connectionString: db.url })
  await sql.connect()
  t.teardown(() => sql.end())
  await tenEvents(sql)
  await sql.query(`INSERT INTO projection_snapshot (kind, event_id, format, data) VALUES ('graph', 6, 'test/1', '\\x00'), ('graph', 9999999, 'test/1', '\\x00')`)
  await sql.query(`DELETE FROM projection_snapshot WHERE event_id = 6`)
  await t.rejects(sql.query('SELECT event_prune()'), /no graph snapshot/, 'the one past the head does not count')
  t.equal(Number((await sql.query('SELECT count(*) AS n FROM event')).rows[0].n), 10)
})

t.test('0010 on a log pruned before it: the first kept event stands for the newest pruned one; on one never pruned, nothing', async (t) => {
  for (const pruned of [true, false]) {
    const { db, sql } = await databaseBefore(t, 10)
    await sql.query(
      `INSERT INTO event (message_id, event_type, collector_timestamp, payload) SELECT gen_random_uuid(), 'e', timestamptz '2024-01-01T00:00:00Z' + i * interval '1 second', '{}' FROM generate_series(1, 10) i`,
    )
    if (pruned) {
      await sql.query(`INSERT INTO projection_snapshot (kind, event_id, format, data) VALUES ('graph', 6, 'test/1', '\\x00')`)
      await sql.query('SELECT event_prune()')
    }
    const r = await migrate(db.url)()
    t.ok(E.isRight(r) && r.right.applied.includes('0010_pruned_through'), 'migrated')
    const through = (await sql.query(`SELECT to_char(pruned_through AT TIME ZONE 'UTC', 'HH24:MI:SS') AS t FROM event_retention`)).rows[0].t
    t.equal(through, pruned ? '00:00:06' : null, pruned ? 'the first kept event (id 6)' : 'never pruned: no bound')
  }
})

t.test('0011 splits the resource project into the activation\'s and the latest change, keeping what each row reported', async (t) => {
  const { db, sql } = await databaseBefore(t, 11)
  // Rows as versions before 0011 left them. The slot's rank (0007) says whose write it holds;
  // rows from before 0007 have none, and a write at the start is then the activation's.
  // crossed: a later activation's project replaced the first's (it came in a later page).
  const rows = [
    { id: 'activation', start: '00:01', payload: { vitrage_resource_project_id: 'p1' }, project: 'p1', at: '00:01', rank: 0, event: 1 },
    { id: 'changed', start: '00:01', payload: { vitrage_resource_project_id: 'p1' }, project: 'p2', at: '00:05', rank: 1, event: 7 },
    { id: 'crossed', start: '00:01', payload: { vitrage_resource_project_id: 'p1' }, project: 'p9', at: '00:09', rank: 0, event: 9 },
    // crossed-changed: the same, and the change it overwrote is in the log (found again).
    { id: 'crossed-changed', start: '00:01', payload: { vitrage_resource_project_id: 'p1' }, project: 'p9', at: '00:09', rank: 0, event: 9 },
    { id: 'old-activation', start: '00:01', payload: { vitrage_resource_project_id: 'p1' }, project: 'p1', at: '00:01', rank: null, event: null },
    { id: 'old-changed', start: '00:01', payload: { vitrage_resource_project_id: 'p1' }, project: 'p2', at: '00:05', rank: null, event: null },
    { id: 'no-activation', start: null, payload: null, project: 'p2', at: '00:05', rank: 1, event: 5 },
    { id: 'none', start: '00:01', payload: {}, project: null, at: '00:01', rank: 0, event: 1 },
  ]
  const time = (hm: string | null): string | null => (hm === null ? null : `2024-01-01T00:${hm}Z`)
  for (const r of rows) {
    await sql.query(
      `INSERT INTO history_alarm (vitrage_id, start_timestamp, payload, vitrage_resource_project_id, resource_project_at, resource_project_rank, resource_project_event_id, activation_event_id)
       VALUES ($1, $2, $3, $4, $5, $6, $7, $8)`,
      [r.id, time(r.start), r.payload === null ? null : JSON.stringify(r.payload), r.project, time(r.at), r.rank, r.event, r.start === null ? null : 1],
    )
  }
  // The log: crossed-changed's changes (the latest by update_timestamp wins; one in a form only
  // Node reads is left to a rebuild), and one of an alarm whose row holds its change already.
  const change = (vid: string, project: string, at: unknown): string => JSON.stringify({ vitrage_id: vid, vitrage_resource_project_id: project, update_timestamp: at })
  await sql.query(
    `INSERT INTO event (message_id, event_type, collector_timestamp, payload)
     SELECT gen_random_uuid(), 'vitrage.alarm.change_project_id', '2024-01-01T00:30:00Z', p::jsonb FROM unnest($1::text[]) WITH ORDINALITY AS x(p, n) ORDER BY n`,
    [[change('crossed-changed', 'p5', '2024-01-01T00:05:00Z'), change('crossed-changed', 'p4', '2024-01-01 00:04:00'), change('crossed-changed', 'p-odd', '2024-01-01T01:06:00+01:00'), change('changed', 'p8', '2024-01-01T00:08:00Z')]],
  )
  const eventIds = (await sql.query<{ id: string }>('SELECT id FROM event ORDER BY id')).rows.map((x) => Number(x.id))
  const r = await migrate(db.url)()
  t.ok(E.isRight(r) && r.right.applied.includes('0011_resource_project_slots'), 'migrated')
  const got = (
    await sql.query<{ vitrage_id: string; p: string | null; a: string | null; c: string | null; e: string | null }>(
      `SELECT vitrage_id, vitrage_resource_project_id AS p, activation_resource_project_id AS a, resource_project_change AS c, resource_project_change_event_id::text AS e
       FROM history_alarm ORDER BY vitrage_id`,
    )
  ).rows
  t.same(
    Object.fromEntries(got.map((g) => [g.vitrage_id, [g.p, g.a, g.c, g.e]])),
    {
      activation: ['p1', 'p1', null, null],
      changed: ['p2', 'p1', 'p2', '7'],
      crossed: ['p1', 'p1', null, null],
      'crossed-changed': ['p5', 'p1', 'p5', String(eventIds[0])],
      'old-activation': ['p1', 'p1', null, null],
      'old-changed': ['p2', 'p1', 'p2', null],
      'no-activation': ['p2', null, 'p2', '5'],
      none: [null, null, null, null],
    },
    'each row reports the project it did, but where a later activation had replaced it: the first activation\'s, or the latest change in the log',
  )
  await t.rejects(sql.query(`UPDATE history_alarm SET vitrage_resource_project_id = 'x'`), { code: '428C9' }, 'the reported project is derived, never written')
})

t.test('before 0016 this version\'s projection writes and answers as of a time on the older schema; 0016 keeps each alarm\'s latest change and a rebuild finds the earlier ones', async (t) => {
  const { db, sql } = await databaseBefore(t, 16)
  const at = (minute: number): string => `2024-01-01T00:${String(minute).padStart(2, '0')}:00.000000Z`
  const story: HistoryCommand[] = [
    { kind: 'activate-alarm', eventId: 1, vitrageId: 'm', at: at(10), payload: {}, attributes: {
      name: 'CPU', vitrageType: 'nagios', aggregatedSeverity: 'CRITICAL', operationalSeverity: 'CRITICAL', projectId: null, resourceType: 'nova.host', resourceId: 'h', resourceProjectId: 'p1' } },
    { kind: 'change-project', eventId: 2, vitrageId: 'm', at: at(30), resourceProjectId: 'p2' },
    { kind: 'change-project', eventId: 3, vitrageId: 'm', at: at(50), resourceProjectId: 'p3' },
  ]
  const projectAt = async (minute: number): Promise<unknown> => (await queryAlarms(sql, { now: at(minute) })).map((a) => a.vitrage_resource_project_id)
  // A role that may not migrate runs this version on the older schema (run.ts): both writers.
  await applyHistory(sql, 'h', story, 0, 1)
  await sql.query(`INSERT INTO event (message_id, event_type, collector_timestamp, payload) VALUES
    (gen_random_uuid(), 'vitrage.alarm.change_project_id', now(), '{"vitrage_id": "r", "vitrage_resource_project_id": "p2", "update_timestamp": "2024-01-01T00:30:00Z"}')`)
  t.same(await applyHistoryRange(sql, 'r', 0, 1, () => []), { events: 1, handedOver: 0 }, 'the database\'s writer')
  t.same(await projectAt(40), ['p1'], 'as of 40, without the table: the activation\'s project (as before 0016)')
  t.same(await projectAt(50), ['p3'])
  const r = await migrate(db.url)()
  t.ok(E.isRight(r) && r.right.applied.includes('0016_resource_project_changes'), 'migrated')
  t.same((await sql.query('SELECT vitrage_id, event_id::int, project FROM history_project_change ORDER BY 1')).rows, [{ vitrage_id: 'm', event_id: 3, project: 'p3' }, { vitrage_id: 'r', event_id: 1, project: 'p2' }], 'each alarm\'s latest change')
  t.same(await projectAt(40), ['p1'], 'the earlier change is in the log, not yet in the history')
  t.equal(await resetHistory(sql, 'h'), undefined)
  await applyHistory(sql, 'h', story, 0, 1)
  t.same(await projectAt(40), ['p2'], 'rebuilt: as of 40, the change at 30')
})

t.test('every migrate grants the roles what the schema wants: grants lost or never given (roles created after the migrations ran) come back, and the writer cannot choose ids', async (t) => {
  const url = await missingDatabase(t, 'vp_grants')
  t.ok(E.isRight(await setupDatabase(url)()))
  const db = new pg.Client({ connectionString: url })
  await db.connect()
  t.teardown(() => db.end())
  const privileges = async (): Promise<unknown> =>
    (
      await db.query(`SELECT has_table_privilege('vitrage_persistor_writer', 'event', 'INSERT') AS table_insert,
        has_column_privilege('vitrage_persistor_writer', 'event', 'payload', 'INSERT') AS payload_insert,
        has_column_privilege('vitrage_persistor_writer', 'event', 'id', 'INSERT') AS id_insert,
        has_table_privilege('vitrage_persistor_writer', 'history_alarm', 'UPDATE') AS history_update,
        has_table_privilege('vitrage_persistor_reader', 'graph_snapshot', 'SELECT') AS reader_snapshots`)
    ).rows[0]
  const wanted = { table_insert: false, payload_insert: true, id_insert: false, history_update: true, reader_snapshots: true }
  t.same(await privileges(), wanted)
  // As if the roles had been created after the migrations ran (they got nothing), or the old
  // table-wide INSERT granted by hand as 0002's notice said.
  await db.query('REVOKE ALL ON ALL TABLES IN SCHEMA public FROM vitrage_persistor_writer, vitrage_persistor_reader')
  await db.query('GRANT INSERT ON event TO vitrage_persistor_writer')
  t.ok(E.isRight(await migrate(url)()))
  t.same(await privileges(), wanted, 'granted again by migrate, with nothing pending')
})

t.test('a migration behind a long reader gives way every few seconds instead of queueing every reader and writer of its table behind it, and is applied once the reader ends', async (t) => {
  const { db } = await databaseBefore(t, 13)
  const reader = new pg.Client({ connectionString: db.url })
  await reader.connect()
  t.teardown(() => reader.end())
  const other = new pg.Client({ connectionString: db.url })
  await other.connect()
  t.teardown(() => other.end())
  // A long reader (pg_dump, a report) of the table 0015 drops an index of.
  await reader.query('BEGIN')
  await reader.query('SELECT count(*) FROM history_change')
  const waits: string[] = []
  const migrating = migrate(db.url, undefined, { onLockWait: (w) => void waits.push(w.migration) })()
  await eventually('0015 waits for its lock', async () => (await other.query("SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'vitrage-persistor migrate' AND wait_event_type = 'Lock'")).rowCount === 1)
  // Before: this read queued behind the DROP INDEX's lock until the reader ended (38 s measured).
  await other.query("SET statement_timeout = '10s'")
  const started = performance.now()
  const read = await other.query('SELECT count(*) FROM history_change').then(() => 'read', (e: Error) => e.message)
  const waited = performance.now() - started
  t.equal(read, 'read')
  t.ok(waited < 5_000, `a reader arriving meanwhile waited ${Math.round(waited)} ms (the migration waits 2 s at most a try)`)
  await reader.query('COMMIT')
  const r = await migrating
  t.ok(E.isRight(r) && r.right.applied.includes('0015_drop_superseded_change_index'), 'applied once the reader ended')
  t.ok(waits.length >= 1 && waits.every((m) => m === '0015_drop_superseded_change_index'), `only the drop gave way (${waits.join(', ')}): 0013's index was built once`)
})

t.test('migrations a newer version applied are named, not hidden in "up to date" (a rollback)', async (t) => {
  const { db, sql } = await databaseBefore(t, 1_000)
  await sql.query("INSERT INTO schema_migration (version, name, checksum) VALUES (999, '0999_from_the_future', 'x')")
  const r = await migrate(db.url)()
  t.match(r, E.right({ applied: [], unknown: ['0999_from_the_future'] }))
  t.same(await migrationState(db.url)(), E.right({ pending: [], unknown: ['0999_from_the_future'] }))
  t.same(await pendingMigrations(db.url)(), E.right([]))
})

t.test('a migration lock held by another session while migrations are pending is named with its server process', async (t) => {
  const { db } = await databaseBefore(t, 15)
  const holder = new pg.Client({ connectionString: db.url })
  await holder.connect()
  t.teardown(() => holder.end())
  t.same(await migrationState(db.url)(), E.right({ pending: ['0015_drop_superseded_change_index', '0016_resource_project_changes'], unknown: [] }), 'nobody applying')
  await holder.query('SELECT pg_advisory_lock($1)', [MIGRATE_LOCK])
  const pid = (await holder.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0]?.pid
  t.same(await migrationState(db.url)(), E.right({ pending: ['0015_drop_superseded_change_index', '0016_resource_project_changes'], unknown: [], applyingPid: pid }))
  await holder.query('SELECT pg_advisory_unlock($1)', [MIGRATE_LOCK])
})

t.test('a stop while a migration pauses between tries for its lock ends migrate at once', async (t) => {
  const { db } = await databaseBefore(t, 15)
  const reader = new pg.Client({ connectionString: db.url })
  await reader.connect()
  t.teardown(() => reader.end())
  await reader.query('BEGIN')
  await reader.query('SELECT count(*) FROM history_change')
  const stop = new AbortController()
  let pausing: (() => void) | undefined
  const paused = new Promise<void>((resolve) => (pausing = resolve))
  const migrating = migrate(db.url, undefined, { signal: stop.signal, onLockWait: (w) => void (w.pauseMs >= 4_000 && pausing?.()) })()
  await paused
  const started = performance.now()
  stop.abort()
  const r = await migrating
  const took = performance.now() - started
  t.ok(E.isLeft(r), 'not applied')
  t.ok(took < 2_000, `settled ${Math.round(took)} ms after the stop, in a pause of 4 s`)
  await reader.query('COMMIT')
})
