import type pg from 'pg'
import t from 'tap'
import { UnansweredQueryWatch } from './connection.js'

/** Just what the watch reads of a node-postgres client: its query in flight, and its socket. */
const fakeClient = (): { client: pg.PoolClient; send: (q: unknown) => void; receive: (n: number) => void; destroyed: () => number } => {
  let active: unknown = null
  let destroyed = 0
  const stream = { bytesRead: 0, destroy: () => void destroyed++ }
  const client = { _getActiveQuery: () => active, connection: { stream } } as unknown as pg.PoolClient
  return { client, send: (q) => (active = q), receive: (n) => void (stream.bytesRead += n), destroyed: () => destroyed }
}

/** Checks from `from` to `to` every `step` ms (on time: the watch's interval is limit / 4). */
const checks = (watch: UnansweredQueryWatch, from: number, to: number, step = 250): void => {
  for (let now = from; now <= to; now += step) watch.check(now)
}

t.test('a query unanswered past the limit has its connection dropped, once', async (t) => {
  const a = fakeClient()
  const drops: number[] = []
  const watch = new UnansweredQueryWatch(1_000, () => [a.client], (_c, ms) => drops.push(ms))
  t.teardown(() => watch.close())
  a.send({ text: 'COPY event FROM STDIN' })
  checks(watch, 0, 1_000)
  t.equal(a.destroyed(), 0, 'not at the limit')
  watch.check(1_200)
  t.equal(a.destroyed(), 1, 'past it')
  t.same(drops, [1_200])
  t.ok(watch.droppedIt(a.client))
  checks(watch, 1_400, 5_000)
  t.equal(a.destroyed(), 1, 'dropped once')
})

t.test('each query is timed from when it is first seen: a busy connection answering its queries is kept', async (t) => {
  const a = fakeClient()
  const watch = new UnansweredQueryWatch(1_000, () => [a.client])
  t.teardown(() => watch.close())
  for (let now = 0; now <= 10_000; now += 250) {
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
  checks(watch, 0, 5_000)
  t.equal(a.destroyed(), 0, 'idle')
  const query = { text: 'SELECT 1' }
  a.send(query)
  checks(watch, 5_250, 6_000)
  clients = []
  checks(watch, 6_250, 6_500)
  // The same query object when it is checked out again (a pool reuses clients): timed afresh.
  clients = [a.client]
  checks(watch, 6_750, 7_750)
  t.equal(a.destroyed(), 0, 'timed from when it was seen again')
  watch.check(8_000)
  t.equal(a.destroyed(), 1)
})

t.test('a query whose connection keeps receiving bytes is kept, however long it runs (a streamed read, a slow consumer)', async (t) => {
  const a = fakeClient()
  const watch = new UnansweredQueryWatch(1_000, () => [a.client])
  t.teardown(() => watch.close())
  a.send({ text: 'COPY (SELECT ...) TO STDOUT' })
  for (let now = 0; now <= 10_000; now += 250) {
    if (now % 750 === 0) a.receive(65_536)
    watch.check(now)
  }
  t.equal(a.destroyed(), 0, 'bytes every 750 ms')
  checks(watch, 10_250, 11_250)
  t.equal(a.destroyed(), 1, 'then silence past the limit')
})

t.test('a check that runs late (the event loop was blocked) times everything afresh instead of dropping', async (t) => {
  const a = fakeClient()
  const watch = new UnansweredQueryWatch(1_000, () => [a.client])
  t.teardown(() => watch.close())
  a.send({ text: 'SELECT pg_sleep(0.6)' })
  checks(watch, 0, 500)
  // Blocked for 2 s: the reply may be waiting in the socket, read only after this check.
  watch.check(2_500)
  t.equal(a.destroyed(), 0, 'not dropped on a late check')
  checks(watch, 2_750, 3_500)
  t.equal(a.destroyed(), 0, 'timed from the late check')
  watch.check(3_750)
  t.equal(a.destroyed(), 1, 'then as usual')
})
