import { createTestDatabase, eventually } from '@vitrage-persistor/testing'
import * as E from 'fp-ts/lib/Either.js'
import pg from 'pg'
import t from 'tap'
import { schemaTemplate } from './migrate.js'
import { tryLease } from './lease.js'

t.test('a lease has one holder at a time; released or lost with its connection, another can take it', async (t) => {
  const db = await createTestDatabase(schemaTemplate)
  t.teardown(db.drop)
  const first = await tryLease(db.url, 'q')
  if (E.isLeft(first) || first.right === undefined) throw new Error('first lease not taken')
  const second = await tryLease(db.url, 'q')
  t.same(second, E.right(undefined), 'held: the second is refused')
  const other = await tryLease(db.url, 'another queue')
  t.ok(E.isRight(other) && other.right !== undefined, 'another name is another lease')
  if (E.isRight(other)) await other.right?.release()
  await first.right.release()
  await first.right.release()
  const third = await tryLease(db.url, 'q')
  if (E.isLeft(third) || third.right === undefined) throw new Error('not taken after release')
  // The holder's session is killed (a failover, an operator): the lease is lost, and free again.
  const admin = new pg.Client({ connectionString: db.url })
  await admin.connect()
  t.teardown(() => admin.end())
  await admin.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'vitrage-persistor lease q'`)
  await third.right.lost
  t.pass('lost resolves when its connection dies')
  // The client sees its socket close before the backend has finished exiting and released its
  // locks: the next holder may need another try (as a standby's every 2 s).
  const fourth = await eventually('taken by the next', async () => {
    const r = await tryLease(db.url, 'q')
    return E.isRight(r) ? r.right : undefined
  })
  t.pass('taken by the next')
  await fourth.release()
  await third.right.release()
})
