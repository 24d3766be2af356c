import { eventually, freePort, TEST_DATABASE_URL } from '@vitrage-persistor/testing'
import pg from 'pg'
import t, { type Test } from 'tap'
import { appendBatch, prepareEvent } from '@vitrage-persistor/store-postgres'
import { message, v2Body } from './support/messages.js'
import { isConsuming, type PersistorProcess, startPersistor } from './support/persistor-process.js'
import { declarePersistorTopology, metricValue, publishMany, rowCount, setupWorld, storedSeqs, type World } from './support/setup.js'

const TOTAL = 20_000

t.test('connections killed under the persistor are retried without acking; nothing lost, nothing twice', async (t) => {
  const world = await setupWorld(t)
  await declarePersistorTopology(world)
  await publishMany(world, TOTAL, (seq) => v2Body(message({ seq })))
  const port = await freePort()
  const p = startPersistor(world.flags(['--batch-size', '200', '--prefetch', '400', '--http-port', String(port)]))
  t.teardown(() => p.kill('SIGKILL'))
  await p.waitFor(isConsuming, 'consuming')

  // A connection killed while idle in the pool is replaced without a retry, so each kill waits
  // for an append in flight (a COPY into event); one can still commit before the signal lands,
  // so the loop goes on until a retry has been counted, not only for a number of kills.
  const retries = async (): Promise<number> =>
    metricValue(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text(), 'vitrage_persistor_append_retries_total{kind="transient"}') ?? 0
  let kills = 0
  while ((await rowCount(world)) < TOTAL - 2_000 && (kills < 6 || (await retries()) === 0)) {
    const before = await rowCount(world)
    await eventually('progress', async () => {
      p.assertAlive()
      return (await rowCount(world)) > before + 1_000
    })
    const killed = await eventually(
      'an append in flight',
      async () => {
        p.assertAlive()
        const { rowCount: n } = await world.sql.query(
          `SELECT pg_terminate_backend(pid) FROM pg_stat_activity
            WHERE datname = current_database() AND application_name = 'vitrage-persistor run' AND state = 'active' AND query ILIKE 'COPY %event%'`,
        )
        return (n ?? 0) > 0 || (await rowCount(world)) >= TOTAL - 2_000 ? (n ?? 0) : false
      },
      { intervalMs: 5 },
    )
    if (killed > 0) kills++
  }
  t.ok(kills >= 3, `terminated the persistor's connections ${kills} times`)
  await eventually(
    'everything stored',
    async () => {
      p.assertAlive()
      return (await rowCount(world)) === TOTAL
    },
    { timeoutMs: 120_000 },
  )
  t.same(await storedSeqs(world), Array.from({ length: TOTAL }, (_, i) => i), 'each once, in publish order')
  t.equal(await world.broker.depth(world.names.queue), 0)
  t.ok((await retries()) >= 1, 'the failures were classified transient and retried')
  const page = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
  t.equal(metricValue(page, 'vitrage_persistor_database_connected'), 1)
  p.kill('SIGTERM')
  t.equal((await p.exited).code, 0)
})

/** `run` with an HTTP port, consuming, with messages 0-99 stored. */
const persistorStoring100 = async (t: Test, world: World): Promise<{ p: PersistorProcess; port: number }> => {
  await declarePersistorTopology(world)
  const port = await freePort()
  const p = startPersistor(world.flags(['--http-port', String(port)]))
  t.teardown(() => p.kill('SIGKILL'))
  await p.waitFor(isConsuming, 'consuming')
  await publishMany(world, 100, (seq) => v2Body(message({ seq })))
  await eventually('the first messages stored', async () => (await rowCount(world)) === 100)
  return { p, port }
}

t.test('a database that turns read-only under the persistor (a failover to a standby) holds the batch, and stores it once the server takes writes again', async (t) => {
  const world = await setupWorld(t)
  const { p, port } = await persistorStoring100(t, world)

  // As after a failover that left the persistor's address on a server in recovery: every new
  // session is read-only (SQLSTATE 25006 on each write).
  const db = `"${world.db.name}"`
  await world.sql.query(`ALTER DATABASE ${db} SET default_transaction_read_only = on`)
  t.teardown(() => world.sql.query(`ALTER DATABASE ${db} RESET default_transaction_read_only`).catch(() => {}))
  await world.sql.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'vitrage-persistor run%'`)
  await publishMany(world, 100, (seq) => v2Body(message({ seq: 100 + seq })))
  const metrics = async (): Promise<string> => (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
  await eventually('appends refused', async () => (metricValue(await metrics(), 'vitrage_persistor_append_retries_total{kind="transient"}') ?? 0) >= 2)
  t.equal((await fetch(`http://127.0.0.1:${port}/readyz`)).status, 503, 'not ready while writes are refused')
  t.equal(await rowCount(world), 100, 'nothing stored meanwhile')
  t.ok(p.lines.some((l) => l.msg === 'append failed; holding the batch unacked and retrying' && /read-only transaction/.test(JSON.stringify(l['failure']))), 'the log says why')

  // The address reaches a writable server again. Connections opened meanwhile stay read-only for
  // their whole session: the persistor must leave them, not retry on them for ever.
  await world.sql.query(`ALTER DATABASE ${db} RESET default_transaction_read_only`)
  await eventually('everything stored', async () => {
    p.assertAlive()
    return (await rowCount(world)) === 200
  })
  t.same(await storedSeqs(world), Array.from({ length: 200 }, (_, i) => i), 'each once, in publish order')
  await eventually('ready again', async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200)
  p.kill('SIGTERM')
  t.equal((await p.exited).code, 0)
})

t.test('a database closed to connections for a while (ALLOW_CONNECTIONS false) is waited for, as an outage, and nothing is lost', async (t) => {
  const world = await setupWorld(t)
  // Closing the database also closes it to this test's own pool: the switch is thrown from the
  // shared database.
  const admin = new pg.Client({ connectionString: TEST_DATABASE_URL })
  await admin.connect()
  t.teardown(() => admin.end())
  const db = `"${world.db.name}"`
  const { p, port } = await persistorStoring100(t, world)

  await admin.query(`ALTER DATABASE ${db} ALLOW_CONNECTIONS false`)
  t.teardown(() => admin.query(`ALTER DATABASE ${db} ALLOW_CONNECTIONS true`).catch(() => {}))
  await admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1 AND application_name LIKE 'vitrage-persistor run%'`, [world.db.name])
  await publishMany(world, 100, (seq) => v2Body(message({ seq: 100 + seq })))
  const metrics = async (): Promise<string> => (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
  await eventually('connections refused, counted as transient', async () => (metricValue(await metrics(), 'vitrage_persistor_append_retries_total{kind="transient"}') ?? 0) >= 2)
  t.equal(metricValue(await metrics(), 'vitrage_persistor_append_retries_total{kind="fatal"}') ?? 0, 0, 'not as an operator error')
  const ready = await fetch(`http://127.0.0.1:${port}/readyz`)
  t.equal(ready.status, 503, 'not ready meanwhile')
  t.match(await ready.text(), /not currently accepting connections/, 'and says why')

  await admin.query(`ALTER DATABASE ${db} ALLOW_CONNECTIONS true`)
  await eventually('everything stored', async () => {
    p.assertAlive()
    return (await rowCount(world)) === 200
  })
  t.same(await storedSeqs(world), Array.from({ length: 200 }, (_, i) => i), 'each once, in publish order')
  p.kill('SIGTERM')
  t.equal((await p.exited).code, 0)
})

t.test('a follower whose reads fail is not ready and says why, and reads again once the cause is undone', async (t) => {
  const world = await setupWorld(t)
  await declarePersistorTopology(world)
  const p = startPersistor(world.flags())
  t.teardown(() => p.kill('SIGKILL'))
  await p.waitFor(isConsuming, 'consuming')
  await publishMany(world, 50, (seq) => v2Body(message({ seq })))
  await eventually('stored', async () => (await rowCount(world)) === 50)
  const port = await freePort()
  const follower = startPersistor(['follow', '--database-url', world.db.url, '--http-port', String(port)])
  t.teardown(() => follower.kill('SIGKILL'))
  await follower.waitFor((l) => l.msg === 'graph loaded; following', 'the follower to load')
  const position = async (): Promise<number> => ((await (await fetch(`http://127.0.0.1:${port}/position`)).json()) as { position: number }).position

  // An operator makes the database's sessions act as a role without rights, and the follower
  // reconnects meanwhile: its sessions keep that role until they end.
  const db = `"${world.db.name}"`
  const role = `${world.db.name}_norights`
  // One session opened before the setting, for everything after it (a new one would act as the role).
  const admin = await world.sql.connect()
  await admin.query(`CREATE ROLE "${role}" NOLOGIN`)
  t.teardown(async () => {
    await admin.query(`ALTER DATABASE ${db} RESET role`).catch(() => {})
    await admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()`).catch(() => {})
    await admin.query(`DROP ROLE IF EXISTS "${role}"`).catch(() => {})
    admin.release()
  })
  await admin.query(`ALTER DATABASE ${db} SET role = '${role}'`)
  await admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name LIKE 'vitrage-persistor follow%'`)
  await publishMany(world, 50, (seq) => v2Body(message({ seq: 50 + seq })))
  await eventually('stored', async () => Number((await admin.query('SELECT count(*) AS n FROM event')).rows[0].n) === 100)
  const notReady = await eventually('the follower not ready', async () => {
    const r = await fetch(`http://127.0.0.1:${port}/readyz`)
    return r.status === 503 && ((await r.json()) as { reason: string })
  })
  t.match(notReady, { reason: /reading the log fails/ }, '/readyz says why')

  await admin.query(`ALTER DATABASE ${db} RESET role`)
  await eventually('caught up', async () => (await position()) === 100)
  t.equal((await fetch(`http://127.0.0.1:${port}/readyz`)).status, 200)
  follower.kill('SIGTERM')
  p.kill('SIGTERM')
  t.equal((await follower.exited).code, 0)
  t.equal((await p.exited).code, 0)
})

t.test("the sessions idle by design (LISTEN, a lease) are exempt from the database's idle_session_timeout", async (t) => {
  const { PgEventStore } = await import('@vitrage-persistor/store-postgres')
  const world = await setupWorld(t)
  // Opened before the setting: it would end a session opened after it while the test waits.
  const client = await world.sql.connect()
  t.teardown(() => client.release())
  await client.query(`ALTER DATABASE "${world.db.name}" SET idle_session_timeout = '300ms'`)
  const warnings: string[] = []
  const note = (...args: unknown[]): void => void warnings.push(String(args.find((a) => typeof a === 'string')))
  const logger = { debug: () => {}, info: () => {}, warn: note, error: note, child: () => logger }
  const store = new PgEventStore({ connectionString: world.db.url, maxConnections: 1, logger })
  t.teardown(() => store.close())
  let wakes = 0
  const subscription = store.onAppend(() => wakes++)
  t.teardown(() => subscription.close())
  const lease = await store.tryLease('idle-test')
  if (lease._tag === 'Left' || lease.right === undefined) throw new Error('no lease')
  const held = lease.right
  t.teardown(() => held.release())
  let lost = false
  void held.lost.then(() => (lost = true))
  await eventually('listening', () => wakes > 0)
  // Idle for many times the timeout: the server would have ended both sessions (57P05).
  // Nothing to await: the claim is that nothing happens meanwhile.
  await new Promise((r) => setTimeout(r, 2_000))
  t.notOk(lost, 'the lease is still held')
  t.same(warnings, [], 'the LISTEN connection was not lost')
  const before = wakes
  const { decodeMessage } = await import('@vitrage-persistor/core')
  const decoded = decodeMessage(v2Body(message({ seq: 1 })), { maxMessageBytes: 1 << 20 })
  if (decoded._tag === 'Left') throw new Error('fixture does not decode')
  await appendBatch(client, [prepareEvent(decoded.right)])
  await eventually('woken by the append', () => wakes > before)
})
