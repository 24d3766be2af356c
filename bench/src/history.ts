/**
 * `pnpm bench history [--events 1000000] [--alarms 1000000] [--queries 200] [--derive in-database|in-node] [--partitions 2]`
 *
 * (a) Projection: N alarm-history events shaped like Vitrage's (the generator of the tests),
 *     loaded into a fresh database; the history runner catches up from 0 (deriving rows in the
 *     database, two partitions: the catch-up configuration for this 2-core machine; the CLI's
 *     default is one). In the same run, the baseline: reading the same events (the runner's keyset pages, JSON-parsed) without
 *     projecting them.
 * (b) Queries: M alarms over a year (durations from minutes to weeks, a tenth still active, a
 *     third with a severity change) written straight into the history tables, then random
 *     one-day windows queried as `history alarms --start --end` does (first page of 1000);
 *     p50/p95/p99 latency.
 */
import { HISTORY_EVENT_TYPES, HistoryRunner } from '@vitrage-persistor/projections'
import { PgEventStore, schemaTemplate } from '@vitrage-persistor/store-postgres'
import { createTestDatabase, historyStream } from '@vitrage-persistor/testing'
import * as E from 'fp-ts/lib/Either.js'
import { argValue, BenchUsageError, fmt, loadBodies, machine, rate, timed } from './common.js'

function* historyBatches(events: number): Generator<Buffer[]> {
  let produced = 0
  for (let seed = 1; produced < events; seed++) {
    const chunk = historyStream(800, seed).slice(0, events - produced)
    produced += chunk.length
    yield chunk
  }
}

const percentile = (sorted: readonly number[], p: number): number => sorted[Math.min(sorted.length - 1, Math.floor((p / 100) * sorted.length))] ?? Number.NaN

export const benchHistory = async (args: readonly string[]): Promise<void> => {
  const events = argValue(args, '--events', 1_000_000)
  const alarms = argValue(args, '--alarms', 1_000_000)
  const queries = argValue(args, '--queries', 200)
  const deriveAt = args.indexOf('--derive')
  const derive = deriveAt < 0 ? 'in-database' : args[deriveAt + 1]
  if (derive !== 'in-database' && derive !== 'in-node') throw new BenchUsageError(`--derive takes in-database or in-node, got ${JSON.stringify(derive ?? '')}`)
  // Catching up on a long log is what the bench measures: one partition per core of this machine.
  const partitions = derive === 'in-node' ? 1 : argValue(args, '--partitions', 2)
  const db = await createTestDatabase(schemaTemplate)
  const store = new PgEventStore({ connectionString: db.url, maxConnections: 3 + partitions, applicationName: 'bench history' })
  try {
    console.log(`machine: ${JSON.stringify(machine())}`)
    const [loaded, loadMs] = await timed(() => loadBodies(db.url, historyBatches(events)))
    console.log(`loaded ${fmt(loaded)} alarm-history events in ${(loadMs / 1000).toFixed(1)} s`)
    await store.pool.query('ANALYZE event')

    const [read, readMs] = await timed(async () => {
      let after = 0
      let n = 0
      for (;;) {
        const page = await store.readPage(after, 5_000, { eventTypes: HISTORY_EVENT_TYPES })()
        if (E.isLeft(page)) throw new Error(page.left.message)
        if (page.right.length === 0) return n
        n += page.right.length
        after = page.right.at(-1)?.id ?? after
      }
    })
    const readRate = rate(read, readMs)
    console.log(`(baseline) reading them (keyset pages, JSON-parsed): ${fmt(readRate)} events/s`)
    const runner = new HistoryRunner({ reader: store, store }, { derive, partitions })
    const [projected, projectMs] = await timed(() => runner.catchUp())
    if (E.isLeft(projected)) throw new Error(projected.left.message)
    const projectRate = rate(loaded, projectMs)
    const { rows: made } = await store.pool.query<{ a: number; e: number; c: number }>(
      'SELECT (SELECT count(*) FROM history_alarm)::int AS a, (SELECT count(*) FROM history_edge)::int AS e, (SELECT count(*) FROM history_change)::int AS c',
    )
    console.log(`(a) projection (${derive}${partitions > 1 ? `, ${partitions} partitions` : ''}): ${fmt(projectRate)} events/s (${(projectMs / 1000).toFixed(1)} s; ${fmt(made[0]?.a ?? 0)} alarms, ${fmt(made[0]?.e ?? 0)} edge intervals, ${fmt(made[0]?.c ?? 0)} changes); ${((projectRate / readRate) * 100).toFixed(0)}% of the read rate`)

    // (b) a year of alarms, written directly (what a long-running deployment accumulates).
    await store.pool.query('TRUNCATE history_alarm, history_change')
    const [, fillMs] = await timed(async () => {
      await store.pool.query(
        `INSERT INTO history_alarm (vitrage_id, start_timestamp, end_timestamp, name, vitrage_type, vitrage_aggregated_severity,
           vitrage_operational_severity, project_id, vitrage_resource_type, vitrage_resource_id, activation_resource_project_id, payload)
         SELECT 'alarm-' || g, s, CASE WHEN g % 10 = 0 THEN NULL ELSE s + (interval '1 minute' * (1 + (g::bigint * 7919 % 20000))) END,
           (ARRAY['CPU utilization','Memory utilization','Disk IO','Ping'])[1 + g % 4], 'nagios', 'WARNING',
           (ARRAY['WARNING','CRITICAL','SEVERE'])[1 + g % 3], NULL, 'nova.host', 'host-' || (g % 500), 'p' || (g % 40),
           jsonb_build_object('vitrage_id', 'alarm-' || g, 'name', 'x')
         FROM (SELECT g, timestamptz '2024-01-01' + (interval '1 second' * (g::float8 * 31536000 / $1)) AS s FROM generate_series(1, $1) g) x`,
        [alarms],
      )
      await store.pool.query(
        `INSERT INTO history_change (message_id, vitrage_id, at, severity, payload, event_id)
         SELECT gen_random_uuid(), vitrage_id, start_timestamp + interval '30 seconds', 'CRITICAL', '{}', 0
         FROM history_alarm WHERE hashtext(vitrage_id) % 3 = 0`,
      )
      await store.pool.query('ANALYZE history_alarm, history_change')
    })
    console.log(`wrote ${fmt(alarms)} alarms over 2024 in ${(fillMs / 1000).toFixed(1)} s`)
    const latencies: number[] = []
    let returned = 0
    let seed = 9
    for (let i = 0; i < queries; i++) {
      seed = (seed * 16807) % 2147483647
      const start = new Date(Date.UTC(2024, 0, 1) + Math.floor((seed / 2147483647) * 364) * 86_400_000)
      const end = new Date(start.getTime() + 86_400_000)
      const [rows, ms] = await timed(async () => {
        const r = await store.queryAlarms({ start: start.toISOString(), end: end.toISOString(), limit: 1000, now: '2025-01-01T00:00:00Z' })()
        if (E.isLeft(r)) throw new Error(r.left.message)
        return r.right.length
      })
      returned += rows
      latencies.push(ms)
    }
    latencies.sort((a, b) => a - b)
    const [p50, p95, p99] = [50, 95, 99].map((p) => percentile(latencies, p))
    console.log(`(b) one-day window over ${fmt(alarms)} alarms, first page of 1000 (${fmt(returned / queries)} rows on average): p50 ${p50?.toFixed(1)} ms, p95 ${p95?.toFixed(1)} ms, p99 ${p99?.toFixed(1)} ms`)
    console.log(JSON.stringify({ bench: 'history', events: loaded, readRate, projectRate, alarms, queries, p50, p95, p99 }))
  } finally {
    await store.close()
    await db.drop()
  }
}

