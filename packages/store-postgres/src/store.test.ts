import { decodeMessage, encodeEnvelopeV2, encodeMessageText, STORE_CLOSED } from '@vitrage-persistor/core'
import { createTestDatabase, databaseUrl, eventually } from '@vitrage-persistor/testing'
import * as E from 'fp-ts/lib/Either.js'
import pg from 'pg'
import { from as copyFrom } from 'pg-copy-streams'
import t from 'tap'
import { prepareEvent } from './append.js'
import { schemaTemplate } from './migrate.js'
import { PgEventStore } from './store.js'

t.test('a call made just before close() settles as store-closed (pg-pool never settles a connect that end() overtook)', async (t) => {
  const db = await createTestDatabase(schemaTemplate)
  t.teardown(() => db.drop())
  for (let round = 0; round < 5; round++) {
    const store = new PgEventStore({ connectionString: db.url, maxConnections: 2 })
    t.same(await store.headId()(), E.right(0), 'an idle client in the pool')
    const pending = store.headId()()
    await store.close()
    const settled = await Promise.race([pending, new Promise<'hung'>((r) => setTimeout(() => r('hung'), 3_000).unref())])
    t.not(settled, 'hung', `round ${round}: settled`)
    // The call may have got its answer before close() ended the pool; if not, store-closed.
    if (settled !== 'hung' && E.isLeft(settled)) t.equal(settled.left.code, STORE_CLOSED)
    t.same(await store.headId()(), E.left({ kind: 'fatal', message: 'the event store is closed', code: STORE_CLOSED }), 'and every call after')
  }
})

t.test('close() without a deadline, then close({ timeoutMs }): the later deadline cuts the work off ("graceful, then forced")', async (t) => {
  const db = await createTestDatabase(schemaTemplate)
  t.teardown(() => db.drop())
  const pg = (await import('pg')).default
  const locker = new pg.Client({ connectionString: db.url })
  await locker.connect()
  t.teardown(() => locker.end())
  await locker.query('BEGIN')
  await locker.query('LOCK TABLE event IN ACCESS EXCLUSIVE MODE')
  const store = new PgEventStore({ connectionString: db.url, maxConnections: 2 })
  const blocked = store.headId()()
  // pg_stat_activity is read once per transaction: the locker, inside one, clears its copy.
  await eventually('the query reaches the server and waits on the lock', async () => {
    await locker.query('SELECT pg_stat_clear_snapshot()')
    return (await locker.query(`SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'`)).rowCount === 1
  })
  void store.close()
  const started = Date.now()
  await store.close({ timeoutMs: 200 })
  t.ok(Date.now() - started < 1_500, `closed in ${Date.now() - started} ms, not when the lock goes`)
  t.ok(E.isLeft(await blocked), 'the cut-off query failed')
  await locker.query('ROLLBACK')
})

t.test('a database URL that is not one is configuration, said at once: a TypeError for the store, a fatal value for migrate', async (t) => {
  t.throws(() => new PgEventStore({ connectionString: 'not a url' }), { name: 'TypeError', message: 'PgEventStore: the database URL is not a URL (postgres://user@host:5432/database)' })
  t.throws(() => new PgEventStore({ connectionString: 'mysql://u:pw@h/db' }), { message: /must be postgres:\/\/ or postgresql:\/\/, got a mysql:\/\/ URL/ })
  const socket = new PgEventStore({ connectionString: 'postgres://root@/test?host=/var/run/postgresql' })
  t.teardown(() => socket.close())
  t.pass("pg's socket form is taken (it is no WHATWG URL)")
  const { migrate, pendingMigrations } = await import('./migrate.js')
  for (const r of [await migrate('not a url')(), await pendingMigrations('http://u:pw@h/db')()]) {
    t.match(r, E.left({ kind: 'fatal', code: 'config' }))
    t.notMatch(JSON.stringify(r), /pw/)
  }
})

t.test('calls leave nothing behind: heap growth per call stays at noise level (a per-call close waiter was kept: ~650 bytes a call)', async (t) => {
  const { setFlagsFromString } = await import('node:v8')
  const { runInNewContext } = await import('node:vm')
  setFlagsFromString('--expose-gc')
  const gc = runInNewContext('gc') as () => void
  const db = await createTestDatabase(schemaTemplate)
  t.teardown(() => db.drop())
  const store = new PgEventStore({ connectionString: db.url, maxConnections: 2 })
  t.teardown(() => store.close())
  for (let i = 0; i < 1_000; i++) await store.ping()()
  gc()
  const before = process.memoryUsage().heapUsed
  const calls = 20_000
  for (let i = 0; i < calls; i++) await store.ping()()
  gc()
  const perCall = (process.memoryUsage().heapUsed - before) / calls
  t.ok(perCall < 100, `${perCall.toFixed(1)} bytes a call`)
})

t.test('connections are tracked only while open: failed connects and ended ones are forgotten', async (t) => {
  const { eventually, freePort } = await import('@vitrage-persistor/testing')
  // Nothing listens there: every connect fails.
  const down = new PgEventStore({ connectionString: `postgres://root@127.0.0.1:${await freePort()}/none`, maxConnections: 2 })
  for (let i = 0; i < 20; i++) t.ok(E.isLeft(await down.ping()()))
  const tracked = (s: PgEventStore): number => (s as unknown as { open: Set<unknown> }).open.size
  // A client's 'end' comes a tick after its connect failed.
  await eventually('no failed connect kept', () => tracked(down) === 0)
  await down.close()
  const db = await createTestDatabase(schemaTemplate)
  t.teardown(() => db.drop())
  const up = new PgEventStore({ connectionString: db.url, maxConnections: 2 })
  await Promise.all([up.ping()(), up.ping()()])
  t.equal(tracked(up), 2, 'the open ones are')
  await up.close()
  await eventually('forgotten once ended', () => tracked(up) === 0)
})

t.test('a maintenance command waits for the maintenance lock as long as it takes, whatever statement or lock timeout the role or database sets', async (t) => {
  const db = await createTestDatabase(schemaTemplate)
  t.teardown(() => db.drop())
  const holder = new pg.Client({ connectionString: db.url })
  await holder.connect()
  t.teardown(() => holder.end())
  // As operations.md has PgBouncer users do for the pool's sessions (here on the database).
  await holder.query(`ALTER DATABASE ${db.name} SET statement_timeout = '200ms'`)
  await holder.query(`ALTER DATABASE ${db.name} SET lock_timeout = '200ms'`)
  await holder.query("SELECT pg_advisory_lock(1986622578, hashtext('maintenance'))")
  const store = new PgEventStore({ connectionString: db.url })
  t.teardown(() => store.close())
  let ranAt: 'held' | 'released' | undefined
  let phase: 'held' | 'released' = 'held'
  const running = store.exclusively('maintenance', async () => {
    ranAt = phase
    return 'done'
  })()
  await eventually('the command waits on the lock', async () =>
    (await holder.query(`SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() AND wait_event_type = 'Lock'`)).rowCount === 1)
  // Held for five times both timeouts: a wait that either timeout ended would have failed by now.
  await new Promise((r) => setTimeout(r, 1_000))
  const settled = await Promise.race([running.then(() => 'settled'), new Promise((r) => setImmediate(() => r('waiting')))])
  t.equal(settled, 'waiting', 'still waiting after 1 s, past both timeouts')
  phase = 'released'
  await holder.query("SELECT pg_advisory_unlock(1986622578, hashtext('maintenance'))")
  t.same(await running, E.right('done'))
  t.equal(ranAt, 'released', 'the command ran once the lock was free')
})

t.test('pooled sessions have the server probe them when silent', async (t) => {
  const db = await createTestDatabase(schemaTemplate)
  t.teardown(() => db.drop())
  const store = new PgEventStore({ connectionString: db.url, maxConnections: 1 })
  t.teardown(() => store.close())
  const { rows } = await store.pool.query<{ idle: string; interval: string; count: string }>(
    "SELECT current_setting('tcp_keepalives_idle') AS idle, current_setting('tcp_keepalives_interval') AS interval, current_setting('tcp_keepalives_count') AS count",
  )
  const overTcp = !new URL(db.url).hostname.startsWith('/') && new URL(db.url).hostname !== ''
  t.same(rows[0], overTcp ? { idle: '10', interval: '5', count: '3' } : { idle: '0', interval: '0', count: '0' })
})

t.test('a query a close with a deadline gave up on does not go on waiting on the server (a lock held elsewhere)', async (t) => {
  const db = await createTestDatabase(schemaTemplate)
  t.teardown(() => db.drop())
  const locker = new pg.Client({ connectionString: db.url })
  await locker.connect()
  t.teardown(() => locker.end())
  await locker.query('BEGIN')
  await locker.query('LOCK TABLE event IN ACCESS EXCLUSIVE MODE')
  // Watched from outside the locker's transaction, whose view of pg_stat_activity is a snapshot.
  const watcher = new pg.Client({ connectionString: db.url })
  await watcher.connect()
  t.teardown(() => watcher.end())
  const application = `vp gave up ${process.pid}`
  const store = new PgEventStore({ connectionString: db.url, maxConnections: 1, applicationName: application })
  const waiting = store.headId()()
  const sessions = async (): Promise<number> => (await watcher.query('SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1', [application])).rows[0].n as number
  await eventually('the query waits on the lock', async () => (await watcher.query("SELECT 1 FROM pg_stat_activity WHERE application_name = $1 AND wait_event_type = 'Lock'", [application])).rowCount === 1)
  await store.close({ timeoutMs: 50 })
  t.match(await waiting, E.left({}), 'the query failed when its connection went')
  // Before: the session waited on until the lock came free or the statement timeout (60 s).
  await eventually('its server session ended', async () => (await sessions()) === 0, { timeoutMs: 15_000 })
  await locker.query('ROLLBACK')
})

const decodeOne = () => {
  const text = encodeMessageText({ messageId: crypto.randomUUID(), eventType: 'test.event', publisherId: 'test', priority: 'INFO', timestamp: '2024-01-01 00:00:01.000002' }, '{}')
  const r = decodeMessage(Buffer.from(encodeEnvelopeV2(text)), { maxMessageBytes: 1 << 20 })
  if (E.isLeft(r)) throw new Error(r.left.detail)
  return r.right
}

t.test('an append timing out behind a stuck COPY ends that one, not one in another database', async (t) => {
  // A COPY into event that never gets its data, in each of two databases: what a client gone
  // behind a dead path leaves (it holds the append lock of its database).
  const stuck = async (url: string): Promise<{ pid: number; alive: () => Promise<boolean> }> => {
    const c = new pg.Client({ connectionString: url })
    await c.connect()
    c.on('error', () => {})
    t.teardown(() => c.end().catch(() => {}))
    const pid = (c as unknown as { processID: number }).processID
    c.query(copyFrom("COPY event (message_id, event_type, publisher_id, priority, collector_timestamp, payload) FROM STDIN")).on('error', () => {})
    return { pid, alive: async () => (await admin.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [pid])).rowCount === 1 }
  }
  const [a, b] = [await createTestDatabase(schemaTemplate), await createTestDatabase(schemaTemplate)]
  t.teardown(() => a.drop())
  t.teardown(() => b.drop())
  const admin = new pg.Client({ connectionString: a.url })
  await admin.connect()
  t.teardown(() => admin.end())
  const [inA, inB] = [await stuck(a.url), await stuck(b.url)]
  await eventually('both waiting for COPY data', async () =>
    (await admin.query("SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = ANY($1) AND wait_event = 'ClientRead' AND state = 'active'", [[inA.pid, inB.pid]])).rows[0].n === 2)
  const store = new PgEventStore({ connectionString: b.url, maxConnections: 1, statementTimeoutMs: 300 })
  t.teardown(() => store.close())
  const batch = [prepareEvent(decodeOne())]
  await eventually('stored in b', async () => E.isRight(await store.append(batch)()))
  t.notOk(await inB.alive(), "b's stuck COPY was ended")
  t.ok(await inA.alive(), "a's is not this store's business")
})

t.test('a snapshot past the newest stored event is refused (beyond-head), one at or below it is saved', async (t) => {
  const db = await createTestDatabase(schemaTemplate)
  t.teardown(() => db.drop())
  const store = new PgEventStore({ connectionString: db.url, maxConnections: 1 })
  t.teardown(() => store.close())
  const stored = await store.append([prepareEvent(decodeOne()), prepareEvent(decodeOne())])()
  t.ok(E.isRight(stored))
  const snapshot = (eventId: number) => store.saveSnapshot({ kind: 'graph', eventId, format: 'test/1', data: new TextEncoder().encode('s') })()
  // Saved, it would be the start of every graphAt once the log grew past 100_000, skipping all before.
  t.match(await snapshot(100_000), E.left({ kind: 'rejected', code: 'beyond-head', message: /not saved: the newest stored event is 2$/ }))
  t.match(await snapshot(2), E.right({ eventId: 2 }))
  const listed = await store.listSnapshots('graph')()
  t.same(E.isRight(listed) && listed.right.map((m) => m.eventId), [2], 'only the one at the head')
})

t.test('a TLS file named by the URL that cannot be read is a failure value, not a throw (review 62: ten commands exited 70 with a stack)', async (t) => {
  const store = new PgEventStore({ connectionString: `${databaseUrl('test')}?sslmode=verify-full&sslrootcert=/nonexistent/ca.pem` })
  t.teardown(() => store.close())
  t.match(await store.headId()(), E.left({ kind: 'fatal', code: 'ENOENT', message: /\/nonexistent\/ca\.pem/ }))
})

t.test('a TLS file removed while calls wait for a connection fails them as values: the client made in the pool\'s queue does not crash the process (review 66)', async (t) => {
  const { mkdtempSync, writeFileSync, rmSync } = await import('node:fs')
  const { join } = await import('node:path')
  const { tmpdir } = await import('node:os')
  const dir = mkdtempSync(join(tmpdir(), 'vp-tls-'))
  t.teardown(() => rmSync(dir, { recursive: true, force: true }))
  const ca = join(dir, 'ca.pem')
  writeFileSync(ca, 'not a certificate: read, then the server refuses TLS')
  const store = new PgEventStore({ connectionString: `${databaseUrl('test')}?sslmode=verify-full&sslrootcert=${ca}`, maxConnections: 1 })
  t.teardown(() => store.close())
  // The first call's client is made at once; the second waits in the pool's queue for the slot.
  const calls = [store.headId()(), store.headId()(), store.headId()()]
  rmSync(ca)
  const settled = await Promise.all(calls)
  t.ok(settled.every(E.isLeft), 'each a failure value')
  t.ok(settled.some((r) => E.isLeft(r) && r.left.code === 'ENOENT'), 'a waiting call says the file is gone')
})
