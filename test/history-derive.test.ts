/**
 * The history projection has two ways to derive its rows: inside PostgreSQL for the events it can
 * prove well-formed (store-postgres history-range.ts, the default) and in Node (historyCommand,
 * the reference). Both must write the same tables from the same events, at any page boundaries,
 * with the odd payloads the database hands back to Node mixed in.
 */
import { decodeMessage, EventTypes, type HistoryCommand, type StoredEvent } from '@vitrage-persistor/core'
import { HistoryRunner, type HistoryRunnerOptions, historyCommand } from '@vitrage-persistor/projections'
import { appendBatch, PgEventStore, prepareEvent, schemaTemplate } from '@vitrage-persistor/store-postgres'
import { historyStream, openTestDatabase } from '@vitrage-persistor/testing'
import * as E from 'fp-ts/lib/Either.js'
import pg from 'pg'
import t, { type Test } from 'tap'

let sequence = 0
const body = (eventType: string, payload: Record<string, unknown>): Buffer => {
  sequence++
  const message = {
    message_id: `00000000-0000-4000-8000-${String(sequence).padStart(12, '0')}`,
    publisher_id: 'vitrage.graph',
    event_type: eventType,
    priority: 'INFO',
    payload,
    timestamp: `2024-01-01 00:30:${String(sequence % 60).padStart(2, '0')}.000001`,
  }
  return Buffer.from(JSON.stringify({ 'oslo.version': '2.0', 'oslo.message': JSON.stringify(message) }))
}

const alarm = (id: unknown, extra: Record<string, unknown> = {}): Record<string, unknown> => ({
  vitrage_id: id, name: 'CPU utilization', vitrage_type: 'nagios', vitrage_resource_type: 'nova.host', vitrage_resource_id: 'host-1',
  vitrage_operational_severity: 'WARNING', vitrage_aggregated_severity: 'WARNING', ...extra,
})
const edge = (source: unknown, target: unknown, at: unknown): Record<string, unknown> => ({ relationship_type: 'causes', source_id: source, target_id: target, update_timestamp: at })

/** Events Vitrage does not write but a log may hold: each is derived in Node, or skipped there as an anomaly. */
const odd = (): Buffer[] => [
  body(EventTypes.alarmActivate, alarm('odd-offset', { update_timestamp: '2024-01-01T02:00:10+02:00' })),
  body(EventTypes.alarmDeactivate, alarm('odd-offset', { update_timestamp: '2024-01-01T00:05:00.1234567Z' })),
  body(EventTypes.alarmActivate, alarm('odd-lower-z', { update_timestamp: '2024-01-01T00:00:11z' })),
  body(EventTypes.alarmActivate, alarm(12345, { update_timestamp: '2024-01-01T00:00:12Z' })),
  body(EventTypes.alarmActivate, alarm('odd-name', { name: 42, project_id: { nested: true }, update_timestamp: '2024-01-01T00:00:13Z' })),
  body(EventTypes.alarmDeactivate, alarm('odd-soon', { update_timestamp: 'soon' })),
  body(EventTypes.alarmDeactivate, alarm('odd-feb30', { update_timestamp: '2024-02-30T00:00:00Z' })),
  // PostgreSQL has no year 0: were it parsed, every retry of its range would fail.
  body(EventTypes.alarmDeactivate, alarm('odd-year0', { update_timestamp: '0000-01-01T00:00:00Z' })),
  body(EventTypes.alarmActivate, alarm('leap-day', { update_timestamp: '2024-02-29 10:00:00' })),
  body(EventTypes.alarmChangeProjectId, alarm('leap-day', { vitrage_resource_project_id: 'p-no-time' })),
  body(EventTypes.alarmChangeProjectId, alarm('leap-day', { vitrage_resource_project_id: 'p-bad-time', update_timestamp: 'later' })),
  body(EventTypes.alarmChangeProjectId, alarm('odd-offset', { vitrage_resource_project_id: 'p-offset', update_timestamp: '2024-01-01T02:01:00+02:00' })),
  body(EventTypes.alarmChange, alarm('leap-day', { vitrage_operational_severity: undefined, update_timestamp: '2024-02-29 10:01:00' })),
  body(EventTypes.alarmChange, alarm('leap-day', { vitrage_operational_severity: 3, update_timestamp: '2024-02-29 10:02:00' })),
  body(EventTypes.causalActivate, edge('odd-offset', 'leap-day', '2024-01-01T01:00:20+01:00')),
  body(EventTypes.causalDeactivate, edge('odd-offset', undefined, '2024-01-01T00:00:30Z')),
  body(EventTypes.causalDeactivate, edge('odd-offset', 'leap-day', '0999-01-01T00:00:00Z')),
  // The same alarm activated twice at one instant, once in each form: the earlier event wins on either path.
  body(EventTypes.alarmActivate, alarm('tie', { name: 'first', update_timestamp: '2024-01-01T01:00:00+01:00' })),
  body(EventTypes.alarmActivate, alarm('tie', { name: 'second', update_timestamp: '2024-01-01T00:00:00Z' })),
  body(EventTypes.alarmActivate, alarm('tie-2', { name: 'first', update_timestamp: '2024-01-01T00:00:00Z' })),
  body(EventTypes.alarmActivate, alarm('tie-2', { name: 'second', update_timestamp: '2024-01-01T01:00:00+01:00' })),
  // At one instant a project change's project wins over the activation's (as in Vitrage, where the
  // change is the later write), whichever form each is in.
  body(EventTypes.alarmActivate, alarm('tie-project', { vitrage_resource_project_id: 'from-activation', update_timestamp: '2024-01-01T01:00:00+01:00' })),
  body(EventTypes.alarmChangeProjectId, alarm('tie-project', { vitrage_resource_project_id: 'from-change', update_timestamp: '2024-01-01T00:00:00Z' })),
  // Raised again under the same vitrage_id with another resource project, the second time in the
  // form only Node reads: the first activation's project stays (Vitrage refuses the second
  // activation), or a change made after the first; whatever the pages and the paths.
  body(EventTypes.alarmActivate, alarm('again', { vitrage_resource_project_id: 'first', update_timestamp: '2024-01-01T00:00:40Z' })),
  body(EventTypes.alarmDeactivate, alarm('again', { update_timestamp: '2024-01-01T00:00:41Z' })),
  body(EventTypes.alarmActivate, alarm('again', { vitrage_resource_project_id: 'second', update_timestamp: '2024-01-01T01:00:42+01:00' })),
  body(EventTypes.alarmActivate, alarm('again-changed', { vitrage_resource_project_id: 'first', update_timestamp: '2024-01-01T00:00:40Z' })),
  body(EventTypes.alarmChangeProjectId, alarm('again-changed', { vitrage_resource_project_id: 'changed', update_timestamp: '2024-01-01T00:00:41Z' })),
  body(EventTypes.alarmActivate, alarm('again-changed', { vitrage_resource_project_id: 'second', update_timestamp: '2024-01-01T00:00:42Z' })),
  // The same edge activated twice at one instant: the earlier event's payload is kept.
  body(EventTypes.causalActivate, { ...edge('tie', 'tie-2', '2024-01-01T01:00:00+01:00'), which: 'first' }),
  body(EventTypes.causalActivate, { ...edge('tie', 'tie-2', '2024-01-01T00:00:00Z'), which: 'second' }),
]
// All but leap-day's activation, its project change without a time (the collector's time orders
// it), tie's second and tie-2's first activation, tie-project's change, again's and
// again-changed's events but again's second activation, and the second tie edge, which are in
// Vitrage's forms.
const ODD_IN_NODE = 20
// 'soon', February 30, the year 0, a change without severity, an edge without target.
const ODD_ANOMALIES = 5

/** A database holding `bodies` as the persistor stores them. */
const databaseWith = async (t: Test, bodies: readonly Buffer[]): Promise<{ url: string; sql: pg.Client }> => {
  const { db, client: sql } = await openTestDatabase(t, schemaTemplate)
  for (let i = 0; i < bodies.length; i += 1_000) {
    await appendBatch(
      sql,
      bodies.slice(i, i + 1_000).map((b) => {
        const decoded = decodeMessage(b, { maxMessageBytes: 1 << 20 })
        if (E.isLeft(decoded)) throw new Error(decoded.left.detail)
        return prepareEvent(decoded.right)
      }),
    )
  }
  return { url: db.url, sql }
}

interface Run {
  readonly events: number
  readonly anomalies: number
  readonly inNode: number
}

const project = async (t: Test, url: string, options: Partial<HistoryRunnerOptions>): Promise<Run> => {
  const store = new PgEventStore({ connectionString: url, maxConnections: 2 + (options.partitions ?? 1) })
  t.teardown(() => store.close())
  let events = 0
  let anomalies = 0
  let inNode = 0
  const runner = new HistoryRunner(
    {
      reader: store,
      store,
      hooks: {
        onPage: (p) => {
          events += p.events
          anomalies += p.anomalies
          inNode += p.inNode
        },
      },
    },
    options,
  )
  const done = await runner.catchUp()
  if (E.isLeft(done)) throw new Error(done.left.message)
  return { events, anomalies, inNode }
}

const checkpoints = async (sql: pg.Client): Promise<Array<{ name: string; position: number }>> =>
  (await sql.query('SELECT name, position::int FROM projection_checkpoint ORDER BY name')).rows

/** Every column of every history table, and the intervals view. */
const tables = async (sql: pg.Client): Promise<Record<string, unknown[]>> => ({
  alarms: (await sql.query('SELECT * FROM history_alarm ORDER BY vitrage_id')).rows,
  changes: (await sql.query('SELECT * FROM history_change ORDER BY message_id')).rows,
  projectChanges: (await sql.query('SELECT * FROM history_project_change ORDER BY event_id')).rows,
  edgeEvents: (await sql.query('SELECT * FROM history_edge_event ORDER BY source_id, target_id, label, kind, at')).rows,
  edges: (await sql.query('SELECT * FROM history_edge ORDER BY source_id, target_id, label, start_timestamp NULLS FIRST, end_timestamp')).rows,
})

t.test('the database derives the same tables as Node, at any page boundaries, odd payloads included', async (t) => {
  // Odd events first, in the middle and at the end, so they share pages with plain ones.
  const stream = [...odd(), ...historyStream(250, 3), ...odd(), ...historyStream(250, 4), ...odd()]
  const node = await databaseWith(t, stream)
  const reference = await project(t, node.url, { derive: 'in-node', pageSize: 101 })
  const expected = await tables(node.sql)
  t.equal(reference.events, stream.length)
  t.ok(expected['alarms'] !== undefined && expected['alarms'].length > 500, `${expected['alarms']?.length} alarms`)

  for (const [pageSize, partitions] of [[37, 1], [1_000, 1], [1_000_000, 1], [37, 2], [500, 3]] as const) {
    const db = await databaseWith(t, stream)
    const run = await project(t, db.url, { derive: 'in-database', pageSize, partitions })
    const got = await tables(db.sql)
    const how = `pages of ${pageSize} ids, ${partitions} partition(s)`
    for (const table of Object.keys(expected)) t.same(got[table], expected[table], `${how}: ${table} as derived in Node`)
    t.equal(run.events, stream.length, `${how}: every history event counted once`)
    t.equal(run.anomalies, reference.anomalies, `${how}: the same anomalies reported (${run.anomalies})`)
    t.equal(run.inNode, 3 * ODD_IN_NODE, `${how}: only the odd events were handed to Node`)
    t.same(await checkpoints(db.sql), [{ name: 'history', position: stream.length }], `${how}: one checkpoint at the head, no partition's left`)
  }
  t.equal(reference.anomalies, 3 * ODD_ANOMALIES)
  t.ok(expected['projectChanges'] !== undefined && expected['projectChanges'].length > 1, `${expected['projectChanges']?.length} project changes`)

  const ties = (await node.sql.query(`SELECT vitrage_id, name FROM history_alarm WHERE vitrage_id IN ('tie', 'tie-2') ORDER BY 1`)).rows
  t.same(ties, [{ vitrage_id: 'tie', name: 'first' }, { vitrage_id: 'tie-2', name: 'first' }], 'on equal activation times the earlier event gives the attributes')
  const tieProject = (await node.sql.query(`SELECT vitrage_resource_project_id AS p FROM history_alarm WHERE vitrage_id = 'tie-project'`)).rows
  t.same(tieProject, [{ p: 'from-change' }], 'at one instant the project change sets the project')
  const again = (await node.sql.query(`SELECT vitrage_id, vitrage_resource_project_id AS p FROM history_alarm WHERE vitrage_id LIKE 'again%' ORDER BY 1`)).rows
  t.same(again, [{ vitrage_id: 'again', p: 'first' }, { vitrage_id: 'again-changed', p: 'changed' }], 'raised again: the first activation sets the project, then the changes after it')
  const edgeTie = (await node.sql.query(`SELECT payload->>'which' AS which FROM history_edge_event WHERE source_id = 'tie' AND kind = 'a'`)).rows
  t.same(edgeTie, [{ which: 'first' }], 'of two edge activations at one instant, the earlier event is kept')
})

t.test('partitions resume where they stopped, under another count, around a runner without partitions and a rebuild', async (t) => {
  const stream = [...historyStream(300, 5), ...odd(), ...historyStream(300, 6)]
  const node = await databaseWith(t, stream)
  await project(t, node.url, { derive: 'in-node' })
  const expected = await tables(node.sql)
  const same = async (what: string): Promise<void> => {
    const got = await tables(db.sql)
    for (const table of Object.keys(expected)) t.same(got[table], expected[table], `${what}: ${table} as derived in Node`)
  }

  const db = await databaseWith(t, stream)
  // Where a three-partition run stopped: the first partition at 400, the second at 100, the third
  // not started (the runner's own steps, through the store).
  const store = new PgEventStore({ connectionString: db.url, maxConnections: 1 })
  t.teardown(() => store.close())
  const commandsFor = (events: readonly StoredEvent[]): HistoryCommand[] =>
    events.flatMap((e) => {
      const c = historyCommand(e)
      return c !== undefined && E.isRight(c) ? [c.right] : []
    })
  for (const [index, to] of [[0, 400], [1, 100]] as const) {
    t.same(await store.resumeHistoryPartition('history', { index, of: 3 })(), E.right(0))
    t.ok(E.isRight(await store.applyHistoryRange('history', 0, to, commandsFor, { index, of: 3 })()))
  }
  t.same(await store.settleHistoryPartitions('history', 3)(), E.right(0), 'the slowest partition has not started')
  t.same(await checkpoints(db.sql), [{ name: 'history', position: 0 }, { name: 'history/1of3', position: 400 }, { name: 'history/2of3', position: 100 }])
  const again = await store.applyHistoryRange('history', 0, 100, commandsFor, { index: 1, of: 3 })()
  t.match(again, E.left({ code: 'checkpoint-conflict' }), 'a partition range is applied once')

  // The service's runner (no partitions) goes to the head meanwhile; partitions left behind it are
  // raised to it when they resume, under another count too.
  await project(t, db.url, { derive: 'in-database', pageSize: 90 })
  await same('after the runner without partitions')
  t.same(await checkpoints(db.sql), [{ name: 'history', position: stream.length }], 'it drops the partition checkpoints it passed (prune would wait for them)')
  t.same(await store.resumeHistoryPartition('history', { index: 1, of: 3 })(), E.right(stream.length), 'a partition behind the common checkpoint resumes from it')
  await project(t, db.url, { derive: 'in-database', pageSize: 70, partitions: 2 })
  t.same(await checkpoints(db.sql), [{ name: 'history', position: stream.length }], 'one checkpoint at the head: the others are reached and dropped')

  // A rebuild while a partition is half-way: its next move fails, it resumes from the common
  // checkpoint (0), and nothing is left out.
  t.same(await store.resumeHistoryPartition('history', { index: 0, of: 2 })(), E.right(stream.length))
  t.same(await store.resetHistory('history')(), E.right(undefined))
  t.match(await store.applyHistoryRange('history', stream.length, stream.length, commandsFor, { index: 0, of: 2 })(), E.left({ code: 'checkpoint-conflict' }))
  t.same(await store.resumeHistoryPartition('history', { index: 0, of: 2 })(), E.right(0))
  await Promise.all([project(t, db.url, { derive: 'in-database', pageSize: 70, partitions: 2 }), project(t, db.url, { derive: 'in-database', pageSize: 90 })])
  await same('rebuilt by partitions and a runner without them at once')
  t.same(await checkpoints(db.sql), [{ name: 'history', position: stream.length }])
})
