import { type DecodedMessage, decodeMessage, type HistoryStore } from '@vitrage-persistor/core'
import { HistoryRunner } from '@vitrage-persistor/projections'
import { appendBatch, PgEventStore, prepareEvent } from '@vitrage-persistor/store-postgres'
import { eventually } from '@vitrage-persistor/testing'
import * as E from 'fp-ts/lib/Either.js'
import t, { type Test } from 'tap'
import { cli, cliJson } from './support/cli.js'
import { rawFixtures } from './support/fixtures.js'
import { isConsuming, startPersistor } from './support/persistor-process.js'
import { type FixtureMessage, rowCount, setupWorld, type World } from './support/setup.js'

const T = (hms: string): string => `2024-01-01T${hms}Z`
const ids = (rows: Array<{ vitrage_id: string }>): string[] => rows.map((r) => r.vitrage_id.slice(0, 8)).sort()

/** Publishes the given fixture messages through a running persistor and waits for the projection. */
const ingest = async (t: Test, world: World, messages: readonly FixtureMessage[]): Promise<void> => {
  const p = startPersistor(world.flags())
  t.teardown(() => p.kill('SIGKILL'))
  await p.waitFor(isConsuming, 'consuming')
  for (const m of messages) await world.broker.publish(world.names.exchange, world.names.routingKey, Buffer.from(m.body), { contentType: 'application/json', deliveryMode: 2 })
  await eventually('stored and projected', async () => {
    p.assertAlive()
    if ((await rowCount(world)) !== messages.length) return false
    const { rows } = await world.sql.query(`SELECT (SELECT position FROM projection_checkpoint WHERE name = 'history') = (SELECT max(id) FROM event) AS done`)
    return rows[0]?.done === true
  })
  p.kill('SIGTERM')
  await p.exited
}

/** The answers an operator would ask for, as JSON, for comparing runs. */
const answers = async (world: World): Promise<Record<string, unknown>> => {
  const db = ['--database-url', world.db.url]
  return {
    window: await cliJson(['history', 'alarms', ...db, '--start', T('00:04:00'), '--end', T('00:05:00'), '--now', T('00:20:00')]),
    active: await cliJson(['history', 'alarms', ...db, '--active', '--now', T('00:20:00')]),
    all: await cliJson(['history', 'alarms', ...db, '--now', T('00:20:00')]),
    counts: await cliJson(['history', 'counts', ...db, '--now', T('00:20:00')]),
    rcaA9: await cliJson(['history', 'rca', 'a9c85101-15d3-442d-88b6-64e518593dfb', ...db]),
    rca0f: await cliJson(['history', 'rca', '0f87ce06-35c7-4e33-bfbf-bf6cd5ef05de', ...db, '--at', T('00:03:00')]),
  }
}

t.test('alarm history of the captured Vitrage traffic answers hand-checked questions', async (t) => {
  const world = await setupWorld(t)
  await ingest(t, world, rawFixtures())
  const db = ['--database-url', world.db.url]
  type Alarms = { alarms: Array<Record<string, string> & { vitrage_id: string }> }

  const win = await cliJson<Alarms>(['history', 'alarms', ...db, '--start', T('00:04:00'), '--end', T('00:05:00')])
  t.same(ids(win.alarms), ['0f87ce06', '1ee966aa', '260642c1', '2c066807', '308edbda', '573e304f', '86fc1635', 'a55631eb', 'a9c85101', 'cefa6d8c', 'e2061071', 'efbbf85f'], 'the 12 alarms active at some moment between 00:04 and 00:05')

  const active = await cliJson<Alarms>(['history', 'alarms', ...db, '--active'])
  t.equal(active.alarms.length, 15, '36 activations, 21 deactivations')
  t.same(await cliJson(['history', 'counts', ...db]), { SEVERE: 0, CRITICAL: 11, WARNING: 4, OK: 0, 'N/A': 0 })
  const cpu = active.alarms.find((a) => a.vitrage_id.startsWith('17264c2b'))
  t.equal(cpu?.['vitrage_operational_severity'], 'WARNING', 'current severity after its change at 00:13:40 (activated CRITICAL)')

  const [memory] = (await cliJson<Alarms>(['history', 'alarms', ...db, '--filter', 'vitrage_id=b7831712'])).alarms
  t.match(memory, { name: 'Memory utilization', start_timestamp: '2024-01-01T00:00:05.000000Z', end_timestamp: '2024-01-01T00:01:37.000000Z', state: 'Inactive', vitrage_operational_severity: 'OK' })
  const [ping] = (await cliJson<Alarms>(['history', 'alarms', ...db, '--filter', 'vitrage_id=a55631eb'])).alarms
  t.equal(ping?.['vitrage_resource_project_id'], '6513270e269e4d37b2a74de452e6b438', 'change_project_id applied')
  const [cpuAt] = (await cliJson<Alarms>(['history', 'alarms', ...db, '--filter', 'vitrage_id=a9c85101', '--now', T('00:03:30')])).alarms
  t.match(cpuAt, { state: 'Active', vitrage_operational_severity: 'CRITICAL' }, 'as of 00:03:30: changed to CRITICAL at 00:03:11')

  type Rca = { nodes: Array<{ vitrage_id: string }>; links: Array<{ source: number; target: number; key: string }>; inspected_index: number }
  const rca86 = await cliJson<Rca>(['history', 'rca', '86fc1635-855c-4ee6-83a7-db151b451e20', ...db])
  t.same(ids(rca86.nodes), ['86fc1635', 'a9c85101'], 'its cause only (siblings are not on a causal path)')
  const rcaA9 = await cliJson<Rca>(['history', 'rca', 'a9c85101-15d3-442d-88b6-64e518593dfb', ...db])
  t.same(ids(rcaA9.nodes), ['260642c1', '308edbda', '573e304f', '86fc1635', 'a9c85101', 'efbbf85f'])
  t.equal(rcaA9.links.length, 5)
  t.ok(rcaA9.links.every((l) => l.source === rcaA9.inspected_index && l.key === 'causes'))
  const atFour = await cliJson<Rca>(['history', 'rca', 'a9c85101-15d3-442d-88b6-64e518593dfb', ...db, '--at', T('00:04:00')])
  t.equal(atFour.nodes.length, 6, 'all active at 00:04')
  const afterEnd = await cli(['history', 'rca', 'a9c85101-15d3-442d-88b6-64e518593dfb', ...db, '--at', T('00:05:00')])
  t.equal(afterEnd.code, 1)
  t.match(afterEnd.err, /no alarm .* active at 2024-01-01T00:05:00/)
  const rca0f = await cliJson<Rca>(['history', 'rca', '0f87ce06-35c7-4e33-bfbf-bf6cd5ef05de', ...db, '--at', T('00:03:00')])
  t.same(ids(rca0f.nodes), ['0f87ce06', '2c066807', 'cefa6d8c', 'e2061071'], '6e58190d joined only at 00:05:33')
  const rca0fAll = await cliJson<Rca>(['history', 'rca', '0f87ce06-35c7-4e33-bfbf-bf6cd5ef05de', ...db, '--depth', '1'])
  t.equal(rca0fAll.nodes.length, 5)

  const page = await cli(['history', 'alarms', ...db, '--limit', '3', '--format', 'table'])
  const firstThree = (await cliJson<Alarms>(['history', 'alarms', ...db, '--limit', '3'])).alarms
  t.match(page.err, new RegExp(`3 shown \\(--limit\\); the next page: --marker ${firstThree[2]?.vitrage_id}`), 'a table says how to get the next page')
  const lastPage = await cli(['history', 'alarms', ...db, '--limit', '1000', '--format', 'table'])
  t.equal(lastPage.err, '', 'and says nothing when the page is not full')

  const badMarker = await cli(['history', 'alarms', ...db, '--marker', 'nope'])
  t.equal(badMarker.code, 2, 'an unknown marker is a usage error')
  t.match(badMarker.err, /--marker: no alarm has vitrage_id "nope"/)
  const badSort = await cli(['history', 'alarms', ...db, '--sort', ',,'])
  t.equal(badSort.code, 2, 'a --sort naming no column is a usage error, not the default order')
  t.match(badSort.err, /--sort: expected columns/)
  t.equal((await cli(['history', 'alarms', ...db, '--limit', '10000'])).code, 0, 'a page of 10,000, as Vitrage allows')
  const tooLarge = await cli(['history', 'alarms', ...db, '--limit', '10001'])
  t.equal(tooLarge.code, 2, 'a larger page is a usage error: it is built in memory')
  t.match(tooLarge.err, /--limit: at most 10000 alarms a page, got 10001; read on with --marker/)

  // The same answers after rebuilding the projection from the log.
  const before = await answers(world)
  const rebuilt = await cli(['project', 'history', '--rebuild', ...db])
  t.equal(rebuilt.code, 0, rebuilt.err + rebuilt.out)
  t.same(await answers(world), before, 'identical after --rebuild')
})

t.test('delivered in another order (as Vitrage may emit them), the history is the same', async (t) => {
  const inOrder = await setupWorld(t)
  const fixtures = rawFixtures()
  await ingest(t, inOrder, fixtures)
  const shuffled = await setupWorld(t)
  let seed = 11
  const rnd = (): number => (seed = (seed * 16807) % 2147483647) / 2147483647
  const history = fixtures.filter((m) => !m.body.includes('vitrage.graph.change'))
  const mixed = [...history].sort(() => rnd() - 0.5)
  t.notSame(mixed.map((m) => m.body), history.map((m) => m.body), 'really shuffled')
  await ingest(t, shuffled, mixed)
  const a = await answers(inOrder)
  const b = await answers(shuffled)
  t.same(b, a, 'same windows, active alarms, counts and RCA')
})

t.test('history end-open records a Vitrage cold start: everything open at T ends at T, through the log, and survives a rebuild', async (t) => {
  const world = await setupWorld(t)
  await ingest(t, world, rawFixtures())
  const db = ['--database-url', world.db.url]
  type Alarms = { alarms: Array<Record<string, string> & { vitrage_id: string }> }
  const activeBefore = (await cliJson<Alarms>(['history', 'alarms', ...db, '--active'])).alarms
  t.equal(activeBefore.length, 15)
  const before = await answers(world)

  const missing = await cli(['history', 'end-open', ...db])
  t.equal(missing.code, 2, '--at is required')
  const dry = await cliJson<{ alarms: number; edges: number; dryRun: boolean }>(['history', 'end-open', ...db, '--at', T('00:30:00'), '--dry-run'])
  t.match(dry, { alarms: 15, dryRun: true })
  t.ok(dry.edges > 0, `${dry.edges} causal edges open`)
  t.equal(await rowCount(world), 400, 'a dry run appends nothing')

  // Two at once (an operator and a script, say): one appends; the other waits for it, then for the
  // projection to apply what it appended, and (nothing projects this log now) refuses.
  const [one, two] = await Promise.all([0, 1].map(() => cli(['history', 'end-open', ...db, '--at', T('00:30:00'), '--wait', '2', '--format', 'json'])))
  t.same([one?.code, two?.code].sort(), [0, 1], 'one run appended, the other did not')
  const done = JSON.parse((one?.code === 0 ? one : two)?.out ?? '{}') as { appended: number }
  t.equal(done.appended, 15 + dry.edges)
  // Nothing is projecting this log now: after --wait it refuses rather than miss an alarm.
  const behind = await cli(['history', 'end-open', ...db, '--at', T('00:40:00'), '--wait', '1'])
  t.equal(behind.code, 1, 'refused while the projection has not applied what was just appended')
  t.match(behind.err, /the history projection is at event 400 and did not reach event \d+ within 1 s/)

  t.equal((await cli(['project', 'history', ...db])).code, 0)
  t.same((await cliJson<Alarms>(['history', 'alarms', ...db, '--active'])).alarms, [], 'nothing active after the restart time')
  t.same(await cliJson(['history', 'counts', ...db]), { SEVERE: 0, CRITICAL: 0, WARNING: 0, OK: 0, 'N/A': 0 })
  const ended = (await cliJson<Alarms>(['history', 'alarms', ...db, '--filter', `vitrage_id=${activeBefore[0]?.vitrage_id}`])).alarms[0]
  t.match(ended, { state: 'Inactive', end_timestamp: '2024-01-01T00:30:00.000000Z' })
  t.same(await answers(world), before, 'every answer as of 00:20 unchanged (the windows, counts and RCA before the restart)')
  const { rows } = await world.sql.query<{ n: number }>(`SELECT count(*)::int AS n FROM event WHERE publisher_id = 'vitrage-persistor' AND payload ? 'vitrage_persistor_reason'`)
  t.equal(rows[0]?.n, done.appended, 'the compensating events say where they come from')
  const afterEnd = await answers(world)
  t.equal((await cli(['project', 'history', '--rebuild', ...db])).code, 0)
  t.same(await answers(world), afterEnd, 'identical after --rebuild: the end is in the log, not only in the tables')
  t.same((await cliJson<Alarms>(['history', 'alarms', ...db, '--active'])).alarms, [])
  const again = await cliJson<{ appended: number }>(['history', 'end-open', ...db, '--at', T('00:30:00')])
  t.equal(again.appended, 0, 'run again: nothing is open any more')
})

t.test('a projection retired under a running runner, then pruned: the runner does not re-derive the history from what is left of the log', async (t) => {
  const world = await setupWorld(t)
  const client = await world.sql.connect()
  t.teardown(() => client.release())
  const events = rawFixtures().map((m) => prepareEvent((decodeMessage(Buffer.from(m.body), { maxMessageBytes: 1 << 20 }) as E.Right<DecodedMessage>).right))
  await appendBatch(client, events)
  const store = new PgEventStore({ connectionString: world.db.url, maxConnections: 2 })
  t.teardown(() => store.close())
  t.equal((await cli(['snapshot', 'create', '--database-url', world.db.url, '--at-event', '200'])).code, 0)
  // On its third page the projection is retired (tables emptied, checkpoint removed) and the
  // log pruned below 200, as an operator would, while this runner is mid-way.
  let pages = 0
  const racing: HistoryStore = {
    ...store,
    applyHistoryRange: (name, from, to, commandsFor, partition) => async () => {
      if (++pages === 3) {
        t.same(await store.retireHistory('history')(), E.right(undefined))
        t.same(await store.prune()(), E.right(199))
      }
      return store.applyHistoryRange(name, from, to, commandsFor, partition)()
    },
  }
  const runner = new HistoryRunner({ reader: store, store: racing }, { name: 'history', pageSize: 20 })
  const first = await runner.catchUp()
  t.match(first, E.left({ code: 'checkpoint-moved-back' }), 'the move conflicts, and the checkpoint is found behind it')
  const second = await runner.catchUp()
  t.match(second, E.left({ code: 'pruned' }), 'then it refuses to start again over a pruned log')
  const rows = Number((await world.sql.query('SELECT count(*) AS n FROM history_alarm')).rows[0].n)
  t.equal(rows, 0, 'nothing re-derived from the events that are left')
})
