/**
 * `vitrage-persistor replay --to-amqp`: what a standby's listener receives, and how a replay ends
 * when the broker will not confirm (a memory alarm) or the log fails under it.
 */
import { type DecodedMessage, decodeMessage } from '@vitrage-persistor/core'
import { appendBatch, prepareEvent } from '@vitrage-persistor/store-postgres'
import { connectTestBroker, eventually, TEST_DATABASE_URL, type TestBroker } from '@vitrage-persistor/testing'
import pg from 'pg'
import * as E from 'fp-ts/lib/Either.js'
import t, { type Test } from 'tap'
import { cli } from './support/cli.js'
import { message, v2Body } from './support/messages.js'
import { osloListen, osloUnavailable } from './support/oslo.js'
import { startFreezableProxy } from './support/freezable-proxy.js'
import { type PersistorProcess, startPersistor, stopAndTime } from './support/persistor-process.js'
import { memoryAlarm, setupPrivateWorld, setupWorld, type World } from './support/setup.js'

type PrivateWorld = Awaited<ReturnType<typeof setupPrivateWorld>>

const PRIORITIES = ['INFO', 'ERROR', 'WARN'] as const

/** Stores `n` notifications (priorities cycling INFO, ERROR, WARN; odd payloads among them). */
const storeEvents = async (sql: World['sql'], n: number, from = 0): Promise<void> => {
  const client = await sql.connect()
  try {
    for (let i = from; i < from + n; i += 1000) {
      const batch = Array.from({ length: Math.min(1000, from + n - i) }, (_, k) => {
        const seq = i + k
        const payload = { seq, text: 'héllo ✓ \u2028', nested: { none: null, list: [1, 'two', { three: 3 }] }, big: 123456789012345678901234567890 }
        const body = v2Body(message(payload, { priority: PRIORITIES[seq % 3], publisher_id: `vitrage.replay.${seq % 2}` }))
        return prepareEvent((decodeMessage(body, { maxMessageBytes: 1 << 20 }) as E.Right<DecodedMessage>).right)
      })
      await appendBatch(client, batch)
    }
  } finally {
    client.release()
  }
}

/** A world with 30,000 stored events, its exchange routing `<topic>.*` to one queue, and a replay into it well under way. */
const replayUnderWay = async (t: Test): Promise<{ world: World; p: PersistorProcess }> => {
  const world = await setupWorld(t)
  await storeEvents(world.sql, 30_000)
  await world.broker.channel.assertExchange(world.names.exchange, 'topic', { durable: false })
  await world.broker.channel.assertQueue(world.names.routingKey, { durable: false })
  await world.broker.channel.bindQueue(world.names.routingKey, world.names.exchange, `${world.names.topic}.*`)
  const p = startPersistor(['replay', '--database-url', world.db.url, '--to-amqp', world.broker.url, '--exchange', world.names.exchange, '--to-topic', world.names.topic])
  t.teardown(() => p.kill('SIGKILL'))
  await eventually('republishing under way', async () => {
    p.assertAlive()
    return (await world.broker.depth(world.names.routingKey)) >= 5_000
  })
  return { world, p }
}

/** A private node (its memory alarm is ours to raise), `n` stored events, and `<topic>.*` bound to the queue `<topic>.info`. */
const privateTarget = async (t: Test, n: number): Promise<PrivateWorld & { broker: TestBroker; queue: string; alarm: ReturnType<typeof memoryAlarm> }> => {
  const world = await setupPrivateWorld(t)
  await storeEvents(world.sql, n)
  const broker = await connectTestBroker(world.rabbit.url)
  t.teardown(() => broker.close())
  const queue = `${world.names.topic}.info`
  await broker.channel.assertExchange(world.names.exchange, 'topic', { durable: true })
  await broker.channel.assertQueue(queue, { durable: true })
  await broker.channel.bindQueue(queue, world.names.exchange, `${world.names.topic}.*`)
  return { ...world, broker, queue, alarm: memoryAlarm(world.rabbit) }
}

const stored = async (w: World): Promise<Array<{ message_id: string; event_type: string; publisher_id: string; priority: string; payload: unknown }>> =>
  (await w.sql.query('SELECT message_id, event_type, publisher_id, priority, payload FROM event ORDER BY id')).rows

const oslo = osloUnavailable()
for (const durable of [false, true]) {
  t.test(
    `replay --to-topic: a real oslo.messaging listener (amqp_durable_queues ${durable}) dispatches every event to the endpoint of its priority, with the stored fields`,
    { skip: oslo ?? false },
    async (t) => {
      const world = await setupWorld(t)
      await storeEvents(world.sql, 30)
      const topic = world.names.topic
      world.names.queues.push(`${topic}.error`, `${topic}.warn`)
      const listener = osloListen({ exchange: world.names.exchange, topic, count: 30, durable })
      t.teardown(listener.kill)
      await listener.ready
      const r = await cli(['replay', '--database-url', world.db.url, '--to-amqp', world.broker.url, '--exchange', world.names.exchange, '--to-topic', topic])
      t.equal(r.code, 0, r.err)
      t.match(JSON.parse(r.out), { published: 30, lastConfirmedId: 30 })
      t.notOk('priorityMismatches' in JSON.parse(r.out))
      const { received, stderr } = await listener.done
      t.equal(received.length, 30, stderr.slice(-2000))
      const expected = (await stored(world)).map((e) => ({ method: e.priority.toLowerCase(), message_id: e.message_id, event_type: e.event_type, publisher_id: e.publisher_id, payload: e.payload }))
      const got = received.map((m) => ({ method: m.method, message_id: m.message_id, event_type: m.event_type, publisher_id: m.publisher_id, payload: m.payload }))
      const byId = (a: { message_id: string }, b: { message_id: string }): number => a.message_id.localeCompare(b.message_id)
      t.same(got.sort(byId), expected.sort(byId), 'each dispatched to its priority, with the same message_id, event_type, publisher_id and payload')
    },
  )
}

t.test('replay under one --routing-key counts and names the events whose priority the key does not name; flags are checked', async (t) => {
  const world = await setupWorld(t)
  await storeEvents(world.sql, 30)
  const base = ['replay', '--database-url', world.db.url, '--to-amqp', world.broker.url, '--exchange', world.names.exchange]
  await world.broker.channel.assertExchange(world.names.exchange, 'topic', { durable: false })
  await world.broker.channel.assertQueue(world.names.routingKey, { durable: false })
  await world.broker.channel.bindQueue(world.names.routingKey, world.names.exchange, world.names.routingKey)
  const r = await cli([...base, '--routing-key', world.names.routingKey])
  t.equal(r.code, 0, r.err)
  t.match(JSON.parse(r.out), { published: 30, priorityMismatches: 20 })
  t.match(r.err, /20 events were published under ".*\.info" with another priority than the key names; an oslo\.messaging listener dispatches by the message's priority/)
  t.equal(await world.broker.depth(world.names.routingKey), 30)

  // The default exchange always exists; it routes to the queue the key names.
  const direct = await cli(['replay', '--database-url', world.db.url, '--to-amqp', world.broker.url, '--exchange', '', '--routing-key', world.names.routingKey, '--to-id', '3'])
  t.equal(direct.code, 0, direct.err)
  t.equal(await world.broker.depth(world.names.routingKey), 33, 'the default exchange: into the queue named by the key')

  // Past the head: nothing to do, said so (a resume after a complete run).
  const past = await cli([...base, '--routing-key', world.names.routingKey, '--from-id', '31'])
  t.equal(past.code, 0, past.err)
  t.match(past.err, /nothing to republish: the log ends at event 30/)
  t.match(JSON.parse(past.out), { published: 0 })
  const noType = await cli([...base, '--routing-key', world.names.routingKey, '--event-type', 'no.such.type'])
  t.equal(noType.code, 0, noType.err)
  t.match(noType.err, /no event of type "no.such.type" between 1 and 30/)

  for (const [flags, said] of [
    [['--routing-key', 'a.info', '--to-topic', 'a'], /one of --routing-key .* or --to-topic/],
    [[], /one of --routing-key .* or --to-topic/],
    [['--routing-key', 'a.info', '--max-in-flight', '100001'], /--max-in-flight: at most 100,000, got 100001/],
    // A URL that is not one (a second port) is a bad flag, not a failed run with a resume point.
    [['--routing-key', 'a.info', '--to-amqp', 'amqp://u:s3cret@127.0.0.1:1:2/'], /--to-amqp: is not a URL/],
    [['--routing-key', 'a.info', '--to-amqp', 'amqp:s3cret'], /--to-amqp: must be an amqp:\/\/ URL/],
    [['--routing-key', 'a.info', '--to-amqp', 'http://u:s3cret@127.0.0.1/'], /--to-amqp: must be an amqp:\/\/ or amqps:\/\/ URL, got a http:\/\/ URL/],
  ] as const) {
    const bad = await cli([...base, ...flags])
    t.equal(bad.code, 2, `${flags.join(' ')}: exit 2`)
    t.match(bad.err, said)
    t.notMatch(bad.err, /s3cret|resume/)
  }
})

t.test('a replay stopped while the broker blocks publishing (a memory alarm) ends within --shutdown-timeout-ms, saying where to resume; a resume completes it', async (t) => {
  const { rabbit, db, names, broker, queue, alarm } = await privateTarget(t, 20_000)
  // A small window keeps the replay slow enough to be caught mid-way by the alarm.
  const args = ['replay', '--database-url', db.url, '--to-amqp', rabbit.url, '--exchange', names.exchange, '--to-topic', names.topic, '--max-in-flight', '5', '--shutdown-timeout-ms', '2000']

  const first = startPersistor(args)
  t.teardown(() => first.kill('SIGKILL'))
  await eventually('republishing under way', async () => {
    first.assertAlive()
    return (await broker.depth(queue)) >= 500
  })
  await alarm.raise()
  await eventually('the replay reports the broker blocking it', () => {
    first.assertAlive()
    return /the target broker blocks publishing \(.*\); waiting/.test(first.output())
  })
  const stopping = Date.now()
  first.kill('SIGTERM')
  const exit = await first.exited
  const took = Date.now() - stopping
  t.same(exit, { code: 1, signal: null }, 'stopped, exit 1 (incomplete)')
  t.ok(took < 2_000 + 4_000, `exited ${took} ms after SIGTERM (waited 2 s for confirms)`)
  const said = /stopped by SIGTERM before the end; confirmed up to event (\d+) \(resume with --from-id (\d+)\); (\d+) published messages were not confirmed within 2 s/.exec(first.output())
  t.ok(said, first.output().slice(-800))
  await alarm.clear()
  // What the broker took while blocked may still arrive: a resume publishes it again, at most the unconfirmed.
  const unconfirmed = Number(said?.[3])
  t.ok(unconfirmed > 0 && unconfirmed <= 5, `${unconfirmed} unconfirmed, at most --max-in-flight`)
  const rest = await cli([...args, '--from-id', String(said?.[2])])
  t.equal(rest.code, 0, rest.err)
  const depth = await broker.depth(queue)
  t.ok(depth >= 20_000 && depth <= 20_000 + unconfirmed, `${depth} delivered: every event, and at most the ${unconfirmed} unconfirmed twice`)
  const seqs = new Set((await broker.drain(queue, 30_000)).map((m) => (JSON.parse(JSON.parse(m.content.toString())['oslo.message']).payload as { seq: number }).seq))
  t.equal(seqs.size, 20_000, 'no event missing')
})

t.test('a second SIGTERM cuts the wait for confirms short, and still says where to resume', async (t) => {
  const { rabbit, db, names, alarm } = await privateTarget(t, 5_000)
  await alarm.raise()
  t.teardown(alarm.clear)
  const p = startPersistor(['replay', '--database-url', db.url, '--to-amqp', rabbit.url, '--exchange', names.exchange, '--to-topic', names.topic, '--max-in-flight', '50'])
  t.teardown(() => p.kill('SIGKILL'))
  await eventually('blocked', () => {
    p.assertAlive()
    return /the target broker blocks publishing/.test(p.output())
  })
  p.kill('SIGTERM')
  await eventually('stopping', () => /stopping \(SIGTERM\): publishing nothing more, waiting up to 30 s/.test(p.output()))
  const again = Date.now()
  p.kill('SIGTERM')
  const exit = await p.exited
  t.same(exit, { code: 1, signal: null })
  t.ok(Date.now() - again < 4_000, `exited ${Date.now() - again} ms after the second SIGTERM (the default wait is 30 s)`)
  t.match(p.output(), /stopped by SIGTERM before the end; nothing confirmed yet \(resume with --from-id 1\); \d+ published messages were not confirmed when the wait was cut short/)
})

t.test('the log failing under a replay: what the broker had taken is confirmed before it reports, so the resume point is exact', async (t) => {
  const { world, p } = await replayUnderWay(t)
  // No new connection, and the replay's own one ended: its next page read fails.
  const admin = new pg.Client({ connectionString: TEST_DATABASE_URL })
  await admin.connect()
  t.teardown(async () => {
    await admin.query(`ALTER DATABASE "${world.db.name}" ALLOW_CONNECTIONS true`).catch(() => {})
    await admin.end()
  })
  await admin.query(`ALTER DATABASE "${world.db.name}" ALLOW_CONNECTIONS false`)
  await admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND application_name = 'vitrage-persistor replay'`, [world.db.name])
  const exit = await p.exited
  t.equal(exit.code, 1)
  const said = /reading the log failed: .*; confirmed up to event (\d+) \(resume with --from-id (\d+)\)/.exec(p.output())
  t.ok(said, p.output().slice(-800))
  t.ok(Number(said?.[1]) < 30_000, `stopped at ${said?.[1]} of 30,000`)
  t.equal(await world.broker.depth(world.names.routingKey), Number(said?.[1]), 'the resume point is what the broker holds: nothing republished twice, nothing skipped')
})

t.test("the broker's reason for closing the channel is in the message (an exchange deleted mid-replay)", async (t) => {
  const { world, p } = await replayUnderWay(t)
  await world.broker.channel.deleteExchange(world.names.exchange)
  const exit = await p.exited
  t.equal(exit.code, 1)
  // The broker either closes the channel (NOT_FOUND) or, for a publish that met the exchange
  // after its bindings were gone, returns it unroutable first (seen under load): either is its reason.
  t.match(p.output(), /publishing stopped: .*(NOT_FOUND - no exchange|returned unroutable: no queue is bound to exchange) .* confirmed up to event \d+ \(resume with --from-id \d+\)/)
})

/**
 * With the event table locked (ACCESS EXCLUSIVE, until teardown): waits until replay `p` is blocked
 * by the lock, then sends SIGTERM; returns how long it took to exit, exit 1 asserted. Its backend
 * is looked for on `sql`, not on the locking transaction (pg_stat_activity is read once per
 * transaction).
 */
const stopWhileLocked = async (t: Test, url: string, sql: World['sql'], p: PersistorProcess): Promise<number> => {
  const admin = new pg.Client({ connectionString: url })
  await admin.connect()
  t.teardown(() => admin.end())
  await admin.query('BEGIN')
  await admin.query('LOCK TABLE event IN ACCESS EXCLUSIVE MODE')
  await eventually('the replay waiting for the lock', async () => {
    p.assertAlive()
    const waiting = await sql.query(`SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'vitrage-persistor replay' AND wait_event_type = 'Lock'`)
    return (waiting.rowCount ?? 0) > 0
  })
  const stopping = Date.now()
  p.kill('SIGTERM')
  t.equal((await p.exited).code, 1)
  return Date.now() - stopping
}

t.test('a stop does not wait for a read of the log that hangs (a locked table) in the middle of a replay', async (t) => {
  const { world, p } = await replayUnderWay(t)
  const took = await stopWhileLocked(t, world.db.url, world.sql, p)
  t.ok(took < 5_000, `exited ${took} ms after SIGTERM (the statement timeout is 60 s)`)
  const said = /stopped by SIGTERM before the end; confirmed up to event (\d+)/.exec(p.output())
  t.ok(said, p.output().slice(-600))
  t.equal(await world.broker.depth(world.names.routingKey), Number(said?.[1]), 'what it says is confirmed is what the queue holds')
})

t.test('a stop does not wait for a read of the log that hangs before anything is published, and says so', async (t) => {
  const world = await setupWorld(t)
  await storeEvents(world.sql, 10)
  const p = startPersistor(['replay', '--database-url', world.db.url, '--to-amqp', world.broker.url, '--exchange', world.names.exchange, '--to-topic', world.names.topic, '--from-id', '3'])
  t.teardown(() => p.kill('SIGKILL'))
  const took = await stopWhileLocked(t, world.db.url, world.sql, p)
  t.ok(took < 5_000, `exited ${took} ms after SIGTERM`)
  t.match(p.output(), /stopped by SIGTERM before publishing anything \(resume with --from-id 3\)/)
  t.notMatch(p.output(), /store-closed/, 'the read it left behind is not reported')
})

for (const stall of ['stallAtConnect', 'stallAtFirstChannel'] as const) {
  t.test(`a stop does not wait for a broker that stopped answering ${stall === 'stallAtConnect' ? 'while the replay connects' : 'right after the replay connected'}, and says where to resume`, async (t) => {
    const world = await setupWorld(t)
    await storeEvents(world.sql, 10)
    await world.broker.channel.assertExchange(world.names.exchange, 'topic', { durable: false })
    const proxy = await startFreezableProxy(world.broker.url, { [stall]: true })
    t.teardown(proxy.close)
    const p = startPersistor(['replay', '--database-url', world.db.url, '--to-amqp', proxy.url, '--exchange', world.names.exchange, '--to-topic', world.names.topic, '--shutdown-timeout-ms', '3000'])
    t.teardown(() => p.kill('SIGKILL'))
    // Accepted, then nothing (the AMQP handshake, or the channel it opens to check the exchange, is never answered).
    await proxy.stalled()
    const { exit, took } = await stopAndTime(p)
    t.same(exit, { code: 1, signal: null })
    // Before: each setup call waited for the broker until the heartbeat gave up, ~3 minutes; the
    // connect, until its 10 s timeout (the process held open by its socket). The bound is well
    // below both; that the connecting socket was dropped, not waited for, is what the absence
    // of bin.ts's "handles still open" (said 5 s after the command ended) shows.
    t.ok(took < 3_000 + 4_000, `exited ${took} ms after SIGTERM`)
    t.match(p.output(), /stopped by SIGTERM before the end; nothing confirmed yet \(resume with --from-id 1\)/)
    t.notMatch(p.output(), /handles still open/, 'nothing held the process open after the command ended')
  })
}
