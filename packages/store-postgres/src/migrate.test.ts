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
