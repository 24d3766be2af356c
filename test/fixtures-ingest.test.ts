import { isDeepStrictEqual } from 'node:util'
import { eventually } from '@vitrage-persistor/testing'
import t from 'tap'
import { innerMessage, rawFixtures } from './support/fixtures.js'
import { isConsuming, startPersistor } from './support/persistor-process.js'
import { setupWorld } from './support/setup.js'

t.test('the 400 captured Vitrage messages are stored in publish order with the right columns', async (t) => {
  const world = await setupWorld(t)
  const fixtures = rawFixtures()
  const p = startPersistor(world.flags())
  t.teardown(() => p.kill('SIGKILL'))
  await p.waitFor(isConsuming, 'the persistor to consume')

  // Published exactly as captured: same properties, body bytes verbatim, to the test's exchange.
  for (const m of fixtures) {
    await world.broker.publish(world.names.exchange, world.names.routingKey, Buffer.from(m.body, 'utf8'), {
      contentType: m.properties.contentType,
      contentEncoding: m.properties.contentEncoding,
      deliveryMode: m.properties.deliveryMode,
      priority: m.properties.priority,
      headers: m.properties.headers,
    })
  }
  await eventually('all 400 rows', async () => (await world.sql.query('SELECT count(*)::int AS n FROM event')).rows[0].n === 400)

  const { rows } = await world.sql.query(`SELECT id, message_id::text, event_type, publisher_id, priority,
      to_char(collector_timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS.US') AS collector_timestamp,
      payload, persisted_at FROM event ORDER BY id`)
  t.equal(rows.length, 400)
  const mismatches: string[] = []
  fixtures.forEach((m, i) => {
    const inner = innerMessage(m)
    const row = rows[i]
    const expectTs = (inner['timestamp'] as string).includes('.') ? (inner['timestamp'] as string) : `${inner['timestamp'] as string}.000000`
    if (row.message_id !== inner['message_id']) mismatches.push(`row ${i}: message_id ${row.message_id} != ${String(inner['message_id'])}`)
    if (row.event_type !== inner['event_type']) mismatches.push(`row ${i}: event_type`)
    if (row.publisher_id !== inner['publisher_id']) mismatches.push(`row ${i}: publisher_id`)
    if (row.priority !== inner['priority']) mismatches.push(`row ${i}: priority`)
    if (row.collector_timestamp !== expectTs) mismatches.push(`row ${i}: collector_timestamp ${row.collector_timestamp} != ${expectTs}`)
    // jsonb normalises key order, so payloads are compared structurally.
    if (!isDeepStrictEqual(row.payload, inner['payload'])) mismatches.push(`row ${i}: payload differs`)
    if (!(row.persisted_at instanceof Date)) mismatches.push(`row ${i}: persisted_at`)
  })
  t.same(mismatches, [], 'every row matches its message, in publish order')
  t.ok(rows.every((r, i) => i === 0 || Number(r.id) > Number(rows[i - 1].id)), 'ids increase')
  const types = new Map<string, number>()
  for (const r of rows) types.set(r.event_type, (types.get(r.event_type) ?? 0) + 1)
  t.equal(types.get('vitrage.graph.change'), 300)
  t.equal(await world.broker.depth(world.names.queue), 0, 'everything acked')
  t.equal(await world.broker.depth(world.names.deadQueue), 0, 'nothing dead-lettered')

  p.kill('SIGTERM')
  t.same(await p.exited, { code: 0, signal: null }, 'SIGTERM exits 0')
})
