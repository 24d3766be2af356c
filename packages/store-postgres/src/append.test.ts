import { randomUUID } from 'node:crypto'
import { type DecodedMessage, decodeMessage, encodeEnvelopeV2, encodeMessageText } from '@vitrage-persistor/core'
import { eventually, testDatabaseClient } from '@vitrage-persistor/testing'
import * as E from 'fp-ts/lib/Either.js'
import pg from 'pg'
import t, { type Test } from 'tap'
import { appendBatch, appendIsolating, COPY_CHUNK_CHARS, copyChunks, type PreparedEvent, prepareEvent } from './append.js'
import { schemaTemplate } from './migrate.js'
import { readPage } from './read.js'

const decoded = (payloadText: string, messageId: string = randomUUID(), eventType = 'test.event'): DecodedMessage => {
  const text = encodeMessageText({ messageId, eventType, publisherId: 'test', priority: 'INFO', timestamp: '2024-01-01 00:00:01.000002' }, payloadText)
  const r = decodeMessage(Buffer.from(encodeEnvelopeV2(text)), { maxMessageBytes: 1 << 24 })
  if (E.isLeft(r)) throw new Error(r.left.detail)
  return r.right
}
const message = (payloadText: string, messageId?: string): PreparedEvent => prepareEvent(decoded(payloadText, messageId))

const setup = async (t: Test): Promise<pg.Client> => {
  const client = await testDatabaseClient(t, schemaTemplate)
  return client
}

t.test('a batch is stored in batch order with every column', async (t) => {
  const client = await setup(t)
  const batch = [0, 1, 2, 3, 4].map((i) => message(`{"seq": ${i}, "tab\\tkey": "back\\\\slash"}`))
  const r = await appendBatch(client, batch)
  t.same(r.stored, [0, 1, 2, 3, 4])
  const rows = await readPage(client, 0, 100)
  t.ok(rows.every((e, i) => i === 0 || e.id > (rows[i - 1]?.id ?? 0)), 'ids increase with batch order')
  t.same(rows.map((e) => e.payload['seq']), [0, 1, 2, 3, 4])
  t.same(rows.map((e) => e.messageId), batch.map((m) => m.message.messageId))
  const first = rows[0]
  t.equal(first?.eventType, 'test.event')
  t.equal(first?.publisherId, 'test')
  t.equal(first?.priority, 'INFO')
  t.equal(first?.collectorTimestamp, '2024-01-01T00:00:01.000002Z')
  t.same(first?.payload, { seq: 0, 'tab\tkey': 'back\\slash' })
})

t.test('COPY text goes out in chunks of whole rows, none longer than the limit unless one row is', async (t) => {
  t.same([...copyChunks(['ab', 'cd', 'ef'], 4)], ['abcd', 'ef'])
  t.same([...copyChunks(['abcde', 'f', 'gh'], 4)], ['abcde', 'fgh'], 'a row longer than the limit is a chunk of its own')
  t.same([...copyChunks([], 4)], [])
  t.same([...copyChunks(['a', 'b'])], ['ab'], 'a normal batch is one chunk')
})

t.test('a batch larger than a COPY chunk is stored whole, by COPY and by the redelivery path', async (t) => {
  const client = await setup(t)
  // Three rows of ~600 KB (multi-byte text too): several chunks, cut only between rows.
  const big = (i: number): PreparedEvent => message(JSON.stringify({ i, blob: 'é'.repeat(300_000) + 'x'.repeat(300_000) }))
  const batch = [big(0), big(1), big(2)]
  t.ok(batch.reduce((n, p) => n + p.row.length, 0) > COPY_CHUNK_CHARS)
  const first = await appendBatch(client, batch)
  t.same(first.stored, [0, 1, 2])
  const again = await appendBatch(client, [...batch, big(3)])
  t.same(again.duplicates, [0, 1, 2], 'redelivered: the staging path, also chunked')
  t.same(again.stored, [3])
  const { rows } = await client.query<{ i: number; n: number }>("SELECT (payload->>'i')::int AS i, length(payload->>'blob') AS n FROM event ORDER BY id")
  t.same(rows, [0, 1, 2, 3].map((i) => ({ i, n: 600_000 })))
})

t.test('a redelivered message is stored once', async (t) => {
  const client = await setup(t)
  const batch = [message('{"a": 1}'), message('{"a": 2}')]
  await appendBatch(client, batch)
  const again = await appendBatch(client, [message('{"a": 3}'), ...batch])
  t.same(again.stored, [0])
  t.same(again.duplicates, [1, 2])
  t.same(again.conflicts, [])
  const within = await appendBatch(client, [batch[0] as PreparedEvent, batch[0] as PreparedEvent])
  t.same(within.duplicates, [0, 1], 'twice in one batch, already stored')
  const { rows } = await client.query('SELECT count(*)::int AS n FROM event')
  t.equal(rows[0].n, 3)
})

t.test('the same message_id with a different payload is a conflict, not a silent drop', async (t) => {
  const client = await setup(t)
  const id = randomUUID()
  await appendBatch(client, [message('{"v": 1}', id)])
  const r = await appendBatch(client, [message('{"v": 2}', id), message('{"v": 1}', id)])
  t.same(r.conflicts, [0])
  t.same(r.duplicates, [1])
  const fresh = randomUUID()
  const inBatch = await appendBatch(client, [message('{"v": 1}', fresh), message('{"v": 9}', fresh)])
  t.same(inBatch.stored, [0])
  t.same(inBatch.conflicts, [1], 'a later copy in the same batch is compared with the first')
})

t.test('numbers keep their exact text in jsonb', async (t) => {
  const client = await setup(t)
  await appendBatch(client, [message('{"huge": 1e400, "int": 1234567890123456789012345678901234567890, "f": 0.1000000000000000055511151231257827}')])
  const { rows } = await client.query(`SELECT payload->>'huge' AS huge, payload->>'int' AS int, payload->>'f' AS f FROM event`)
  t.equal(rows[0].int, '1234567890123456789012345678901234567890')
  t.equal(rows[0].f, '0.1000000000000000055511151231257827')
  const { rows: n } = await client.query(`SELECT (payload->'huge')::numeric = 1e400 AS exact FROM event`)
  t.equal(n[0].exact, true)
})

t.test('a row the database refuses is isolated; its neighbours are stored in order', async (t) => {
  const client = await setup(t)
  const good = [0, 1, 2, 3, 4, 5, 6].map((i) => message(`{"seq": ${i}}`))
  // Bypass the decoder's own check to reach the database's: jsonb refuses \u0000.
  const bad = prepareEvent({ ...decoded('{"seq": 99}'), payloadText: '{"s": "\\u0000"}' })
  const batch = [...good.slice(0, 3), bad, ...good.slice(3)]
  const r = await appendIsolating(client, batch)
  t.same(r.refused.map((x) => x.index), [3])
  t.equal(r.refused[0]?.failure.kind, 'rejected')
  t.match(r.refused[0]?.failure.message ?? '', /unsupported Unicode escape/)
  const rows = await readPage(client, 0, 100)
  t.same(rows.map((e) => e.payload['seq']), [0, 1, 2, 3, 4, 5, 6])
})

t.test('a message appended as a copy only is recognised when stored, never stored itself', async (t) => {
  const client = await setup(t)
  const kept = message('{"kept": 1}')
  await appendBatch(client, [kept])
  const twinId = randomUUID()
  const batch = [
    message('{"seq": 0}'),
    message('{"kept": 1}', kept.message.messageId), // a copy of a stored event: a duplicate
    message('{"kept": 2}', kept.message.messageId), // the same id, another payload: a conflict
    message('{"pruned": 1}'), // no stored event has its id: absent
    message('{"twin": 1}', twinId), // a copy of the next one, which this batch stores
    message('{"twin": 1}', twinId),
    message('{"seq": 1}'),
  ]
  const r = await appendBatch(client, batch, new Set([1, 2, 3, 4]))
  t.same(r, { stored: [0, 5, 6], duplicates: [1, 4], conflicts: [2], absent: [3] })
  const { rows } = await client.query<{ p: unknown }>('SELECT payload AS p FROM event ORDER BY id')
  t.same(rows.map((x) => x.p), [{ kept: 1 }, { seq: 0 }, { twin: 1 }, { seq: 1 }], 'the copies only left nothing behind')

  // Through the isolating append: a row the database refuses splits the batch, and the copies
  // keep their places.
  const bad = prepareEvent({ ...decoded('{"seq": 99}'), payloadText: '{"s": "\\u0000"}' })
  const split = await appendIsolating(client, [message('{"pruned": 2}'), bad, message('{"kept": 1}', kept.message.messageId), message('{"seq": 2}')], undefined, new Set([0, 2]))
  t.same({ ...split, refused: split.refused.map((x) => x.index) }, { stored: [3], duplicates: [2], conflicts: [], absent: [0], refused: [1] })
})

t.test('a redelivery whose stored twin a prune deletes during its append is still a duplicate, not absent', async (t) => {
  const client = await setup(t)
  const other = new pg.Client({ host: client.host, port: client.port, user: client.user, password: client.password ?? undefined, database: client.database })
  await other.connect()
  t.teardown(() => other.end())
  const old = message('{"old": 1}')
  await appendBatch(client, [old])
  // What event_prune does, committed between the append's INSERT and its lookup of what it skipped.
  const query = client.query.bind(client) as (...a: unknown[]) => Promise<unknown>
  ;(client as unknown as { query: unknown }).query = (...a: unknown[]) =>
    typeof a[0] === 'string' && a[0].startsWith('SELECT s.ord')
      ? other.query(`BEGIN; SELECT set_config('vitrage_persistor.retention', 'on', true); DELETE FROM event WHERE message_id = '${old.message.messageId}'; COMMIT`).then(() => query(...a))
      : query(...a)
  const r = await appendBatch(client, [message('{"new": 1}'), message('{"old": 1}', old.message.messageId)])
  t.same(r, { stored: [0], duplicates: [1], conflicts: [], absent: [] })
})

t.test('a copy whose twin comes later in its batch is a duplicate, also when a refused row splits them', async (t) => {
  const client = await setup(t)
  const bad = prepareEvent({ ...decoded('{"seq": 99}'), payloadText: '{"s": "\\u0000"}' })
  const twin = randomUUID()
  const other = randomUUID()
  const split = await appendIsolating(
    client,
    [message('{"twin": 1}', twin), message('{"other": 1}', other), message('{"gone": 1}'), bad, message('{"twin": 1}', twin), message('{"other": 2}', other)],
    undefined,
    new Set([0, 1, 2]),
  )
  t.same({ ...split, refused: split.refused.map((x) => x.index) }, { stored: [4, 5], duplicates: [0], conflicts: [1], absent: [2], refused: [3] })
})

// A batch larger than the socket's buffers (~8-10 MB on loopback) is still being written when
// the server ends its COPY with an error; pg-copy-streams then threw from the socket's 'drain'
// event, uncaught, and the process died (brianc/node-pg-copy-streams#171; patched, patches/).
const big = (n: number, kb: number): PreparedEvent[] => Array.from({ length: n }, (_, i) => message(JSON.stringify({ i, pad: 'x'.repeat(kb * 1024) })))

t.test('a redelivered batch of 20 MB is recognised, not a crash (the server ends the fast COPY while the client still writes)', async (t) => {
  const client = await setup(t)
  const batch = big(1000, 20)
  t.same((await appendBatch(client, batch)).stored.length, 1000)
  const again = await appendBatch(client, batch)
  t.same({ stored: again.stored.length, duplicates: again.duplicates.length }, { stored: 0, duplicates: 1000 })
})

t.test('a 20 MB append cancelled by its statement timeout while it waits for a lock fails as a value, and the connection stays usable', async (t) => {
  const client = await setup(t)
  const other = new pg.Client({ host: client.host, port: client.port, user: client.user, password: client.password ?? undefined, database: client.database })
  await other.connect()
  t.teardown(() => other.end())
  await other.query('BEGIN')
  await other.query('LOCK TABLE event IN ACCESS EXCLUSIVE MODE')
  await client.query("SET statement_timeout = '300ms'")
  await t.rejects(appendIsolating(client, big(1000, 20)), { code: '57014' })
  await other.query('COMMIT')
  await client.query('RESET statement_timeout')
  t.same((await appendBatch(client, [message('{"after": 1}')])).stored, [0], 'the next append on the same connection')
})

t.test('a reader following by id never skips while appenders overlap', async (t) => {
  const client = await setup(t)
  const url = (client as unknown as { connectionParameters: { database: string } }).connectionParameters.database
  const connect = async (): Promise<pg.Client> => {
    const c = new pg.Client({ connectionString: `postgres://root@127.0.0.1:5432/${url}` })
    await c.connect()
    t.teardown(() => c.end())
    return c
  }
  const [slow, fast] = [await connect(), await connect()]
  const fastPid = (fast as unknown as { processID: number }).processID
  // The slow appender draws its id and does not commit yet.
  await slow.query('BEGIN')
  await slow.query(`INSERT INTO event (message_id, event_type, collector_timestamp, payload) VALUES ($1, 'slow', now(), '{}')`, [randomUUID()])
  // The fast appender starts while the slow one is open; it must wait for the slow commit.
  let fastDone = false
  const fastInsert = fast
    .query(`INSERT INTO event (message_id, event_type, collector_timestamp, payload) VALUES ($1, 'fast', now(), '{}')`, [randomUUID()])
    .then(() => {
      fastDone = true
    })
  await eventually('the second appender to wait on the advisory lock', async () => {
    const { rows } = await client.query(`SELECT wait_event FROM pg_stat_activity WHERE pid = $1`, [fastPid])
    return rows[0]?.wait_event === 'advisory'
  })
  t.same(await readPage(client, 0, 10), [], 'a follower sees nothing while the first appender is open')
  t.equal(fastDone, false, 'the second appender waits for the first to commit')
  await slow.query('COMMIT')
  await fastInsert
  const seen = await readPage(client, 0, 10)
  t.same(seen.map((e) => e.eventType), ['slow', 'fast'])
  t.ok((seen[0]?.id ?? 0) < (seen[1]?.id ?? 0))
})

t.test('without the ordering trigger the same interleaving makes a follower skip (the test can fail)', async (t) => {
  const client = await setup(t)
  await client.query('ALTER TABLE event DISABLE TRIGGER event_serialize_appends')
  const db = (client as unknown as { connectionParameters: { database: string } }).connectionParameters.database
  const slow = new pg.Client({ connectionString: `postgres://root@127.0.0.1:5432/${db}` })
  await slow.connect()
  t.teardown(() => slow.end())
  await slow.query('BEGIN')
  await slow.query(`INSERT INTO event (message_id, event_type, collector_timestamp, payload) VALUES ($1, 'slow', now(), '{}')`, [randomUUID()])
  await client.query(`INSERT INTO event (message_id, event_type, collector_timestamp, payload) VALUES ($1, 'fast', now(), '{}')`, [randomUUID()])
  const firstRead = await readPage(client, 0, 10)
  t.same(firstRead.map((e) => e.eventType), ['fast'])
  await slow.query('COMMIT')
  const cursor = firstRead[0]?.id ?? 0
  t.same(await readPage(client, cursor, 10), [], 'the slow event, committed later with a lower id, is never seen')
})
