import { randomUUID } from 'node:crypto'
import { eventually, freePort } from '@vitrage-persistor/testing'
import t from 'tap'
import { message, OSLO_PROPERTIES, v2Body, v2BodyWithPayloadText } from './support/messages.js'
import { isConsuming, startPersistor } from './support/persistor-process.js'
import { settledDepth } from './support/rabbitmqctl.js'
import { metricValue, setupWorld } from './support/setup.js'

const MAX_BYTES = 300_000
const conflictId = randomUUID()

// Each bad body and the reason it must be dead-lettered with.
const bad: Array<[string, Buffer]> = [
  ['invalid-json', Buffer.from('this is not JSON')],
  ['invalid-utf8', Buffer.concat([Buffer.from('{"oslo.version": "2.0", "oslo.message": "'), Buffer.from([0xc3, 0x28]), Buffer.from('"}')])],
  ['invalid-envelope', Buffer.from('{"oslo.version": "2.0"}')],
  ['invalid-message-json', v2Body('{"message_id": ')],
  ['missing-event-type', v2Body(message({ a: 1 }, { event_type: undefined }))],
  ['invalid-event-type', v2Body(message({ a: 1 }, { event_type: ['x'] }))],
  ['invalid-message-id', v2Body(message({ a: 1 }, { message_id: 'not-a-uuid' }))],
  ['invalid-payload', v2Body(message({ a: 1 }, { payload: 'a string' }))],
  ['invalid-payload', v2Body(message({ a: 1 }, { payload: [1, 2] }))],
  ['invalid-timestamp', v2Body(message({ a: 1 }, { timestamp: '25/11/2026 10:00' }))],
  ['unsupported-json', v2BodyWithPayloadText('{"s": "nul \\u0000 inside"}')],
  ['body-too-large', v2BodyWithPayloadText(JSON.stringify({ blob: 'x'.repeat(MAX_BYTES) }))],
  // Parsed by JavaScript (as Infinity; the text is stored as sent), refused by PostgreSQL (numeric
  // overflow): isolated in its batch.
  ['database-rejected', v2BodyWithPayloadText('{"n": 1e200000}')],
  ['unsupported-json', v2BodyWithPayloadText(`{"deep": ${'['.repeat(100_000)}${']'.repeat(100_000)}}`)],
  ['message-id-conflict', v2BodyWithPayloadText('{"version": 2}', conflictId)],
]

t.test('each kind of bad input is dead-lettered with its reason while its neighbours are stored in order', async (t) => {
  const world = await setupWorld(t)
  const port = await freePort()
  const p = startPersistor(world.flags(['--batch-size', '8', '--max-message-bytes', String(MAX_BYTES), '--http-port', String(port)]))
  t.teardown(() => p.kill('SIGKILL'))
  await p.waitFor(isConsuming, 'consuming')
  const ready = await fetch(`http://127.0.0.1:${port}/readyz`)
  t.equal(ready.status, 200)
  t.same(await ready.json(), { status: 'ready', checks: { broker: 'ok', database: 'ok' } })
  const gauge = async (): Promise<number | undefined> => metricValue(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text(), 'vitrage_persistor_database_connected')
  await eventually('database_connected 1 before any append (an idle persistor is watched too)', async () => (await gauge()) === 1)

  const good: string[] = []
  const publishGood = async (): Promise<void> => {
    const m = message({ seq: good.length })
    good.push(m['message_id'] as string)
    await world.broker.publish(world.names.exchange, world.names.routingKey, v2Body(m), OSLO_PROPERTIES)
  }
  // The conflicting id is first stored with another payload.
  await world.broker.publish(world.names.exchange, world.names.routingKey, v2BodyWithPayloadText('{"version": 1}', conflictId), OSLO_PROPERTIES)
  good.push(conflictId)
  for (const [, body] of bad) {
    await publishGood()
    await world.broker.publish(world.names.exchange, world.names.routingKey, body, { ...OSLO_PROPERTIES, headers: { 'x-test': 'kept' } })
  }
  await publishGood()

  await eventually('everything handled', async () => (await world.broker.depth(world.names.deadQueue)) === bad.length, { timeoutMs: 60_000 })
  await eventually('goods stored', async () => (await world.sql.query('SELECT count(*)::int AS n FROM event')).rows[0].n === good.length)
  const { rows } = await world.sql.query<{ message_id: string }>('SELECT message_id::text FROM event ORDER BY id')
  t.same(rows.map((r) => r.message_id), good, 'every valid neighbour stored, in publish order')

  const dead = await world.broker.drain(world.names.deadQueue)
  t.same(
    dead.map((m) => m.properties.headers?.['x-persistor-error']),
    bad.map(([reason]) => reason),
    'dead letters carry their reason, in order',
  )
  dead.forEach((m, i) => {
    t.ok(m.content.equals((bad[i] as [string, Buffer])[1]), `dead letter ${i} keeps the body byte for byte`)
    t.equal(m.properties.headers?.['x-test'], 'kept', 'original headers kept')
    t.equal(m.properties.headers?.['x-persistor-original-routing-key'], world.names.routingKey)
    t.type(m.properties.headers?.['x-persistor-error-detail'], 'string')
  })
  // The persistor holds what it has not acked: a ready count alone would not show it.
  t.equal(await settledDepth(world.names.queue), 0, 'nothing left unacked, nothing ready')

  const metrics = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
  for (const reason of new Set(bad.map(([r]) => r))) {
    const n = bad.filter(([r]) => r === reason).length
    t.match(metrics, new RegExp(`vitrage_persistor_dead_lettered_total\\{reason="${reason}"\\} ${n}\\b`), `metric counts ${reason}`)
  }
  t.match(metrics, new RegExp(`vitrage_persistor_events_stored_total ${good.length}\\b`))
  p.kill('SIGTERM')
  t.equal((await p.exited).code, 0)
})
