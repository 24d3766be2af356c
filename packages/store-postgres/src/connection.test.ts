import type pg from 'pg'
import t from 'tap'
import { UnansweredQueryWatch } from './connection.js'

/** Just what the watch reads of a node-postgres client: its query in flight, and its socket. */
const fakeClient = (): { client: pg.PoolClient; send: (q: unknown) => void; destroyed: () => number } => {
  let active: unknown = null
  let destroyed = 0
  const client = { _getActiveQuery: () => active, connection: { stream: { destroy: () => void destroyed++ } } } as unknown as pg.PoolClient
  return { client, send: (q) => (active = q), destroyed: () => destroyed }
}

t.test('a query unanswered past the limit has its connection dropped, once', async (t) => {
  const a = fakeClient()
  const drops: number[] = []
  const watch = new UnansweredQueryWatch(1_000, () => [a.client], (_c, ms) => drops.push(ms))
  t.teardown(() => watch.close())
  a.send({ text: 'COPY event FROM STDIN' })
  watch.check(0)
  watch.check(1_000)
  t.equal(a.destroyed(), 0, 'not at the limit')
  watch.check(1_001)
  t.equal(a.destroyed(), 1, 'past it')
  t.same(drops, [1_001])
  t.ok(watch.droppedIt(a.client))
  watch.check(5_000)
  t.equal(a.destroyed(), 1, 'dropped once')
})

t.test('each query is timed from when it is first seen: a busy connection answering its queries is kept', async (t) => {
  const a = fakeClient()
  const watch = new UnansweredQueryWatch(1_000, () => [a.client])
  t.teardown(() => watch.close())
  for (let now = 0; now <= 10_000; now += 500) {
    a.send({ n: now })
    watch.check(now)
  }
  t.equal(a.destroyed(), 0)
  t.notOk(watch.droppedIt(a.client))
})

t.test('idle clients and clients no longer checked out are not timed', async (t) => {
  const a = fakeClient()
  let clients: pg.PoolClient[] = [a.client]
  const watch = new UnansweredQueryWatch(1_000, () => clients)
  t.teardown(() => watch.close())
  watch.check(0)
  watch.check(5_000)
  t.equal(a.destroyed(), 0, 'idle')
  const query = { text: 'SELECT 1' }
  a.send(query)
  watch.check(6_000)
  clients = []
  watch.check(6_500)
  // The same query object when it is checked out again (a pool reuses clients): timed afresh.
  clients = [a.client]
  watch.check(7_000)
  watch.check(7_900)
  t.equal(a.destroyed(), 0, 'timed from when it was seen again')
  watch.check(8_001)
  t.equal(a.destroyed(), 1)
})
