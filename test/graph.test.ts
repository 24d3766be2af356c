import { readFileSync } from 'node:fs'
import { decodeMessage } from '@vitrage-persistor/core'
import { randomUUID } from 'node:crypto'
import { type AppendSignal, type DecodedMessage, type EventLogReader, NOT_IN_LOG, silentLogger, STORE_CLOSED } from '@vitrage-persistor/core'
import { caughtUp, canonicalJson, EntityGraph, replayInto, encodeGraphSnapshot, type FollowOptions, followGraph, GRAPH_SNAPSHOT_KIND, type GraphSources, graphAt, HistoryRunner } from '@vitrage-persistor/projections'
import { createIngestMetrics, defaultPersistorOptions, Persistor, republish } from '@vitrage-persistor/ingest'
import { Registry } from 'prom-client'
import { appendBatch, loadMigrations, PgEventStore, type PreparedEvent, prepareEvent } from '@vitrage-persistor/store-postgres'
import { eventually, freePort } from '@vitrage-persistor/testing'
import * as E from 'fp-ts/lib/Either.js'
import t, { type Test } from 'tap'
import { startFreezableProxy } from './support/freezable-proxy.js'
import { cli } from './support/cli.js'
import { fixturePath, rawFixtures } from './support/fixtures.js'
import { message, v2Body } from './support/messages.js'
import { isConsuming, startPersistor } from './support/persistor-process.js'
import { declarePersistorTopology, metricValue, rewindLog, rowCount, setupWorld, type World } from './support/setup.js'

const expectedFull = JSON.parse(readFileSync(fixturePath('vitrage-seed7-400.graph.json'), 'utf8')) as unknown
const expected150 = JSON.parse(readFileSync(fixturePath('vitrage-seed7-400.graph-after-150-changes.json'), 'utf8')) as unknown

const ingestFixtures = async (t: Test, world: World): Promise<void> => {
  const p = startPersistor(world.flags())
  t.teardown(() => p.kill('SIGKILL'))
  await p.waitFor(isConsuming, 'consuming')
  for (const m of rawFixtures()) await world.broker.publish(world.names.exchange, world.names.routingKey, Buffer.from(m.body), { contentType: 'application/json', deliveryMode: 2 })
  await eventually('400 stored', async () => (await rowCount(world)) === 400)
  p.kill('SIGTERM')
  await p.exited
}

/** The captured traffic, decoded once. */
const decodedFixtures = rawFixtures().map((m) => (decodeMessage(Buffer.from(m.body), { maxMessageBytes: 1 << 20 }) as E.Right<DecodedMessage>).right)

/** `n` events cycling through the captured traffic from its `from`-th message, each under a fresh message id: more changes to the same graph. */
const fixtureEvents = (n: number, from = 0): PreparedEvent[] =>
  Array.from({ length: n }, (_, i) => prepareEvent({ ...(decodedFixtures[(from + i) % decodedFixtures.length] as DecodedMessage), messageId: randomUUID() }))

/** A private world whose log holds `n` fixture events, and a store over it (closed at teardown). */
const worldWithLog = async (t: Test, n: number, maxConnections = 2): Promise<{ world: World; store: PgEventStore }> => {
  const world = await setupWorld(t)
  const store = new PgEventStore({ connectionString: world.db.url, maxConnections })
  t.teardown(() => store.close())
  const client = await world.sql.connect()
  await appendBatch(client, fixtureEvents(n))
  client.release()
  return { world, store }
}

const graphCli = async (db: string, ...extra: string[]): Promise<string> => {
  const r = await cli(['graph', '--database-url', db, ...extra])
  if (r.code !== 0) throw new Error(`graph ${extra.join(' ')}: ${r.err}`)
  return r.out
}

t.test('the fixtures through the persistor: graph equals Vitrage replay, now and after 150 changes', async (t) => {
  const world = await setupWorld(t)
  await ingestFixtures(t, world)
  const db = world.db.url
  const full = await graphCli(db)
  t.same(JSON.parse(full), expectedFull, 'graph equals vitrage-seed7-400.graph.json')
  t.equal(await graphCli(db), full, 'byte-stable for the same state')
  const { rows } = await world.sql.query<{ id: string }>(`SELECT id FROM event WHERE event_type = 'vitrage.graph.change' ORDER BY id OFFSET 149 LIMIT 1`)
  const at150 = rows[0]?.id as string
  t.same(JSON.parse(await graphCli(db, '--at-event', at150)), expected150, 'graph --at-event <150th change> equals the after-150 fixture')
  const { rows: ts } = await world.sql.query<{ t: string }>(`SELECT to_char(collector_timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS t FROM event WHERE id = $1`, [at150])
  const atTime = JSON.parse(await graphCli(db, '--at', ts[0]?.t as string)) as { vertices: unknown[] }
  t.ok(atTime.vertices.length >= (expected150 as { vertices: unknown[] }).vertices.length, '--at a time: at least the state at the 150th change')
  const summary = JSON.parse(await graphCli(db, '--format', 'summary')) as Record<string, unknown>
  t.match(summary, { position: 400 })
  // An alarm's time (the payload's clock: 2024) asked of notifications sent later: the empty
  // graph, and why.
  const before = await cli(['graph', '--database-url', db, '--at', '2024-01-01T00:06:00Z'])
  t.equal(before.code, 0)
  t.same(JSON.parse(before.out), JSON.parse(canonicalJson(new EntityGraph(), 'pretty')), 'the empty graph')
  t.match(before.err, /no event was stored at or before 2024-01-01T00:06:00\.000000Z: the log starts with event 1, sent at \S+, so the graph then is empty/)
  t.equal((await cli(['graph', '--database-url', db])).err, '', 'no notice otherwise')

  // Snapshots: the nearest snapshot plus the tail equals a full replay, at many points.
  // The one at 120 in the canonical format (what versions before 2026-11-30 wrote and read).
  for (const at of ['50', '120', '333']) {
    const encoding = at === '120' ? ['--encoding', 'canonical'] : []
    t.equal((await cli(['snapshot', 'create', '--at-event', at, ...encoding, '--database-url', db])).code, 0)
  }
  const list = JSON.parse((await cli(['snapshot', 'list', '--database-url', db, '--format', 'json'])).out) as Array<{ eventId: number; format: string }>
  t.same(list.map((s) => [s.eventId, s.format]), [[50, 'columnar+gzip/2'], [120, 'canonical-json+gzip/1'], [333, 'columnar+gzip/2']])
  const badEncoding = await cli(['snapshot', 'create', '--encoding', 'msgpack', '--database-url', db])
  t.equal(badEncoding.code, 2)
  t.match(badEncoding.err, /--encoding: columnar or canonical, got "msgpack"/)
  let seed = 3
  const points = Array.from({ length: 12 }, () => 1 + ((seed = (seed * 16807) % 2147483647) % 400))
  for (const p of [...points, 50, 51, 120, 333, 400]) {
    t.equal(await graphCli(db, '--at-event', String(p)), await graphCli(db, '--at-event', String(p), '--no-snapshots'), `snapshot + tail = full replay at ${p}`)
  }

  // A target past the head is refused, not answered with the head's graph under its number
  // (nor saved as a snapshot, which retention would then keep as the newest, and prune trust).
  for (const command of [['graph'], ['snapshot', 'create']]) {
    const beyond = await cli([...command, '--at-event', '99999', '--database-url', db])
    t.equal(beyond.code, 2, `${command.join(' ')} --at-event past the head`)
    t.match(beyond.err, /event 99999 is beyond the newest stored event \(400\)/)
  }

  // Prune: events below the oldest kept snapshot go; the graph is unchanged.
  const at340 = await graphCli(db, '--at-event', '340')
  const kept = await cli(['snapshot', 'create', '--keep', '2', '--database-url', db])
  t.equal(kept.code, 0)
  t.equal(JSON.parse(kept.out).replaced, false)
  const again = await cli(['snapshot', 'create', '--keep', '2', '--database-url', db])
  t.same([again.code, JSON.parse(again.out).replaced, again.err], [0, true, 'vitrage-persistor snapshot create: replaced the snapshot at event 400\n'], 'taken again at the same event: says it replaced it')
  // One further back than the newest --keep would be deleted by its own retention: refused.
  const tooOld = await cli(['snapshot', 'create', '--at-event', '10', '--keep', '2', '--database-url', db])
  t.equal(tooOld.code, 2, 'not saved only to be removed, reported as created')
  t.match(tooOld.err, /a snapshot at event 10 would be removed at once: --keep 2 keeps the newest 2, and 2 are newer \(at 333, 400\)/)
  const blank = await cli(['graph', '--at-event', '', '--database-url', db])
  t.equal(blank.code, 2, 'an empty --at-event is not event 0')
  const pruned = await cli(['prune', '--database-url', db])
  t.equal(pruned.code, 0, pruned.err)
  t.match(pruned.out, /deleted 332 events/, 'below the oldest of the two kept snapshots (333)')
  t.equal(await graphCli(db), full, 'same graph after pruning')
  t.equal(await graphCli(db, '--at-event', '340'), at340, 'from the snapshot at 333 and the events kept after it')
  // Before the oldest snapshot the log no longer has the events: refused, never an empty or partial graph.
  for (const target of [['--at-event', '100'], ['--at-event', '340', '--no-snapshots'], ['--at', '2000-01-01T00:00:00Z']]) {
    const r = await cli(['graph', ...target, '--database-url', db])
    t.equal(r.code, 1, `graph ${target.join(' ')} after the prune`)
    t.match(r.err, /events below 333 were pruned/)
    if (target.includes('--no-snapshots')) t.match(r.err, /\(snapshots not used\)/, 'not "no snapshot at or before it": there is one')
  }
  const rebuild = await cli(['project', 'history', '--rebuild', '--database-url', db])
  t.equal(rebuild.code, 1, 'a history rebuild would lose what the pruned events held')
  t.match(rebuild.err, /events below 333 were pruned/)
  await world.sql.query(`DELETE FROM projection_checkpoint WHERE name = 'history'`)
  const fresh = await cli(['project', 'history', '--database-url', db])
  t.equal(fresh.code, 1, 'a history projection started after the prune does not project part of the log')
  t.match(fresh.err, /events below 333 were pruned before the history projection read them/)
})

t.test('a follower converges to the same graph while events are appended concurrently', async (t) => {
  const world = await setupWorld(t)
  const store = new PgEventStore({ connectionString: world.db.url, maxConnections: 3 })
  t.teardown(() => store.close())
  const events = rawFixtures().map((m) => prepareEvent((decodeMessage(Buffer.from(m.body), { maxMessageBytes: 1 << 20 }) as E.Right<never>).right))
  const follow$ = followGraph({ reader: store, snapshots: store, clock: store, signal: store }, { pollMs: 60_000, pageSize: 17 })
  const positions: number[] = []
  const sub = follow$.subscribe((s) => positions.push(s.position))
  t.teardown(() => sub.unsubscribe())
  const client = await world.sql.connect()
  for (let i = 0; i < events.length; i += 13) {
    await appendBatch(client, events.slice(i, i + 13))
    if (i % 52 === 0) await new Promise((r) => setTimeout(r, 5))
  }
  client.release()
  const head = Number((await world.sql.query('SELECT max(id) AS m FROM event')).rows[0].m)
  const state = await caughtUp(follow$, head)
  t.equal(state.position, head)
  const full = await graphAt({ reader: store, snapshots: store, clock: store }, 'head', { useSnapshots: false })
  t.ok(E.isRight(full))
  if (E.isRight(full)) t.equal(canonicalJson(state.graph), canonicalJson(full.right.graph), 'same as a full replay')
  t.same(JSON.parse(canonicalJson(state.graph)), expectedFull)
  t.ok(positions.length > 2, `followed through ${positions.length} positions, woken by appends`)
  t.ok(positions.every((p, i) => i === 0 || p > (positions[i - 1] ?? 0)), 'positions only move forward')
})

t.test('replay stopped by SIGTERM: what was published is confirmed, it says where to resume, and the resumed run completes it exactly', async (t) => {
  const source = await setupWorld(t)
  const events = fixtureEvents(20_000)
  const client = await source.sql.connect()
  for (let i = 0; i < events.length; i += 1000) await appendBatch(client, events.slice(i, i + 1000))
  client.release()
  const target = await setupWorld(t)
  await declarePersistorTopology(target)
  const args = ['replay', '--database-url', source.db.url, '--to-amqp', target.broker.url, '--exchange', target.names.exchange, '--routing-key', target.names.routingKey, '--max-in-flight', '20']
  const first = startPersistor(args)
  t.teardown(() => first.kill('SIGKILL'))
  await eventually('republishing under way', async () => {
    first.assertAlive()
    return (await target.broker.depth(target.names.queue)) >= 1_000
  })
  first.kill('SIGTERM')
  const exit = await first.exited
  t.same(exit, { code: 1, signal: null }, 'not killed by the signal: stopped, exit 1 (incomplete)')
  const said = /stopped by SIGTERM before the end; confirmed up to event (\d+) \(resume with --from-id (\d+)\)/.exec(first.output())
  t.ok(said, first.output().slice(-500))
  const confirmed = Number(said?.[1])
  t.ok(confirmed < 20_000, `stopped at ${confirmed} of 20,000`)
  t.equal(await target.broker.depth(target.names.queue), confirmed, 'everything published was confirmed before it exited')
  const rest = await cli([...args, '--from-id', String(said?.[2])])
  t.equal(rest.code, 0, rest.err)
  t.equal(await target.broker.depth(target.names.queue), 20_000, 'the resumed run publishes the rest: each event once')
})

t.test('a snapshot this version cannot read is passed over for an older one or a full replay, with a warning', async (t) => {
  const world = await setupWorld(t)
  await ingestFixtures(t, world)
  const db = world.db.url
  for (const at of ['100', '300']) t.equal((await cli(['snapshot', 'create', '--at-event', at, '--database-url', db])).code, 0)
  // Written by a newer version before a rollback, say.
  await world.sql.query(`UPDATE projection_snapshot SET format = 'columnar+gzip/9' WHERE event_id = 300`)
  const r = await cli(['graph', '--database-url', db])
  t.equal(r.code, 0, r.err)
  t.same(JSON.parse(r.out), expectedFull, 'the same graph, from the snapshot at 100 and the tail')
  t.match(r.err, /warning: passed over snapshot \d+ has format columnar\+gzip\/9/)
  await world.sql.query(`UPDATE projection_snapshot SET data = '\\x00'::bytea WHERE event_id = 100`)
  const both = await cli(['graph', '--database-url', db, '--format', 'summary'])
  t.equal(both.code, 0, 'both unreadable: a full replay')
  t.match(JSON.parse(both.out), { position: 400, snapshot: null })
  t.equal(both.err.match(/passed over/g)?.length, 2)
})

t.test('follow --snapshot-every while appends go on: every snapshot equals a full replay to its event id', async (t) => {
  const world = await setupWorld(t)
  const store = new PgEventStore({ connectionString: world.db.url, maxConnections: 2 })
  t.teardown(() => store.close())
  // The captured traffic ten times over (fresh message ids): a graph that keeps changing.
  const events = fixtureEvents(4_000)
  const client = await world.sql.connect()
  await appendBatch(client, events.slice(0, 400))
  const port = await freePort()
  const follower = startPersistor(['follow', '--database-url', world.db.url, '--http-port', String(port), '--snapshot-every', '7', '--keep-snapshots', '1000'])
  t.teardown(() => follower.kill('SIGKILL'))
  await follower.waitFor((l) => l.msg === 'graph loaded; following', 'the follower to load')
  for (let i = 400; i < events.length; i += 3) await appendBatch(client, events.slice(i, i + 3))
  client.release()
  await eventually('caught up', async () => ((await (await fetch(`http://127.0.0.1:${port}/position`)).json()) as { lag: number }).lag === 0)
  follower.kill('SIGTERM')
  t.equal((await follower.exited).code, 0)
  const listed = await store.listSnapshots(GRAPH_SNAPSHOT_KIND)()
  if (E.isLeft(listed)) throw new Error(listed.left.message)
  t.ok(listed.right.length >= 10, `${listed.right.length} snapshots written while following`)
  const sources = { reader: store, snapshots: store, clock: store }
  let differing = 0
  for (const meta of listed.right) {
    const [fromSnapshot, full] = [await graphAt(sources, { eventId: meta.eventId }), await graphAt(sources, { eventId: meta.eventId }, { useSnapshots: false })]
    if (E.isLeft(fromSnapshot) || E.isLeft(full)) throw new Error('graphAt failed')
    if (fromSnapshot.right.snapshot?.eventId !== meta.eventId) throw new Error(`snapshot ${meta.eventId} not used`)
    if (canonicalJson(fromSnapshot.right.graph) !== canonicalJson(full.right.graph)) differing++
  }
  t.equal(differing, 0, `of ${listed.right.length} snapshots, none holds another state than its event id's`)
})

t.test('follow is not ready while it rebuilds its graph after a restore, and ready again once rebuilt', async (t) => {
  const { world } = await worldWithLog(t, 300)
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const follower = startPersistor(['follow', '--database-url', world.db.url, '--http-port', String(port)])
  t.teardown(() => follower.kill('SIGKILL'))
  await follower.waitFor((l) => l.msg === 'graph loaded; following', 'the follower to load')
  const client = await world.sql.connect()
  t.teardown(() => client.release())
  await appendBatch(client, fixtureEvents(100, 300))
  const readyz = async (): Promise<{ status: number; body: { status: string; position: number | null; reason?: string } }> => {
    const res = await fetch(`${base}/readyz`)
    return { status: res.status, body: (await res.json()) as { status: string; position: number | null; reason?: string } }
  }
  await eventually('following at 400', async () => (await readyz()).body.position === 400)

  // Restored to 300, then 50 other events. The rebuild is held at its first read of the
  // snapshots, so that what /readyz says meanwhile can be seen.
  await rewindLog(world, 300)
  const admin = await world.sql.connect()
  await admin.query('BEGIN')
  await admin.query('LOCK TABLE projection_snapshot IN ACCESS EXCLUSIVE MODE')
  let held = true
  const released = async (): Promise<void> => {
    if (!held) return
    held = false
    await admin.query('COMMIT').catch(() => {})
    admin.release()
  }
  t.teardown(released)
  await appendBatch(client, fixtureEvents(50, 150))
  await eventually('not ready while rebuilding', async () => {
    const r = await readyz()
    return r.status === 503 && r.body.status === 'rebuilding'
  })
  const during = await readyz()
  t.same(during.body.position, 400, 'the position of the graph it still serves')
  t.match(during.body.reason, /no longer holds events this follower applied/)
  await released()
  await eventually('ready again, at the head of the restored log', async () => {
    const r = await readyz()
    return r.status === 200 && r.body.position === 350
  })
  follower.kill('SIGTERM')
  t.equal((await follower.exited).code, 0)
  t.match(follower.lines.find((l) => l.msg === 'follow stopped'), { position: 350 }, 'it says it stopped, and where')
})

t.test('follow serves the graph and its position; replay republishes history that another persistor stores identically', async (t) => {
  const source = await setupWorld(t)
  await ingestFixtures(t, source)
  const port = await freePort()
  const follower = startPersistor(['follow', '--database-url', source.db.url, '--http-port', String(port), '--snapshot-every', '100'])
  t.teardown(() => follower.kill('SIGKILL'))
  await follower.waitFor((l) => l.msg === 'graph loaded; following', 'the follower to load')
  const graphRes = await fetch(`http://127.0.0.1:${port}/graph`)
  t.equal(graphRes.headers.get('x-graph-position'), '400', 'the event id of the state served')
  t.same(JSON.parse(await graphRes.text()), expectedFull)
  t.same(await (await fetch(`http://127.0.0.1:${port}/position`)).json(), { position: 400, head: 400, lag: 0 })
  const page = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
  t.same([metricValue(page, 'vitrage_persistor_graph_position'), metricValue(page, 'vitrage_persistor_graph_lag_events')], [400, 0], 'position and lag in /metrics')
  follower.kill('SIGTERM')
  t.equal((await follower.exited).code, 0)

  // The standby's broker: a second persistor consumes what replay republishes.
  const target = await setupWorld(t)
  const p = startPersistor(target.flags())
  t.teardown(() => p.kill('SIGKILL'))
  await p.waitFor(isConsuming, 'consuming')
  const r = await cli(['replay', '--database-url', source.db.url, '--to-amqp', target.broker.url, '--exchange', target.names.exchange, '--routing-key', target.names.routingKey, '--max-in-flight', '50'])
  t.equal(r.code, 0, r.err)
  t.match(JSON.parse(r.out), { published: 400, lastConfirmedId: 400 })
  await eventually('republished events stored', async () => (await rowCount(target)) === 400)
  const dump = async (w: World): Promise<unknown[]> =>
    (await w.sql.query('SELECT message_id, event_type, publisher_id, priority, payload::text FROM event ORDER BY id')).rows
  t.same(await dump(target), await dump(source), 'same ids, types and payload text, in the same order')
  // An inclusive range, to the broker of AMQP_URL when --to-amqp is absent (redelivered ids: stored once).
  const range = await cli(['replay', '--database-url', source.db.url, '--exchange', target.names.exchange, '--routing-key', target.names.routingKey, '--from-id', '2', '--to-id', '4'], {
    AMQP_URL: target.broker.url,
  })
  t.equal(range.code, 0, range.err)
  t.match(JSON.parse(range.out), { published: 3, fromId: 2, toId: 4, lastConfirmedId: 4 })
  const fromZero = await cli(['replay', '--database-url', source.db.url, '--to-amqp', target.broker.url, '--exchange', target.names.exchange, '--routing-key', target.names.routingKey, '--from-id', '0', '--to-id', '1'])
  t.match(JSON.parse(fromZero.out), { published: 1, fromId: 1, toId: 1 }, '--from-id 0: from the start')
  const backwards = await cli(['replay', '--database-url', source.db.url, '--exchange', 'x', '--routing-key', 'k', '--from-id', '5', '--to-id', '2'])
  t.equal(backwards.code, 2)
  t.match(backwards.err, /--from-id 5 is after --to-id 2/)
  t.equal(await rowCount(target), 400, 'nothing stored twice')
  const bad = await cli(['replay', '--database-url', source.db.url, '--to-amqp', target.broker.url, '--exchange', 'no_such_exchange_here', '--routing-key', 'x'])
  t.equal(bad.code, 1)
  t.match(bad.err, /exchange "no_such_exchange_here" does not exist.*; nothing confirmed yet \(resume with --from-id 1\)/, 'not "confirmed up to event 0"')
  // A routing key no queue is bound to: the broker would confirm and drop every message.
  const unbound = await cli(['replay', '--database-url', source.db.url, '--to-amqp', target.broker.url, '--exchange', target.names.exchange, '--routing-key', 'nobody.listens', '--to-id', '5'])
  t.equal(unbound.code, 1, 'unroutable is a failure, not "published"')
  t.match(unbound.err, /returned unroutable: no queue is bound to exchange .* for routing key "nobody.listens"/)
  t.match(unbound.err, /--from-id 1\b/, 'resume from the first unconfirmed id')
  p.kill('SIGTERM')
  await p.exited
})

t.test('follow and mirror end with the reason, exit 1, on a taken port or a database that does not exist', async (t) => {
  const world = await setupWorld(t)
  const { createServer } = await import('node:net')
  const taken = createServer()
  await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r))
  t.teardown(() => new Promise<void>((r) => taken.close(() => r())))
  const port = String((taken.address() as { port: number }).port)
  const before = process.listenerCount('SIGTERM')
  for (const command of [['follow'], ['mirror', '--mirror-url', 'esdb://127.0.0.1:2113?tls=false'], ['project', 'history', '--follow']]) {
    const r = await cli([...command, '--database-url', world.db.url, '--http-port', port, '--http-host', '127.0.0.1'])
    t.equal(r.code, 1, `${command[0]}: port taken`)
    t.match(r.err, new RegExp(`vitrage-persistor ${command[0] === 'project' ? 'project history' : command[0]}: cannot listen on 127.0.0.1:${port}: .*EADDRINUSE`))
  }
  const missing = new URL(world.db.url)
  missing.pathname = '/vp_no_such_database_here'
  for (const command of [['follow', '--http-port', '0'], ['mirror', '--mirror-url', 'esdb://127.0.0.1:2113?tls=false', '--http-port', '0'], ['project', 'history', '--follow', '--http-port', '0']]) {
    const r = await cli([...command, '--database-url', missing.toString()])
    t.equal(r.code, 1, `${command.join(' ')}: no such database`)
    t.match(r.err, /database "vp_no_such_database_here" does not exist/)
  }
  // Told slowly (each connection 2.5 s late: a distant or loaded server), the same (review 59: a
  // 2 s bound on the first read passed it, and follow retried "does not exist" for ever).
  const slow = await startFreezableProxy(missing.toString(), { delayConnectMs: 2_500 })
  t.teardown(() => slow.close())
  const late = await cli(['follow', '--http-port', '0', '--database-url', slow.url])
  t.equal(late.code, 1, 'follow, its database slow to say it does not exist')
  t.match(late.err, /database "vp_no_such_database_here" does not exist/)
  // A connection string the EventStoreDB client cannot use: a usage error (exit 2) before
  // anything starts, with the client's reason, never its echo of the password.
  const badMirror = await cli(['mirror', '--database-url', world.db.url, '--mirror-url', 'esdb://:::bad', '--http-port', '0'])
  t.equal(badMirror.code, 2)
  t.match(badMirror.err, /vitrage-persistor mirror: --mirror-url esdb:\/\/:::bad: Unexpected "::bad" at position 8/)
  for (const url of ['esdb://admin:EsPw@127.0.0.1:1?tls=false&badopt=1', 'esdb://admin:EsPw@127.0.0.1:1?tls=false&tlsVerifyCert=maybe']) {
    const badRun = await cli(world.flags(['--mirror-url', url, '--http-port', '0']))
    t.equal(badRun.code, 2, `run --mirror-url ${url}: exit 2`)
    t.match(badRun.err, /^vitrage-persistor run: --mirror-url esdb:\/\/admin:\*\*\*@127\.0\.0\.1:1\?tls=false&\w+=\w+: (Unknown option key "badopt"|Unexpected "maybe")/)
    t.notMatch(badRun.out + badRun.err, /EsPw/, 'the password is never printed')
    t.notMatch(badRun.out, /"msg":"starting"/, 'nothing started')
  }
  // The client prints its tlsVerifyCert warning with the whole URL when it is created: with a
  // database that exists, so that the mirror does create it.
  for (const command of [['mirror', '--database-url', world.db.url], world.flags(['--no-history-projection'])]) {
    const warned = startPersistor([...command, '--mirror-url', 'esdb://admin:EsPw@127.0.0.1:1?tls=false&tlsVerifyCert=false', '--http-port', '0'])
    t.teardown(() => warned.kill('SIGKILL'))
    await warned.waitFor((l) => l.msg === 'mirroring to EventStoreDB', 'the mirror to start')
    warned.kill('SIGTERM')
    t.equal((await warned.exited).code, 0)
    t.notMatch(warned.output(), /EsPw/, `${command[0]}: the client's tlsVerifyCert warning goes to the scrubbed log`)
    t.ok(warned.lines.some((l) => l.msg === 'EventStoreDB client: connection string' && String(l['warning']).startsWith('"tlsVerifyCert" is not currently supported')))
  }
  t.equal(process.listenerCount('SIGTERM'), before, 'the commands gave the stop signals back')
})

/**
 * A follower woken only when the test says (no poll, no notifications), with the positions and
 * generations it emitted; `wakeUntil` wakes it and waits for a condition on them.
 */
const wokenFollower = (t: Test, sources: GraphSources, options: FollowOptions = {}) => {
  const wake: Array<() => void> = []
  const signal: AppendSignal = { onAppend: (l) => (wake.push(l), { close: async () => {} }) }
  const follow$ = followGraph({ ...sources, signal }, { pollMs: 600_000, ...options })
  const states: Array<{ position: number; generation: number }> = []
  const sub = follow$.subscribe((s) => states.push({ position: s.position, generation: s.generation }))
  t.teardown(() => sub.unsubscribe())
  const wakeUntil = async (what: string, done: () => boolean): Promise<void> => {
    for (const l of wake) l()
    await eventually(what, async () => done())
  }
  return { follow$, states, wakeUntil }
}

t.test('a follower whose database is restored or failed over under it rebuilds from the log as it is: no reused id skipped, no lost event kept', async (t) => {
  const { world, store } = await worldWithLog(t, 300, 3)
  const sources = { reader: store, snapshots: store, clock: store }
  const client = await world.sql.connect()
  t.teardown(() => client.release())
  const rebuilds: string[] = []
  const { follow$, states, wakeUntil } = wokenFollower(t, sources, { onRebuild: (reason) => void rebuilds.push(reason) })
  const sameAsFullReplay = async (what: string): Promise<void> => {
    const followed = await caughtUp(follow$, 0)
    const full = await graphAt(sources, 'head', { useSnapshots: false })
    if (E.isLeft(full)) throw new Error(full.left.message)
    t.equal(followed.position, full.right.position, `${what}: at the head`)
    t.equal(canonicalJson(followed.graph), canonicalJson(full.right.graph), `${what}: the graph of the log as it is`)
  }
  t.equal((await caughtUp(follow$, 300)).generation, 0)
  await appendBatch(client, fixtureEvents(100, 300))
  await wakeUntil('at 400', () => states.at(-1)?.position === 400)
  const lost = await caughtUp(follow$, 0)
  const lostMessage = lost.messageId as string
  t.match(lostMessage, /^[0-9a-f-]{36}$/, 'the follower knows which message its position is')
  const staleSnapshot = await encodeGraphSnapshot(lost.graph, 400)
  if (E.isLeft(staleSnapshot)) throw new Error(staleSnapshot.left)

  // Restored to 300, nothing new yet: the head is below the follower.
  await rewindLog(world, 300)
  await wakeUntil('rebuilt at 300', () => states.at(-1)?.generation === 1)
  t.same(states.at(-1), { position: 300, generation: 1 }, 'rebuilt at the head')
  await sameAsFullReplay('head below the position')
  const refused = await store.saveSnapshot({ ...staleSnapshot.right, eventMessageId: lostMessage })()
  t.ok(E.isLeft(refused) && refused.left.code === NOT_IN_LOG, 'a snapshot of the state the log lost is refused')

  // Events again, then a failover to a replica 30 events behind; the new primary takes more
  // than the follower had before it is woken: the head is past its position, the event there
  // another message.
  await appendBatch(client, fixtureEvents(150, 100))
  await wakeUntil('at 450', () => states.at(-1)?.position === 450)
  await rewindLog(world, 420)
  await appendBatch(client, fixtureEvents(60, 250))
  await wakeUntil('rebuilt at 480', () => states.at(-1)?.generation === 2)
  t.same(states.at(-1), { position: 480, generation: 2 })
  await sameAsFullReplay('reused ids past the position')
  t.equal(states.filter((s) => s.generation === 2).length, 1, 'one rebuild, straight to the head')
  t.same(rebuilds, ['rewound', 'rewound'], 'each rebuild announced, with its reason')
})

t.test('a follower whose read failed as the database was restored still notices; retention deleting exactly its event is not a restore', async (t) => {
  const { world, store } = await worldWithLog(t, 300, 3)
  const client = await world.sql.connect()
  t.teardown(() => client.release())
  // The next streamed read finds the database restored under it (to 200, then 100 other events)
  // and fails, as reads do across a failover.
  let restoreOnNextRead = false
  const reader: EventLogReader = {
    ...store,
    streamRange: (after, to, options, onEntry) => async () => {
      if (!restoreOnNextRead) return store.streamRange(after, to, options, onEntry)()
      restoreOnNextRead = false
      await rewindLog(world, 200)
      await appendBatch(client, fixtureEvents(100, 150))
      return E.left({ kind: 'transient', message: 'connection terminated unexpectedly' })
    },
  }
  const sources = { reader, snapshots: store, clock: store }
  const { follow$, states, wakeUntil } = wokenFollower(t, sources, { retry: { initialMs: 1, maxMs: 1 } })
  const fullReplay = async (): Promise<string> => {
    const full = await graphAt({ reader: store, snapshots: store, clock: store }, 'head', { useSnapshots: false })
    if (E.isLeft(full)) throw new Error(full.left.message)
    return canonicalJson(full.right.graph)
  }
  await caughtUp(follow$, 300)
  await appendBatch(client, fixtureEvents(100, 300))
  restoreOnNextRead = true
  await wakeUntil('rebuilt', () => states.at(-1)?.generation === 1)
  t.same(states.at(-1), { position: 300, generation: 1 }, 'rebuilt at the head of the restored log')
  t.equal(canonicalJson((await caughtUp(follow$, 0)).graph), await fullReplay(), 'the graph of the log as it is')

  // Retention deletes exactly the event the follower stopped at: nothing after it is missed.
  await appendBatch(client, fixtureEvents(50, 40))
  const at301 = await graphAt(sources, { eventId: 301 })
  if (E.isLeft(at301)) throw new Error(at301.left.message)
  const encoded = await encodeGraphSnapshot(at301.right.graph, 301)
  if (E.isLeft(encoded)) throw new Error(encoded.left)
  await store.saveSnapshot(encoded.right)()
  t.same(await store.prune()(), E.right(300), 'events 1-300 pruned, the follower at 300')
  await wakeUntil('at 350', () => states.at(-1)?.position === 350)
  t.same(states.at(-1), { position: 350, generation: 1 }, 'read on: no rebuild')
  const fromSnapshot = await graphAt(sources, 'head')
  if (E.isLeft(fromSnapshot)) throw new Error(fromSnapshot.left.message)
  t.equal(canonicalJson((await caughtUp(follow$, 0)).graph), canonicalJson(fromSnapshot.right.graph), 'the graph of the log (its snapshot at 301 and the tail)')
})

t.test('a snapshot of a history the log no longer holds (the event table restored without its snapshots) is passed over, not built on', async (t) => {
  const { world, store } = await worldWithLog(t, 400)
  const db = ['--database-url', world.db.url]
  for (const at of ['200', '400']) t.equal((await cli(['snapshot', 'create', ...db, '--at-event', at])).code, 0)
  await rewindLog(world, 300, { eventsOnly: true })
  const client = await world.sql.connect()
  await appendBatch(client, fixtureEvents(150, 100))
  client.release()
  const sources = { reader: store, snapshots: store, clock: store }
  const built = await graphAt(sources, 'head')
  if (E.isLeft(built)) throw new Error(built.left.message)
  t.same(built.right.snapshot?.eventId, 200, 'built from the snapshot at 200, of this log')
  t.match(built.right.unreadable, [{ eventId: 400, reason: /taken at event 400 = message .*, which the log no longer holds there \(message .*\): the event table was restored/ }])
  const full = await graphAt(sources, 'head', { useSnapshots: false })
  if (E.isLeft(full)) throw new Error(full.left.message)
  t.equal(canonicalJson(built.right.graph), canonicalJson(full.right.graph), 'the graph of the log as it is')
  t.equal(await graphCli(world.db.url), await graphCli(world.db.url, '--no-snapshots'), 'graph says the same')

  // status names it; prune does not take it as the oldest kept snapshot (review 57: prune deleted
  // every event below it, and the graph could no longer be built at all).
  const status = await cli(['status', ...db, '--no-broker', '--format', 'json'])
  t.equal(status.code, 1, 'status: something needs an operator')
  t.match(JSON.parse(status.out), { database: { snapshots: { kept: 2, notOfThisLog: [400] } }, problems: [/^the graph snapshot at event 400 is not of this log/] })
  const graphBefore = await graphCli(world.db.url)
  await world.sql.query('DELETE FROM projection_snapshot WHERE event_id = 200')
  const refused = await cli(['prune', ...db])
  t.equal(refused.code, 1, 'with only the foreign snapshot left, nothing may be pruned')
  t.match(refused.err, /no graph snapshot of this log: nothing may be pruned/)
  t.equal((await cli(['snapshot', 'create', ...db, '--at-event', '200'])).code, 0)
  const pruned = await cli(['prune', ...db])
  t.equal(pruned.code, 0, pruned.err)
  t.equal(pruned.out, 'deleted 199 events below event 200: the oldest kept snapshot\n')
  t.match(pruned.err, /not counting 1 graph snapshot \(at event 400\) whose event the log no longer holds/)
  t.equal(await graphCli(world.db.url), graphBefore, 'the graph is still built, from the snapshot at 200')
})

t.test('prune against a follower behind it, and during a replay: rebuilt or refused, never a graph with a hole', async (t) => {
  const world = await setupWorld(t)
  const store = new PgEventStore({ connectionString: world.db.url, maxConnections: 3 })
  t.teardown(() => store.close())
  const client = await world.sql.connect()
  t.teardown(() => client.release())
  await appendBatch(client, fixtureEvents(400, 0))
  const sources = { reader: store, snapshots: store, clock: store }
  const snapshotAtHeadKeepingOne = async (): Promise<void> => {
    const g = await graphAt(sources, 'head')
    if (E.isLeft(g)) throw new Error(g.left.message)
    const encoded = await encodeGraphSnapshot(g.right.graph, g.right.position)
    if (E.isLeft(encoded)) throw new Error(encoded.left)
    await store.saveSnapshot(encoded.right)()
    await store.retainSnapshots(GRAPH_SNAPSHOT_KIND, 1)()
  }

  // A follower woken only when the test says (appends do not wake it): it stays at 400.
  const wake: Array<() => void> = []
  const signal: AppendSignal = { onAppend: (l) => (wake.push(l), { close: async () => {} }) }
  const rebuilds: string[] = []
  const follow$ = followGraph({ ...sources, signal }, { pollMs: 600_000, onRebuild: (reason) => void rebuilds.push(reason) })
  const sub = follow$.subscribe(() => {})
  t.teardown(() => sub.unsubscribe())
  t.equal((await caughtUp(follow$, 400)).position, 400)
  await appendBatch(client, fixtureEvents(100, 400))
  await snapshotAtHeadKeepingOne()
  const pruned = await store.prune()()
  t.same(pruned, E.right(499), 'events 1-499 pruned while the follower was at 400')
  await appendBatch(client, fixtureEvents(50, 500))
  for (const l of wake) l()
  const followed = await caughtUp(follow$, 550)
  const expected = await graphAt(sources, 'head')
  t.ok(E.isRight(expected))
  if (E.isRight(expected)) t.equal(canonicalJson(followed.graph), canonicalJson(expected.right.graph), 'the follower rebuilt from the snapshot at 500: the graph of the whole log')
  t.same(rebuilds, ['pruned'], 'the rebuild announced, with its reason')

  // A prune that runs while graphAt replays: a snapshot at 550 is kept alone and the log pruned
  // below it after graphAt chose the one at 500 and before it read the events.
  await appendBatch(client, fixtureEvents(20, 550))
  let pruneDuring = true
  const reader: EventLogReader = {
    ...store,
    streamRange: (after, to, options, onEntry) => async () => {
      if (pruneDuring) {
        pruneDuring = false
        await snapshotAtHeadKeepingOne()
        await store.prune()()
      }
      return store.streamRange(after, to, options, onEntry)()
    },
  }
  const raced = await graphAt({ ...sources, reader }, { eventId: 560 })
  t.ok(E.isLeft(raced) && raced.left.code === 'pruned', 'refused: its range was pruned while it read it')
  t.match(E.isLeft(raced) ? raced.left.message : '', /pruned while the graph at event 560 was being built from event 500/)
})

t.test('replay and prune: a prune during the replay stops it with the range it lost; a --from-id below the watermark is refused', async (t) => {
  const { world: source, store } = await worldWithLog(t, 3_000)
  const snap = await cli(['snapshot', 'create', '--database-url', source.db.url, '--at-event', '2500', '--keep', '1'])
  t.equal(snap.code, 0, snap.err)
  const target = await setupWorld(t)
  await declarePersistorTopology(target)

  // The prune lands between the first page and the second.
  let reads = 0
  const reader = {
    readRawPage: (...a: Parameters<typeof store.readRawPage>) => async () => {
      if (++reads === 2) t.same(await store.prune()(), E.right(2_499), 'pruned below the snapshot at 2500')
      return store.readRawPage(...a)()
    },
    prunedBelow: () => store.prunedBelow(),
  }
  const progress: Array<{ lastId: number; confirmedId: number }> = []
  const r = await republish(reader, {
    amqpUrl: target.broker.url,
    exchange: target.names.exchange,
    route: { routingKey: target.names.routingKey },
    fromId: 0,
    toId: 3_000,
    maxInFlight: 100,
    pageSize: 500,
    onProgress: (p) => void progress.push({ lastId: p.lastId, confirmedId: p.confirmedId }),
  })
  t.ok(progress.length > 0 && progress.every((p) => p.confirmedId <= p.lastId && p.confirmedId >= 400), `each page reports how far the broker confirmed: ${JSON.stringify(progress)}`)
  t.ok(E.isLeft(r) && r.left.code === 'pruned', 'refused, not a silent skip of 2,000 events')
  if (E.isLeft(r)) {
    t.match(r.left.message, /events 501 to 2499 were pruned during the replay/)
    t.equal(r.left.lastConfirmedId, 500, 'the first page was published and confirmed')
  }
  t.equal(await target.broker.depth(target.names.queue), 500)

  const base = ['replay', '--database-url', source.db.url, '--to-amqp', target.broker.url, '--exchange', target.names.exchange, '--routing-key', target.names.routingKey]
  const resumed = await cli([...base, '--from-id', '501'])
  t.equal(resumed.code, 1, 'a resume below the watermark is refused')
  t.match(resumed.err, /events below 2500 were pruned, so events 501 to 2499 cannot be republished; pass --from-id 2500 \(or --allow-pruned\)/)
  t.equal(await target.broker.depth(target.names.queue), 500, 'nothing published')
  const allowed = await cli([...base, '--from-id', '501', '--allow-pruned'])
  t.equal(allowed.code, 0, allowed.err)
  t.match(JSON.parse(allowed.out), { published: 501, fromId: 2_500, toId: 3_000 })
  t.match(allowed.err, /events below 2500 were pruned; republishing what is stored from there \(--allow-pruned\)/)
  const whole = await cli(base)
  t.equal(whole.code, 0, 'without --from-id: from the first stored event')
  t.match(JSON.parse(whole.out), { published: 501, fromId: 2_500 })
  t.equal(await target.broker.depth(target.names.queue), 1_502)
  const belowOnly = await cli([...base, '--to-id', '100'])
  t.equal(belowOnly.code, 1, 'a range wholly below the watermark: refused, not an empty success')
  t.match(belowOnly.err, /events below 2500 were pruned: nothing of the range up to event 100 is stored/)
  const early = await republish(store, { amqpUrl: target.broker.url, exchange: target.names.exchange, route: { routingKey: target.names.routingKey }, fromId: 100, toId: 3_000, maxInFlight: 10, pageSize: 500 })
  t.match(early, E.left({ kind: 'rejected', code: 'pruned', lastConfirmedId: 100 }), 'rejected, as graphAt and the history runner answer a pruned range')
  t.match(E.isLeft(early) ? early.left.message : '', /^events 101 to 2499 were pruned; they cannot be republished/, 'pruned before the replay, said so')
  t.equal(await target.broker.depth(target.names.queue), 1_502, 'nothing published')
})

t.test('follow --snapshot-every counts from the newest stored snapshot: a follower restarted more often than every N events still writes them', async (t) => {
  const world = await setupWorld(t)
  const store = new PgEventStore({ connectionString: world.db.url, maxConnections: 2 })
  t.teardown(() => store.close())
  const client = await world.sql.connect()
  t.teardown(() => client.release())
  const append = (n: number): Promise<unknown> => appendBatch(client, fixtureEvents(n))
  const snapshotIds = async (): Promise<number[]> => {
    const listed = await store.listSnapshots(GRAPH_SNAPSHOT_KIND)()
    if (E.isLeft(listed)) throw new Error(listed.left.message)
    return listed.right.map((m) => m.eventId).sort((a, b) => a - b)
  }
  await append(250)
  // Each run loads and is killed; 60 events are appended between runs: fewer than
  // --snapshot-every since any run loaded.
  for (let run = 0; run < 3; run++) {
    const follower = startPersistor(['follow', '--database-url', world.db.url, '--http-port', '0', '--snapshot-every', '100'])
    t.teardown(() => follower.kill('SIGKILL'))
    await follower.waitFor((l) => l.msg === 'graph loaded; following', 'the follower to load')
    if (run === 0) await follower.waitFor((l) => l.msg === 'snapshot saved', 'a snapshot at once: none stored, 250 events')
    // Loaded at 370, 120 past the stored one at 250 (the code before counted from 370).
    if (run === 2) await follower.waitFor((l) => l.msg === 'snapshot saved' && l['position'] === 370, 'a snapshot 100+ events after the newest stored')
    follower.kill('SIGKILL')
    await follower.exited
    await append(60)
  }
  t.same(await snapshotIds(), [250, 370], 'written at 250 (loaded with none) and at 370 (120 past it, over three short runs)')
})

t.test('follow --snapshot-every: a snapshot that came due while another was being saved is taken once that one is saved, on a quiet log too', async (t) => {
  const world = await setupWorld(t)
  const store = new PgEventStore({ connectionString: world.db.url, maxConnections: 2 })
  t.teardown(() => store.close())
  const client = await world.sql.connect()
  t.teardown(() => client.release())
  await appendBatch(client, fixtureEvents(10))
  const port = await freePort()
  const follower = startPersistor(['follow', '--database-url', world.db.url, '--http-port', String(port), '--snapshot-every', '100'])
  t.teardown(() => follower.kill('SIGKILL'))
  await follower.waitFor((l) => l.msg === 'graph loaded; following', 'the follower to load')
  // Saving is held up by a lock, while the log moves 300 more events past the one being saved.
  const locker = await world.sql.connect()
  t.teardown(() => locker.release())
  await locker.query('BEGIN')
  await locker.query('LOCK TABLE projection_snapshot IN EXCLUSIVE MODE')
  await appendBatch(client, fixtureEvents(100, 10))
  await eventually('the save of 110 waiting on the lock', async () => (await locker.query(`SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`)).rowCount === 1)
  await appendBatch(client, fixtureEvents(300, 110))
  await eventually('followed to 410', async () => ((await (await fetch(`http://127.0.0.1:${port}/position`)).json()) as { position: number }).position === 410)
  await locker.query('COMMIT')
  // Nothing more is appended: before, 410 waited for the next event, however long the log stayed quiet.
  await follower.waitFor((l) => l.msg === 'snapshot saved' && l['position'] === 410, 'the snapshot that came due meanwhile')
  const listed = await store.listSnapshots(GRAPH_SNAPSHOT_KIND)()
  t.same(E.isRight(listed) ? listed.right.map((m) => m.eventId).sort((a, b) => a - b) : listed, [110, 410])
  const page = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
  t.equal(metricValue(page, 'vitrage_persistor_graph_snapshot_position'), 410)
  follower.kill('SIGTERM')
  t.equal((await follower.exited).code, 0)

  // Restarted: the gauge says the newest stored snapshot from the start (it read 0 until the next save).
  const again = startPersistor(['follow', '--database-url', world.db.url, '--http-port', String(port), '--snapshot-every', '100'])
  t.teardown(() => again.kill('SIGKILL'))
  await again.waitFor((l) => l.msg === 'graph loaded; following', 'the follower to load again')
  t.equal(metricValue(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text(), 'vitrage_persistor_graph_snapshot_position'), 410)
  again.kill('SIGTERM')
  await again.exited
})

t.test('replayInto says how far it has read, also through a stretch of the log with no graph change (a follower there is moving, not stuck)', async (t) => {
  const { world, store } = await worldWithLog(t, 10)
  const other = Array.from({ length: 5_000 }, (_, i) => prepareEvent((decodeMessage(v2Body(message({ i })), { maxMessageBytes: 1 << 20 }) as E.Right<DecodedMessage>).right))
  const client = await world.sql.connect()
  await appendBatch(client, other)
  await appendBatch(client, fixtureEvents(1, 10))
  client.release()
  const at10 = await graphAt({ reader: store, snapshots: store, clock: store }, { eventId: 10 })
  if (E.isLeft(at10)) throw new Error(at10.left.message)
  const seen: Array<[number, string | undefined]> = []
  const r = await replayInto(store, at10.right.graph, { fromId: 10, toId: 5_011, onApplied: (position, messageId) => void seen.push([position, messageId]) })
  t.same(r, E.right(5_011))
  t.ok(seen.some(([p, m]) => p < 5_011 && p > 10 && m === undefined), 'through the stretch of other events, without a message')
  t.same(seen.at(-1)?.[0], 5_011, 'to the end')
  t.ok(seen.some(([p, m]) => p === 5_011 && m !== undefined), 'the graph change at the end with its message')
  t.ok(seen.every(([p], i) => i === 0 || p >= (seen[i - 1] as [number, unknown])[0]), 'never backwards')
})

t.test('prune says what limits it: a stale checkpoint is named with how to remove it', async (t) => {
  const { world, store } = await worldWithLog(t, 400)
  t.equal((await cli(['snapshot', 'create', '--database-url', world.db.url, '--at-event', '300'])).code, 0)
  // On a schema behind this version, prune deletes nothing (the database's rules for what it may
  // delete are the schema's: review 60).
  await world.sql.query('DELETE FROM schema_migration WHERE version = 14')
  const behind = await cli(['prune', '--database-url', world.db.url])
  t.equal(behind.code, 1)
  t.match(behind.err, /migrations 0014_prune_counts_snapshots_of_this_log are pending: run `vitrage-persistor migrate` first .*nothing was deleted/)
  t.equal((await world.sql.query('SELECT count(*)::int AS n FROM event')).rows[0].n, 400)
  await world.sql.query("INSERT INTO schema_migration (version, name, checksum) SELECT 14, name, checksum FROM (VALUES ('0014_prune_counts_snapshots_of_this_log', $1)) v(name, checksum)", [loadMigrations().find((m) => m.version === 14)?.checksum])
  // A reader that stopped at event 10 long ago (a mirror taken out of service).
  t.same(await store.checkpoint('old-mirror')(), E.right(0))
  t.same(await store.moveCheckpoint('old-mirror', 0, 10)(), E.right(undefined))
  const held = await cli(['prune', '--database-url', world.db.url])
  t.equal(held.code, 0, held.err)
  t.match(held.out, /^deleted 10 events below event 11: checkpoint old-mirror \(at event 10, moved \d{4}-/)
  t.match(held.err, /checkpoint old-mirror holds retention back; if its reader no longer runs, remove it: vitrage-persistor checkpoint remove 'old-mirror'/)

  // The checkpoint commands: list, set within what the log holds, never the history's, remove.
  const db = ['--database-url', world.db.url]
  const listed = await cli(['checkpoint', 'list', ...db, '--format', 'json'])
  t.match(JSON.parse(listed.out), { head: 400, checkpoints: [{ name: 'old-mirror', position: 10, behind: 390 }] })
  for (const [args, code, reason] of [
    [['set', 'old-mirror', '--position', '401'], 2, /--position 401 is past the newest stored event \(400\)/],
    [['set', 'old-mirror', '--position', '3'], 1, /events below 11 were pruned: a reader at 3 would need events 4 to 10; --position 10 is the lowest/],
    [['set', 'old-mirror'], 2, /--position: required/],
    [['set', 'history', '--position', '0'], 2, /belongs to the history projection.*project history --rebuild/],
    [['remove', 'history/0/2'], 2, /belongs to the history projection/],
    [['set', 'nobody', '--position', '20'], 1, /no checkpoint "nobody"/],
    [['remove', 'nobody'], 1, /no checkpoint "nobody"/],
  ] as const) {
    const r = await cli(['checkpoint', ...args, ...db])
    t.equal(r.code, code, args.join(' '))
    t.match(r.err, reason)
  }
  const moved = await cli(['checkpoint', 'set', 'old-mirror', '--position', '20', ...db])
  t.same([moved.code, JSON.parse(moved.out)], [0, { name: 'old-mirror', from: 10, to: 20 }])
  const removed = await cli(['checkpoint', 'remove', 'old-mirror', ...db])
  t.same([removed.code, JSON.parse(removed.out)], [0, { name: 'old-mirror', removed: true, was: 20 }])
  const freed = await cli(['prune', '--database-url', world.db.url])
  t.equal(freed.out, 'deleted 289 events below event 300: the oldest kept snapshot\n')
  t.equal(freed.err, '')
  const limited = await cli(['prune', '--database-url', world.db.url, '--below', '200'])
  t.equal(limited.out, 'deleted 0 events: events below 300 were pruned before, and --below stops this prune at event 200\n', 'not "below event 200" (review 56)')

  // The history projection holding retention back: kept running, or retired with its tables.
  t.same(await store.checkpoint('history')(), E.right(0))
  t.same(await store.moveCheckpoint('history', 0, 250)(), E.right(undefined))
  const byHistory = await cli(['prune', ...db])
  t.match(byHistory.err, /the alarm-history projection \(checkpoint history\) holds retention back: keep it running .*; to retire it: vitrage-persistor checkpoint remove history --drop-history/)
  const wrongFlag = await cli(['checkpoint', 'remove', 'old-mirror', '--drop-history', ...db])
  t.equal(wrongFlag.code, 2)
  const retired = await cli(['checkpoint', 'remove', 'history', '--drop-history', ...db])
  t.same([retired.code, JSON.parse(retired.out)], [0, { name: 'history', removed: true, historyTablesEmptied: true }])
  t.same(JSON.parse((await cli(['checkpoint', 'list', ...db, '--format', 'json'])).out).checkpoints, [], 'no checkpoint left')
  const afterRetire = await cli(['prune', ...db])
  t.match(afterRetire.out, /below event 300: the oldest kept snapshot/)
  t.equal(afterRetire.err, '', 'nothing holds it back any more')
})

t.test('library entry points refuse zero or negative sizes and ids as defects (TypeError), not as a silent empty graph or a stalled loop', async (t) => {
  const world = await setupWorld(t)
  const store = new PgEventStore({ connectionString: world.db.url, maxConnections: 1 })
  t.teardown(() => store.close())
  const sources = { reader: store, snapshots: store, clock: store }
  await t.rejects(graphAt(sources, { eventId: -5 }), { name: 'TypeError', message: /graphAt: eventId must be an integer >= 0, got -5/ })
  await t.rejects(graphAt(sources, 'head', { pageSize: 0 }), { name: 'TypeError', message: /graphAt: pageSize/ })
  await t.rejects(
    republish(store, { amqpUrl: world.broker.url, exchange: 'x', route: { routingKey: 'k' }, fromId: 0, toId: 10, maxInFlight: 0, pageSize: 100 }),
    { name: 'TypeError', message: /republish: maxInFlight must be an integer >= 1, got 0/ },
  )
  t.match(
    await republish(store, { amqpUrl: 'not a url', exchange: 'x', route: { routingKey: 'k' }, fromId: 0, toId: 10, maxInFlight: 10, pageSize: 100 }),
    E.left({ kind: 'fatal', code: 'config' }),
    'a target URL that is not one: fatal, not a connection failure to retry',
  )
  // The broker's refusals are classified with their reply code (a wrong password was transient
  // without a code, so a loop retrying transient failures never ended).
  const target = (amqpUrl: string, exchange = world.names.exchange) => republish(store, { amqpUrl, exchange, route: { routingKey: 'k' }, fromId: 0, toId: 10, maxInFlight: 10, pageSize: 100 })
  const wrongPassword = new URL(world.broker.url)
  wrongPassword.password = 'not-the-password'
  t.match(await target(wrongPassword.toString()), E.left({ kind: 'fatal', code: '403' }), 'access refused: fatal, code 403')
  t.match(await target(world.broker.url, `${world.names.exchange}_missing`), E.left({ kind: 'fatal', code: '404', message: /does not exist on the target broker/ }), 'no such exchange: fatal, code 404')
  t.match(await target('amqp://guest:guest@127.0.0.1:1/'), E.left({ kind: 'transient', code: 'ECONNREFUSED' }), 'refused: transient, with its errno')
  const noVhost = new URL(world.broker.url)
  noVhost.pathname = `/${world.names.exchange}_no_such_vhost`
  t.match(await target(noVhost.toString()), E.left({ kind: 'fatal', code: '530' }), 'a vhost that does not exist: fatal, 530')
  // The CLI's lowest values are the library's too (run --batch-max-wait-ms 0 crashed with exit 70).
  const deps = { store, logger: silentLogger, metrics: createIngestMetrics(new Registry()), scrub: (s: string) => s, onDefect: () => {} }
  t.doesNotThrow(() => new Persistor({ ...defaultPersistorOptions(world.broker.url), batchMaxWaitMs: 0, heartbeatSeconds: 0, shutdownTimeoutMs: 0, prefetch: 1, batchSize: 1, maxMessageBytes: 64 }, deps))
  t.throws(() => new Persistor({ ...defaultPersistorOptions(world.broker.url), prefetch: 0 }, deps), { name: 'TypeError', message: /prefetch must be an integer >= 1/ })
  const followError = await new Promise<unknown>((resolve) => followGraph(sources, { pageSize: -1 }).subscribe({ error: resolve }))
  t.match(followError, { name: 'TypeError', message: /followGraph: pageSize must be an integer >= 1, got -1/ }, 'the follower errors at once')
})

t.test('a store closed under its readers: they stop (the follower completes, the history loop ends) instead of retrying for ever; onAppend after close is a defect', async (t) => {
  const { store } = await worldWithLog(t, 50)
  const warnings: string[] = []
  const said: string[] = []
  const logger = {
    ...silentLogger,
    info: (o: unknown, m?: string) => void said.push(String(m ?? o)),
    warn: (_o: unknown, m?: string) => void warnings.push(String(m)),
    error: (_o: unknown, m?: string) => void warnings.push(String(m)),
    child: () => logger,
  } as typeof silentLogger
  const follow$ = followGraph({ reader: store, snapshots: store, clock: store }, { pollMs: 20, retry: { initialMs: 5, maxMs: 10 }, logger })
  let completed = false
  const sub = follow$.subscribe({ complete: () => void (completed = true) })
  t.teardown(() => sub.unsubscribe())
  await caughtUp(follow$, 50)
  const runner = new HistoryRunner({ reader: store, store, logger }, { name: 'history', idlePollMs: 20, retry: { initialMs: 5, maxMs: 10 } })
  runner.start()
  await store.close()
  t.same(await store.headId()(), E.left({ kind: 'fatal', message: 'the event store is closed', code: STORE_CLOSED }))
  t.throws(() => store.onAppend(() => {}), /onAppend: the event store is closed/)
  await eventually('the follower completes', () => completed)
  await eventually('the history loop says it stopped', () => said.includes('history projection stopped: its store was closed'))
  // Its loop ended by itself: close() has nothing to wait for (no step, no sleep), so it settles
  // before any I/O could happen.
  const closing = await Promise.race([runner.close().then(() => 'done'), new Promise((r) => setImmediate(() => r('pending')))])
  t.equal(closing, 'done', 'the history loop had already ended')
  t.same(warnings, [], 'no retries logged')
})

t.test('a store closed under a follower and a history loop that wait a minute between polls: both stop at once, woken by the close', async (t) => {
  const { store } = await worldWithLog(t, 50)
  const follow$ = followGraph({ reader: store, snapshots: store, clock: store, signal: store }, { pollMs: 60_000 })
  let completedAt: number | undefined
  const sub = follow$.subscribe({ complete: () => void (completedAt = Date.now()) })
  t.teardown(() => sub.unsubscribe())
  await caughtUp(follow$, 50)
  const said: string[] = []
  const logger = { ...silentLogger, info: (o: unknown, m?: string) => void said.push(String(m ?? o)), child: () => logger } as typeof silentLogger
  const runner = new HistoryRunner({ reader: store, store, signal: store, logger }, { name: 'history', idlePollMs: 60_000 })
  runner.start()
  t.equal(await runner.caughtUp(50, { timeoutMs: 30_000 }), 50, 'the history runner says when it has applied event 50')
  await t.rejects(runner.caughtUp(1_000, { timeoutMs: 50 }), { name: 'TimeoutError', message: 'event 1000 not applied within 50 ms: the history projection is at event 50' })
  const waiting = t.rejects(caughtUp(follow$, 1_000), { name: 'EmptyError', message: 'the follower ended (its store was closed) before event 1000; it was at event 50' }, 'a caughtUp pending says why it will never resolve')
  const runnerWaiting = t.rejects(runner.caughtUp(1_000), { message: 'its store was closed before event 1000 was applied; the history projection is at event 50' }, 'so does the runner\'s')
  const closing = Date.now()
  await store.close()
  await waiting
  await runnerWaiting
  // Before the close woke them, the follower completed at its next poll: a minute later.
  await eventually('the follower completes', () => completedAt !== undefined, { timeoutMs: 5_000 })
  t.ok((completedAt as number) - closing < 2_000, `completed ${(completedAt as number) - closing} ms after the close`)
  await eventually('the history loop stops by itself', () => said.some((m) => /stopped: its store was closed/.test(m)), { timeoutMs: 5_000 })
  await runner.close()
})

t.test('unsubscribing a follower during its initial build stops the replay (the store closes at once); caughtUp can time out', async (t) => {
  const world = await setupWorld(t)
  const store = new PgEventStore({ connectionString: world.db.url, maxConnections: 2 })
  const client = await world.sql.connect()
  await appendBatch(client, fixtureEvents(400))
  // 300,000 more graph changes (a copy of one, again and again): a replay of a few seconds.
  await client.query(`INSERT INTO event (message_id, event_type, collector_timestamp, payload)
    SELECT gen_random_uuid(), e.event_type, e.collector_timestamp, e.payload
    FROM generate_series(1, 300000), (SELECT * FROM event WHERE event_type = 'vitrage.graph.change' ORDER BY id DESC LIMIT 1) e`)
  client.release()
  let progressed = 0
  const follow$ = followGraph({ reader: store, snapshots: store, clock: store }, { onInitialProgress: (p) => void (progressed = p.applied) })
  const sub = follow$.subscribe(() => {})
  await eventually('the initial build under way', () => progressed >= 20_000, { intervalMs: 1 })
  sub.unsubscribe()
  const atUnsubscribe = progressed
  // An unbounded close() waits for the streamed read: had the replay gone on, it would return
  // only once all 300,000 were applied (progress reported every 10,000).
  await store.close()
  t.equal(progressed, atUnsubscribe, `no progress after unsubscribing: the replay stopped at ${progressed} changes with its subscriber (before: it ran on to the end)`)
  t.ok(progressed < 300_000, `stopped at ${progressed} changes`)

  const again = new PgEventStore({ connectionString: world.db.url, maxConnections: 2 })
  t.teardown(() => again.close())
  const follow2$ = followGraph({ reader: again, snapshots: again, clock: again })
  const keep = follow2$.subscribe(() => {})
  t.teardown(() => keep.unsubscribe())
  await t.rejects(caughtUp(follow2$, 10_000_000, { timeoutMs: 200 }), { name: 'TimeoutError', message: /^event 10000000 not applied within 200 ms: the follower is (still building its graph|at event \d+)$/ }, 'an id that never comes: rejected after the timeout, saying where the follower is')
})

t.test('follow --snapshot-every with saves that keep failing: one retry at once, then every N events (not a capture on every batch)', async (t) => {
  const world = await setupWorld(t)
  const client = await world.sql.connect()
  t.teardown(() => client.release())
  const append = (n: number, from: number): Promise<unknown> => appendBatch(client, fixtureEvents(n, from))
  await append(10, 0)
  const port = await freePort()
  const follower = startPersistor(['follow', '--database-url', world.db.url, '--http-port', String(port), '--snapshot-every', '20'])
  t.teardown(() => follower.kill('SIGKILL'))
  await follower.waitFor((l) => l.msg === 'graph loaded; following', 'the follower to load')
  // Saving fails from now on (as without the INSERT right, or with a full disk).
  await world.sql.query('ALTER TABLE projection_snapshot RENAME TO projection_snapshot_away')
  t.teardown(() => world.sql.query('ALTER TABLE IF EXISTS projection_snapshot_away RENAME TO projection_snapshot'))
  for (let i = 0; i < 100; i++) {
    await append(1, 10 + i)
    await eventually('applied', async () => ((await (await fetch(`http://127.0.0.1:${port}/position`)).json()) as { lag: number }).lag === 0, { intervalMs: 2 })
  }
  follower.kill('SIGTERM')
  t.equal((await follower.exited).code, 0)
  const failures = follower.lines.filter((l) => typeof l.msg === 'string' && l.msg.startsWith('snapshot not saved')).length
  t.ok(failures >= 4 && failures <= 12, `${failures} failed saves over 100 events at --snapshot-every 20 (every 20 events, and one retry at once)`)
})

t.test('replay reads each page with the watermark of its own snapshot: a prune before the read stops it, one after the read of only published events does not', async (t) => {
  const { world: source, store } = await worldWithLog(t, 3_000)
  const target = await setupWorld(t)
  await declarePersistorTopology(target)
  const types = ['vitrage.graph.change']
  const { rows } = await source.sql.query<{ n: number; id: number }>(`SELECT count(*)::int AS n, (array_agg(id ORDER BY id))[200]::int AS id FROM event WHERE event_type = 'vitrage.graph.change'`)
  const changes = rows[0]?.n ?? 0
  const afterTwoHundred = rows[0]?.id ?? 0
  // A snapshot just past the first page of 200 graph changes; pruning below it deletes only
  // events that page held (or that the filter skips).
  t.equal((await cli(['snapshot', 'create', '--database-url', source.db.url, '--at-event', String(afterTwoHundred + 1), '--keep', '1'])).code, 0)
  let reads = 0
  const pruneAfterFirstRead = {
    readRawPage: store.readRawPage,
    prunedBelow: store.prunedBelow,
    readRawPageWithWatermark: (...a: Parameters<typeof store.readRawPageWithWatermark>) => async () => {
      const r = await store.readRawPageWithWatermark(...a)()
      if (++reads === 1) t.ok(E.isRight(await store.prune()()), 'pruned right after the first page was read')
      return r
    },
  }
  const base = { amqpUrl: target.broker.url, exchange: target.names.exchange, route: { routingKey: target.names.routingKey }, maxInFlight: 100, pageSize: 200, eventTypes: types }
  const whole = await republish(pruneAfterFirstRead, { ...base, fromId: 0, toId: 3_000 })
  t.match(whole, E.right({ published: changes }), `every graph change published: the prune removed only what was already read ${JSON.stringify(whole)}`)
  t.equal(await target.broker.depth(target.names.queue), changes)

  // A prune between two reads, of events not yet published: stopped, exactly where they start.
  t.equal((await cli(['snapshot', 'create', '--database-url', source.db.url, '--at-event', '2500', '--keep', '1'])).code, 0)
  let reads2 = 0
  const pruneBeforeSecondRead = {
    readRawPage: store.readRawPage,
    prunedBelow: store.prunedBelow,
    readRawPageWithWatermark: (...a: Parameters<typeof store.readRawPageWithWatermark>) => async () => {
      if (++reads2 === 2) t.ok(E.isRight(await store.prune()()), 'pruned below 2500 before the second page')
      return store.readRawPageWithWatermark(...a)()
    },
  }
  const first = (await source.sql.query<{ id: number }>(`SELECT min(id)::int AS id FROM event`)).rows[0]?.id ?? 0
  const cut = await republish(pruneBeforeSecondRead, { ...base, fromId: first - 1, toId: 3_000 })
  t.match(cut, E.left({ code: 'pruned' }))
  t.match(E.isLeft(cut) ? cut.left.message : '', /^events \d+ to 2499 were pruned during the replay/)
})
