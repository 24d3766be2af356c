import { spawnSync } from 'node:child_process'
import pg from 'pg'
import t from 'tap'
import { databaseUrl, retireTemplates, sweepAbandoned } from './database.js'
import { TEST_DATABASE_URL } from './env.js'
import { hostTag, uniqueName } from './names.js'

t.test("what a killed test process of this host left behind is dropped; a live process's, and another host's, are kept", async (t) => {
  const admin = new pg.Client({ connectionString: TEST_DATABASE_URL })
  await admin.connect()
  t.teardown(() => admin.end())
  // A process that has exited: its pid is free. Names as uniqueName makes them (with this host's
  // tag), as another host or container makes them (another tag: its pid says nothing here), and
  // as they were made before the tag.
  const dead = spawnSync('true').pid
  const otherTag = hostTag === 'ffff' ? 'fffe' : 'ffff'
  const deadDb = `vp_test_${dead}_${hostTag}0badf00d`
  const liveDb = `vp_test_${process.pid}_${hostTag}0badf00d`
  const otherHostDb = `vp_test_${dead}_${otherTag}0badf00d`
  const legacyDb = `vp_test_${dead}_0badf00d`
  const dbs = [deadDb, liveDb, otherHostDb, legacyDb]
  const roles = [`${deadDb}_norights`, `vp_service_${dead}_${hostTag}0badf00d`, `${liveDb}_norights`, `vp_service_${dead}_${otherTag}0badf00d`]
  for (const db of dbs) await admin.query(`CREATE DATABASE ${db}`)
  for (const role of roles) await admin.query(`CREATE ROLE "${role}" NOLOGIN`)
  t.teardown(async () => {
    for (const db of dbs) await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`)
    for (const role of roles) await admin.query(`DROP ROLE IF EXISTS "${role}"`)
  })
  const swept = await sweepAbandoned()
  t.same(swept.databases.filter((db) => dbs.includes(db)).sort(), [deadDb, legacyDb].sort())
  t.same(swept.roles.filter((r) => roles.includes(r)).sort(), [`${deadDb}_norights`, `vp_service_${dead}_${hostTag}0badf00d`].sort())
  const left = async (sql: string, names: string[]): Promise<string[]> => (await admin.query<{ n: string }>(sql, [names])).rows.map((r) => r.n).sort()
  t.same(await left('SELECT datname AS n FROM pg_database WHERE datname = ANY($1)', dbs), [liveDb, otherHostDb].sort())
  t.same(await left('SELECT rolname AS n FROM pg_roles WHERE rolname = ANY($1)', roles), [`${liveDb}_norights`, `vp_service_${dead}_${otherTag}0badf00d`].sort())
})

t.test('uniqueName carries the pid and this host\'s tag, in the form the sweep reads', async (t) => {
  t.match(uniqueName('vp_test'), new RegExp(`^vp_test_${process.pid}_${hostTag}[0-9a-f]{8}$`))
  t.match(hostTag, /^[0-9a-f]{4}$/)
})

t.test("templates of other schema versions built over a day ago are dropped; recent ones and the current one are kept", async (t) => {
  const admin = new pg.Client({ connectionString: TEST_DATABASE_URL })
  await admin.connect()
  t.teardown(() => admin.end())
  const tag = `${process.pid}${Date.now().toString(16)}`
  const name = (kind: string): string => `vp_tpl_${kind}${tag}`
  const [current, old, recent, unmarked, inUse] = [name('current'), name('old'), name('recent'), name('unmarked'), name('inuse')]
  const all = [current, old, recent, unmarked, inUse]
  for (const db of all) await admin.query(`CREATE DATABASE ${db}`)
  t.teardown(async () => {
    for (const db of all) await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`)
  })
  const now = Date.parse('2026-12-01T12:00:00Z')
  const built = (db: string, at: string) => admin.query(`COMMENT ON DATABASE ${db} IS 'vitrage-persistor test template, built ${at}'`)
  await built(current, '2026-11-01T00:00:00Z')
  await built(old, '2026-11-30T11:59:00Z')
  await built(recent, '2026-11-30T12:01:00Z')
  await built(inUse, '2026-11-01T00:00:00Z')
  const user = new pg.Client({ connectionString: databaseUrl(inUse) })
  await user.connect()
  t.teardown(() => user.end())
  // Only this test's templates: a test run of another checkout may be using the real ones.
  const retired = await retireTemplates(current, { now, like: `vp\\_tpl\\_%${tag}` })
  t.same(retired.sort(), [old, unmarked].sort())
  const left = await admin.query<{ n: string }>('SELECT datname AS n FROM pg_database WHERE datname = ANY($1)', [all])
  t.same(left.rows.map((r) => r.n).sort(), [current, recent, inUse].sort())
})
