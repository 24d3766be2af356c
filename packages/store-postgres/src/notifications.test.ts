import { createTestDatabase, eventually } from '@vitrage-persistor/testing'
import pg from 'pg'
import t from 'tap'
import { schemaTemplate } from './migrate.js'
import { listenForAppends } from './notifications.js'

t.test('a listener wakes once per committed batch, and again after its connection is lost', async (t) => {
  const db = await createTestDatabase(schemaTemplate)
  const c = new pg.Client({ connectionString: db.url })
  await c.connect()
  let wakes = 0
  const listener = listenForAppends({ connectionString: db.url, reconnect: { initialMs: 20, maxMs: 100 } }, () => {
    wakes++
  })
  t.teardown(async () => {
    await listener.close()
    await listener.close()
    await c.end()
    await db.drop()
  })
  await eventually('the first wake-up (on listening)', () => wakes === 1)
  const insert = `INSERT INTO event (message_id, event_type, collector_timestamp, payload) SELECT gen_random_uuid(), 'e', now(), '{}' FROM generate_series(1, $1)`
  await c.query(insert, [100])
  await eventually('a wake-up for a 100-row batch', () => wakes === 2)
  await c.query('BEGIN')
  await c.query(insert, [1])
  await c.query('ROLLBACK')
  await c.query(insert, [1])
  await eventually('a wake-up for the committed one only', () => wakes === 3)
  await c.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = 'vitrage-persistor listen' AND datname = current_database()`)
  await eventually('a wake-up after reconnecting', () => wakes === 4)
  await c.query(insert, [1])
  await eventually('and notifications again', () => wakes === 5)
})
