/**
 * Conformance of the mirror against the in-process EventStoreDB server (the real client, the
 * real wire protocol), and against a real server when ESDB_URL is set.
 */
import { randomUUID } from 'node:crypto'
import { readFileSync } from 'node:fs'
import { EventStoreDBClient, jsonEvent } from '@eventstore/db-client'
import { decodeMessage } from '@vitrage-persistor/core'
import { appendBatch, PgEventStore, prepareEvent, schemaTemplate } from '@vitrage-persistor/store-postgres'
import { createTestDatabase } from '@vitrage-persistor/testing'
import * as E from 'fp-ts/lib/Either.js'
import t, { type Test } from 'tap'
import { EventStoreMirror, type MirrorOptions, type MirrorProgress } from '../src/mirror.js'
import { TestEventStore } from './server.js'

const fixture = new URL('../../../test/fixtures/vitrage-seed7-400.raw.jsonl', import.meta.url)
const bodies = readFileSync(fixture, 'utf8').trim().split('\n').map((l) => Buffer.from((JSON.parse(l) as { body: string }).body))

/** A database holding the 400 captured events, and a store over it. */
const logWithFixtures = async (t: Test): Promise<{ store: PgEventStore; messageIds: string[]; types: string[]; url: string }> => {
  const db = await createTestDatabase(schemaTemplate)
  const store = new PgEventStore({ connectionString: db.url, maxConnections: 2 })
  t.teardown(async () => {
    await store.close()
    await db.drop()
  })
  const decoded = bodies.map((b) => (decodeMessage(b, { maxMessageBytes: 1 << 20 }) as E.Right<never>).right as { messageId: string; eventType: string })
  const client = await store.pool.connect()
  await appendBatch(client, decoded.map((d) => prepareEvent(d as never)))
  client.release()
  return { store, messageIds: decoded.map((d) => d.messageId), types: decoded.map((d) => d.eventType), url: db.url }
}

const server = async (t: Test, batchAppend = true): Promise<TestEventStore> => {
  const s = await TestEventStore.start({ batchAppend })
  t.teardown(() => s.close())
  return s
}

const mirrorOf = (t: Test, store: PgEventStore, url: string, options: Partial<MirrorOptions> = {}): EventStoreMirror => {
  const m = new EventStoreMirror({ reader: store, checkpoints: store }, { url, pageSize: 64, retry: { initialMs: 10, maxMs: 50 }, ...options })
  t.teardown(() => m.close())
  return m
}

const ids = (s: TestEventStore, stream: string): string[] => (s.streams().get(stream) ?? []).map((e) => e.id)

for (const batchAppend of [true, false]) {
  t.test(`every event once, in id order, with its id, type, data and metadata (${batchAppend ? 'BatchAppend' : 'Append'})`, async (t) => {
    const { store, messageIds, types } = await logWithFixtures(t)
    const esdb = await server(t, batchAppend)
    const r = await mirrorOf(t, store, esdb.connectionString).catchUp()
    t.same(r, E.right(400))
    const events = esdb.streams().get('vitrage-events') ?? []
    t.same(events.map((e) => e.id), messageIds)
    t.same(events.map((e) => e.type), types)
    t.same(events.map((e) => JSON.parse(Buffer.from(e.customMetadata).toString()).id), messageIds.map((_, i) => i + 1), 'metadata.id is the log id')
    const first = JSON.parse(Buffer.from(events[0]?.data ?? []).toString()) as Record<string, unknown>
    const stored = await store.readPage(0, 1)()
    t.same(first, E.isRight(stored) ? stored.right[0]?.payload : undefined, 'data is the payload')
    t.ok(batchAppend ? esdb.calls().batchAppend > 0 : esdb.calls().append > 0, 'took the expected append path')
    t.same(await store.checkpoint('mirror-eventstore')(), E.right(400))
  })
}

t.test('one stream per event type, each in id order', async (t) => {
  const { store, messageIds, types } = await logWithFixtures(t)
  const esdb = await server(t)
  await mirrorOf(t, store, esdb.connectionString, { streamPerType: true }).catchUp()
  for (const type of new Set(types)) {
    t.same(ids(esdb, `vitrage-events-${type}`), messageIds.filter((_, i) => types[i] === type), type)
  }
})

t.test('a crash after an append, before the checkpoint moved, duplicates nothing', async (t) => {
  const { store, messageIds } = await logWithFixtures(t)
  const esdb = await server(t)
  await mirrorOf(t, store, esdb.connectionString, { pageSize: 100 }).catchUp()
  // As if the last checkpoint moves had been lost: the checkpoint says 150, the stream holds 400.
  await store.pool.query(`UPDATE projection_checkpoint SET position = 150 WHERE name = 'mirror-eventstore'`)
  t.same(await mirrorOf(t, store, esdb.connectionString).catchUp(), E.right(400))
  t.same(ids(esdb, 'vitrage-events'), messageIds, 'each once: the stream itself says what it holds')
})

t.test('a lost acknowledgement is retried at the same revision without duplicates', async (t) => {
  const { store, messageIds } = await logWithFixtures(t)
  const esdb = await server(t)
  const m = mirrorOf(t, store, esdb.connectionString)
  esdb.failNextAppends(1, 'after-write')
  const first = await m.catchUp()
  t.ok(E.isLeft(first), 'the append looked failed')
  t.same(await m.catchUp(), E.right(400))
  t.same(ids(esdb, 'vitrage-events'), messageIds)
})

t.test('a failure anywhere in a run of pipelined appends leaves each event once, in id order', async (t) => {
  const { store, messageIds } = await logWithFixtures(t)
  // 400 events in pages of 25 with 4 in flight: 16 appends, the first alone (the call opens).
  for (const when of ['before-write', 'after-write'] as const) {
    for (const skip of [1, 2, 5, 9, 14]) {
      await store.pool.query(`DELETE FROM projection_checkpoint WHERE name = 'mirror-eventstore'`)
      const esdb = await server(t)
      const m = mirrorOf(t, store, esdb.connectionString, { pageSize: 25, pagesInFlight: 4 })
      esdb.failNextAppends(1, when, skip)
      const failed = await m.catchUp()
      t.match(failed, E.left({ kind: 'transient' }), `${when} after ${skip}: the catch-up reports the failure`)
      const checkpoint = await store.checkpoint('mirror-eventstore')()
      const held = ids(esdb, 'vitrage-events')
      t.ok(E.isRight(checkpoint) && checkpoint.right <= held.length, `${when} after ${skip}: the checkpoint (${JSON.stringify(checkpoint)}) is not ahead of the stream (${held.length})`)
      t.same(held, messageIds.slice(0, held.length), `${when} after ${skip}: a prefix of the log, in order`)
      t.same(await m.catchUp(), E.right(400))
      t.same(ids(esdb, 'vitrage-events'), messageIds, `${when} after ${skip}: then each event once`)
      await m.close()
      await esdb.close()
    }
  }
})

t.test('pipelined appends into one stream per event type keep each stream in id order', async (t) => {
  const { store, messageIds, types } = await logWithFixtures(t)
  const esdb = await server(t)
  esdb.failNextAppends(1, 'after-write', 7)
  const m = mirrorOf(t, store, esdb.connectionString, { streamPerType: true, pageSize: 16, pagesInFlight: 8 })
  t.match(await m.catchUp(), E.left({ kind: 'transient' }))
  t.same(await m.catchUp(), E.right(400))
  for (const type of new Set(types)) {
    t.same(ids(esdb, `vitrage-events-${type}`), messageIds.filter((_, i) => types[i] === type), type)
  }
})

t.test('close() returns after reconciling, even when the server has gone away', async (t) => {
  const { store } = await logWithFixtures(t)
  const esdb = await server(t)
  t.same(await mirrorOf(t, store, esdb.connectionString, { streamPerType: true }).catchUp(), E.right(400))
  await store.pool.query(`UPDATE projection_checkpoint SET position = 10 WHERE name = 'mirror-eventstore'`)
  // A new mirror reconciles every stream from the server, reading only the newest events of each.
  const m = mirrorOf(t, store, esdb.connectionString, { streamPerType: true })
  t.same(await m.catchUp(), E.right(400))
  await esdb.close()
  const closed = await Promise.race([m.close().then(() => 'closed'), new Promise((r) => setTimeout(r, 10_000, 'still closing after 10 s').unref())])
  t.equal(closed, 'closed')
})

t.test('a server that accepts connections and never answers: the catch-up fails (unavailable) within the deadline, status says so, close() is bounded', async (t) => {
  const { store } = await logWithFixtures(t)
  const { createServer } = await import('node:net')
  const sockets = new Set<import('node:net').Socket>()
  const hole = createServer((s) => void sockets.add(s))
  await new Promise<void>((r) => hole.listen(0, '127.0.0.1', r))
  t.teardown(() => {
    for (const s of sockets) s.destroy()
    return new Promise<void>((r) => hole.close(() => r()))
  })
  const url = `esdb://127.0.0.1:${(hole.address() as { port: number }).port}?tls=false`
  const m = new EventStoreMirror({ reader: store, checkpoints: store }, { url, appendTimeoutMs: 1_000, closeTimeoutMs: 1_000, retry: { initialMs: 10, maxMs: 50 } })
  const started = Date.now()
  const r = await m.catchUp()
  t.match(r, E.left({ kind: 'transient', code: 'unavailable' }), 'a value, not a hang')
  t.match(E.isLeft(r) ? r.left.message : '', /no answer to reading the state of vitrage-events within 1000 ms/)
  t.ok(Date.now() - started < 5_000, `failed after ${Date.now() - started} ms`)
  m.start()
  const status = m.status()
  t.ok(status.state === 'starting' || status.state === 'retrying')
  const closing = Date.now()
  const closed = await Promise.race([m.close().then(() => 'closed'), new Promise((r) => setTimeout(r, 10_000, 'still closing after 10 s').unref())])
  t.equal(closed, 'closed')
  t.ok(Date.now() - closing < 3_500, `closed in ${Date.now() - closing} ms`)
})

t.test('an outage fails the catch-up (transient), and the mirror resumes where it was', async (t) => {
  const { store, messageIds } = await logWithFixtures(t)
  const esdb = await server(t)
  const m = mirrorOf(t, store, esdb.connectionString)
  esdb.refuse(true)
  const down = await m.catchUp()
  t.match(down, E.left({ kind: 'transient' }))
  esdb.refuse(false)
  t.same(await m.catchUp(), E.right(400))
  t.same(ids(esdb, 'vitrage-events'), messageIds)
})

t.test('events someone else wrote to the stream are stepped over, not duplicated around', async (t) => {
  const { store, messageIds } = await logWithFixtures(t)
  const esdb = await server(t)
  const m = mirrorOf(t, store, esdb.connectionString, { pageSize: 100 })
  t.same(await m.catchUp(), E.right(400))
  const client = EventStoreDBClient.connectionString(esdb.connectionString)
  t.teardown(() => client.dispose())
  const intruder = randomUUID()
  await client.appendToStream('vitrage-events', jsonEvent({ id: intruder, type: 'intruder', data: {}, metadata: { note: 'not the mirror' } }))
  // More events in the log: the mirror's append at the revision it knew fails, it reconciles and goes on.
  const more = bodies.slice(0, 5).map((b) => {
    const d = (decodeMessage(b, { maxMessageBytes: 1 << 20 }) as E.Right<never>).right as { messageId: string }
    return prepareEvent({ ...(d as object), messageId: randomUUID() } as never)
  })
  const c = await store.pool.connect()
  await appendBatch(c, more)
  c.release()
  t.match(await m.catchUp(), E.left({ kind: 'transient', code: 'wrong-expected-version' }))
  t.same(await m.catchUp(), E.right(405))
  t.same(ids(esdb, 'vitrage-events'), [...messageIds, intruder, ...more.map((p) => p.message.messageId)])
})

const realUrl = process.env['ESDB_URL']
t.test('against a real EventStoreDB/KurrentDB server (ESDB_URL)', { skip: realUrl ? false : 'ESDB_URL is not set: the real-server cases are skipped (see docs/mirror.md to run one)' }, async (t) => {
  const { store, messageIds } = await logWithFixtures(t)
  const stream = `vitrage-events-test-${randomUUID()}`
  const m = mirrorOf(t, store, realUrl as string, { stream })
  t.same(await m.catchUp(), E.right(400))
  const client = EventStoreDBClient.connectionString(realUrl as string)
  t.teardown(() => client.dispose())
  const read: string[] = []
  for await (const e of client.readStream(stream)) if (e.event) read.push(e.event.id)
  t.same(read, messageIds)
  t.same(await mirrorOf(t, store, realUrl as string, { stream }).catchUp(), E.right(400), 'a second mirror from a reset checkpoint adds nothing')
})

t.test('events pruned before the mirror copied them are refused, not skipped; a mirror that has read its checkpoint holds prune back', async (t) => {
  const { store } = await logWithFixtures(t)
  const esdb = await server(t)
  const c = await store.pool.connect()
  t.teardown(() => c.release())
  await c.query(`INSERT INTO projection_snapshot (kind, event_id, format, data) VALUES ('graph', 250, 'test/1', '\\x00')`)
  // The mirror reads its checkpoint (registering it at 0) but its server is unreachable.
  const down = mirrorOf(t, store, 'esdb://127.0.0.1:1?tls=false')
  t.match(await down.catchUp(), E.left({ kind: 'transient' }))
  t.equal(Number((await c.query('SELECT event_prune() AS n')).rows[0].n), 0, 'prune deleted nothing the mirror still needs')
  // A mirror whose checkpoint was lost (or a prune run by hand past it): the gap is an error.
  await c.query(`DELETE FROM projection_checkpoint WHERE name = 'mirror-eventstore'`)
  t.ok(Number((await c.query('SELECT event_prune() AS n')).rows[0].n) > 0, 'without a checkpoint, prune deletes up to the snapshot')
  const progress: MirrorProgress[] = []
  const stuck = new EventStoreMirror({ reader: store, checkpoints: store, onProgress: (p) => progress.push(p) }, { url: esdb.connectionString, pageSize: 64 })
  t.teardown(() => stuck.close())
  const r = await stuck.catchUp()
  t.match(r, E.left({ kind: 'fatal', code: 'pruned' }))
  if (E.isLeft(r)) t.match(r.left.message, /events 1 to 249 were pruned before the mirror copied them/)
  const head = Number((await c.query('SELECT max(id) AS m FROM event')).rows[0].m)
  t.match(progress.at(-1), { position: 0, head, lagEvents: head }, 'the lag still shows: the mirror is stuck, not caught up')
  t.ok((progress.at(-1)?.lagSeconds ?? -1) >= 0)
})
