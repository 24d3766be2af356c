/**
 * A database that stops answering without closing anything (a frozen VM, a partition that drops
 * packets): only the process under test reaches it through a proxy that the test freezes with
 * SIGSTOP (support/freezable-proxy.ts), so the shared server and the other tests go on.
 */
import { randomUUID } from 'node:crypto'
import { decodeMessage, type DecodedMessage } from '@vitrage-persistor/core'
import { appendBatch, type EventStoreOptions, PgEventStore, type PreparedEvent, prepareEvent, UNANSWERED } from '@vitrage-persistor/store-postgres'
import { eventually, freePort, uniqueName } from '@vitrage-persistor/testing'
import * as E from 'fp-ts/lib/Either.js'
import t, { type Test } from 'tap'
import { rawFixtures } from './support/fixtures.js'
import { type FreezableProxy, startFreezableProxy } from './support/freezable-proxy.js'
import { message, v2Body } from './support/messages.js'
import { isConsuming, type PersistorProcess, startPersistor, stopAndTime } from './support/persistor-process.js'
import { declarePersistorTopology, metricValue, publishMany, rowCount, setupWorld, storedSeqs, type World } from './support/setup.js'

const decoded = rawFixtures().map((m) => (decodeMessage(Buffer.from(m.body), { maxMessageBytes: 1 << 20 }) as E.Right<DecodedMessage>).right)
const fixtureEvents = (n: number, from = 0): PreparedEvent[] =>
  Array.from({ length: n }, (_, i) => prepareEvent({ ...(decoded[(from + i) % decoded.length] as DecodedMessage), messageId: randomUUID() }))

/** A GET that gives up after `ms` (a route waiting on the frozen database must not hang the test). */
const get = async (url: string, ms = 10_000): Promise<{ status: number; body: string; ms: number }> => {
  const started = performance.now()
  const res = await fetch(url, { signal: AbortSignal.timeout(ms) })
  return { status: res.status, body: await res.text(), ms: performance.now() - started }
}

/**
 * SIGTERM while a probe polls `/healthz` every 200 ms on a keep-alive connection, as a kubelet
 * would: how the process exited and how long after the signal.
 */
const sigtermWhilePolled = async (p: PersistorProcess, base: string): Promise<{ exited: { code: number | null }; ms: number }> => {
  let polling = true
  const poller = (async () => {
    while (polling) {
      await get(`${base}/healthz`, 2_000).catch(() => undefined)
      await new Promise((r) => setTimeout(r, 200))
    }
  })()
  const started = performance.now()
  p.kill('SIGTERM')
  const exited = await p.exited
  const ms = performance.now() - started
  polling = false
  await poller
  return { exited, ms }
}

/** A store reaching this test's database through a freezable proxy, and the warnings it logs. */
const storeBehindProxy = async (
  t: Test,
  options: Partial<EventStoreOptions> = {},
  world?: World,
): Promise<{ world: World; proxy: FreezableProxy; store: PgEventStore; warnings: string[] }> => {
  world ??= await setupWorld(t)
  const proxy = await startFreezableProxy(options.connectionString ?? world.db.url)
  t.teardown(() => proxy.close())
  const warnings: string[] = []
  const note = (...args: unknown[]): void => void warnings.push(String(args.find((a) => typeof a === 'string')))
  const logger = { debug: () => {}, info: () => {}, warn: note, error: note, child: () => logger }
  const store = new PgEventStore({ maxConnections: 1, logger, ...options, connectionString: proxy.url })
  t.teardown(() => store.close({ timeoutMs: 1_000 }))
  return { world, proxy, store, warnings }
}

t.test('follow whose database stops answering is not ready within seconds, stops promptly on SIGTERM, and catches up after the thaw', async (t) => {
  const world = await setupWorld(t)
  const proxy = await startFreezableProxy(world.db.url)
  t.teardown(() => proxy.close())
  const client = await world.sql.connect()
  t.teardown(() => client.release())
  await appendBatch(client, fixtureEvents(400))
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const follower = startPersistor(['follow', '--database-url', proxy.url, '--http-port', String(port)])
  t.teardown(() => follower.kill('SIGKILL'))
  await follower.waitFor((l) => l.msg === 'graph loaded; following', 'the follower to load')
  t.equal((await get(`${base}/readyz`)).status, 200)

  proxy.freeze()
  await appendBatch(client, fixtureEvents(100, 400))
  const notReady = await eventually('not ready', async () => {
    const r = await get(`${base}/readyz`)
    return r.status === 503 && r
  })
  t.ok(notReady.ms < 5_000, `/readyz answered in ${Math.round(notReady.ms)} ms`)
  t.match(JSON.parse(notReady.body), { status: 'not ready', reason: /the database: no answer within/ }, 'and says the database does not answer')
  const metrics = await get(`${base}/metrics`)
  t.ok(metrics.ms < 5_000, `/metrics answered in ${Math.round(metrics.ms)} ms`)
  t.ok(Number.isNaN(metricValue(metrics.body, 'vitrage_persistor_graph_lag_events')), 'the lag is unknown, not the last value read')
  t.equal(metricValue(metrics.body, 'vitrage_persistor_graph_log_readable'), 0)

  proxy.thaw()
  await eventually('caught up after the thaw', async () => JSON.parse((await get(`${base}/position`)).body).position === 500)
  t.equal((await get(`${base}/readyz`)).status, 200, 'ready again')

  // Frozen again, with a probe polling.
  proxy.freeze()
  await eventually('not ready again', async () => (await get(`${base}/readyz`)).status === 503)
  const { exited, ms } = await sigtermWhilePolled(follower, base)
  t.equal(exited.code, 0)
  t.ok(ms < 8_000, `exited ${Math.round(ms)} ms after SIGTERM, the database still frozen`)
})

t.test('follow and project history --follow started while the event table is locked (VACUUM FULL, a migration): their health endpoints answer, follow says loading, and SIGTERM ends them in seconds', async (t) => {
  const world = await setupWorld(t)
  const locker = await world.sql.connect()
  t.teardown(async () => {
    await locker.query('ROLLBACK').catch(() => undefined)
    locker.release()
  })
  await locker.query('BEGIN')
  await locker.query('LOCK TABLE event IN ACCESS EXCLUSIVE MODE')
  const waitingOnLock = async (application: string): Promise<boolean> =>
    (await world.sql.query("SELECT 1 FROM pg_stat_activity WHERE datname = current_database() AND application_name = $1 AND wait_event_type = 'Lock'", [application])).rowCount! > 0
  for (const [command, application] of [[['follow', '--snapshot-every', '10'], 'vitrage-persistor follow'], [['project', 'history', '--follow'], 'vitrage-persistor project history']] as const) {
    const port = await freePort()
    const base = `http://127.0.0.1:${port}`
    const p = startPersistor([...command, '--database-url', world.db.url, '--http-port', String(port)])
    t.teardown(() => p.kill('SIGKILL'))
    await eventually(`${command[0]} waits on the lock`, () => waitingOnLock(application))
    // Before: nothing listened until the lock went (curl: no connection for the whole 20 s).
    t.equal((await get(`${base}/healthz`, 5_000)).status, 200, `${command[0]}: /healthz answers`)
    if (command[0] === 'follow') {
      const ready = await get(`${base}/readyz`, 5_000)
      t.equal(ready.status, 503, `follow: not ready (${ready.body})`)
    }
    // Before: exit 0 only ~60 s after SIGTERM (the statement timeout). project history lets a
    // page in progress finish for 5 s, as when its database path is frozen (above).
    const { exit, took } = await stopAndTime(p)
    t.equal(exit.code, 0, `${command[0]} exit code`)
    t.ok(took < (command[0] === 'follow' ? 5_000 : 12_000), `${command[0]} exited ${took} ms after SIGTERM, the table still locked`)
  }
})

t.test('run whose database stops answering with messages held exits within its shutdown deadline on SIGTERM, and loses nothing', async (t) => {
  const world = await setupWorld(t)
  await declarePersistorTopology(world)
  const proxy = await startFreezableProxy(world.db.url)
  t.teardown(() => proxy.close())
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const flags = world.flags(['--database-url', proxy.url, '--http-port', String(port), '--shutdown-timeout-ms', '3000', '--batch-size', '50'])
  const p = startPersistor(flags)
  t.teardown(() => p.kill('SIGKILL'))
  await p.waitFor(isConsuming, 'consuming')
  await publishMany(world, 200, (seq) => v2Body(message({ seq })))
  await eventually('the first messages stored', async () => (await rowCount(world)) === 200)

  proxy.freeze()
  await publishMany(world, 200, (seq) => v2Body(message({ seq: 200 + seq })))
  await eventually('not ready', async () => (await get(`${base}/readyz`)).status === 503)
  // A scrape waiting on the database, and a probe polling.
  const scrape = get(`${base}/metrics`, 30_000).catch(() => undefined)
  const { exited, ms } = await sigtermWhilePolled(p, base)
  await scrape
  // The deadline, then one grace second for closing what waits on the database.
  t.ok(ms < 3_000 + 4_000, `exited ${Math.round(ms)} ms after SIGTERM (deadline 3 s), the database still frozen`)
  t.not(exited.code, null, `exit code ${exited.code}`)

  proxy.thaw()
  const again = startPersistor(world.flags())
  t.teardown(() => again.kill('SIGKILL'))
  await eventually('everything stored', async () => (await rowCount(world)) === 400)
  t.same(await storedSeqs(world), Array.from({ length: 400 }, (_, i) => i), 'each once, in publish order')
  again.kill('SIGTERM')
  t.equal((await again.exited).code, 0)
})

t.test('project history --follow and run holding nothing, their database path frozen: a stop takes seconds, not the unanswered-query limit or the whole shutdown deadline', async (t) => {
  const world = await setupWorld(t)
  await declarePersistorTopology(world)
  const proxy = await startFreezableProxy(world.db.url)
  t.teardown(() => proxy.close())
  const client = await world.sql.connect()
  t.teardown(() => client.release())
  await appendBatch(client, fixtureEvents(400))
  const history = startPersistor(['project', 'history', '--follow', '--database-url', proxy.url])
  t.teardown(() => history.kill('SIGKILL'))
  await history.waitFor((l) => l.msg === 'history projection following the log', 'the projection following')
  const run = startPersistor(world.flags(['--database-url', proxy.url, '--http-port', '0', '--no-history-projection']))
  t.teardown(() => run.kill('SIGKILL'))
  await run.waitFor(isConsuming, 'consuming')
  proxy.freeze()
  // The projection's next poll (a timer of 5 s inside it) reads through the frozen path and waits
  // there; run's database check (every few seconds) too: both requests sit unread in the proxy.
  await appendBatch(client, fixtureEvents(10, 400))
  await eventually('a read of each waiting in the frozen path', async () => (await proxy.waitingRequests()) >= 2, { timeoutMs: 20_000, intervalMs: 200 })
  // Before: 70 s for the projection (until the statement timeout + 15 s dropped its query), and
  // the whole 30 s shutdown deadline for run, which held nothing.
  const [h, r] = await Promise.all([stopAndTime(history), stopAndTime(run)])
  t.equal(h.exit.code, 0)
  t.ok(h.took < 12_000, `project history exited ${h.took} ms after SIGTERM`)
  t.equal(r.exit.code, 0)
  t.ok(r.took < 6_000, `run exited ${r.took} ms after SIGTERM`)
})

t.test('a LISTEN connection whose path died under it is noticed and opened again: wake-ups on append resume', async (t) => {
  const { world, proxy, store, warnings } = await storeBehindProxy(t)
  let wakes = 0
  let wakesAtReconnect: number | undefined
  const subscription = store.onAppend(() => {
    wakes++
  })
  t.teardown(() => subscription.close())
  const client = await world.sql.connect()
  t.teardown(() => client.release())
  const append = async (): Promise<void> => void (await appendBatch(client, fixtureEvents(1)))
  await eventually('listening', async () => {
    await append()
    return wakes > 1
  })

  proxy.cutOpenConnections()
  // Appends go on; their notifications have no way to the listener until it connects again.
  await eventually(
    'the dead connection noticed',
    async () => {
      await append()
      if (warnings.includes('append listener connection does not answer; reconnecting')) wakesAtReconnect ??= wakes
      return wakesAtReconnect !== undefined
    },
    { timeoutMs: 60_000, intervalMs: 500 },
  )
  await eventually('woken by appends again', async () => {
    await append()
    return wakes >= (wakesAtReconnect ?? 0) + 3
  })
  t.pass(`noticed, connected again, and woken ${wakes - (wakesAtReconnect ?? 0)} times since`)
})

/**
 * Starts an append that waits for a lock on the event table, so it is in flight when the path
 * under its connection dies (`cut`); then frees the lock. Returns the append, still running.
 */
const appendAcrossDeadPath = async <T>(t: Test, world: World, append: () => Promise<T>, cut: () => void): Promise<{ appending: Promise<T> }> => {
  const admin = await world.sql.connect()
  t.teardown(() => admin.release())
  await admin.query('BEGIN')
  await admin.query('LOCK TABLE event IN ACCESS EXCLUSIVE MODE')
  const appending = append()
  await eventually('the append waits for the lock', async () => {
    const r = await world.sql.query<{ n: number }>("SELECT count(*)::int AS n FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'")
    return r.rows[0]?.n === 1
  })
  cut()
  await admin.query('COMMIT')
  return { appending }
}

t.test('an append whose answer never comes fails as unanswered after the limit, and its retry stores the batch', async (t) => {
  const { world, proxy, store, warnings } = await storeBehindProxy(t, { statementTimeoutMs: 4_000, unansweredQueryMs: 6_000 })
  const batch = fixtureEvents(50)
  const started = performance.now()
  const result = await (await appendAcrossDeadPath(t, world, store.append(batch), proxy.cutOpenConnections)).appending
  const ms = performance.now() - started
  t.ok(E.isLeft(result), 'the append fails')
  if (E.isLeft(result)) {
    t.equal(result.left.kind, 'transient')
    t.equal(result.left.code, UNANSWERED)
    t.match(result.left.message, /did not answer a query for 6 s/)
  }
  t.ok(ms >= 6_000, `not before the limit (${Math.round(ms)} ms)`)
  t.ok(warnings.includes('the database has not answered a query; dropping its connection'), 'logged')
  // Retried as the persistor does, until it passes (a busy machine can fail a try as transient).
  const failures: string[] = []
  await eventually('the retry opens a new connection and stores', async () => {
    const retried = await store.append(batch)()
    if (E.isRight(retried)) return true
    failures.push(`${retried.left.kind}: ${retried.left.message}`)
    // Thrown, so a timeout names the last failure.
    throw new Error(failures.at(-1))
  })
  t.pass(`stored on a new connection${failures.length === 0 ? '' : ` after ${failures.length} failed tries: ${failures.join('; ')}`}`)
  t.equal(await rowCount(world), 50, 'stored once')
})

t.test('an append whose path dies while the server lives on: the session it left there is ended, so the append lock is free for the retry', async (t) => {
  // Its database URL names the application: the server's name for the session, not the store's.
  const world = await setupWorld(t)
  const url = new URL(world.db.url)
  url.searchParams.set('application_name', 'persistor eu-1')
  const { proxy, store, warnings } = await storeBehindProxy(t, { connectionString: url.toString(), statementTimeoutMs: 2_000, unansweredQueryMs: 3_000 }, world)
  const batch = fixtureEvents(50)
  // The append waits for a lock while the path dies; the server never hears of it, so once the
  // lock is free its session takes the append lock (the event table's statement trigger) and
  // waits for COPY data that cannot come. A query cancel (statement_timeout) does not reach a
  // session reading COPY data; only its end does, which the server's TCP would bring after
  // minutes to hours.
  const { appending } = await appendAcrossDeadPath(t, world, store.append(batch), proxy.severOpenConnections)
  const orphan = await eventually('the left session to wait for COPY data', async () => {
    const r = await world.sql.query<{ pid: number }>(
      "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND state = 'active' AND wait_event = 'ClientRead' AND query LIKE 'COPY event %'",
    )
    return r.rows[0]?.pid
  })
  const first = await appending
  t.ok(E.isLeft(first) && first.left.code === UNANSWERED, 'the append fails as unanswered')
  const failures: string[] = []
  const started = performance.now()
  await eventually('the retry stores', async () => {
    const retried = await store.append(batch)()
    if (E.isRight(retried)) return true
    failures.push(`${retried.left.kind}: ${retried.left.message}`)
    throw new Error(failures.at(-1))
  })
  t.pass(`stored ${Math.round(performance.now() - started)} ms after the first failure${failures.length === 0 ? '' : `, after ${failures.length} failed tries: ${failures.join('; ')}`}`)
  t.equal(await rowCount(world), 50, 'stored once')
  const left = await world.sql.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [orphan])
  t.equal(left.rowCount, 0, 'the left session is gone')
  await eventually('logged', () => warnings.includes('ended the server session of a dropped connection'))
})

/**
 * What an earlier instance leaves behind when its path dies under an append and it is stopped
 * before its unanswered-query watch fires (watch off here): its server session, in the append's
 * COPY, holding the append lock, waiting for data that cannot come.
 */
const leftBehind = async (t: Test, world: World, connectionString = world.db.url): Promise<void> => {
  const { proxy, store } = await storeBehindProxy(t, { connectionString, unansweredQueryMs: 0 }, world)
  await appendAcrossDeadPath(t, world, store.append(fixtureEvents(5)), proxy.severOpenConnections)
  await store.close({ timeoutMs: 100 })
}

/** A store beside it, with a 1 s statement timeout, and its warnings. */
const nextInstance = (t: Test, connectionString: string): { store: PgEventStore; warnings: string[] } => {
  const warnings: string[] = []
  const note = (...args: unknown[]): void => void warnings.push(String(args.find((a) => typeof a === 'string')))
  const logger = { debug: () => {}, info: () => {}, warn: note, error: note, child: () => logger }
  const store = new PgEventStore({ connectionString, maxConnections: 1, logger, statementTimeoutMs: 1_000 })
  t.teardown(() => store.close({ timeoutMs: 1_000 }))
  return { store, warnings }
}

/** Appends until stored; the codes of the failures before. */
const appendUntilStored = async (store: PgEventStore, batch: readonly PreparedEvent[], timeoutMs = 30_000): Promise<string[]> => {
  const failures: string[] = []
  await eventually(
    'stored',
    async () => {
      const r = await store.append(batch)()
      if (E.isRight(r)) return true
      failures.push(`${r.left.code}`)
      throw new Error(r.left.message)
    },
    { timeoutMs },
  )
  return failures
}

const ENDED_STUCK = 'ended a session stuck in an append, waiting for COPY data from a client that is gone'

for (const [wait, code] of [['statement', '57014'], ['lock', '55P03']] as const) {
  t.test(`a session an earlier instance left in an append behind a dead path is ended by the next one once its appends time out behind it (${wait} timeout)`, async (t) => {
    const world = await setupWorld(t)
    await leftBehind(t, world)
    // A lock_timeout the database sets fails the waits first (55P03), before the statement timeout.
    if (wait === 'lock') await world.sql.query(`ALTER DATABASE ${world.db.name} SET lock_timeout = '300ms'`)
    const next = nextInstance(t, world.db.url)
    const failures = await appendUntilStored(next.store, fixtureEvents(50))
    t.ok(failures.length >= 1 && failures.every((f) => f === code), `its appends failed behind the left session first (${failures.join(', ')})`)
    // The ender logs once its statement has answered, which may be after the append it freed.
    await eventually('logged', () => next.warnings.includes(ENDED_STUCK))
    t.equal(await rowCount(world), 50, 'stored once; the left append never was')
  })
}

t.test('a role that may not end another role\'s left session says so, and ends it once it may', async (t) => {
  const world = await setupWorld(t)
  const admin = world.sql
  const [earlierRole, nextRole] = [uniqueName('vp_earlier'), uniqueName('vp_next')]
  for (const role of [earlierRole, nextRole]) await admin.query(`CREATE ROLE ${role} LOGIN IN ROLE vitrage_persistor_writer`)
  t.teardown(async () => {
    for (const role of [earlierRole, nextRole]) await admin.query(`DROP ROLE IF EXISTS ${role}`).catch(() => {})
  })
  // It may read every session (as a monitoring grant gives), not signal another role's.
  await admin.query(`GRANT pg_read_all_stats TO ${nextRole}`)
  const as = (role: string): string => {
    const url = new URL(world.db.url)
    url.username = role
    return url.toString()
  }
  await leftBehind(t, world, as(earlierRole))
  const next = nextInstance(t, as(nextRole))
  const refused = 'could not end a session left on the server by a client that is gone (see docs/operations.md: one login role for every instance)'
  let tries = 0
  await eventually('the refusal reported', async () => {
    const r = await next.store.append(fixtureEvents(50))()
    if (E.isRight(r)) throw Object.assign(new Error('stored behind the left session'), { fatal: true })
    tries++
    return next.warnings.includes(refused)
  })
  t.pass(`refused, appends failing (${tries}), until the role may signal it`)
  await admin.query(`GRANT pg_signal_backend TO ${nextRole}`)
  await appendUntilStored(next.store, fixtureEvents(50))
  await eventually('ended once the role may', () => next.warnings.includes(ENDED_STUCK))
  t.equal(await rowCount(world), 50)
})

t.test('a transaction left idle behind a dead path is ended by the server within seconds (idle_in_transaction_session_timeout, twice the statement timeout), its locks with it', async (t) => {
  const { world, proxy, store } = await storeBehindProxy(t, { statementTimeoutMs: 500, unansweredQueryMs: 0 })
  const client = await store.pool.connect()
  t.teardown(() => client.release(true))
  client.on('error', () => {})
  await client.query('BEGIN')
  await client.query('SELECT pg_advisory_xact_lock(42)')
  const pid = (client as unknown as { processID: number }).processID
  proxy.severOpenConnections()
  const started = performance.now()
  await eventually('the left transaction ended', async () => (await world.sql.query('SELECT 1 FROM pg_stat_activity WHERE pid = $1', [pid])).rowCount === 0)
  const ms = performance.now() - started
  t.ok(ms < 5_000, `ended ${Math.round(ms)} ms after the path died`)
  const lock = await world.sql.query("SELECT 1 FROM pg_locks WHERE database = (SELECT oid FROM pg_database WHERE datname = current_database()) AND locktype = 'advisory' AND objid = 42")
  t.equal(lock.rowCount, 0, 'its lock is free')
})

/** `n` graph changes, each giving the one vertex `counter` its own `seq`: every position is a graph of its own. */
const counterChanges = (n: number, from: number): PreparedEvent[] =>
  Array.from({ length: n }, (_, i) => {
    const payload = { is_vertex: true, payload: { vitrage_id: 'counter', vertex_id: 'counter', vitrage_type: 'test.counter', vitrage_category: 'RESOURCE', seq: from + i } }
    return prepareEvent((decodeMessage(v2Body(message(payload, { event_type: 'vitrage.graph.change' })), { maxMessageBytes: 1 << 20 }) as E.Right<DecodedMessage>).right)
  })

t.test('follow part-way through a tail: /graph says which state it serves; stuck there while the log moves, it is not ready within 25 s (stall watch ~15 s; 75 s before); the store warns in its log', async (t) => {
  const world = await setupWorld(t)
  const proxy = await startFreezableProxy(world.db.url)
  t.teardown(() => proxy.close())
  const client = await world.sql.connect()
  t.teardown(() => client.release())
  await appendBatch(client, counterChanges(10, 0))
  const port = await freePort()
  const base = `http://127.0.0.1:${port}`
  const follower = startPersistor(['follow', '--database-url', proxy.url, '--http-port', String(port)])
  t.teardown(() => follower.kill('SIGKILL'))
  await follower.waitFor((l) => l.msg === 'graph loaded; following', 'the follower to load')
  const served = async (): Promise<{ position: number; seq: unknown }> => {
    const res = await fetch(`${base}/graph`, { signal: AbortSignal.timeout(5_000) })
    const graph = (await res.json()) as { vertices: Array<{ id: string; properties: Record<string, unknown> }> }
    return { position: Number(res.headers.get('x-graph-position')), seq: graph.vertices.find((v) => v.id === 'counter')?.properties['seq'] }
  }
  t.same(await served(), { position: 10, seq: 9 }, 'the header names the state served')
  /** Appends 200,000 changes after `from` and returns /position once the follower is part-way through them, having called `then`. */
  const partWay = async (from: number, then: () => void): Promise<{ position: number; applied: number }> => {
    // One commit: the follower sees the whole tail at once.
    await appendBatch(client, counterChanges(200_000, from))
    return eventually(
      'part-way through the tail',
      async () => {
        const p = (await (await fetch(`${base}/position`)).json()) as { position: number; applied?: number }
        if (p.applied === undefined || p.applied > from + 150_000) return false
        then()
        return p as { position: number; applied: number }
      },
      { intervalMs: 5 },
    )
  }

  // Frozen part-way: before, /graph served the state ~100,000 events past /position's, unsaid.
  const midway = await partWay(10, proxy.freeze)
  const stuck = await served()
  t.ok(stuck.position >= midway.applied && stuck.position > midway.position, `serving the state at ${stuck.position}, past the position ${midway.position}`)
  t.equal(stuck.seq, stuck.position - 1, 'and it is that state (seq = id - 1 for these changes)')
  proxy.thaw()
  await eventually('caught up after the thaw', async () => JSON.parse((await get(`${base}/position`)).body).position === 200_010, { timeoutMs: 60_000 })
  t.same(await served(), { position: 200_010, seq: 200_009 })
  t.equal((await get(`${base}/readyz`)).status, 200, 'ready')

  // The store's own warnings reach follow's log (it logged none: its store had no logger).
  await world.sql.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'vitrage-persistor follow listen'`)
  await follower.waitFor((l) => l.msg === 'append listener connection lost', 'the listener warning')

  // The path under its connections dies part-way (new ones pass, so the database answers a
  // probe): before, /readyz said 200 until the unanswered-query watch dropped the read, 75 s.
  await partWay(200_010, proxy.cutOpenConnections)
  const cut = performance.now()
  const stalled = await eventually(
    'not ready: stuck',
    async () => {
      const r = await get(`${base}/readyz`)
      return r.status === 503 && /the follower has not moved for \d+ s at event \d+ while the log is at 400010/.test(r.body) && r
    },
    { timeoutMs: 30_000, intervalMs: 500 },
  )
  t.ok(performance.now() - cut < 25_000, `not ready ${Math.round(performance.now() - cut)} ms after the path died: ${stalled.body.trim()}`)
  const metrics = await get(`${base}/metrics`)
  t.equal(metricValue(metrics.body, 'vitrage_persistor_graph_log_readable'), 0)
  follower.kill('SIGTERM')
  t.equal((await follower.exited).code, 0)
})
