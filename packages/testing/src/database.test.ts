import { spawnSync } from 'node:child_process'
import pg from 'pg'
import t from 'tap'
import { databaseUrl, retireTemplates, sweepAbandoned } from './database.js'
import { TEST_DATABASE_URL } from './env.js'

t.test("what a killed test process left behind is dropped; a live process's databases and roles are kept", async (t) => {
  const admin = new pg.Client({ connectionString: TEST_DATABASE_URL })
  await admin.connect()
  t.teardown(() => admin.end())
  // A process that has exited: its pid is free.
  const dead = spawnSync('true').pid
  const [deadDb, liveDb] = [`vp_test_${dead}_0badf00d`, `vp_test_${process.pid}_0badf00d`]
  const roles = [`${deadDb}_norights`, `vp_service_${dead}_0badf00d`, `${liveDb}_norights`]
  for (const db of [deadDb, liveDb]) await admin.query(`CREATE DATABASE ${db}`)
  for (const role of roles) await admin.query(`CREATE ROLE "${role}" NOLOGIN`)
  t.teardown(async () => {
    for (const db of [deadDb, liveDb]) await admin.query(`DROP DATABASE IF EXISTS ${db} WITH (FORCE)`)
    for (const role of roles) await admin.query(`DROP ROLE IF EXISTS "${role}"`)
  })
  const swept = await sweepAbandoned()
  t.ok(swept.databases.includes(deadDb) && !swept.databases.includes(liveDb))
  t.ok(swept.roles.includes(`${deadDb}_norights`) && swept.roles.includes(`vp_service_${dead}_0badf00d`) && !swept.roles.includes(`${liveDb}_norights`))
  const left = async (sql: string, names: string[]): Promise<string[]> => (await admin.query<{ n: string }>(sql, [names])).rows.map((r) => r.n).sort()
  t.same(await left('SELECT datname AS n FROM pg_database WHERE datname = ANY($1)', [deadDb, liveDb]), [liveDb])
  t.same(await left('SELECT rolname AS n FROM pg_roles WHERE rolname = ANY($1)', roles), [`${liveDb}_norights`])
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
