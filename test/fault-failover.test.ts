import { eventually, freePort } from '@vitrage-persistor/testing'
import t, { type Test } from 'tap'
import { message, v2Body } from './support/messages.js'
import { isConsuming, type PersistorProcess, startPersistor } from './support/persistor-process.js'
import { declarePersistorTopology, metricValue, rowCount, setupWorld, storedSeqs, type World } from './support/setup.js'

const TOTAL = 30_000

const stored = async (port: number): Promise<number> => {
  try {
    return metricValue(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text(), 'vitrage_persistor_events_stored_total') ?? 0
  } catch {
    return 0
  }
}

t.test('two instances on one queue: kill -9 the active one, the standby takes over at once (the broker sees the socket close, not a missed heartbeat), nothing lost or twice', async (t) => {
  const world = await setupWorld(t)
  await declarePersistorTopology(world)
  const ports = [await freePort(), await freePort()] as const
  const instances = ports.map((port) => startPersistor(world.flags(['--http-port', String(port), '--batch-size', '200'])))
  for (const p of instances) t.teardown(() => p.kill('SIGKILL'))
  for (const p of instances) await p.waitFor(isConsuming, 'consuming')

  let published = 0
  const publishing = (async () => {
    for (; published < TOTAL; published += 250) {
      for (let seq = published; seq < published + 250; seq++) {
        world.broker.channel.publish(world.names.exchange, world.names.routingKey, v2Body(message({ seq })), { contentType: 'application/json', deliveryMode: 2 })
      }
      await world.broker.channel.waitForConfirms()
      await new Promise((r) => setTimeout(r, 25))
    }
  })()

  await eventually('ingest under way', async () => (await rowCount(world)) > 5_000)
  const counts = [await stored(ports[0]), await stored(ports[1])] as const
  const active = counts[0] > 0 ? 0 : 1
  const standby = 1 - active
  t.equal(counts[standby], 0, 'the standby stored nothing while the active one lived')
  const killedAt = Date.now()
  instances[active]?.kill('SIGKILL')
  await eventually('the standby to store', async () => (await stored(ports[standby] as number)) > 0, { timeoutMs: 60_000 })
  const takeoverMs = Date.now() - killedAt
  // A death noticed only by missed heartbeats hands the queue over much later (the active one
  // frozen by SIGSTOP instead: 50 s); this bound leaves room for a loaded machine storing 30,000
  // messages meanwhile.
  t.ok(takeoverMs < 15_000, `took over in ${takeoverMs} ms`)
  await publishing
  await eventually('everything stored', async () => (await rowCount(world)) >= TOTAL && (await world.broker.depth(world.names.queue)) === 0, { timeoutMs: 120_000 })
  const seqs = await storedSeqs(world)
  t.equal(seqs.length, TOTAL, 'nothing lost, nothing stored twice')
  t.ok(seqs.every((s, i) => s === i), 'order kept across the failover')
  instances[standby]?.kill('SIGTERM')
  t.equal((await instances[standby]?.exited)?.code, 0)
})

/** Two instances with --compat-queue: the first consuming, the second standing by. */
const compatPair = async (t: Test, world: World, extra: readonly string[]): Promise<{ first: PersistorProcess; second: PersistorProcess; publish: (from: number, to: number) => Promise<void> }> => {
  const flags = world.flags(['--compat-queue', ...extra])
  const first = startPersistor(flags)
  t.teardown(() => first.kill('SIGKILL'))
  await first.waitFor(isConsuming, 'consuming')
  const second = startPersistor(flags)
  t.teardown(() => second.kill('SIGKILL'))
  await second.waitFor((l) => /standing by/.test(String(l.msg)), 'the second to stand by')
  const publish = async (from: number, to: number): Promise<void> => {
    for (let seq = from; seq < to; seq++) {
      world.broker.channel.publish(world.names.exchange, world.names.routingKey, v2Body(message({ seq })), { contentType: 'application/json', deliveryMode: 2 })
    }
    await world.broker.channel.waitForConfirms()
  }
  return { first, second, publish }
}

t.test("--compat-queue twice on oslo's queue: the second stands by (the queue is never split), and takes over when the first stops", async (t) => {
  const world = await setupWorld(t)
  const { first, second, publish } = await compatPair(t, world, ['--batch-size', '100'])
  await publish(0, 3_000)
  await eventually('stored', async () => (await rowCount(world)) === 3_000)
  t.notOk(second.lines.some(isConsuming), 'the second never consumed')
  t.same(await storedSeqs(world), Array.from({ length: 3_000 }, (_, i) => i), 'in publish order (two consumers would interleave)')
  first.kill('SIGTERM')
  t.equal((await first.exited).code, 0)
  await second.waitFor(isConsuming, 'the second to take over')
  await publish(3_000, 4_000)
  await eventually('stored by the second', async () => (await rowCount(world)) === 4_000)
  t.same(await storedSeqs(world), Array.from({ length: 4_000 }, (_, i) => i))
  second.kill('SIGTERM')
  t.equal((await second.exited).code, 0)
})

t.test("--compat-queue twice on a quorum queue (RabbitMQ does not enforce exclusive there): the lease keeps the second standing by", async (t) => {
  const world = await setupWorld(t)
  const { first, second, publish } = await compatPair(t, world, ['--amqp-quorum-queues', '--batch-size', '50'])
  await publish(0, 2_000)
  await eventually('stored', async () => (await rowCount(world)) === 2_000)
  t.notOk(second.lines.some(isConsuming), 'the second never consumed')
  t.same(await storedSeqs(world), Array.from({ length: 2_000 }, (_, i) => i), 'in publish order')
  // kill -9: PostgreSQL ends its session, and with it the lease.
  first.kill('SIGKILL')
  await second.waitFor(isConsuming, 'the second to take over')
  await publish(2_000, 3_000)
  await eventually('everything stored once', async () => (await rowCount(world)) === 3_000, { timeoutMs: 60_000 })
  t.same(await storedSeqs(world), Array.from({ length: 3_000 }, (_, i) => i))
  second.kill('SIGTERM')
  t.equal((await second.exited).code, 0)
})
