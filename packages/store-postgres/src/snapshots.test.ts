import { randomUUID } from 'node:crypto'
import { createTestDatabase, eventually, testDatabaseClient } from '@vitrage-persistor/testing'
import pg from 'pg'
import t, { type Test } from 'tap'
import { moveCheckpoint, readCheckpoint, registerCheckpoint, setCheckpoint } from './checkpoints.js'
import { schemaTemplate } from './migrate.js'
import { lastEventAtOrBefore, latestSnapshot, listSnapshots, prunedBelow, pruneEvents, retainSnapshots, retentionWatermark, saveSnapshot } from './snapshots.js'

const setup = async (t: Test, events: number): Promise<pg.Client> => {
  const c = await testDatabaseClient(t, schemaTemplate)
  for (let i = 1; i <= events; i++) {
    await c.query(`INSERT INTO event (message_id, event_type, collector_timestamp, payload) VALUES ($1, 'e', $2, '{}')`, [
      randomUUID(),
      `2024-01-01T00:00:${String(i).padStart(2, '0')}Z`,
    ])
  }
  return c
}

const bytes = (s: string): Uint8Array => new TextEncoder().encode(s)

t.test('snapshots: save, find the newest at or before an id, list, retain the newest K', async (t) => {
  const c = await setup(t, 10)
  for (const eventId of [3, 6, 9]) await saveSnapshot(c, { kind: 'graph', eventId, format: 'test/1', data: bytes(`state@${eventId}`), stats: { n: eventId } })
  await saveSnapshot(c, { kind: 'other', eventId: 10, format: 'test/1', data: bytes('x') })
  t.equal(new TextDecoder().decode((await latestSnapshot(c, 'graph'))?.data), 'state@9')
  t.equal((await latestSnapshot(c, 'graph', 8))?.eventId, 6)
  t.equal(await latestSnapshot(c, 'graph', 2), undefined)
  const listed = await listSnapshots(c, 'graph')
  t.same(listed.map((s) => [s.eventId, s.collectorTimestamp, s.bytes, s.stats]), [
    [3, '2024-01-01T00:00:03.000000Z', 7, { n: 3 }],
    [6, '2024-01-01T00:00:06.000000Z', 7, { n: 6 }],
    [9, '2024-01-01T00:00:09.000000Z', 7, { n: 9 }],
  ])
  t.equal(await retainSnapshots(c, 'graph', 2), 1)
  t.same((await listSnapshots(c, 'graph')).map((s) => s.eventId), [6, 9])
  t.same((await listSnapshots(c, 'other')).map((s) => s.eventId), [10], 'other kinds untouched')
  const again = await saveSnapshot(c, { kind: 'graph', eventId: 9, format: 'test/2', data: bytes('new') })
  t.equal(again?.format, 'test/2', 'saving the same position replaces it')
})

t.test('a snapshot that names its event message is saved only while the log holds that message there', async (t) => {
  const c = await setup(t, 3)
  const held = (await c.query<{ message_id: string }>('SELECT message_id FROM event WHERE id = 3')).rows[0]?.message_id as string
  const saved = await saveSnapshot(c, { kind: 'graph', eventId: 3, format: 'test/1', data: bytes('a'), eventMessageId: held })
  t.equal(saved?.eventId, 3, 'the log holds it: saved')
  t.equal(await saveSnapshot(c, { kind: 'graph', eventId: 3, format: 'test/1', data: bytes('b'), eventMessageId: randomUUID() }), undefined, 'another message at that id: not saved')
  t.equal(await saveSnapshot(c, { kind: 'graph', eventId: 7, format: 'test/1', data: bytes('c'), eventMessageId: held }), undefined, 'no event at that id: not saved')
  t.same((await listSnapshots(c, 'graph')).map((s) => s.eventId), [3])
  t.equal(new TextDecoder().decode((await latestSnapshot(c, 'graph'))?.data), 'a', 'the refused save did not replace the one saved')
})

t.test('the last event at or before a time', async (t) => {
  const c = await setup(t, 5)
  t.equal(await lastEventAtOrBefore(c, '2024-01-01T00:00:03.5Z'), 3)
  t.equal(await lastEventAtOrBefore(c, '2024-01-01T00:00:03Z'), 3, 'inclusive')
  t.equal(await lastEventAtOrBefore(c, '2023-12-31T00:00:00Z'), 0)
})

t.test('prune needs a snapshot, deletes below the oldest one, and never past a checkpoint', async (t) => {
  const c = await setup(t, 10)
  await t.rejects(pruneEvents(c), { message: /no graph snapshot/ })
  t.equal(await prunedBelow(c), 1, 'nothing pruned yet')
  await saveSnapshot(c, { kind: 'graph', eventId: 8, format: 'test/1', data: bytes('s') })
  await saveSnapshot(c, { kind: 'graph', eventId: 10, format: 'test/1', data: bytes('s') })
  await c.query(`INSERT INTO projection_checkpoint (name, position) VALUES ('history', 4)`)
  t.equal(await pruneEvents(c), 4, 'a reader at 4 keeps events 5 and later')
  t.equal(await prunedBelow(c), 5, 'the watermark follows what was deleted')
  await c.query(`UPDATE projection_checkpoint SET position = 10`)
  t.equal(await pruneEvents(c), 3, 'then down to the oldest snapshot (8)')
  t.same((await c.query('SELECT id FROM event ORDER BY id')).rows.map((r) => Number(r.id)), [8, 9, 10])
  t.equal(await prunedBelow(c), 8)
  t.equal(await pruneEvents(c, 3), 0, 'a lower bound deletes nothing more')
  t.equal(await prunedBelow(c), 8, 'and never moves the watermark down')
  await t.rejects(c.query('DELETE FROM event'), { message: /append-only/ }, 'a plain DELETE is still refused')
})

t.test('a reader that has read its checkpoint but copied nothing yet (a mirror whose server is down) holds prune back', async (t) => {
  const c = await setup(t, 10)
  await saveSnapshot(c, { kind: 'graph', eventId: 8, format: 'test/1', data: bytes('s') })
  t.equal(await registerCheckpoint(c, 'mirror-eventstore'), 0, 'registered at 0')
  t.equal(await registerCheckpoint(c, 'mirror-eventstore'), 0, 'idempotent')
  t.equal(await pruneEvents(c), 0, 'nothing deleted: the mirror has not copied event 1 yet')
  await c.query(`UPDATE projection_checkpoint SET position = 5 WHERE name = 'mirror-eventstore'`)
  t.equal(await registerCheckpoint(c, 'mirror-eventstore'), 5, 'registering again keeps the position')
  t.equal(await pruneEvents(c), 5, 'then only what it copied')
})

t.test('a prune is done in steps, each its own statement, so that none outlives the statement timeout', async (t) => {
  const c = await testDatabaseClient(t, schemaTemplate)
  await c.query(`INSERT INTO event (message_id, event_type, collector_timestamp, payload)
    SELECT gen_random_uuid(), 'e', now(), jsonb_build_object('i', i, 'pad', repeat('x', 400)) FROM generate_series(1, 100000) i`)
  await saveSnapshot(c, { kind: 'graph', eventId: 95_001, format: 'test/1', data: bytes('s') })
  // The statements the prune sends, on the real connection.
  const sent: unknown[][] = []
  const recorded = {
    query: (text: string, values?: unknown[]) => {
      if (text.includes('event_prune')) sent.push([text.match(/event_prune\w*/)?.[0], ...(values ?? [])])
      return c.query(text, values)
    },
  } as unknown as pg.Client
  t.equal(await pruneEvents(recorded, undefined, 10_000), 95_000, 'in steps, all of it')
  t.same(
    sent,
    [['event_prune_watermark', null], ...Array.from({ length: 10 }, (_, i) => ['event_prune', Math.min(95_001, 1 + (i + 1) * 10_000), 1 + i * 10_000])],
    'the watermark asked for, then one step per 10,000 ids, each from where the last was to end',
  )
  t.equal(await prunedBelow(c), 95_001)
  t.same((await c.query('SELECT min(id)::int AS first, count(*)::int AS n FROM event')).rows[0], { first: 95_001, n: 5_000 })
  t.equal(await pruneEvents(c, undefined, 10_000), 0, 'again: nothing more')

  // A step held back by a checkpoint set back meanwhile, and the reader moved on before the next
  // step: the next step deletes from the recorded watermark, not from where it was meant to
  // start, so no event is left below the watermark.
  const h = await testDatabaseClient(t, schemaTemplate)
  await h.query(`INSERT INTO event (message_id, event_type, collector_timestamp, payload) SELECT gen_random_uuid(), 'e', now(), '{}' FROM generate_series(1, 100)`)
  await saveSnapshot(h, { kind: 'graph', eventId: 100, format: 'test/1', data: bytes('s') })
  await h.query(`INSERT INTO projection_checkpoint (name, position) VALUES ('mirror', 99)`)
  let step = 0
  const meddling = {
    query: async (text: string, values?: unknown[]) => {
      if (text.includes('event_prune(')) {
        step++
        if (step === 2) await h.query(`UPDATE projection_checkpoint SET position = 25`)
        if (step === 3) await h.query(`UPDATE projection_checkpoint SET position = 99`)
      }
      return h.query(text, values)
    },
  } as unknown as pg.Client
  t.equal(await pruneEvents(meddling, undefined, 20), 99)
  t.same((await h.query('SELECT min(id)::int AS first, (SELECT pruned_below::int FROM event_retention) AS watermark FROM event')).rows[0], { first: 100, watermark: 100 })

  // Rows restored below the watermark with their old ids (a data-only restore): the next prune
  // starts from the first stored event, not the recorded watermark, and deletes them too; so
  // does a one-statement call (older versions' prune).
  const restore = (ids: string): Promise<unknown> =>
    h.query(`INSERT INTO event (id, message_id, event_type, collector_timestamp, payload) OVERRIDING SYSTEM VALUE SELECT i, gen_random_uuid(), 'e', now(), '{}' FROM generate_series(${ids}) AS i`)
  await restore('10, 19')
  t.equal(await pruneEvents(h, undefined, 20), 10)
  await restore('30, 34')
  t.equal(Number((await h.query('SELECT event_prune() AS n')).rows[0].n), 5)
  t.same((await h.query('SELECT min(id)::int AS first, (SELECT pruned_below::int FROM event_retention) AS watermark FROM event')).rows[0], { first: 100, watermark: 100 })

  // Ids with a gap (rolled-back appends consume ids): steps over the gap delete nothing and
  // still move the watermark, as one DELETE would have.
  const g = await testDatabaseClient(t, schemaTemplate)
  const insert = (n: number) => g.query(`INSERT INTO event (message_id, event_type, collector_timestamp, payload) SELECT gen_random_uuid(), 'e', now(), '{}' FROM generate_series(1, ${n})`)
  await insert(10)
  await g.query(`SELECT setval(pg_get_serial_sequence('event', 'id'), 24)`)
  await insert(6)
  await saveSnapshot(g, { kind: 'graph', eventId: 25, format: 'test/1', data: bytes('s') })
  t.equal(await pruneEvents(g, undefined, 5), 10)
  t.equal(await prunedBelow(g), 25, 'the watermark at the snapshot, past the gap')
  await t.rejects(pruneEvents(c, undefined, 0), /stepIds must be a positive integer/)
})

for (const isolation of ['read committed', 'repeatable read'] as const) {
  t.test(`checkpoint set and a prune running at the same time: the prune counts the moved checkpoint, or the move is refused (database default: ${isolation})`, async (t) => {
    const db = await createTestDatabase(schemaTemplate)
    t.teardown(() => db.drop())
    // At a higher default isolation, both sides would take their snapshot before the lock wait
    // unless they pin READ COMMITTED (event_prune refuses to run otherwise).
    const admin = new pg.Client({ connectionString: db.url })
    await admin.connect()
    await admin.query(`ALTER DATABASE ${pg.escapeIdentifier(db.name)} SET default_transaction_isolation = '${isolation}'`)
    await admin.end()
    const session = async (): Promise<pg.Client> => {
      const c = new pg.Client({ connectionString: db.url })
      await c.connect()
      t.teardown(() => c.end())
      return c
    }
    const [a, b, observer] = [await session(), await session(), await session()]
    const waitingForLock = async (): Promise<boolean> =>
      (await observer.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")).rows[0]?.n === 1
    await a.query(`INSERT INTO event (message_id, event_type, collector_timestamp, payload) SELECT gen_random_uuid(), 'e', now(), '{}' FROM generate_series(1, 100)`)
    await saveSnapshot(a, { kind: 'graph', eventId: 90, format: 'test/1', data: bytes('s') })
    await a.query(`INSERT INTO projection_checkpoint (name, position) VALUES ('r', 100)`)

    // A move in progress (what setCheckpoint does in its transaction, held open), then a prune:
    // the prune waits, then keeps what the moved reader needs.
    await a.query('BEGIN')
    await a.query("SELECT pg_advisory_xact_lock_shared(1986622578, hashtext('event_retention'))")
    await a.query("UPDATE projection_checkpoint SET position = 20 WHERE name = 'r'")
    const pruning = pruneEvents(b)
    await eventually('the prune waits for the move', waitingForLock)
    await a.query('COMMIT')
    t.equal(await pruning, 20, 'events 1-20 deleted, not 1-89')
    t.equal(await prunedBelow(a), 21)

    // A prune in progress (in a transaction of its own, held open), then a move below where it
    // deletes: the move waits, then is refused.
    await a.query(`UPDATE projection_checkpoint SET position = 100`)
    if (isolation !== 'read committed') {
      await t.rejects(b.query('SELECT event_prune(90)'), { code: '25000', message: /event_prune runs at READ COMMITTED only, this transaction is REPEATABLE READ/ })
    }
    await b.query('BEGIN ISOLATION LEVEL READ COMMITTED')
    t.equal(Number((await b.query('SELECT event_prune(90) AS n')).rows[0].n), 69)
    const moving = setCheckpoint(a, 'r', 30)
    await eventually('the move waits for the prune', waitingForLock)
    await b.query('COMMIT')
    t.same(await moving, { prunedBelow: 90 }, 'refused: events 31-89 are gone')
    t.equal(await readCheckpoint(a, 'r'), 100, 'the checkpoint did not move')
    t.same(await setCheckpoint(a, 'r', 89), { from: 100 }, 'the lowest it can take')
    t.same(await setCheckpoint(a, 'nobody', 95), { missing: true })
  })
}

t.test('a prune records the newest collector_timestamp it deleted, whatever the order of the ids', async (t) => {
  const c = await testDatabaseClient(t, schemaTemplate)
  t.same(await retentionWatermark(c), { prunedBelow: 1, prunedThrough: null }, 'nothing pruned')
  // Ids 1-6 out of time order (delivery order is not publish order): id 3 is the newest of them.
  for (const second of [10, 12, 30, 11, 13, 14, 31, 32]) {
    await c.query(`INSERT INTO event (message_id, event_type, collector_timestamp, payload) VALUES ($1, 'e', $2, '{}')`, [randomUUID(), `2024-01-01T00:00:${second}.123456Z`])
  }
  await saveSnapshot(c, { kind: 'graph', eventId: 7, format: 'test/1', data: bytes('s') })
  await c.query(`INSERT INTO projection_checkpoint (name, position) VALUES ('history', 3)`)
  t.equal(await pruneEvents(c), 3)
  t.same(await retentionWatermark(c), { prunedBelow: 4, prunedThrough: '2024-01-01T00:00:30.123456Z' }, 'the newest of ids 1-3, to the microsecond')
  await c.query(`UPDATE projection_checkpoint SET position = 10`)
  t.equal(await pruneEvents(c), 3)
  t.same(await retentionWatermark(c), { prunedBelow: 7, prunedThrough: '2024-01-01T00:00:30.123456Z' }, 'ids 4-6 are older: it never moves back')
})

t.test("a reader's checkpoint move never passes the newest stored event: a restore under it is not carried over", async (t) => {
  const c = await setup(t, 10)
  await moveCheckpoint(c, 'mirror', 0, 10, true)
  t.equal(await readCheckpoint(c, 'mirror'), 10)
  // Restored to event 6 meanwhile, the checkpoint with it (as a backup would hold them): the
  // reader's next move, from where the restore left it, over events it had read before.
  await c.query(`SELECT set_config('session_replication_role', 'replica', false)`)
  await c.query('DELETE FROM event WHERE id > 6')
  await c.query(`SELECT set_config('session_replication_role', 'origin', false)`)
  await t.rejects(moveCheckpoint(c, 'mirror', 10, 12, true), { name: 'CheckpointPastHead', message: /cannot move to 12: the newest stored event is 6/ })
  t.equal(await readCheckpoint(c, 'mirror'), 10, 'unchanged')
  await t.rejects(moveCheckpoint(c, 'fresh', 0, 7, true), { name: 'CheckpointPastHead' }, 'a first move too')
  await t.rejects(moveCheckpoint(c, 'mirror', 9, 6, true), { name: 'CheckpointConflict' }, 'within the log, a stale expected position is a conflict as before')
  await moveCheckpoint(c, 'history-like', 0, 50)
  t.equal(await readCheckpoint(c, 'history-like'), 50, 'without withinLog, as before')
})

t.test('an event stamped in the future (a fast publisher clock) bounds the pruned time at when it was stored, not at its stamp', async (t) => {
  const c = await testDatabaseClient(t, schemaTemplate)
  for (const at of ['2024-01-01T00:00:10Z', '2099-01-01T00:00:00Z', '2024-01-01T00:00:12Z', '2024-01-01T00:00:13Z']) {
    await c.query(`INSERT INTO event (message_id, event_type, collector_timestamp, payload) VALUES ($1, 'e', $2, '{}')`, [randomUUID(), at])
  }
  await saveSnapshot(c, { kind: 'graph', eventId: 4, format: 'test/1', data: bytes('s') })
  const before = Date.now()
  t.equal(await pruneEvents(c), 3)
  const through = (await retentionWatermark(c)).prunedThrough as string
  t.ok(through < '2099', `${through}: not the 2099 stamp`)
  t.ok(Date.parse(through) <= Date.now() && Date.parse(through) > before - 60_000, `${through}: when that event was stored`)
})
