import { readFileSync } from 'node:fs'
import { eventually, freePort, startPrivatePostgres } from '@vitrage-persistor/testing'
import pg from 'pg'
import t from 'tap'
import { cli } from './support/cli.js'
import { isConsuming, startPersistor } from './support/persistor-process.js'
import { declarePersistorTopology, metricValue, setupWorld, streamSeqs } from './support/setup.js'

const TOTAL = 30_000
const PREFETCH = 1000
const OUTAGE_MS = 20_000

const rssMiB = (pid: number): number => Number(/VmRSS:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? 0) / 1024

t.test('PostgreSQL stopped for 20 s during ingest: no crash, no ack, not ready, resumes by itself, nothing lost', async (t) => {
  // The database is a private server, so stopping it disturbs no other test.
  const server = await startPrivatePostgres()
  t.teardown(server.destroy)
  const url = server.urlFor('vp_outage')
  const migrated = await cli(['migrate', '--database-url', url])
  t.equal(migrated.code, 0, migrated.err)
  const world = await setupWorld(t)
  await declarePersistorTopology(world)
  const port = await freePort()
  const p = startPersistor(world.flags(['--database-url', url, '--prefetch', String(PREFETCH), '--batch-size', '500', '--http-port', String(port)]))
  t.teardown(() => p.kill('SIGKILL'))
  await p.waitFor(isConsuming, 'consuming')

  const sql = new pg.Pool({ connectionString: url, max: 1 })
  // Stopping the server terminates idle connections: not an error of the test's own pools.
  sql.on('error', () => {})
  const stored = async (): Promise<number> => Number((await sql.query('SELECT count(*) AS n FROM event')).rows[0].n)
  const metrics = async (): Promise<string> => (await fetch(`http://127.0.0.1:${port}/metrics`)).text()

  const publishing = streamSeqs(world, TOTAL, 3_000)
  await eventually('ingest under way', async () => (await stored()) > 3_000)
  await sql.end()
  await server.stop({ mode: 'fast' })
  const stoppedAt = Date.now()

  const rss: number[] = []
  let notReady = 0
  while (Date.now() - stoppedAt < OUTAGE_MS) {
    p.assertAlive()
    rss.push(rssMiB(p.child.pid as number))
    const ready = await fetch(`http://127.0.0.1:${port}/readyz`)
    if (ready.status === 503) notReady++
    const inFlight = metricValue(await metrics(), 'vitrage_persistor_in_flight_messages') ?? Number.NaN
    t.ok(inFlight <= PREFETCH, `held messages (${inFlight}) never exceed the prefetch window`, { diagnostic: false })
    await new Promise((r) => setTimeout(r, 1_000))
  }
  t.ok(notReady >= 15, `/readyz reported not ready during the outage (${notReady} of ~20 probes)`)
  const page = await metrics()
  t.equal(metricValue(page, 'vitrage_persistor_database_connected'), 0)
  t.ok((metricValue(page, 'vitrage_persistor_append_retries_total{kind="transient"}') ?? 0) >= 3, 'retried with backoff')
  const delays = p.lines.filter((l) => l.msg === 'append failed; holding the batch unacked and retrying').map((l) => l['retryInMs'] as number)
  t.ok(delays.length >= 3 && Math.max(...delays) <= 10_000, `retry delays capped at 10 s: ${delays.join(', ')}`)
  t.ok(Math.max(...rss) - Math.min(...rss) < 64, `memory flat while waiting: RSS ${Math.round(Math.min(...rss))}-${Math.round(Math.max(...rss))} MiB`)
  const depth = await world.broker.depth(world.names.queue)
  t.ok(depth > 0, `the backlog waits in the broker (${depth} ready)`)

  await server.start()
  const after = new pg.Pool({ connectionString: url, max: 1 })
  after.on('error', () => {})
  t.teardown(() => after.end())
  await publishing
  await eventually(
    'everything stored after the outage',
    async () => {
      p.assertAlive()
      return Number((await after.query('SELECT count(*) AS n FROM event')).rows[0].n) === TOTAL
    },
    { timeoutMs: 90_000 },
  ).catch((e: unknown) => {
    console.error(p.output().slice(-4000))
    throw e
  })
  const seqs = (await after.query<{ seq: number }>(`SELECT (payload->>'seq')::int AS seq FROM event ORDER BY id`)).rows.map((r) => r.seq)
  t.ok(seqs.every((s, i) => s === i), 'each once, in publish order')
  await eventually('ready again', async () => (await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200)
  p.kill('SIGTERM')
  t.equal((await p.exited).code, 0)
})
