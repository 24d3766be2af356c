import { decodeMessage } from '@vitrage-persistor/core'
import { appendBatch, prepareEvent } from '@vitrage-persistor/store-postgres'
import { eventually, freePort } from '@vitrage-persistor/testing'
import * as E from 'fp-ts/lib/Either.js'
import t from 'tap'
import { message, v2Body } from './support/messages.js'
import { isConsuming, startPersistor } from './support/persistor-process.js'
import { declarePersistorTopology, metricValue, publishMany, rowCount, setupWorld, storedSeqs } from './support/setup.js'

t.test('redelivery after a restart before ack stores every message once', async (t) => {
  const world = await setupWorld(t)
  await declarePersistorTopology(world)
  const bodies = Array.from({ length: 50 }, (_, seq) => v2Body(message({ seq })))
  await publishMany(world, bodies.length, (i) => bodies[i] as Buffer)

  // A persistor that committed the first 30 and died before acking: the rows exist...
  const committed = bodies.slice(0, 30).map((b) => {
    const d = decodeMessage(b, { maxMessageBytes: 1 << 20 })
    if (E.isLeft(d)) throw new Error(d.left.detail)
    return prepareEvent(d.right)
  })
  const client = await world.sql.connect()
  await appendBatch(client, committed)
  client.release()
  // ...and its deliveries were never acked, so the broker redelivers all 50.
  const ch = await world.broker.connection.createChannel()
  await ch.prefetch(100)
  let delivered = 0
  await ch.consume(world.names.queue, () => {
    delivered++
  })
  await eventually('the crashed consumer to hold all 50', () => delivered === 50)
  await ch.close()

  const port = await freePort()
  const p = startPersistor(world.flags(['--http-port', String(port)]))
  t.teardown(() => p.kill('SIGKILL'))
  await p.waitFor(isConsuming, 'consuming')
  await eventually('the queue to drain', async () => (await world.broker.depth(world.names.queue)) === 0 && (await rowCount(world)) === 50)
  const page = await eventually('metrics', async () => {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
    return metricValue(text, 'vitrage_persistor_events_stored_total') === 20 ? text : undefined
  })
  t.same(await storedSeqs(world), Array.from({ length: 50 }, (_, i) => i), 'each message once, in publish order')
  t.equal(metricValue(page, 'vitrage_persistor_events_duplicate_total'), 30, 'the 30 committed ones were recognised as duplicates')
  t.equal(metricValue(page, 'vitrage_persistor_redelivered_total'), 50)
  p.kill('SIGTERM')
  t.equal((await p.exited).code, 0)
})
