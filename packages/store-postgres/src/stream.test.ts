import { randomUUID } from 'node:crypto'
import type { LogEntry } from '@vitrage-persistor/core'
import { createTestDatabase, testDatabaseClient } from '@vitrage-persistor/testing'
import { to as copyTo } from 'pg-copy-streams'
import t from 'tap'
import { schemaTemplate } from './migrate.js'
import { readPage } from './read.js'
import { PgEventStore } from './store.js'
import { BinaryCopyParser, nextChunkIds, STREAM_CHUNKING, streamRange, streamSql } from './stream.js'

t.test('a streamed range equals the pages, whatever the chunking', async (t) => {
  const c = await testDatabaseClient(t, schemaTemplate)
  for (let i = 0; i < 300; i++) {
    await c.query(`INSERT INTO event (message_id, event_type, collector_timestamp, payload) VALUES ($1, $2, now(), $3)`, [
      randomUUID(),
      i % 3 === 0 ? 'a' : 'b',
      JSON.stringify({ i, s: `é\\"\n\t${'x'.repeat(i)}`, n: [1.5, null, true] }),
    ])
  }
  const pages = (await readPage(c, 10, 1000, { toId: 250, eventTypes: ['a'] })).map((e) => ({ id: e.id, messageId: e.messageId, eventType: e.eventType, payload: e.payload }))
  const streamed: LogEntry[] = []
  t.equal(await streamRange(c, 10, 250, { eventTypes: ['a'] }, (e) => streamed.push(e)), pages.length)
  t.same(streamed, pages)

  // The same bytes fed to the parser one small chunk at a time.
  const raw: Buffer[] = []
  await new Promise<void>((resolve, reject) => {
    const s = c.query(copyTo(streamSql(0, 300)))
    s.on('data', (d: Buffer) => raw.push(d))
    s.on('end', () => resolve())
    s.on('error', reject)
  })
  const all = Buffer.concat(raw)
  const parsed: LogEntry[] = []
  const parser = new BinaryCopyParser((e) => parsed.push(e))
  for (let i = 0; i < all.length; i += 7) parser.push(all.subarray(i, i + 7))
  t.equal(parsed.length, 300)
  t.same(parsed.map((e) => e.payload['i']), Array.from({ length: 300 }, (_, i) => i))
  t.throws(() => streamSql(0.5, 1), /integers/)
  t.match(streamSql(0, 9, { eventTypes: ["it's"] }), /event_type IN \(E'it''s'\)/, 'types are quoted')
  t.ok(streamSql(0, 9, { eventTypes: ["a\\', 'b"] }).includes("IN (E'a\\\\'', ''b')"), 'a backslash is escaped too: the quote after it stays inside the literal')
})

/** One binary COPY stream (signature, flags, no extension, rows, trailer) built by hand. */
const copyBytes = (rows: Array<Array<Buffer | null>>): Buffer => {
  const parts: Buffer[] = [Buffer.from('PGCOPY\n\xff\r\n\0', 'latin1'), Buffer.alloc(8)]
  for (const fields of rows) {
    const head = Buffer.alloc(2)
    head.writeInt16BE(fields.length)
    parts.push(head)
    for (const f of fields) {
      const len = Buffer.alloc(4)
      len.writeInt32BE(f === null ? -1 : f.length)
      parts.push(len, ...(f === null ? [] : [f]))
    }
  }
  const trailer = Buffer.alloc(2)
  trailer.writeInt16BE(-1)
  return Buffer.concat([...parts, trailer])
}

const int8 = (n: bigint): Buffer => {
  const b = Buffer.alloc(8)
  b.writeBigInt64BE(n)
  return b
}

t.test('BinaryCopyParser: ids past 2^32 exact, any chunking; a NULL field or another row width is an error', async (t) => {
  const ids = [1n, 2n ** 32n - 1n, 2n ** 32n, 2n ** 32n + 5n, 2n ** 40n + 123n, 2n ** 53n - 1n]
  const bytes = copyBytes(ids.map((id) => [int8(id), Buffer.from('m'), Buffer.from('t'), Buffer.from('{"k": 1}')]))
  for (const step of [1, 3, 64, bytes.length]) {
    const seen: number[] = []
    const parser = new BinaryCopyParser((e) => seen.push(e.id))
    for (let i = 0; i < bytes.length; i += step) parser.push(bytes.subarray(i, i + step))
    t.same(seen, ids.map(Number), `chunks of ${step}`)
  }
  // Rows longer than the part of a chunk joined to a cut row (16 KiB), among short ones.
  const big = (n: number): Buffer => Buffer.from(JSON.stringify({ s: 'é'.repeat(n) }))
  const sizes = [10, 40_000, 5, 17_000, 16_384, 3, 100_000]
  const mixed = copyBytes(sizes.map((n, i) => [int8(BigInt(i + 1)), Buffer.from(`m${i}`), Buffer.from('t'), big(n)]))
  for (const step of [1_000, 16_383, 20_000, 65_536]) {
    const seen: Array<[number, number]> = []
    const parser = new BinaryCopyParser((e) => seen.push([e.id, (e.payload['s'] as string).length]))
    let count = 0
    for (let i = 0; i < mixed.length; i += step) {
      const chunk = Buffer.from(mixed.subarray(i, i + step))
      count += parser.push(chunk)
      chunk.fill(0xaa) // the caller may reuse its buffer once push returns
    }
    t.same(seen, sizes.map((n, i) => [i + 1, n]), `long rows, chunks of ${step}`)
    t.equal(count, sizes.length, 'push counts each entry once')
  }
  const withNull = copyBytes([[int8(1n), Buffer.from('m'), null, Buffer.from('{}')]])
  t.throws(() => new BinaryCopyParser(() => {}).push(withNull), /event_type is NULL/)
  const threeFields = copyBytes([[int8(1n), Buffer.from('m'), Buffer.from('t')]])
  t.throws(() => new BinaryCopyParser(() => {}).push(threeFields), /3 fields, expected 4/)
})

t.test("a throw in the stream's consumer is a defect: thrown at once, its connection dropped, the pool still usable", async (t) => {
  const db = await createTestDatabase(schemaTemplate)
  t.teardown(() => db.drop())
  const store = new PgEventStore({ connectionString: db.url, maxConnections: 1 })
  t.teardown(() => store.close())
  await store.pool.query(`INSERT INTO event (message_id, event_type, collector_timestamp, payload)
    SELECT gen_random_uuid(), 'a', now(), jsonb_build_object('i', i, 'pad', repeat('x', 200)) FROM generate_series(1, 50000) i`)
  let n = 0
  const boom = new Error('boom')
  await t.rejects(
    store.streamRange(0, 50_000, {}, () => {
      if (++n === 10) throw boom
    })(),
    boom,
    'the defect itself, thrown (not a Left to retry for ever)',
  )
  t.equal(n, 10, 'the consumer is not called again after it threw (the rest of the range is not streamed to it)')
  t.same(await store.headId()(), { _tag: 'Right', right: 50_000 }, 'the one pooled connection is usable again (replaced)')
})

t.test('a range that takes longer to consume than the statement timeout is read whole, in statements that each fit it', async (t) => {
  const c = await testDatabaseClient(t, schemaTemplate)
  await c.query(`INSERT INTO event (message_id, event_type, collector_timestamp, payload)
    SELECT gen_random_uuid(), 'a', now(), jsonb_build_object('i', i, 'pad', repeat('x', 2000)) FROM generate_series(1, 20000) i`)
  await c.query('SET statement_timeout = 1000')
  // A consumer that takes at least 2 s for 10,000 events (it blocks 20 ms every 100), as a replay
  // into a large graph may. It sleeps rather than spins: a starved machine makes it slower, never
  // faster, so the whole range always outlasts the timeout, while a statement sized to a fraction
  // of it keeps a wide margin. The range is ~20 MB, more than the sockets buffer: the server
  // waits for the consumer.
  const pause = new Int32Array(new SharedArrayBuffer(4))
  const slowly =
    (ids: number[]) =>
    (e: LogEntry): void => {
      ids.push(e.id)
      if (ids.length % 100 === 0) Atomics.wait(pause, 0, 0, 20)
    }
  const whole = { startIds: 1_000_000, maxIds: 1_000_000 }
  await t.rejects(streamRange(c, 0, 10_000, {}, slowly([]), whole), { code: '57014' }, 'one statement for the range is cancelled')
  // 250 ids a statement: ~50 ms of the consumer's time each, a twentieth of the timeout.
  const ids: number[] = []
  t.equal(await streamRange(c, 0, 10_000, {}, slowly(ids), { startIds: 250, maxIds: 250 }), 10_000)
  t.same(ids, Array.from({ length: 10_000 }, (_, i) => i + 1), 'every event, in id order')
  // The default sizing, with room for 100,000 ids a statement: it takes the statement timeout
  // (1 s here) into account and keeps each statement to a sixth of it (~800 ids after the first
  // 1,000). Growing by 8 times regardless, its second statement (8,000 ids, 1.6 s) would be cancelled.
  const adaptive: number[] = []
  t.equal(await streamRange(c, 0, 10_000, {}, slowly(adaptive)), 10_000, 'read whole by the default sizing')
  t.same(adaptive, ids)
  const few: number[] = []
  t.equal(await streamRange(c, 15_500, 17_250, {}, (e) => void few.push(e.id), { startIds: 1_000, maxIds: 1_000 }), 1_750, 'a range that does not start or end on a chunk')
  t.same([few[0], few.at(-1), few.length], [15_501, 17_250, 1_750])
  t.equal(await streamRange(c, 500, 500, {}, () => t.fail('no events')), 0, 'an empty range')
  // Where no event of the types is stored, the read still says how far it got, statement by statement.
  const through: number[] = []
  t.equal(await streamRange(c, 15_500, 17_250, { eventTypes: ['none'], onThrough: (id) => void through.push(id) }, () => t.fail('no events of that type'), { startIds: 1_000, maxIds: 1_000 }), 0)
  t.same(through, [16_500, 17_250], "through each statement's end, the range's last")
  await t.rejects(streamRange(c, 0, 1, {}, () => {}, { maxIds: 0 }), /maxIds must be a positive integer/)
  await t.rejects(streamRange(c, 0, 1, {}, () => {}, { timeoutShare: 0 }), /timeoutShare must be in \(0, 1\]/)
})

t.test('large payloads: each statement is sized so that it stays within the byte budget, whatever the ids', async (t) => {
  const c = await testDatabaseClient(t, schemaTemplate)
  // 400 events of ~256 KiB (100 MB in all), then 10,000 small ones.
  await c.query(`INSERT INTO event (message_id, event_type, collector_timestamp, payload)
    SELECT gen_random_uuid(), 'a', now(), jsonb_build_object('i', i, 'pad', repeat(md5(i::text), 8192)) FROM generate_series(1, 400) i`)
  await c.query(`INSERT INTO event (message_id, event_type, collector_timestamp, payload)
    SELECT gen_random_uuid(), 'a', now(), jsonb_build_object('i', i) FROM generate_series(401, 10400) i`)
  const statements: Array<[number, number]> = []
  const spied = new Proxy(c, {
    get(target, key, receiver) {
      if (key !== 'query') return Reflect.get(target, key, receiver)
      return (q: unknown, ...rest: unknown[]) => {
        const text = (q as { text?: string })?.text ?? (typeof q === 'string' ? q : '')
        const m = /WHERE id > (\d+) AND id <= (\d+)/.exec(text)
        if (m) statements.push([Number(m[1]), Number(m[2])])
        return (target.query as (...a: unknown[]) => unknown).call(target, q, ...rest)
      }
    },
  })
  let n = 0
  let last = 0
  const budget = 4 * 1024 * 1024
  t.equal(await streamRange(spied, 0, 10_400, {}, (e) => {
    n++
    if (e.id !== last + 1) t.fail(`event ${e.id} after ${last}`)
    last = e.id
  }, { startIds: 100, bytes: budget }), 10_400)
  t.equal(n, 10_400)
  const spans = statements.map(([a, b]) => b - a)
  t.same(statements[0], [0, 100], 'the first covers startIds')
  t.same(statements.map(([a]) => a).slice(1), statements.map(([, b]) => b).slice(0, -1), 'each starts where the last ended')
  // ~256 KiB an event: after the first (100 events, ~26 MB), 16 events a statement (4 MiB).
  t.ok(spans.slice(1).filter((_, i) => (statements[i + 1]?.[1] ?? 0) <= 400).every((span) => span <= 16), `big events: at most 16 a statement (${spans.join(', ')})`)
  t.ok(Math.max(...spans) > 1_000, 'and more ids a statement again once the events are small')
})

t.test('nextChunkIds: the last statement scaled to the byte and time budgets, at most 8 times more ids, at least 1', async (t) => {
  const c = STREAM_CHUNKING
  t.equal(nextChunkIds({ ids: 1_000, bytes: 700_000, ms: 5 }, c, 60_000), 8_000, 'small and fast: 8 times more')
  t.equal(nextChunkIds({ ids: 80_000, bytes: 56_000_000, ms: 400 }, c, 60_000), 95_869, 'bounded by 64 MiB')
  t.equal(nextChunkIds({ ids: 100_000, bytes: 1_000_000, ms: 10 }, c, 60_000), 100_000, 'never past maxIds')
  t.equal(nextChunkIds({ ids: 10_000, bytes: 1_000_000, ms: 20_000 }, c, 60_000), 5_000, 'a slow consumer: a sixth of the timeout')
  t.equal(nextChunkIds({ ids: 10_000, bytes: 1_000_000, ms: 20_000 }, c, 0), 80_000, 'no statement timeout: no time bound')
  t.equal(nextChunkIds({ ids: 1_000, bytes: 0, ms: 1 }, c, 60_000), 8_000, 'a range of no events grows')
  t.equal(nextChunkIds({ ids: 2, bytes: 1_000_000_000, ms: 100_000 }, c, 60_000), 1, 'at least one id')
})
