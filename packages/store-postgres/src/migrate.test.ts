import { createEmptyDatabase, databaseUrl, uniqueName } from '@vitrage-persistor/testing'
import * as E from 'fp-ts/lib/Either.js'
import pg from 'pg'
import t from 'tap'
import { loadMigrations, migrate, setupDatabase } from './migrate.js'

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
})

t.test('an unreachable server is a transient failure, not a throw', async (t) => {
  const r = await migrate('postgres://root@127.0.0.1:1/none')()
  t.ok(E.isLeft(r))
  if (E.isLeft(r)) t.equal(r.left.kind, 'transient')
})

t.test('0008 on a database pruned by an earlier version takes the first stored id as the watermark; without a snapshot, 1', async (t) => {
  const migrations = loadMigrations()
  const before = migrations.filter((m) => m.version < 8)
  for (const pruned of [true, false]) {
    const db = await createEmptyDatabase()
    t.teardown(db.drop)
    const c = new pg.Client({ connectionString: db.url })
    await c.connect()
    t.teardown(() => c.end())
    // The schema as an earlier version left it: migrations 1-7 applied the way migrate() does.
    await c.query('CREATE TABLE schema_migration (version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())')
    for (const m of before) {
      await c.query(m.sql)
      await c.query('INSERT INTO schema_migration (version, name, checksum) VALUES ($1, $2, $3)', [m.version, m.name, m.checksum])
    }
    // Ten events; without a prune, the first four ids went to a rolled-back append.
    for (let i = 1; i <= 10; i++) {
      await c.query(`INSERT INTO event (message_id, event_type, collector_timestamp, payload) VALUES (gen_random_uuid(), 'e', now(), '{}')`)
    }
    if (pruned) {
      await c.query(`INSERT INTO projection_snapshot (kind, event_id, format, data) VALUES ('graph', 8, 'test/1', '\\x00')`)
      t.equal(Number((await c.query('SELECT event_prune() AS n')).rows[0].n), 7, 'the old event_prune deletes below the snapshot')
    } else {
      await c.query(`SELECT set_config('vitrage_persistor.retention', 'on', false)`)
      await c.query('DELETE FROM event WHERE id < 5')
    }
    const r = await migrate(db.url)()
    t.ok(E.isRight(r) && r.right.applied.includes('0008_retention_watermark'))
    const watermark = Number((await c.query('SELECT pruned_below FROM event_retention')).rows[0].pruned_below)
    t.equal(watermark, pruned ? 8 : 1, pruned ? 'pruned below 8' : 'a gap without a snapshot is not a prune')
    t.equal(Number((await c.query('SELECT count(*) AS n FROM graph_snapshot')).rows[0].n), pruned ? 1 : 0, 'graph_snapshot shows the graph snapshots')
  }
})
