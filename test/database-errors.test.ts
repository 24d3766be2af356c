import { eventually, freePort } from '@vitrage-persistor/testing'
import t from 'tap'
import { message, v2Body } from './support/messages.js'
import { isConsuming, startPersistor } from './support/persistor-process.js'
import { declarePersistorTopology, metricValue, publishMany, rowCount, setupWorld, storedSeqs } from './support/setup.js'

const TOTAL = 20_000

t.test('connections killed under the persistor are retried without acking; nothing lost, nothing twice', async (t) => {
  const world = await setupWorld(t)
  await declarePersistorTopology(world)
  await publishMany(world, TOTAL, (seq) => v2Body(message({ seq })))
  const port = await freePort()
  const p = startPersistor(world.flags(['--batch-size', '200', '--prefetch', '400', '--http-port', String(port)]))
  t.teardown(() => p.kill('SIGKILL'))
  await p.waitFor(isConsuming, 'consuming')

  let kills = 0
  while ((await rowCount(world)) < TOTAL && kills < 6) {
    const before = await rowCount(world)
    await eventually('progress', async () => {
      p.assertAlive()
      return (await rowCount(world)) > before + 1_000
    })
    const { rowCount: killed } = await world.sql.query(
      `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'vitrage-persistor run'`,
    )
    if ((killed ?? 0) > 0) kills++
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
  const page = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
  t.ok((metricValue(page, 'vitrage_persistor_append_retries_total{kind="transient"}') ?? 0) >= 1, 'the failures were classified transient and retried')
  t.equal(metricValue(page, 'vitrage_persistor_database_connected'), 1)
  p.kill('SIGTERM')
  t.equal((await p.exited).code, 0)
})

t.test('a database that turns read-only under the persistor (a failover to a standby) holds the batch, and stores it once the server takes writes again', async (t) => {
  const world = await setupWorld(t)
  await declarePersistorTopology(world)
  const port = await freePort()
  const p = startPersistor(world.flags(['--http-port', String(port)]))
  t.teardown(() => p.kill('SIGKILL'))
  await p.waitFor(isConsuming, 'consuming')
  await publishMany(world, 100, (seq) => v2Body(message({ seq })))
  await eventually('the first messages stored', async () => (await rowCount(world)) === 100)

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
