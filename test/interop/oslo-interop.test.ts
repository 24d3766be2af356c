import { execFileSync } from 'node:child_process'
import { eventually } from '@vitrage-persistor/testing'
import t from 'tap'
import { osloPublish, osloUnavailable } from '../support/oslo.js'
import { sentAndStored, storedIds } from '../support/oslo-checks.js'
import { isConsuming, startPersistor } from '../support/persistor-process.js'
import { setupWorld } from '../support/setup.js'

const skip = osloUnavailable()

/** durable flag of an exchange or queue as the broker reports it. */
const durability = (kind: 'exchanges' | 'queues', name: string): string | undefined => {
  const out = execFileSync('rabbitmqctl', ['-q', `list_${kind}`, 'name', 'durable', '--no-table-headers'], { encoding: 'utf8' })
  return out
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .find(([n]) => n === name)?.[1]
}


for (const durable of [false, true]) {
  t.test(`oslo.messaging Notifier with amqp_durable_queues=${durable}: stored, and oslo keeps publishing after the persistor started`, { skip }, async (t) => {
    const world = await setupWorld(t)
    const { exchange, topic } = world.names
    // oslo first: it declares the exchange and its <topic>.info queue with its own attributes.
    const before = await osloPublish({ exchange, topic, count: 3, durable })
    t.equal(before.code, 0, before.stderr)
    const osloDurable = String(durable)
    t.equal(durability('exchanges', exchange), osloDurable)
    t.equal(durability('queues', `${topic}.info`), osloDurable)

    // The persistor is configured with the opposite durability: it must still not touch oslo's objects.
    const p = startPersistor(world.flags(durable ? [] : ['--amqp-durable-queues']))
    t.teardown(() => p.kill('SIGKILL'))
    const consuming = await p.waitFor(isConsuming, 'consuming')
    t.ok((consuming['found'] as string[]).includes(`exchange ${exchange}`), 'found oslo\'s exchange and left it alone')
    // Said at once, not when a broker restart makes the persistor declare it the other way.
    const warning = await p.waitFor((l) => l['msg'] === "oslo's exchange or queue exists with other attributes than the settings say (--amqp-durable-queues, --amqp-auto-delete, --amqp-quorum-*): left alone, but should the broker lose it, the persistor would declare it as the settings say and oslo's publisher would then fail; set them as oslo.messaging's are", 'mismatch warning')
    t.match(warning['mismatched'], [new RegExp(`^exchange ${exchange}: .*inequivalent arg 'durable'`)])

    const after = await osloPublish({ exchange, topic, count: 5, durable })
    t.equal(after.code, 0, `oslo's publisher still works: ${after.stderr}`)
    t.ok(after.sends.every((s) => s.ok))
    t.equal(durability('exchanges', exchange), osloDurable, 'exchange attributes unchanged')
    t.equal(durability('queues', `${topic}.info`), osloDurable, "oslo's queue attributes unchanged")

    const expected = after.sends.map((s) => s.message_id as string)
    await eventually('oslo messages stored', async () => (await storedIds(world)).length >= expected.length)
    t.same(await storedIds(world), expected, 'the messages sent after start are stored, in order')
    const { rows } = await world.sql.query(`SELECT event_type, publisher_id, priority, payload FROM event ORDER BY id LIMIT 1`)
    t.match(rows[0], { event_type: 'vitrage.interop.sample', publisher_id: 'vitrage.interop', priority: 'INFO', payload: { seq: 0 } })
    p.kill('SIGTERM')
    t.equal((await p.exited).code, 0)
  })
}

t.test('the persistor first, with amqp_durable_queues=true: it declares the exchange as oslo would and oslo publishes into it', { skip }, async (t) => {
  const world = await setupWorld(t)
  const { exchange, topic } = world.names
  const p = startPersistor(world.flags(['--amqp-durable-queues']))
  t.teardown(() => p.kill('SIGKILL'))
  await p.waitFor(isConsuming, 'consuming')
  t.equal(durability('exchanges', exchange), 'true')
  const sent = await osloPublish({ exchange, topic, count: 4, durable: true })
  await sentAndStored(t, world, sent)
  p.kill('SIGTERM')
  t.equal((await p.exited).code, 0)
})

t.test("compatibility mode consumes oslo's own queue, including what waited there before it started, v1 and v2", { skip }, async (t) => {
  const world = await setupWorld(t)
  const { exchange, topic } = world.names
  const v2 = await osloPublish({ exchange, topic, count: 3 })
  const v1 = await osloPublish({ exchange, topic, count: 2, driver: 'messaging', eventType: 'vitrage.interop.v1' })
  t.equal(v2.code + v1.code, 0)
  const p = startPersistor(world.flags(['--compat-queue']))
  t.teardown(() => p.kill('SIGKILL'))
  const consuming = await p.waitFor(isConsuming, 'consuming')
  t.equal(consuming['queue'], `${topic}.info`)
  const expected = [...v2.sends, ...v1.sends].map((s) => s.message_id)
  await eventually('stored', async () => (await storedIds(world)).length === 5)
  t.same(await storedIds(world), expected)
  const more = await osloPublish({ exchange, topic, count: 2 })
  t.equal(more.code, 0, 'oslo keeps publishing to the queue the persistor consumes')
  await eventually('stored', async () => (await storedIds(world)).length === 7)
  t.equal(durability('queues', `${topic}.info`), 'false', "oslo's queue keeps its attributes")
  t.notMatch(p.output(), /other attributes than the settings say/, 'settings that match oslo\'s: no warning')
  p.kill('SIGTERM')
  t.equal((await p.exited).code, 0)
})

t.test("compatibility mode first, in a deployment with rabbit_quorum_queue: oslo's queue declared as oslo would (quorum), and oslo publishes into it", { skip }, async (t) => {
  const world = await setupWorld(t)
  const { exchange, topic } = world.names
  const p = startPersistor(world.flags(['--compat-queue', '--amqp-quorum-queues']))
  t.teardown(() => p.kill('SIGKILL'))
  const consuming = await p.waitFor(isConsuming, 'consuming')
  t.ok((consuming['declared'] as string[]).includes(`queue ${topic}.info`), "the persistor declared oslo's queue")
  const type = execFileSync('rabbitmqctl', ['-q', 'list_queues', 'name', 'type', 'durable', '--no-table-headers'], { encoding: 'utf8' })
    .split('\n')
    .map((l) => l.trim().split(/\s+/))
    .find(([n]) => n === `${topic}.info`)
  t.same(type?.slice(1), ['quorum', 'true'])
  const sent = await osloPublish({ exchange, topic, count: 3, quorum: true })
  await sentAndStored(t, world, sent)
  p.kill('SIGTERM')
  t.equal((await p.exited).code, 0)
})

