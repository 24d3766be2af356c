import { createServer, type AddressInfo, type Socket } from 'node:net'
import { createEmptyDatabase, eventually, freePort } from '@vitrage-persistor/testing'
import { MIGRATE_LOCK } from '@vitrage-persistor/store-postgres'
import pg from 'pg'
import t from 'tap'
import { message, v2Body } from './support/messages.js'
import { isConsuming, startPersistor } from './support/persistor-process.js'
import { declarePersistorTopology, metricValue, publishMany, rowCount, setupWorld, storedSeqs } from './support/setup.js'

const TOTAL = 20_000

t.test('SIGTERM mid-stream: everything stored is acked, everything else stays queued, nothing lost or stored twice', async (t) => {
  const world = await setupWorld(t)
  await declarePersistorTopology(world)
  await publishMany(world, TOTAL, (seq) => v2Body(message({ seq, filler: 'x'.repeat(200) })))

  const first = startPersistor(world.flags(['--batch-size', '250', '--prefetch', '500']))
  t.teardown(() => first.kill('SIGKILL'))
  await first.waitFor(isConsuming, 'consuming')
  await eventually('ingest under way', async () => (await rowCount(world)) >= 2_000)
  first.kill('SIGTERM')
  const exit = await first.exited
  t.same(exit, { code: 0, signal: null }, 'exits 0 after draining')
  t.ok(first.lines.some((l) => l.msg === 'persistor closed' && l['flushed'] === true), 'held messages flushed before closing')

  const stored = await rowCount(world)
  const queued = await world.broker.depth(world.names.queue)
  t.ok(stored < TOTAL, `stopped mid-stream (${stored} stored)`)
  t.equal(stored + queued, TOTAL, 'every message is either stored and acked, or still queued')

  const port = await freePort()
  const second = startPersistor(world.flags(['--http-port', String(port)]))
  t.teardown(() => second.kill('SIGKILL'))
  await eventually('the rest stored', async () => (await rowCount(world)) === TOTAL, { timeoutMs: 120_000 })
  const page = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
  t.equal(metricValue(page, 'vitrage_persistor_events_duplicate_total'), 0, 'nothing the first instance stored came back')
  t.same(await storedSeqs(world), Array.from({ length: TOTAL }, (_, i) => i), 'all in publish order')
  second.kill('SIGTERM')
  t.equal((await second.exited).code, 0)
})

t.test('SIGTERM while an append waits on a lock: exits by the deadline, the append rolls back, everything is redelivered', async (t) => {
  const world = await setupWorld(t)
  const p = startPersistor(world.flags(['--shutdown-timeout-ms', '2000', '--batch-max-wait-ms', '20']))
  t.teardown(() => p.kill('SIGKILL'))
  await p.waitFor(isConsuming, 'consuming')
  // An operator's long transaction holds the table (a migration, a VACUUM FULL).
  const locker = await world.sql.connect()
  t.teardown(() => locker.release(true))
  await locker.query('BEGIN')
  await locker.query('LOCK TABLE event IN ACCESS EXCLUSIVE MODE')
  await publishMany(world, 10, (seq) => v2Body(message({ seq })))
  await eventually('the append waits on the lock', async () => {
    const { rows } = await world.sql.query(`SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'vitrage-persistor run' AND wait_event_type = 'Lock'`)
    return rows.length > 0
  })
  const stopping = Date.now()
  p.kill('SIGTERM')
  let timer: NodeJS.Timeout | undefined
  const exit = await Promise.race([p.exited, new Promise<'hung'>((r) => (timer = setTimeout(() => r('hung'), 30_000)))])
  clearTimeout(timer)
  const tookMs = Date.now() - stopping
  t.same(exit, { code: 0, signal: null }, 'exits 0')
  t.match(p.output(), /shutdown deadline passed; unacked messages will be redelivered/, 'cut off by the shutdown deadline')
  // The bound tells the deadline (2 s) from the statement timeout (60 s) with room for a loaded machine.
  t.ok(tookMs < 20_000, `by the 2 s deadline and its grace, not the 60 s statement timeout (${tookMs} ms)`)
  await locker.query('ROLLBACK')
  t.equal(await rowCount(world), 0, 'the cut-off append rolled back')
  await eventually('all 10 back in the queue', async () => (await world.broker.depth(world.names.queue)) === 10)
  const second = startPersistor(world.flags(['--no-history-projection']))
  t.teardown(() => second.kill('SIGKILL'))
  await eventually('stored by the next instance', async () => (await rowCount(world)) === 10)
  t.same(await storedSeqs(world), Array.from({ length: 10 }, (_, i) => i))
  second.kill('SIGTERM')
  t.equal((await second.exited).code, 0)
})

t.test('appends refused while the database answers: /readyz 503 with the reason; SIGTERM ends the retry wait at the deadline', async (t) => {
  const world = await setupWorld(t)
  const port = await freePort()
  const p = startPersistor(world.flags(['--no-history-projection', '--shutdown-timeout-ms', '1000', '--batch-max-wait-ms', '20', '--http-port', String(port)]))
  t.teardown(() => p.kill('SIGKILL'))
  await p.waitFor(isConsuming, 'consuming')
  const readyz = async (): Promise<{ status: number; body: { checks?: Record<string, string> } }> => {
    const r = await fetch(`http://127.0.0.1:${port}/readyz`)
    return { status: r.status, body: (await r.json()) as { checks?: Record<string, string> } }
  }
  t.equal((await readyz()).status, 200, 'ready before')
  // The table gone from under it (a botched manual migration): pings succeed, appends fail.
  await world.sql.query('ALTER TABLE event RENAME TO event_away')
  t.teardown(() => world.sql.query('ALTER TABLE IF EXISTS event_away RENAME TO event'))
  await publishMany(world, 5, (seq) => v2Body(message({ seq })))
  const down = await eventually('not ready while appends fail', async () => {
    const r = await readyz()
    return r.status === 503 ? r : undefined
  })
  t.match(down.body.checks?.['database'], /append failing \(fatal\): .*event/, `the append's reason: ${down.body.checks?.['database']}`)
  t.equal(down.body.checks?.['broker'], 'ok')

  // A long retry wait under way (full jitter: wait for one of at least 4 s).
  await p.waitFor((l) => l.msg === 'append failed; holding the batch unacked and retrying' && Number(l['retryInMs']) >= 4_000, 'a long retry wait', 90_000)
  const stopping = Date.now()
  p.kill('SIGTERM')
  const exit = await p.exited
  const tookMs = Date.now() - stopping
  t.same(exit, { code: 0, signal: null }, 'exits 0')
  t.ok(tookMs < 1_000 + 2_000, `within the 1 s deadline and its grace, not at the end of the retry wait (${tookMs} ms)`)

  await world.sql.query('ALTER TABLE event_away RENAME TO event')
  await eventually('all 5 back in the queue', async () => (await world.broker.depth(world.names.queue)) === 5)
  const second = startPersistor(world.flags(['--no-history-projection', '--http-port', String(port)]))
  t.teardown(() => second.kill('SIGKILL'))
  await eventually('stored once the table is back', async () => (await rowCount(world)) === 5)
  await eventually('ready again', async () => (await readyz()).status === 200)
  second.kill('SIGTERM')
  t.equal((await second.exited).code, 0)
})

t.test('stdout closed under run (its log reader gone): it keeps storing and logging fails quietly; SIGTERM still exits 0', async (t) => {
  const world = await setupWorld(t)
  await declarePersistorTopology(world)
  const p = startPersistor(world.flags(['--no-history-projection']))
  t.teardown(() => p.kill('SIGKILL'))
  await p.waitFor(isConsuming, 'consuming')
  p.child.stdout?.destroy()
  // A bad message makes it log (a warning per dead letter): the first write after the close.
  await world.broker.publish(world.names.exchange, world.names.routingKey, Buffer.from('not json'), { deliveryMode: 2 })
  await publishMany(world, 10, (seq) => v2Body(message({ seq })))
  await eventually('stored', async () => {
    p.assertAlive()
    return (await rowCount(world)) === 10
  })
  await eventually('dead-lettered', async () => (await world.broker.depth(`${world.names.queue}.dead`)) === 1)
  p.assertAlive()
  p.kill('SIGTERM')
  t.same(await p.exited, { code: 0, signal: null })
  t.notMatch(p.output(), /EPIPE|Unhandled 'error' event/)
})

t.test('a database not there at start-up: the HTTP endpoint answers meanwhile (alive, not ready, why; metrics), and SIGTERM ends the wait at once', async (t) => {
  const [port, nothingThere] = [await freePort(), await freePort()]
  const p = startPersistor(['run', '--database-url', `postgres://root@127.0.0.1:${nothingThere}/vp_absent`, '--http-port', String(port), '--queue', `vpt_q_absent_${nothingThere}`])
  t.teardown(() => p.kill('SIGKILL'))
  // The fifth attempt waits about 3 s: long enough to tell an interrupted wait from a finished one.
  const retry = await p.waitFor((l) => l.msg === 'database not available; retrying' && Number(l['retryInMs']) >= 2_500, 'a long retry wait')
  t.equal((await fetch(`http://127.0.0.1:${port}/healthz`)).status, 200, 'alive')
  const ready = await fetch(`http://127.0.0.1:${port}/readyz`)
  t.equal(ready.status, 503, 'not ready')
  t.match(await ready.json(), { status: 'starting', checks: { broker: 'not started', database: /ECONNREFUSED|connect/ } }, 'with the reason')
  const page = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
  t.equal(metricValue(page, 'vitrage_persistor_database_connected'), 0)
  for (const series of ['vitrage_persistor_append_retries_total{kind="fatal"} 0', 'vitrage_persistor_broker_blocked{connection="dead-letters"} 0', 'vitrage_persistor_dead_lettered_total{reason="invalid-json"} 0']) {
    t.ok(page.includes(series), `${series}: exported before it first changes`)
  }
  const signalled = Date.now()
  p.kill('SIGTERM')
  t.same(await p.exited, { code: 0, signal: null })
  const took = Date.now() - signalled
  t.ok(took < Number(retry['retryInMs']), `exited ${took} ms after SIGTERM, inside the ${String(retry['retryInMs'])} ms wait`)
  t.ok(p.lines.some((l) => l.msg === 'stopped'), 'says it stopped')
})

t.test('a database server that accepts and never answers at start-up is retried, not fatal; SIGTERM ends the attempt in flight', async (t) => {
  const held: Socket[] = []
  const silent = createServer((socket) => void held.push(socket))
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    for (const s of held) s.destroy()
    silent.close()
  })
  const silentPort = (silent.address() as AddressInfo).port
  const p = startPersistor(['run', '--database-url', `postgres://root@127.0.0.1:${silentPort}/vp_silent`, '--http-port', '0', '--queue', `vpt_q_silent_${silentPort}`])
  t.teardown(() => p.kill('SIGKILL'))
  // node-postgres gives up connecting after 10 s ("timeout expired"): retried as the server not up yet.
  const retry = await p.waitFor((l) => l.msg === 'database not available; retrying', 'the first retry', 30_000)
  t.match(retry, { failure: { kind: 'transient', message: /timeout expired/ } })
  // The next attempt is connecting (it waits up to 10 s again) when SIGTERM arrives.
  await eventually('the next attempt to connect', () => held.length >= 2)
  const signalled = Date.now()
  p.kill('SIGTERM')
  t.same(await p.exited, { code: 0, signal: null }, 'stopped, not a failure')
  const took = Date.now() - signalled
  t.ok(took < 5_000, `exited ${took} ms after SIGTERM, not at the end of the 10 s connect timeout`)
  t.ok(p.lines.some((l) => l.msg === 'stopped'))
})

t.test('SIGTERM while start-up migrations wait for their lock: stopped, exit 0, nothing half applied', async (t) => {
  const db = await createEmptyDatabase()
  t.teardown(db.drop)
  // Another migrate holds the lock: run connects, then waits for it.
  const other = new pg.Client({ connectionString: db.url })
  await other.connect()
  t.teardown(() => other.end())
  await other.query('SELECT pg_advisory_lock($1)', [MIGRATE_LOCK])
  const p = startPersistor(['run', '--database-url', db.url, '--http-port', '0', '--queue', `vpt_q_locked_${Date.now()}`])
  t.teardown(() => p.kill('SIGKILL'))
  await p.waitFor((l) => l.msg === 'applying migrations', 'migrations under way')
  await eventually('run waiting for the migration lock', async () =>
    Number((await other.query(`SELECT count(*) AS n FROM pg_locks WHERE database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND locktype = 'advisory' AND NOT granted`)).rows[0].n) > 0,
  )
  p.kill('SIGTERM')
  t.same(await p.exited, { code: 0, signal: null }, 'stopped, not a crash')
  t.notMatch(p.output(), /Emitted 'error' event|Connection terminated unexpectedly\n\s+at /, 'no unhandled error event')
  t.ok(p.lines.some((l) => l.msg === 'stopped'))
  const applied = await other.query(`SELECT to_regclass('schema_migration') AS t`)
  t.equal(applied.rows[0].t, null, 'nothing applied: it never had the lock')
})
