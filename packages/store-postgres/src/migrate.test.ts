import { createEmptyDatabase, databaseUrl, type TestDatabase, uniqueName } from '@vitrage-persistor/testing'
import * as E from 'fp-ts/lib/Either.js'
import pg from 'pg'
import t, { type Test } from 'tap'
import { loadMigrations, migrate, pendingMigrations, setupDatabase } from './migrate.js'

t.test('setup creates a missing database and migrates it; running it again changes nothing', async (t) => {
  const name = uniqueName('vp_setup')
  const url = databaseUrl(name)
  const admin = new pg.Client({ connectionString: databaseUrl('test') })
  await admin.connect()
  t.teardown(async () => {
    await admin.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`)
    await admin.end()
  })
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
