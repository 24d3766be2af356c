import { randomUUID } from 'node:crypto'
import type { LogEntry } from '@vitrage-persistor/core'
import { testDatabaseClient } from '@vitrage-persistor/testing'
import { to as copyTo } from 'pg-copy-streams'
import t from 'tap'
import { schemaTemplate } from './migrate.js'
import { readPage } from './read.js'
import { BinaryCopyParser, streamRange, streamSql } from './stream.js'

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
  t.match(streamSql(0, 9, { eventTypes: ["it's"] }), /event_type IN \('it''s'\)/, 'types are quoted')
})
