import { silentLogger } from '@vitrage-persistor/core'
import { createIngestMetrics, defaultPersistorOptions, Persistor } from '@vitrage-persistor/ingest'
import { PgEventStore } from '@vitrage-persistor/store-postgres'
import { Registry } from 'prom-client'
import t, { type Test } from 'tap'
import { eventually } from '@vitrage-persistor/testing'
import { message, OSLO_PROPERTIES, v2Body } from './support/messages.js'
import { closeConnectionsNamed } from './support/rabbitmqctl.js'
import { declarePersistorTopology, rowCount, setupWorld, storedSeqs } from './support/setup.js'

const options = (world: Awaited<ReturnType<typeof setupWorld>>, connectionName: string) => ({
  ...defaultPersistorOptions(world.broker.url),
  exchange: world.names.exchange,
  topic: world.names.topic,
  queue: world.names.queue,
  prefetch: 10,
  batchSize: 5,
  batchMaxWaitMs: 10,
  heartbeatSeconds: 30,
  reconnect: { initialMs: 100, maxMs: 1_000 },
  appendRetry: { initialMs: 100, maxMs: 1_000 },
  shutdownTimeoutMs: 10_000,
  queueDepthIntervalMs: 60_000,
  connectionName,
})

const deps = (t: Test, store: PgEventStore) => ({
  store,
  logger: silentLogger,
  metrics: createIngestMetrics(new Registry()),
  scrub: (s: string) => s,
  onDefect: (e: unknown) => t.fail(`defect: ${String(e)}`),
})

t.test('the dead-letter connection lost while the consumer starts: it starts again and consumes (it stayed dead, reporting consuming)', async (t) => {
  const world = await setupWorld(t)
  const store = new PgEventStore({ connectionString: world.db.url, maxConnections: 1 })
  t.teardown(() => store.close())
  const name = `persistor-start-test-${process.pid}`
  // The broker closes the dead-letter connection just as the first consumer is being started.
  // amqplib's Channel class (not exported): the prototype of any plain channel.
  const probe = await world.broker.connection.createChannel()
  const Channel = { prototype: Object.getPrototypeOf(probe) as { consume: (...a: unknown[]) => Promise<unknown> } }
  await probe.close()
  const consume = Channel.prototype.consume
  let first = true
  Channel.prototype.consume = async function (this: unknown, ...a: unknown[]) {
    if (first) {
      first = false
      t.equal(await closeConnectionsNamed(`${name} (dead-letters)`, 'fault test'), 1)
      // The consumer must start after the persistor has heard of the close (the case fixed),
      // not before: the close of its channel, or of the connection, is recorded as the broker
      // problem (none before: this is the first attempt).
      const heard = await eventually('the close seen', () => /dead-letters|fault test/.test(persistor.brokerProblem ?? ''), { timeoutMs: 10_000 }).catch(() => false)
      t.ok(heard, 'the persistor heard of the close before the consumer started')
    }
    return consume.apply(this, a)
  }
  t.teardown(() => {
    Channel.prototype.consume = consume
  })
  const persistor = new Persistor(options(world, name), deps(t, store))
  t.teardown(() => persistor.close())
  persistor.start()
  await eventually('consuming on a live session', async () => persistor.consuming, { timeoutMs: 20_000 })
  await world.broker.publish(world.names.exchange, world.names.routingKey, v2Body(message({ seq: 0 })), OSLO_PROPERTIES)
  await eventually('stored', async () => (await rowCount(world)) === 1)
})

t.test('close() while still connecting: once it resolves, nothing of that attempt is left or comes later', async (t) => {
  const world = await setupWorld(t)
  const store = new PgEventStore({ connectionString: world.db.url, maxConnections: 1 })
  t.teardown(() => store.close())
  const persistor = new Persistor(options(world, 'persistor-close-test'), deps(t, store))
  persistor.start()
  t.equal(persistor.currentState, 'connecting')
  await persistor.close()
  t.equal(persistor.currentState, 'closed')
  // The attempt saw the close: it did not declare the topology (before, it went on and declared
  // the queue after close() had resolved, after a caller's cleanup). An absence can only be
  // watched for a while: a connection attempt here takes well under the second watched.
  const declared = async (): Promise<boolean> => {
    const ch = await world.broker.connection.createChannel()
    ch.on('error', () => {})
    try {
      await ch.checkQueue(world.names.queue)
      await ch.close()
      return true
    } catch {
      return false // a failed check closes the channel
    }
  }
  let seen = false
  for (const until = Date.now() + 1_000; Date.now() < until && !seen; ) {
    seen = await declared()
    await new Promise((r) => setTimeout(r, 20))
  }
  t.notOk(seen, 'the queue is never declared after close()')
})

t.test('the store closed under a running persistor: the owner hears of it (onDefect) once, at the first append, nothing is acked, and it closes itself', async (t) => {
  const world = await setupWorld(t)
  const store = new PgEventStore({ connectionString: world.db.url, maxConnections: 1 })
  const defects: unknown[] = []
  const p = new Persistor(options(world, `persistor-closed-store-${process.pid}`), { ...deps(t, store), onDefect: (e) => void defects.push(e) })
  t.teardown(() => p.close())
  p.start()
  await eventually('consuming', () => p.consuming)
  await store.close()
  world.broker.channel.publish(world.names.exchange, world.names.routingKey, v2Body(message({ seq: 1 })), OSLO_PROPERTIES)
  await eventually('the defect reported', () => defects.length === 1)
  t.match(String(defects[0]), /the event store was closed while the persistor was running/)
  // It stayed 'consuming' and failed every batch (each a defect) until its owner closed it.
  await eventually('closed by itself', () => p.currentState === 'closed', { timeoutMs: 5_000 })
  t.notOk(p.consuming)
  for (let seq = 2; seq <= 5; seq++) world.broker.channel.publish(world.names.exchange, world.names.routingKey, v2Body(message({ seq })), OSLO_PROPERTIES)
  await eventually('every message in the queue, unacked', async () => (await world.broker.depth(world.names.queue)) === 5)
  t.equal(await world.broker.depth(world.names.deadQueue), 0)
  t.equal(defects.length, 1, 'one defect')
  // Settled already: it resolves before any I/O could happen (the next setImmediate).
  const closing = await Promise.race([p.close().then(() => 'done'), new Promise((r) => setImmediate(() => r('pending')))])
  t.equal(closing, 'done', "its owner's close() is already done")
  t.equal(await rowCount(world), 0)
})

t.test('the queue deleted under the consumer: what it had delivered is stored, not dropped; then it declares the queue again and consumes', async (t) => {
  const world = await setupWorld(t)
  const store = new PgEventStore({ connectionString: world.db.url, maxConnections: 1 })
  t.teardown(() => store.close())
  const p = new Persistor({ ...options(world, `persistor-cancel-${process.pid}`), prefetch: 30, batchSize: 5, batchMaxWaitMs: 5 }, deps(t, store))
  t.teardown(() => p.close())
  p.start()
  await eventually('consuming', () => p.consuming)
  // The first batch waits on a lock; the next ones are delivered and wait behind it.
  const locker = await world.sql.connect()
  t.teardown(() => locker.release(true))
  await locker.query('BEGIN')
  await locker.query('LOCK TABLE event IN ACCESS EXCLUSIVE MODE')
  for (let seq = 0; seq < 20; seq++) world.broker.channel.publish(world.names.exchange, world.names.routingKey, v2Body(message({ seq })), OSLO_PROPERTIES)
  await eventually('the first append waits on the lock', async () => {
    const { rows } = await world.sql.query(`SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock' AND query LIKE 'COPY%'`)
    return rows.length > 0
  })
  await eventually('all 20 delivered (none ready)', async () => (await world.broker.depth(world.names.queue)) === 0)
  // An operator deletes the queue: its 20 unacked messages exist only in the persistor now.
  await world.broker.channel.deleteQueue(world.names.queue)
  await locker.query('ROLLBACK')
  await eventually('all 20 stored', async () => (await rowCount(world)) === 20)
  t.same(
    (await storedSeqs(world)).sort((a, b) => a - b),
    Array.from({ length: 20 }, (_, i) => i),
    'the 20 delivered before the deletion are stored, each once',
  )
  const queueExists = async (): Promise<boolean> => {
    // A channel of its own: a failed check closes the channel it ran on.
    const ch = await world.broker.connection.createChannel()
    ch.on('error', () => {})
    try {
      await ch.checkQueue(world.names.queue)
      return true
    } catch {
      return false
    } finally {
      await ch.close().catch(() => {})
    }
  }
  await eventually('consuming again, on a queue declared again', async () => p.consuming && (await queueExists()))
  t.ok(await queueExists(), 'the queue is declared again')
  world.broker.channel.publish(world.names.exchange, world.names.routingKey, v2Body(message({ seq: 20 })), OSLO_PROPERTIES)
  await eventually('and the next one stored', async () => (await rowCount(world)) === 21)
  t.same((await storedSeqs(world)).slice(-1), [20], 'a message published to the new queue is consumed and stored')
  t.equal(await world.broker.depth(world.names.deadQueue), 0, 'nothing was dead-lettered')
})

t.test('untilConsuming: resolves once consuming; on a broker it cannot reach, rejects after its timeout with the problem; rejects when closed first', async (t) => {
  const world = await setupWorld(t)
  const store = new PgEventStore({ connectionString: world.db.url, maxConnections: 1 })
  t.teardown(() => store.close())
  const p = new Persistor(options(world, `persistor-until-${process.pid}`), deps(t, store))
  t.teardown(() => p.close())
  const consuming = p.untilConsuming({ timeoutMs: 30_000 })
  p.start()
  await consuming
  t.ok(p.consuming, 'consuming when it resolves')
  await p.untilConsuming()

  const unreachable = new Persistor({ ...options(world, `persistor-until-down-${process.pid}`), amqpUrl: 'amqp://guest:guest@127.0.0.1:1/' }, deps(t, store))
  unreachable.start()
  await t.rejects(unreachable.untilConsuming({ timeoutMs: 300 }), { name: 'TimeoutError', message: /^not consuming after 300 ms: .*ECONNREFUSED/ })
  const pending = t.rejects(unreachable.untilConsuming(), { message: /^the persistor was closed before it consumed/ })
  await unreachable.close()
  await pending
  await t.rejects(unreachable.untilConsuming(), { message: 'the persistor is closed' })
})

t.test('the store closed under a persistor holding a batch: a later batch of dead letters alone acks nothing, so the held message is not lost', async (t) => {
  const world = await setupWorld(t)
  await declarePersistorTopology(world)
  const store = new PgEventStore({ connectionString: world.db.url, maxConnections: 1 })
  await store.close()
  // One valid message (its append meets the closed store), then one that is not JSON: a batch
  // each. The second batch's ack (allUpTo) acked the first, never stored (review 50).
  world.broker.channel.publish(world.names.exchange, world.names.routingKey, v2Body(message({ seq: 1 })), OSLO_PROPERTIES)
  world.broker.channel.publish(world.names.exchange, world.names.routingKey, Buffer.from('not json at all'), OSLO_PROPERTIES)
  await world.broker.channel.waitForConfirms()
  const defects: unknown[] = []
  const p = new Persistor({ ...options(world, `persistor-closed-ackall-${process.pid}`), batchSize: 1 }, { ...deps(t, store), onDefect: (e) => void defects.push(e) })
  t.teardown(() => p.close())
  p.start()
  await eventually('closed by itself', () => p.currentState === 'closed', { timeoutMs: 10_000 })
  t.equal(defects.length, 1)
  await eventually('both messages back in the queue', async () => (await world.broker.depth(world.names.queue)) === 2)
  t.equal(await world.broker.depth(world.names.deadQueue), 0, 'nothing dead-lettered either')
})
