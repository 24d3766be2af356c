import { testDatabaseClient } from '@vitrage-persistor/testing'
import t from 'tap'
import { schemaTemplate } from './migrate.js'
import { tailStart } from './read.js'

t.test('tailStart: where the newest n events (of some types, up to an id) start, the same in statements of any size', async (t) => {
  const c = await testDatabaseClient(t, schemaTemplate)
  // 2,000 events, ids from 101 (a rolled-back start), type c rare.
  await c.query(`SELECT setval(pg_get_serial_sequence('event', 'id'), 100)`)
  await c.query(`INSERT INTO event (message_id, event_type, collector_timestamp, payload)
    SELECT gen_random_uuid(), CASE WHEN i % 400 = 7 THEN 'c' WHEN i % 3 = 0 THEN 'a' ELSE 'b' END, now(), '{}' FROM generate_series(1, 2000) i`)
  const events = (await c.query<{ id: string; event_type: string }>('SELECT id, event_type FROM event ORDER BY id')).rows.map((r) => ({ id: Number(r.id), type: r.event_type }))
  const expected = (n: number, types: string[] | undefined, toId: number | undefined): number => {
    const newest = events.filter((e) => (toId === undefined || e.id <= toId) && (types === undefined || types.includes(e.type))).slice(-n)
    return newest.length === 0 ? 0 : (newest[0] as { id: number }).id - 1
  }
  let checked = 0
  for (const types of [undefined, ['a'], ['c'], ['a', 'c'], ['none'], []]) {
    for (const n of [1, 2, 5, 100, 5_000]) {
      for (const toId of [undefined, 50, 101, 900, 2_100, 9_999]) {
        for (const chunk of [13, 97, 1_000_000]) {
          const got = await tailStart(c, n, { ...(types ? { eventTypes: types } : {}), ...(toId !== undefined ? { toId } : {}) }, chunk)
          const want = expected(n, types, toId)
          if (got !== want) t.fail(`types ${JSON.stringify(types)}, n ${n}, toId ${toId}, chunk ${chunk}: ${got}, expected ${want}`)
          checked++
        }
      }
    }
  }
  t.pass(`${checked} combinations agree with the events read in full`)

  // A rare type: the walk back to its 3rd newest event is made of statements of 97 ids at most.
  const ranges: Array<[number, number]> = []
  const recorded = {
    query: (text: string, values?: unknown[]) => {
      if (text.includes('e.id > $1 AND e.id <= $2')) ranges.push([Number(values?.[0]), Number(values?.[1])])
      return c.query(text, values)
    },
  } as unknown as typeof c
  t.equal(await tailStart(recorded, 3, { eventTypes: ['c'] }, 97), expected(3, ['c'], undefined))
  t.ok(ranges.length > 10 && ranges.every(([low, high]) => high - low <= 97), `${ranges.length} statements of at most 97 ids`)
  t.same(ranges[0]?.[1], events.at(-1)?.id, 'from the head down')
})
