import { type EdgeEventPoint, edgeIntervals, type HistoryCommand } from '@vitrage-persistor/core'
import { createTestDatabase, eventually, openTestDatabase, testDatabaseClient } from '@vitrage-persistor/testing'
import pg from 'pg'
import t, { type Test } from 'tap'
import { CheckpointConflict, readCheckpoint } from './checkpoints.js'
import { applyHistory, foldAlarms, resetHistory } from './history.js'
import { alarmsById, alarmsQuery, causalEdges, countActiveAlarms, openAt, queryAlarms } from './history-queries.js'
import { schemaTemplate } from './migrate.js'
import { PgEventStore } from './store.js'

const setup = async (t: Test): Promise<pg.Client> => {
  const c = await testDatabaseClient(t, schemaTemplate)
  return c
}

const at = (minute: number): string => `2024-01-01T00:${String(minute).padStart(2, '0')}:00.000000Z`
const attrs = (severity: string, project: string | null = null) => ({
  name: 'CPU', vitrageType: 'nagios', aggregatedSeverity: severity, operationalSeverity: severity,
  projectId: null, resourceType: 'nova.host', resourceId: 'host-1', resourceProjectId: project,
})
let eventId = 0
const activate = (id: string, minute: number, severity = 'CRITICAL'): HistoryCommand => ({ kind: 'activate-alarm', eventId: ++eventId, vitrageId: id, at: at(minute), attributes: attrs(severity), payload: { vitrage_id: id, severity } })
const deactivate = (id: string, minute: number): HistoryCommand => ({ kind: 'deactivate-alarm', eventId: ++eventId, vitrageId: id, at: at(minute) })
const change = (id: string, minute: number, severity: string): HistoryCommand => ({ kind: 'change-severity', eventId: ++eventId, messageId: `00000000-0000-4000-8000-${String(++eventId).padStart(12, '0')}`, vitrageId: id, at: at(minute), severity, payload: {} })
const project = (id: string, minute: number, p: string): HistoryCommand => ({ kind: 'change-project', eventId: ++eventId, vitrageId: id, at: at(minute), resourceProjectId: p })
const edgeOn = (s: string, d: string, minute: number): HistoryCommand => ({ kind: 'activate-edge', eventId: ++eventId, source: s, target: d, label: 'causes', at: at(minute), payload: { relationship_type: 'causes' } })
const edgeOff = (s: string, d: string, minute: number): HistoryCommand => ({ kind: 'deactivate-edge', eventId: ++eventId, source: s, target: d, label: 'causes', at: at(minute) })

const story: HistoryCommand[] = [
  activate('a1', 1), activate('a2', 2, 'WARNING'), edgeOn('a1', 'a2', 3), change('a2', 4, 'CRITICAL'),
  project('a2', 5, 'p-1'), edgeOff('a1', 'a2', 6), deactivate('a1', 7), edgeOn('a1', 'a2', 8), activate('a3', 9), edgeOn('a2', 'a3', 9),
]

const snapshot = async (c: pg.Client): Promise<unknown> => ({
  alarms: (await c.query('SELECT vitrage_id, start_timestamp, end_timestamp, name, vitrage_operational_severity, vitrage_resource_project_id FROM history_alarm ORDER BY 1')).rows,
  changes: (await c.query('SELECT vitrage_id, at, severity FROM history_change ORDER BY 1, 2')).rows,
  edges: (await c.query('SELECT source_id, target_id, label, start_timestamp, end_timestamp FROM history_edge ORDER BY 1, 2, 4 NULLS FIRST')).rows,
})

t.test('the same events in any order, or twice, give the same tables', async (t) => {
  const c = await setup(t)
  await applyHistory(c, 'h', story, 0, 1)
  const inOrder = await snapshot(c)
  await resetHistory(c, 'h')
  let seed = 42
  const shuffled = [...story].sort(() => ((seed = (seed * 16807) % 2147483647) / 2147483647) - 0.5)
  // One command per transaction, reversed then shuffled, then everything again.
  let position = 0
  for (const cmd of [...shuffled].reverse()) await applyHistory(c, 'h', [cmd], position, ++position)
  await applyHistory(c, 'h', story, position, ++position)
  t.same(await snapshot(c), inOrder)
  t.equal(await readCheckpoint(c, 'h'), position)
})

t.test('a deactivation or change that arrives before its activation is kept', async (t) => {
  const c = await setup(t)
  await applyHistory(c, 'h', [deactivate('x', 20), change('x', 15, 'WARNING')], 0, 1)
  t.same(await queryAlarms(c, {}), [], 'not reported before its activation is known')
  await applyHistory(c, 'h', [activate('x', 10)], 1, 2)
  const [x] = await queryAlarms(c, { now: at(30) })
  t.match(x, { vitrage_id: 'x', start_timestamp: at(10), end_timestamp: at(20), state: 'Inactive', vitrage_operational_severity: 'OK' })
  const [during] = await queryAlarms(c, { now: at(16) })
  t.match(during, { state: 'Active', vitrage_operational_severity: 'WARNING' }, 'as of minute 16: active, severity changed at 15')
})

t.test('a causal edge activated again after it ended has two intervals', async (t) => {
  const c = await setup(t)
  await applyHistory(c, 'h', story, 0, 1)
  const edges = await causalEdges(c, ['a1'], 'forward')
  t.same(edges.map((e) => [e.start_timestamp, e.end_timestamp]), [[at(3), at(6)], [at(8), null]])
  t.same((await causalEdges(c, ['a1'], 'forward', at(7))).length, 0, 'none active at minute 7')
  t.same((await causalEdges(c, ['a3'], 'backward', at(9))).map((e) => e.source_id), ['a2'])
})

t.test('a deactivation sent again after the edge ended is no interval: the edge is not active before it existed', async (t) => {
  const c = await setup(t)
  await applyHistory(c, 'h', [activate('r1', 1), activate('r2', 1), edgeOn('r1', 'r2', 3), edgeOff('r1', 'r2', 4), edgeOff('r1', 'r2', 5)], 0, 1)
  const edges = await causalEdges(c, ['r1'], 'forward')
  t.same(edges.map((e) => [e.start_timestamp, e.end_timestamp]), [[at(3), at(4)]], 'one interval')
  t.same((await causalEdges(c, ['r1'], 'forward', at(2))).length, 0, 'not active at minute 2')
  // A deactivation with no activation before it at all: the activation is missing, the edge was
  // active at some time before it (unknown start), as before.
  await applyHistory(c, 'h', [edgeOff('r2', 'r1', 6), edgeOff('r2', 'r1', 7)], 1, 2)
  t.same((await causalEdges(c, ['r2'], 'forward')).map((e) => [e.start_timestamp, e.end_timestamp]), [[null, at(6)]])
})

t.test('the history_edge view gives exactly core edgeIntervals, for random edge histories', async (t) => {
  const c = await setup(t)
  let seed = 7
  const rnd = (n: number): number => Math.floor(((seed = (seed * 16807) % 2147483647) / 2147483647) * n)
  // 300 edges, 0 to 12 events each, at a few distinct minutes so that equal instants (an
  // activation and a deactivation at the same time) and runs of one kind are common.
  const expected = new Map<string, EdgeEventPoint[]>()
  const commands: HistoryCommand[] = []
  for (let i = 0; i < 300; i++) {
    const points = new Map<string, EdgeEventPoint>()
    for (let k = rnd(13); k > 0; k--) {
      const kind = rnd(2) === 0 ? 'a' : 'd'
      const minute = rnd(8)
      points.set(`${kind}${minute}`, kind === 'a' ? { kind, at: at(minute), payload: { n: i, minute } } : { kind, at: at(minute) })
      commands.push(kind === 'a'
        ? { kind: 'activate-edge', eventId: ++eventId, source: `s${i % 17}`, target: `t${i}`, label: 'causes', at: at(minute), payload: { n: i, minute } }
        : { kind: 'deactivate-edge', eventId: ++eventId, source: `s${i % 17}`, target: `t${i}`, label: 'causes', at: at(minute) })
    }
    expected.set(`s${i % 17} t${i}`, [...points.values()])
  }
  await applyHistory(c, 'h', commands, 0, 1)
  const { rows } = await c.query<{ k: string; start: string | null; end: string | null; payload: unknown }>(
    `SELECT source_id || ' ' || target_id AS k, to_char(start_timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS start,
       to_char(end_timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS end, payload
     FROM history_edge`)
  const got = new Map<string, Array<{ start: string | null; end: string | null; payload: unknown }>>()
  for (const r of rows) got.set(r.k, [...(got.get(r.k) ?? []), { start: r.start, end: r.end, payload: r.payload }])
  const order = (l: Array<{ start: string | null; end: string | null }>) =>
    [...l].sort((x, y) => (x.end ?? '~').localeCompare(y.end ?? '~') || (x.start ?? '').localeCompare(y.start ?? ''))
  let intervals = 0
  for (const [k, points] of expected) {
    const want = edgeIntervals(points)
    intervals += want.length
    t.same(order(got.get(k) ?? []), order(want), k)
  }
  t.equal(rows.length, intervals)
  t.ok(intervals > 300, `${intervals} intervals compared`)
})

t.test('an RCA lookup by source or by target reads only that edge\'s events (index, not a scan)', async (t) => {
  const c = await setup(t)
  await c.query('SET enable_seqscan = off')
  for (const column of ['source_id', 'target_id']) {
    const { rows } = await c.query<{ 'QUERY PLAN': string }>(
      `EXPLAIN SELECT * FROM history_edge e WHERE e.${column} = ANY($1::text[]) AND e.label = 'causes'`, [['x']])
    const plan = rows.map((r) => r['QUERY PLAN']).join('\n')
    t.match(plan, /Index (Only )?Scan/, `${column}: ${plan}`)
    t.match(plan, new RegExp(`Index Cond: .*${column}`), `${column} filter pushed into the view`)
  }
})

t.test('window, active, filters, project, sort and pagination follow Vitrage', async (t) => {
  const c = await setup(t)
  await applyHistory(c, 'h', story, 0, 1)
  const ids = async (q: Parameters<typeof queryAlarms>[1]): Promise<string[]> => (await queryAlarms(c, { now: at(30), ...q })).map((a) => a.vitrage_id)
  t.same(await ids({}), ['a1', 'a2', 'a3'], 'no window: all, by start')
  t.same(await ids({ start: at(8), end: at(9) }), ['a2', 'a3'], 'a1 ended at 7')
  t.same(await ids({ start: at(7), end: at(7) }), ['a1', 'a2'], 'inclusive bounds')
  t.same(await ids({ start: at(8) }), ['a2', 'a3'])
  t.same(await ids({ active: true }), ['a2', 'a3'])
  t.same(await ids({ filters: [['vitrage_id', ['A1', 'a3']]] }), ['a1', 'a3'], 'substring, case-insensitive, values OR-ed')
  t.same(await ids({ filters: [['name', ['%']]] }), [], '% is literal')
  t.same(await ids({ project: 'p-1' }), ['a2'])
  t.same(await ids({ sort: ['-start_timestamp'] }), ['a3', 'a2', 'a1'])
  t.same(await ids({ limit: 2 }), ['a1', 'a2'])
  t.same(await ids({ limit: 2, marker: 'a2' }), ['a3'])
  t.same(await ids({ sort: ['-start_timestamp'], limit: 1, marker: 'a3' }), ['a2'])
  const [a2] = await queryAlarms(c, { now: at(30), filters: [['vitrage_id', ['a2']]] })
  t.equal(a2?.vitrage_operational_severity, 'CRITICAL', 'current severity, not the one at activation')
  t.same(await countActiveAlarms(c, { now: at(30) }), { SEVERE: 0, CRITICAL: 2, WARNING: 0, OK: 0, 'N/A': 0 })
  t.throws(() => alarmsQuery({ active: true, start: at(1) }), /cannot be combined/)
  t.throws(() => alarmsQuery({ filters: [['payload' as 'name', ['x']]] }), /cannot filter on payload/)
})

t.test('sorting by end_timestamp puts alarms not yet ended after ended ones, both ways (Vitrage: 2222-02-22)', async (t) => {
  const c = await setup(t)
  // a1 ended at 7; a2 and a3 are active at 30.
  await applyHistory(c, 'h', story, 0, 1)
  const ids = async (q: Parameters<typeof queryAlarms>[1]): Promise<string[]> => (await queryAlarms(c, { now: at(30), ...q })).map((a) => a.vitrage_id)
  t.same(await ids({ sort: ['end_timestamp'] }), ['a1', 'a2', 'a3'])
  t.same(await ids({ sort: ['-end_timestamp'] }), ['a2', 'a3', 'a1'], 'the active ones first, as Vitrage lists them')
  t.same(await ids({ sort: ['-end_timestamp'], limit: 1, marker: 'a3' }), ['a1'], 'the marker pages in the same order')
  t.same(await ids({ sort: ['-end_timestamp'], limit: 1, marker: 'a2' }), ['a3'])
  t.same(await ids({ sort: ['end_timestamp'], limit: 1, marker: 'a1' }), ['a2'])
  t.same(await ids({ sort: ['-end_timestamp'], now: at(5) }), ['a1', 'a2'], 'as of minute 5 a1 has not ended yet either (and a3 has not started)')
})

t.test('--now is the history as it stood then: alarms started later are left out', async (t) => {
  const c = await setup(t)
  await applyHistory(c, 'h', story, 0, 1)
  const ids = async (q: Parameters<typeof queryAlarms>[1]): Promise<string[]> => (await queryAlarms(c, q)).map((a) => a.vitrage_id)
  t.same(await ids({ now: at(0) }), [], 'nothing had started at minute 0')
  t.same(await ids({ now: at(1) }), ['a1'], 'a1 started at 1')
  t.same(await ids({ now: at(8), start: at(0) }), ['a1', 'a2'])
  t.same(await ids({ now: at(8), filters: [['state', ['Active']]] }), ['a2'], 'a1 ended at 7, a3 had not started')
  t.same(await ids({}), ['a1', 'a2', 'a3'], 'without --now, every alarm recorded')
})

t.test('--start after --end is refused to the microsecond', async (t) => {
  t.throws(() => alarmsQuery({ start: '2024-01-01T10:00:00.000900Z', end: '2024-01-01T10:00:00.000100Z' }), { name: 'QueryError', message: /is after --end/ })
  t.doesNotThrow(() => alarmsQuery({ start: '2024-01-01T10:00:00.000100Z', end: '2024-01-01T10:00:00.000100Z' }), 'an instant is a window')
  t.throws(() => alarmsQuery({ start: 'soon', end: '2024-01-01T10:00:00Z' }), { name: 'QueryError', message: /--start: "soon" is not a timestamp/ })
})

t.test('open for end-open: started by T and not ended at all; one that ended later is left alone', async (t) => {
  const c = await setup(t)
  await applyHistory(c, 'h', story, 0, 1)
  t.same(await openAt(c, at(8)), { alarms: ['a2'], edges: [{ source: 'a1', target: 'a2', label: 'causes' }] }, 'a1 ended at 7, a3 and its edge start at 9')
  t.same(await openAt(c, at(30)), { alarms: ['a2', 'a3'], edges: [{ source: 'a1', target: 'a2', label: 'causes' }, { source: 'a2', target: 'a3', label: 'causes' }] })
  t.same((await openAt(c, at(2))).alarms, ['a2'], 'a1 is not open: it has an end (7), even though it was active at 2')
})

t.test('two runners cannot both move a checkpoint', async (t) => {
  const c = await setup(t)
  await applyHistory(c, 'h', [activate('a', 1)], 0, 10)
  await t.rejects(applyHistory(c, 'h', [activate('b', 1)], 0, 5), CheckpointConflict)
  await t.rejects(applyHistory(c, 'h', [activate('b', 1)], 7, 12), CheckpointConflict)
  t.equal(await readCheckpoint(c, 'h'), 10)
  t.same((await queryAlarms(c, {})).map((a) => a.vitrage_id), ['a'], 'the losing page wrote nothing')
})

t.test('a page folds each alarm into one row: earliest activation, latest end, latest project change', async (t) => {
  const a = activate('x', 5)
  const late = project('x', 7, 'p-late')
  const tieFirst = project('y', 3, 'p-y-first')
  const y = project('y', 3, 'p-y')
  const folded = foldAlarms([deactivate('x', 9), a, late, activate('x', 6), deactivate('x', 8), tieFirst, y, project('x', 5, 'p-early')])
  t.same(folded.map((f) => f.vitrageId), ['x', 'y'])
  const x = folded[0]
  t.equal(x?.activation, a, 'the earliest activation')
  t.equal(x?.end, at(9), 'the latest deactivation')
  t.equal(x?.projectChange, late, 'the latest project change')
  t.same(folded[1], { vitrageId: 'y', activation: undefined, end: null, projectChange: y }, 'on equal times the later event')
})

t.test('an alarm raised again under its vitrage_id keeps the first activation\'s resource project, in one page or across pages', async (t) => {
  const c = await setup(t)
  const activateIn = (id: string, minute: number, p: string): HistoryCommand => ({ ...activate(id, minute), attributes: attrs('CRITICAL', p) } as HistoryCommand)
  // again: raised in p1, ended, raised in p2. moved: raised in p1, moved to p3, raised in p2.
  // early: a change stamped before the activation (Vitrage had no row to update yet).
  const commands = [
    activateIn('again', 1, 'p1'), deactivate('again', 2), activateIn('again', 3, 'p2'),
    activateIn('moved', 1, 'p1'), project('moved', 2, 'p3'), activateIn('moved', 3, 'p2'),
    project('early', 1, 'p-before'), activateIn('early', 2, 'p1'),
  ]
  const projects = async (): Promise<unknown> => (await c.query('SELECT vitrage_id, vitrage_resource_project_id AS p FROM history_alarm ORDER BY 1')).rows
  const expected = [{ vitrage_id: 'again', p: 'p1' }, { vitrage_id: 'early', p: 'p1' }, { vitrage_id: 'moved', p: 'p3' }]
  await applyHistory(c, 'h', commands, 0, 1)
  t.same(await projects(), expected, 'one page')
  await resetHistory(c, 'h')
  let position = 0
  for (const cmd of commands) await applyHistory(c, 'h', [cmd], position, ++position)
  t.same(await projects(), expected, 'a page per event')
  await resetHistory(c, 'h')
  position = 0
  for (const cmd of [...commands].reverse()) await applyHistory(c, 'h', [cmd], position, ++position)
  t.same(await projects(), expected, 'a page per event, newest first')
})

t.test('filters, sorting and markers use the severity and state that are reported', async (t) => {
  const c = await setup(t)
  // a1: activated CRITICAL, ended at 7 (reported OK/Inactive); a2: activated WARNING, changed to
  // CRITICAL at 4 (reported CRITICAL); a3: CRITICAL.
  await applyHistory(c, 'h', story, 0, 1)
  const ids = async (q: Parameters<typeof queryAlarms>[1]): Promise<string[]> => (await queryAlarms(c, { now: at(30), ...q })).map((a) => a.vitrage_id)
  t.same(await ids({ filters: [['vitrage_operational_severity', ['CRITICAL']]] }), ['a2', 'a3'], 'the changed one is CRITICAL, the ended one is not')
  t.same(await ids({ filters: [['vitrage_operational_severity', ['OK']]] }), ['a1'], 'an ended alarm is OK')
  t.same(await ids({ filters: [['state', ['Inactive']]] }), ['a1'])
  t.same(await ids({ filters: [['state', ['Active']]] }), ['a2', 'a3'])
  t.same(await ids({ sort: ['vitrage_operational_severity'] }), ['a2', 'a3', 'a1'], 'CRITICAL, CRITICAL, OK')
  t.same(await ids({ sort: ['vitrage_operational_severity'], limit: 1, marker: 'a3' }), ['a1'], 'the marker is placed by its reported severity too')
  await t.rejects(queryAlarms(c, { marker: 'nope' }), { name: 'QueryError', message: '--marker: no alarm has vitrage_id "nope"' }, 'an unknown marker is an error, not an empty page')
  t.throws(() => alarmsQuery({ start: at(30), end: at(10) }), { name: 'QueryError', message: /--start .* is after --end/ })
})

t.test('at the instant an alarm or an edge ends, neither is active any more', async (t) => {
  const c = await setup(t)
  await applyHistory(c, 'h', story, 0, 1)
  // The edge a1 -> a2 ended at 6: active at 5, not at 6 (as a1, which ended at 7, is not at 7).
  t.same((await causalEdges(c, ['a1'], 'forward', at(5))).length, 1)
  t.same((await causalEdges(c, ['a1'], 'forward', at(6))).length, 0)
  t.same((await alarmsById(c, ['a1'], at(6))).length, 1)
  t.same((await alarmsById(c, ['a1'], at(7))).length, 0)
})

t.test('a reset for a rebuild is refused once events were pruned, also by a prune that commits while it waits; the tables are unchanged', async (t) => {
  const db = await createTestDatabase(schemaTemplate)
  t.teardown(() => db.drop())
  const session = async (): Promise<pg.Client> => {
    const c = new pg.Client({ connectionString: db.url })
    await c.connect()
    t.teardown(() => c.end())
    return c
  }
  const [a, b] = [await session(), await session()]
  await a.query(`INSERT INTO event (message_id, event_type, collector_timestamp, payload) SELECT gen_random_uuid(), 'e', now(), '{}' FROM generate_series(1, 100)`)
  await a.query(`INSERT INTO projection_snapshot (kind, event_id, format, data) VALUES ('graph', 90, 'test/1', '\\x00')`)
  await applyHistory(a, 'h', story, 0, 100)
  const before = await snapshot(a)

  // A prune step in progress, then the reset: it waits, then sees the watermark and refuses.
  await b.query('BEGIN ISOLATION LEVEL READ COMMITTED')
  t.equal(Number((await b.query('SELECT event_prune(90) AS n')).rows[0].n), 89)
  const resetting = resetHistory(a, 'h')
  await eventually('the reset waits for the prune', async () =>
    (await b.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")).rows[0]?.n === 1)
  await b.query('COMMIT')
  t.same(await resetting, { prunedBelow: 90 })
  t.same(await snapshot(a), before, 'the history tables are unchanged')
  t.equal(await readCheckpoint(a, 'h'), 100, 'the checkpoint is unchanged')
  // Retiring is not refused: it removes the checkpoint, so retention no longer waits for it.
  t.equal(await resetHistory(a, 'h', { retire: true }), undefined)
  t.equal((await a.query(`SELECT count(*)::int AS n FROM projection_checkpoint WHERE name = 'h'`)).rows[0].n, 0)
})

t.test('times asked about are UTC whatever the session\'s TimeZone and DateStyle; a malformed one is refused, not read by PostgreSQL\'s rules', async (t) => {
  const { db, client } = await openTestDatabase(t, schemaTemplate)
  await applyHistory(client, 'h', story, 0, 1)
  // The URL's options set the session's zone and date style, as an operator's may.
  const url = new URL(db.url)
  url.searchParams.set('options', '-c TimeZone=America/New_York -c DateStyle=SQL,DMY')
  const store = new PgEventStore({ connectionString: url.toString(), maxConnections: 1 })
  t.teardown(() => store.close())
  const naive = (minute: number): string => `2024-01-01 00:${String(minute).padStart(2, '0')}`
  const ids = async (q: Parameters<typeof queryAlarms>[1]): Promise<string[]> => {
    const r = await store.queryAlarms(q)()
    if (r._tag === 'Left') throw new Error(r.left.message)
    return r.right.map((a) => a.vitrage_id)
  }
  // Without the fix the naive window was read in New York: 05:08 to 05:09 UTC, after everything.
  t.same(await ids({ start: naive(8), end: naive(9), now: naive(30) }), ['a2', 'a3'], 'a naive window is UTC, as in the CLI')
  t.same(await ids({ now: naive(8), filters: [['state', ['Active']]] }), ['a2'])
  const edges = await store.causalEdges(['a1'], 'forward', naive(5))()
  t.equal(edges._tag === 'Right' && edges.right.length, 1, 'causalEdges at a naive time')
  const byId = await store.alarmsById(['a1'], '2024-01-01')()
  t.equal(byId._tag === 'Right' && byId.right.length, 0, 'a bare date is its midnight UTC: a1 had not started')
  const counts = await store.countActiveAlarms({ now: naive(30) })()
  t.same(counts._tag === 'Right' && counts.right['CRITICAL'], 2)
  for (const word of ['yesterday', 'now', 'infinity', 'epoch', '11/25/2026 10:00', '2024-01-01 00:05 PST']) {
    const r = await store.queryAlarms({ now: word })()
    t.match(r, { _tag: 'Left', left: { name: 'QueryError', kind: 'rejected', code: 'invalid-query', message: /--now: .* is not a timestamp/ } }, `queryAlarms now ${word}`)
    t.throws(() => store.lastEventAtOrBefore(word), { name: 'TypeError', message: /PgEventStore.lastEventAtOrBefore: timestamp: .* is not a timestamp/ }, `lastEventAtOrBefore ${word}`)
    t.throws(() => store.causalEdges(['a1'], 'forward', word), TypeError)
    t.throws(() => store.alarmsById(['a1'], word), TypeError)
    t.throws(() => store.openAt(word), TypeError)
    t.throws(() => store.countActiveAlarms({ now: word }), TypeError)
  }
})

t.test('a causal edge asked about at T does not show an end after T', async (t) => {
  const c = await setup(t)
  await applyHistory(c, 'h', story, 0, 1)
  // a1 -> a2 was active from 3 to 6, and again from 8.
  const [atFive] = await causalEdges(c, ['a1'], 'forward', at(5))
  t.match(atFive, { start_timestamp: at(3), end_timestamp: null }, 'as of minute 5 it had not ended')
  const all = await causalEdges(c, ['a1'], 'forward')
  t.same(all.map((e) => e.end_timestamp), [at(6), null], 'over all history, its real end')
})

t.test('a limit or page size below 1 is refused, not an empty answer', async (t) => {
  const c = await setup(t)
  await applyHistory(c, 'h', story, 0, 1)
  for (const limit of [0, -1, 1.5, Number.NaN]) {
    await t.rejects(queryAlarms(c, { limit }), { name: 'QueryError', message: /--limit: a whole number of 1 or more/ }, `limit ${limit}`)
  }
  const store = new PgEventStore({ connectionString: 'postgres://root@127.0.0.1:1/none' })
  t.teardown(() => store.close())
  t.throws(() => store.readPage(0, 0), { name: 'TypeError', message: 'PgEventStore.readPage: limit must be an integer >= 1, got 0' })
  t.throws(() => store.readRawPage(-5, 10), { name: 'TypeError', message: /afterId must be an integer >= 0/ })
  t.throws(() => store.readRawPageWithWatermark(0, 1.5), TypeError)
})

t.test('of severity changes stamped in the same second, the later event is the current severity, whatever order they were applied in', async (t) => {
  const c = await setup(t)
  // Vitrage stamps to the second. Each alarm gets 2-4 changes at minute 2, applied newest first
  // (as after a requeue), one per transaction, so the table's physical order is the reverse of
  // the events' order.
  const severities = ['WARNING', 'CRITICAL', 'SEVERE']
  const expected: Record<string, string> = {}
  const commands: HistoryCommand[] = []
  for (let i = 0; i < 30; i++) {
    const id = `tie-${String(i).padStart(2, '0')}`
    commands.push(activate(id, 1))
    const changes = Array.from({ length: 2 + (i % 3) }, (_, j) => change(id, 2, severities[(i + j) % 3]!))
    expected[id] = (changes.at(-1) as { severity: string }).severity
    commands.push(...changes.reverse())
  }
  let position = 0
  for (const cmd of commands) await applyHistory(c, 'h', [cmd], position, ++position)
  const reported = Object.fromEntries((await queryAlarms(c, {})).map((a) => [a.vitrage_id, a.vitrage_operational_severity]))
  t.same(reported, expected, 'each alarm reports its last change')
  const counts = await countActiveAlarms(c)
  for (const s of severities) t.equal(counts[s], Object.values(expected).filter((e) => e === s).length, `${s} counted by the last change`)
})

t.test('without --now, an alarm and a change stamped ahead of this clock are active and counted (Vitrage: end_timestamp > now)', async (t) => {
  const c = await setup(t)
  const ahead = (minutes: number): string => new Date(Date.now() + minutes * 60_000).toISOString().replace('Z', '000Z')
  await applyHistory(c, 'h', [
    activate('now-1', 0),
    { kind: 'activate-alarm', eventId: ++eventId, vitrageId: 'ahead-1', at: ahead(2), attributes: attrs('WARNING'), payload: {} },
    { kind: 'change-severity', eventId: ++eventId, messageId: '00000000-0000-4000-8000-00000000a4ea', vitrageId: 'ahead-1', at: ahead(3), severity: 'CRITICAL', payload: {} },
  ], 0, 1)
  t.same((await queryAlarms(c, { active: true })).map((a) => [a.vitrage_id, a.vitrage_operational_severity]), [['now-1', 'CRITICAL'], ['ahead-1', 'CRITICAL']], 'both active, the one ahead with its change')
  t.match(await countActiveAlarms(c), { CRITICAL: 2, WARNING: 0 })
  t.same((await queryAlarms(c, { active: true, now: at(30) })).map((a) => a.vitrage_id), ['now-1'], 'as of a time before it, the one ahead had not started')
})

t.test('--now and rca --at report the resource project as it stood then, and filter on it', async (t) => {
  const c = await setup(t)
  await applyHistory(c, 'h', [
    { kind: 'activate-alarm', eventId: ++eventId, vitrageId: 'm', at: at(10), attributes: attrs('CRITICAL', 'p1'), payload: {} },
    project('m', 30, 'p2'),
  ], 0, 1)
  const asked = async (q: Parameters<typeof queryAlarms>[1]): Promise<string[][]> => (await queryAlarms(c, q)).map((a) => [a.vitrage_id, String(a.vitrage_resource_project_id)])
  t.same(await asked({ now: at(20) }), [['m', 'p1']], 'at 20 the project was p1')
  t.same(await asked({ now: at(20), project: 'p1' }), [['m', 'p1']])
  t.same(await asked({ now: at(20), project: 'p2' }), [], 'the change to p2 came at 30')
  t.same(await asked({ now: at(20), filters: [['vitrage_resource_project_id', ['p2']]] }), [])
  t.same(await asked({ now: at(40), project: 'p2' }), [['m', 'p2']])
  t.same(await asked({}), [['m', 'p2']], 'without --now, the latest')
  t.match(await countActiveAlarms(c, { now: at(20), project: 'p1' }), { CRITICAL: 1 })
  t.match(await countActiveAlarms(c, { now: at(20), project: 'p2' }), { CRITICAL: 0 })
  t.same((await alarmsById(c, ['m'], at(20))).map((a) => a.vitrage_resource_project_id), ['p1'], 'an RCA node at 20')
})

t.test('--now reads the project change in force then when the resource moved more than once, a move to no project included', async (t) => {
  const c = await setup(t)
  const activateIn = (id: string, minute: number, p: string): HistoryCommand => ({ kind: 'activate-alarm', eventId: ++eventId, vitrageId: id, at: at(minute), attributes: attrs('CRITICAL', p), payload: {} })
  const toNone: HistoryCommand = { kind: 'change-project', eventId: ++eventId, vitrageId: 'n', at: at(30), resourceProjectId: null }
  // Out of order and one per transaction: the rows must not depend on it.
  for (const [i, cmd] of [project('m', 50, 'p3'), activateIn('m', 10, 'p1'), project('m', 30, 'p2'), project('m', 5, 'p-before'),
    project('n', 50, 'p4'), toNone, activateIn('n', 10, 'p1')].entries()) await applyHistory(c, 'h', [cmd], i, i + 1)
  const projects = async (now: string): Promise<Array<[string, string | null]>> =>
    (await queryAlarms(c, { now })).map((a) => [a.vitrage_id, a.vitrage_resource_project_id])
  t.same(await projects(at(20)), [['m', 'p1'], ['n', 'p1']], 'before any change since the activation: the activation\'s')
  t.same(await projects(at(40)), [['m', 'p2'], ['n', null]], 'between the changes: the first (a move to no project is one)')
  t.same(await projects(at(50)), [['m', 'p3'], ['n', 'p4']], 'at the latest change: it')
  t.same((await queryAlarms(c, { now: at(40), project: 'p2' })).map((a) => a.vitrage_id), ['m'], 'filtered on as of 40')
  t.same((await queryAlarms(c, { now: at(40), project: 'p3' })).map((a) => a.vitrage_id), [], 'p3 came at 50')
  t.same((await alarmsById(c, ['m'], at(40))).map((a) => a.vitrage_resource_project_id), ['p2'], 'an RCA node at 40')
  t.equal((await c.query('SELECT count(*)::int AS n FROM history_project_change')).rows[0].n, 5, 'every change kept once')
  await resetHistory(c, 'h')
  t.equal((await c.query('SELECT count(*)::int AS n FROM history_project_change')).rows[0].n, 0, 'a reset empties them too')
})

t.test('--now: an end recorded after it does not take an alarm out of a window', async (t) => {
  const c = await setup(t)
  await applyHistory(c, 'h', [activate('k', 10), deactivate('k', 25)], 0, 1)
  const ids = async (q: Parameters<typeof queryAlarms>[1]): Promise<string[]> => (await queryAlarms(c, q)).map((a) => a.vitrage_id)
  t.same(await ids({ now: at(20) }), ['k'])
  t.same(await ids({ now: at(20), start: at(30) }), ['k'], 'open as of 20: not ended before 30')
  t.same(await ids({ now: at(20), start: at(30), end: at(40) }), ['k'])
  t.same(await ids({ now: at(20), start: at(30), end: at(40), active: false }), ['k'])
  t.same(await ids({ start: at(30) }), [], 'as of now it ended at 25')
  t.same(await ids({ start: at(30), end: at(40) }), [])
  t.same(await ids({ now: at(30), start: at(30) }), [], 'as of 30 it had ended at 25')
  t.same(await ids({ now: at(5), start: at(0) }), [], 'as of 5 it had not started')
})

t.test('alarm queries run with JIT off in their session, which keeps its own setting after (review 65: JIT compiled for longer than the query ran)', async (t) => {
  const c = await setup(t)
  await applyHistory(c, 'h', story, 0, 1)
  await c.query('SET jit = on')
  // What the session says when each alarm query is sent, asked on the same connection just before.
  const seen: string[] = []
  const query = c.query.bind(c) as (text: string, values?: unknown[]) => Promise<pg.QueryResult>
  ;(c as unknown as { query: typeof query }).query = async (text: string, values?: unknown[]) => {
    if (typeof text === 'string' && text.includes('FROM history_alarm a')) seen.push((await query('SHOW jit')).rows[0].jit)
    return query(text, values)
  }
  await queryAlarms(c, { now: at(20) })
  await queryAlarms(c, {})
  await countActiveAlarms(c, { now: at(20) })
  await alarmsById(c, ['a1'], at(20))
  t.same(seen, ['off', 'off', 'off', 'off'])
  t.equal((await query('SHOW jit')).rows[0].jit, 'on', 'the session\'s setting after')
  // A caller's own setting, not the role's default, is what the session has after (review 66).
  await query("SET jit_above_cost = 12345")
  await queryAlarms(c, { now: at(20) })
  t.equal((await query('SHOW jit_above_cost')).rows[0].jit_above_cost, '12345', 'other settings untouched')
  await query('SET jit = off')
  await countActiveAlarms(c, { now: at(20) })
  t.equal((await query('SHOW jit')).rows[0].jit, 'off', 'the caller\'s own jit = off kept')
  await t.rejects(queryAlarms(c, { now: 'not a time' }))
  t.equal((await query('SHOW jit')).rows[0].jit, 'off', 'and after a failed query')
  t.equal((await query('SELECT 1 AS one')).rows[0].one, 1, 'the session usable after it')
})
