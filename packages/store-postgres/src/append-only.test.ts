import { randomUUID } from 'node:crypto'
import { createTestDatabase, databaseUrl, TEST_DATABASE_URL, testDatabaseClient, uniqueName } from '@vitrage-persistor/testing'
import pg from 'pg'
import t from 'tap'
import { schemaTemplate } from './migrate.js'

const insert = `INSERT INTO event (message_id, event_type, collector_timestamp, payload) VALUES ($1, 'test', now(), '{"a": 1}')`

t.test('UPDATE, DELETE and TRUNCATE are refused even to the owner', async (t) => {
  const c = await testDatabaseClient(t, schemaTemplate)
  await c.query(insert, [randomUUID()])
  for (const sql of [`UPDATE event SET payload = '{}'`, 'DELETE FROM event', 'TRUNCATE event']) {
    await t.rejects(c.query(sql), { code: '23001', message: /append-only/ }, sql)
  }
  t.equal((await c.query('SELECT count(*)::int AS n FROM event')).rows[0].n, 1)
})

t.test('the writer role can append and read, and nothing else', async (t) => {
  const db = await createTestDatabase(schemaTemplate)
  const login = uniqueName('vp_writer_login')
  // Roles are cluster-wide: created and dropped from the maintenance database.
  const admin = new pg.Client({ connectionString: TEST_DATABASE_URL })
  await admin.connect()
  await admin.query(`CREATE ROLE ${login} LOGIN IN ROLE vitrage_persistor_writer`)
  const url = new URL(databaseUrl(db.name))
  url.username = login
  const w = new pg.Client({ connectionString: url.toString() })
  await w.connect()
  t.teardown(async () => {
    await w.end()
    await db.drop()
    await admin.query(`DROP ROLE IF EXISTS ${login}`).catch(() => {})
    await admin.end()
  })
  await w.query(insert, [randomUUID()])
  t.equal((await w.query('SELECT count(*)::int AS n FROM event')).rows[0].n, 1, 'appends and reads')
  await t.rejects(w.query(`UPDATE event SET payload = '{}'`), { code: '42501' }, 'UPDATE: permission denied')
  await t.rejects(w.query('DELETE FROM event'), { code: '42501' }, 'DELETE: permission denied')
  await t.rejects(w.query('CREATE TABLE sneaky (x int)'), { code: '42501' }, 'no DDL in the schema')
  await t.rejects(w.query(`SET LOCAL vitrage_persistor.retention = 'on'; DELETE FROM event`), { code: '42501' }, 'the retention switch does not help it')
})
