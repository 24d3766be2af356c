import { connectTestBroker, eventually } from '@vitrage-persistor/testing'
import t from 'tap'
import { message, v2Body } from './support/messages.js'
import { isConsuming, startPersistor } from './support/persistor-process.js'
import { setupPrivateWorld } from './support/setup.js'

const HALF = 15_000

t.test('RabbitMQ restarted during ingest: the persistor reconnects, re-declares, resumes; nothing lost or doubled', async (t) => {
  // A private broker node, so restarting it disturbs no other test.
  const { rabbit, db, sql, count, names } = await setupPrivateWorld(t)
  const routingKey = `${names.topic}.info`
  const publishRange = async (from: number, to: number): Promise<void> => {
    // A fresh connection each time: the broker restarts in between.
    const broker = await connectTestBroker(rabbit.url)
    try {
      for (let seq = from; seq < to; seq++) {
        broker.channel.publish(names.exchange, routingKey, v2Body(message({ seq })), { contentType: 'application/json', deliveryMode: 2 })
        if (seq % 500 === 499) await broker.channel.waitForConfirms()
      }
      await broker.channel.waitForConfirms()
    } finally {
      await broker.close()
    }
  }

  // The deployment runs oslo with amqp_durable_queues = true: exchange and bindings survive restarts.
  // Batches never fill (size 1000 > prefetch 500), so each closes on its 250 ms timer: ingest runs at
  // about 2,000/s and the broker stops mid-stream, however fast the machine is.
  const p = startPersistor([
    'run', '--amqp-url', rabbit.url, '--database-url', db.url, '--exchange', names.exchange, '--topic', names.topic,
    '--queue', names.queue, '--amqp-durable-queues', '--http-port', '0', '--batch-size', '1000', '--prefetch', '500',
    '--batch-max-wait-ms', '250',
  ])
  t.teardown(() => p.kill('SIGKILL'))
  await p.waitFor(isConsuming, 'consuming')
  await publishRange(0, HALF)
  await eventually('ingest under way', async () => (await count()) > 2_000)
  await rabbit.stop()
  await p.waitFor((l) => l.msg === 'broker session lost; held messages will be redelivered', 'the lost session to be noticed')
  const stored = await count()
  await rabbit.start()
  await p.waitFor((l) => l.msg === 'consuming' && l['generation'] === 2, 'reconnection', 90_000)
  t.ok(stored < HALF, `restarted mid-stream (${stored} of ${HALF} stored)`)
  await publishRange(HALF, 2 * HALF)
  await eventually(
    'everything stored',
    async () => {
      p.assertAlive()
      return (await count()) === 2 * HALF
    },
    { timeoutMs: 120_000 },
  )
  const seqs = (await sql.query<{ seq: number }>(`SELECT (payload->>'seq')::int AS seq FROM event ORDER BY id`)).rows.map((r) => r.seq)
  t.ok(seqs.every((s, i) => s === i), 'each once, in publish order')
  t.same(p.lines.filter((l) => l.msg === 'broker channel error'), [], 'no ack on a dead delivery tag (it would raise a channel error)')
  p.kill('SIGTERM')
  t.equal((await p.exited).code, 0)
})
