import { eventually, freePort } from '@vitrage-persistor/testing'
import t, { type Test } from 'tap'
import { TestEventStore } from '../packages/mirror-eventstore/test-server/server.js'
import { message, v2Body } from './support/messages.js'
import { isConsuming, startPersistor } from './support/persistor-process.js'
import { declarePersistorTopology, metricValue, publishMany, rewindLog, rowCount, setupWorld, type World } from './support/setup.js'

const storedIds = async (sql: import('pg').Pool): Promise<string[]> => (await sql.query<{ m: string }>('SELECT message_id::text AS m FROM event ORDER BY id')).rows.map((r) => r.m)

/** An EventStoreDB test server and a private world whose log holds `n` events stored by a persistor that has stopped. */
const storedWorld = async (t: Test, n: number, pad?: string): Promise<{ esdb: TestEventStore; world: World }> => {
  const esdb = await TestEventStore.start()
  t.teardown(() => esdb.close())
  const world = await setupWorld(t)
  await declarePersistorTopology(world)
  const ingest = startPersistor(world.flags(['--no-history-projection']))
  t.teardown(() => ingest.kill('SIGKILL'))
  await ingest.waitFor(isConsuming, 'consuming')
  await publishMany(world, n, (seq) => v2Body(message(pad === undefined ? { seq } : { seq, pad })))
  await eventually('stored', async () => (await rowCount(world)) === n, { timeoutMs: 120_000 })
  ingest.kill('SIGTERM')
  await ingest.exited
  return { esdb, world }
}

t.test('run --mirror-url: an EventStoreDB outage never stops ingest; the mirror reports its lag and catches up', async (t) => {
  const esdb = await TestEventStore.start()
  t.teardown(() => esdb.close())
  const world = await setupWorld(t)
  await declarePersistorTopology(world)
  const port = await freePort()
  const p = startPersistor(world.flags(['--mirror-url', esdb.connectionString, '--http-port', String(port)]))
  t.teardown(() => p.kill('SIGKILL'))
  await p.waitFor(isConsuming, 'consuming')
  await p.waitFor((l) => l.msg === 'mirroring to EventStoreDB', 'the mirror to start')
  await publishMany(world, 1_000, (seq) => v2Body(message({ seq })))
  await eventually('mirrored', () => (esdb.streams().get('vitrage-events')?.length ?? 0) === 1_000)

  esdb.refuse(true)
  await publishMany(world, 3_000, (seq) => v2Body(message({ seq: 1_000 + seq })))
  await eventually('ingest unaffected by the outage', async () => {
    p.assertAlive()
    return (await rowCount(world)) === 4_000
  })
  const lag = await eventually('the lag to show', async () => {
    const page = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
    const events = metricValue(page, 'vitrage_persistor_mirror_lag_events') ?? 0
    return events > 0 ? { events, seconds: metricValue(page, 'vitrage_persistor_mirror_lag_seconds') ?? 0 } : undefined
  })
  t.ok(lag.events > 0 && lag.seconds >= 0, `lag reported: ${lag.events} events, ${lag.seconds.toFixed(1)} s`)
  t.equal((await fetch(`http://127.0.0.1:${port}/readyz`)).status, 200, 'the persistor stays ready: the mirror is optional')

  esdb.refuse(false)
  await eventually('caught up after the outage', () => (esdb.streams().get('vitrage-events')?.length ?? 0) === 4_000, { timeoutMs: 60_000 })
  t.same(esdb.streams().get('vitrage-events')?.map((e) => e.id), await storedIds(world.sql), 'each event once, in id order')
  p.kill('SIGTERM')
  t.equal((await p.exited).code, 0)
})

t.test('the mirror killed at random moments and restarted: the stream holds each event once, in id order', async (t) => {
  const { esdb, world } = await storedWorld(t, 20_000, 'x'.repeat(300))

  const mirrored = (): number => esdb.streams().get('vitrage-events')?.length ?? 0
  const counts: number[] = []
  // Each instance is killed once the stream has passed its own threshold (spread over the first
  // three quarters, jittered), so the kills land mid-batch at varied points and never after the end.
  for (let kill = 0; kill < 5; kill++) {
    const threshold = 1_000 + kill * 3_000 + Math.floor(Math.random() * 2_000)
    const m = startPersistor(['mirror', '--database-url', world.db.url, '--mirror-url', esdb.connectionString, '--http-port', '0'])
    t.teardown(() => m.kill('SIGKILL'))
    await eventually(
      `the stream to pass ${threshold}`,
      () => {
        m.assertAlive()
        return mirrored() >= threshold
      },
      { intervalMs: 2 },
    )
    m.kill('SIGKILL')
    await m.exited
    counts.push(mirrored())
  }
  t.comment(`events in the stream after each kill: ${counts.join(', ')}`)
  t.ok((counts.at(-1) ?? 0) < 20_000, 'killed before the end')
  const last = startPersistor(['mirror', '--database-url', world.db.url, '--mirror-url', esdb.connectionString, '--http-port', '0'])
  t.teardown(() => last.kill('SIGKILL'))
  await eventually('all mirrored', () => mirrored() === 20_000, { timeoutMs: 120_000 })
  t.same(esdb.streams().get('vitrage-events')?.map((e) => e.id), await storedIds(world.sql), 'each once, in id order')
  await last.waitFor((l) => l.msg === 'mirroring to EventStoreDB', 'the last mirror to be up')
  last.kill('SIGTERM')
  t.equal((await last.exited).code, 0)
  t.match(last.lines.find((l) => l.msg === 'mirror stopped'), { signal: 'SIGTERM', position: 20_000 }, 'it says it stopped, and where')
})

t.test('mirror /readyz: 503 with the reason while EventStoreDB refuses, 200 with the position once it mirrors', async (t) => {
  const { esdb, world } = await storedWorld(t, 50)

  esdb.refuse(true)
  const port = await freePort()
  const m = startPersistor(['mirror', '--database-url', world.db.url, '--mirror-url', esdb.connectionString, '--http-port', String(port)])
  t.teardown(() => m.kill('SIGKILL'))
  const readyz = async (): Promise<{ status: number; body: Record<string, unknown> }> => {
    const r = await fetch(`http://127.0.0.1:${port}/readyz`)
    return { status: r.status, body: (await r.json()) as Record<string, unknown> }
  }
  const down = await eventually('/readyz to report the refusal', async () => {
    m.assertAlive()
    const r = await readyz().catch(() => undefined)
    return r?.body['status'] === 'retrying' ? r : undefined
  })
  t.equal(down.status, 503)
  t.equal(down.body['kind'], 'transient')
  t.match(String(down.body['reason']), /refusing calls|unavailable/i, 'the reason is the server’s')

  esdb.refuse(false)
  const up = await eventually('/readyz to turn ready', async () => {
    const r = await readyz()
    return r.status === 200 ? r : undefined
  }, { timeoutMs: 60_000 })
  t.same(up.body, { status: 'ready', position: 50 }, 'ready at the log head')
  t.equal(esdb.streams().get('vitrage-events')?.length, 50)
  m.kill('SIGTERM')
  t.equal((await m.exited).code, 0)
})

t.test('a mirror whose database was restored behind it stops with the reason instead of skipping the events that take the lost ids again', async (t) => {
  const { esdb, world } = await storedWorld(t, 100)
  const mirrorFlags = (port: number): string[] => ['mirror', '--database-url', world.db.url, '--mirror-url', esdb.connectionString, '--http-port', String(port)]
  const mirrored = (): string[] => esdb.streams().get('vitrage-events')?.map((e) => e.id) ?? []
  const first = startPersistor(mirrorFlags(0))
  t.teardown(() => first.kill('SIGKILL'))
  await eventually('100 mirrored', () => mirrored().length === 100)
  first.kill('SIGTERM')
  t.equal((await first.exited).code, 0)
  const before = mirrored()

  // The backup was taken at event 60; 20 new events arrive after the restore, ids 61-80.
  await rewindLog(world, 60)
  for (let i = 0; i < 20; i++) {
    await world.sql.query(`INSERT INTO event (message_id, event_type, collector_timestamp, payload) VALUES (gen_random_uuid(), 'vitrage.alarm.activate', now(), '{}')`)
  }
  const port = await freePort()
  const m = startPersistor(mirrorFlags(port))
  t.teardown(() => m.kill('SIGKILL'))
  const refused = await eventually('/readyz to give the reason', async () => {
    m.assertAlive()
    const r = await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined)
    const body = r === undefined ? undefined : ((await r.json()) as Record<string, unknown>)
    return body?.['kind'] === 'fatal' ? { status: r?.status, body } : undefined
  })
  t.equal(refused.status, 503)
  t.match(String(refused.body['reason']), /holds log event 100 \(message [0-9a-f-]{36}\), which the log no longer has \(no event 100; the newest stored is 80\): the PostgreSQL database was restored or failed over/)
  t.same(mirrored(), before, 'nothing appended: neither the new 61-80 skipped as mirrored nor mixed into the stream')
  const checkpoint = (await world.sql.query<{ position: string }>(`SELECT position FROM projection_checkpoint WHERE name = 'mirror-eventstore'`)).rows[0]?.position
  t.equal(Number(checkpoint), 60, 'the checkpoint stays where the restore put it')
  m.kill('SIGTERM')
  await m.exited
})

t.test('a mirror running through the restore stops too, and so does one per event type whose restored log no longer touches the stream holding the lost events', async (t) => {
  const esdb = await TestEventStore.start()
  t.teardown(() => esdb.close())
  const world = await setupWorld(t)
  // Events 1-60 are graph changes, 61-100 alarm activations.
  const insert = async (n: number, type: (i: number) => string): Promise<void> => {
    await world.sql.query(
      `INSERT INTO event (message_id, event_type, collector_timestamp, payload)
       SELECT gen_random_uuid(), t.type, now(), '{}' FROM unnest($1::text[]) WITH ORDINALITY AS t(type, n) ORDER BY t.n`,
      [Array.from({ length: n }, (_, i) => type(i))],
    )
  }
  await insert(100, (i) => (i < 60 ? 'vitrage.graph.change' : 'vitrage.alarm.activate'))
  const readyz = async (port: number): Promise<Record<string, unknown> | undefined> => {
    const r = await fetch(`http://127.0.0.1:${port}/readyz`).catch(() => undefined)
    return r === undefined ? undefined : ((await r.json()) as Record<string, unknown>)
  }

  // One stream, the mirror not restarted: woken by the new events' commit.
  const port = await freePort()
  const running = startPersistor(['mirror', '--database-url', world.db.url, '--mirror-url', esdb.connectionString, '--http-port', String(port)])
  t.teardown(() => running.kill('SIGKILL'))
  await eventually('100 mirrored', () => (esdb.streams().get('vitrage-events')?.length ?? 0) === 100)
  // Its checkpoint moves after EventStoreDB's acknowledgement: caught up and idle before the
  // restore (a move racing the restore's own transaction would be read before its delete).
  await eventually('the checkpoint at 100', async () => Number((await world.sql.query(`SELECT position FROM projection_checkpoint WHERE name = 'mirror-eventstore'`)).rows[0]?.position ?? 0) === 100)
  await rewindLog(world, 60)
  await insert(20, () => 'vitrage.graph.change')
  const stopped = await eventually('log-diverged', async () => {
    running.assertAlive()
    const body = await readyz(port)
    return body?.['code'] === 'log-diverged' ? body : undefined
  })
  t.match(String(stopped['reason']), /stream vitrage-events holds log event 100 .*\(no event 100; the newest stored is 80\)/)
  t.equal(esdb.streams().get('vitrage-events')?.length, 100, 'nothing appended')
  running.kill('SIGTERM')
  await running.exited

  // One stream per type, in a fresh EventStoreDB: graph changes 1-80 and the restored log's
  // 81-100 (graph changes too) mirrored, then restored to 80 again with alarm activations
  // meanwhile: the lost ones live only in the alarm stream, which no new event touches.
  const perType = await TestEventStore.start()
  t.teardown(() => perType.close())
  await world.sql.query(`DELETE FROM projection_checkpoint WHERE name = 'mirror-eventstore'`)
  const flags = (p: number): string[] => ['mirror', '--database-url', world.db.url, '--mirror-url', perType.connectionString, '--stream-per-type', '--http-port', String(p)]
  await insert(20, () => 'vitrage.alarm.activate')
  const first = startPersistor(flags(0))
  t.teardown(() => first.kill('SIGKILL'))
  await eventually('all mirrored per type', () => (perType.streams().get('vitrage-events-vitrage.alarm.activate')?.length ?? 0) === 20)
  first.kill('SIGTERM')
  await first.exited
  await rewindLog(world, 80)
  await insert(5, () => 'vitrage.graph.change')
  const port2 = await freePort()
  const restarted = startPersistor(flags(port2))
  t.teardown(() => restarted.kill('SIGKILL'))
  const diverged = await eventually('log-diverged per type', async () => {
    restarted.assertAlive()
    const body = await readyz(port2)
    return body?.['code'] === 'log-diverged' ? body : undefined
  })
  t.match(String(diverged['reason']), /stream vitrage-events-vitrage\.alarm\.activate holds log event 100/)
  t.equal(perType.streams().get('vitrage-events-vitrage.graph.change')?.length, 80, 'no new graph change appended beside the lost alarms')
  restarted.kill('SIGTERM')
  await restarted.exited
})
