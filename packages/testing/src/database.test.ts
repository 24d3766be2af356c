import { spawnSync } from 'node:child_process'
import pg from 'pg'
import t from 'tap'
import { sweepAbandoned } from './database.js'
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
