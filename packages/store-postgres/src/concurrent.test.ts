import { randomUUID } from 'node:crypto'
import { decodeMessage, encodeEnvelopeV2, encodeMessageText } from '@vitrage-persistor/core'
import { createTestDatabase } from '@vitrage-persistor/testing'
import * as E from 'fp-ts/lib/Either.js'
import pg from 'pg'
import t from 'tap'
import { appendBatch, type PreparedEvent, prepareEvent } from './append.js'
import { schemaTemplate } from './migrate.js'
import { readPage } from './read.js'

const WRITERS = 4
const BATCHES = 40
const BATCH = 25

const message = (writer: number, seq: number): PreparedEvent => {
  const text = encodeMessageText(
    { messageId: randomUUID(), eventType: 'test.concurrent', publisherId: `w${writer}`, priority: 'INFO', timestamp: '2024-01-01 00:00:00' },
    JSON.stringify({ writer, seq }),
  )
  const r = decodeMessage(Buffer.from(encodeEnvelopeV2(text)), { maxMessageBytes: 1 << 20 })
  if (E.isLeft(r)) throw new Error(r.left.detail)
  return prepareEvent(r.right)
}

t.test(`${WRITERS} concurrent appenders: a follower sees every event once, in increasing id order`, async (t) => {
  const db = await createTestDatabase(schemaTemplate)
  const clients: pg.Client[] = []
  for (let i = 0; i <= WRITERS; i++) {
    const c = new pg.Client({ connectionString: db.url })
    await c.connect()
    clients.push(c)
  }
  t.teardown(async () => {
    for (const c of clients) await c.end()
    await db.drop()
  })
  const [follower, ...writers] = clients as [pg.Client, ...pg.Client[]]
  const total = WRITERS * BATCHES * BATCH
  const writing = writers.map(async (c, w) => {
    for (let b = 0; b < BATCHES; b++) {
      await appendBatch(c, Array.from({ length: BATCH }, (_, i) => message(w, b * BATCH + i)))
    }
  })
  const seen: Array<{ id: number; writer: number; seq: number }> = []
  let cursor = 0
  let done = false
  void Promise.all(writing).then(() => {
    done = true
  })
  // Small pages while writers run, so the follower reads between many commits.
  while (seen.length < total) {
    const page = await readPage(follower, cursor, 7)
    for (const e of page) {
      seen.push({ id: e.id, writer: e.payload['writer'] as number, seq: e.payload['seq'] as number })
      cursor = e.id
    }
    if (page.length === 0 && done) {
      const rest = await readPage(follower, cursor, total)
      if (rest.length === 0) break
    }
  }
  await Promise.all(writing)
  t.equal(seen.length, total, 'every event seen')
  t.ok(seen.every((e, i) => i === 0 || e.id > (seen[i - 1]?.id ?? 0)), 'ids strictly increase')
  const { rows } = await follower.query<{ n: number }>('SELECT count(*)::int AS n FROM event')
  t.equal(rows[0]?.n, total, 'the follower saw exactly what the table holds')
  for (let w = 0; w < WRITERS; w++) {
    const mine = seen.filter((e) => e.writer === w).map((e) => e.seq)
    t.same(mine, Array.from({ length: BATCHES * BATCH }, (_, i) => i), `writer ${w}'s events in its own order`)
  }
})
