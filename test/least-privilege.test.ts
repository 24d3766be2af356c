import { databaseUrl, eventually, TEST_DATABASE_URL, uniqueName } from '@vitrage-persistor/testing'
import { type DecodedMessage, decodeMessage } from '@vitrage-persistor/core'
import { appendBatch, prepareEvent, saveSnapshot } from '@vitrage-persistor/store-postgres'
import type * as E from 'fp-ts/lib/Either.js'
import pg from 'pg'
import t, { type Test } from 'tap'
import { cli } from './support/cli.js'
import { message, v2Body } from './support/messages.js'
import { isConsuming, startPersistor } from './support/persistor-process.js'
import { declarePersistorTopology, publishMany, rowCount, setupWorld, storedSeqs, type World } from './support/setup.js'

/** A login role in vitrage_persistor_writer (dropped at teardown), as the URL of the world's database. */
const serviceLogin = async (t: Test, world: World): Promise<URL> => {
  const login = uniqueName('vp_service')
  const admin = new pg.Client({ connectionString: TEST_DATABASE_URL })
  await admin.connect()
  await admin.query(`CREATE ROLE ${login} LOGIN IN ROLE vitrage_persistor_writer`)
  t.teardown(async () => {
    await admin.query(`DROP ROLE IF EXISTS ${login}`).catch(() => {})
    await admin.end()
  })
  const url = new URL(databaseUrl(world.db.name))
  url.username = login
  return url
}

t.test('the persistor runs as a login in vitrage_persistor_writer; that role cannot UPDATE', async (t) => {
  const world = await setupWorld(t)
  const url = await serviceLogin(t, world)

  await declarePersistorTopology(world)
  const bodies = Array.from({ length: 500 }, (_, seq) => v2Body(message({ seq })))
  await publishMany(world, 500, (i) => bodies[i] as Buffer)
  // The first 50 are already stored (as after a crash before ack): their batch fails the COPY
  // fast path and takes the staging path (a temporary table), which the role must allow too.
  const client = await world.sql.connect()
  await appendBatch(client, bodies.slice(0, 50).map((b) => prepareEvent((decodeMessage(b, { maxMessageBytes: 1 << 20 }) as E.Right<DecodedMessage>).right)))
  client.release()
  const p = startPersistor(world.flags(['--database-url', url.toString()]))
  t.teardown(() => p.kill('SIGKILL'))
  await p.waitFor(isConsuming, 'consuming')
  await eventually('stored', async () => {
    p.assertAlive()
    return (await rowCount(world)) === 500
  })
  t.same(await storedSeqs(world), Array.from({ length: 500 }, (_, i) => i))

  const asService = new pg.Client({ connectionString: url.toString() })
  await asService.connect()
  t.teardown(() => asService.end())
  await t.rejects(asService.query(`UPDATE event SET payload = '{}'`), { code: '42501' }, 'UPDATE as the service role: permission denied')
  await t.rejects(asService.query('DELETE FROM event'), { code: '42501' })
  // An event at an id of its choosing stalled every reader (review 51): ids are the database's.
  await t.rejects(
    asService.query(`INSERT INTO event (id, message_id, event_type, collector_timestamp, payload) OVERRIDING SYSTEM VALUE VALUES (4503599627370496, gen_random_uuid(), 'x', now(), '{}')`),
    { code: '42501' },
    'INSERT with an id of its own: permission denied',
  )
  await t.rejects(asService.query(`INSERT INTO event (message_id, event_type, collector_timestamp, payload, persisted_at) VALUES (gen_random_uuid(), 'x', now(), '{}', now())`), { code: '42501' }, 'nor persisted_at')
  p.kill('SIGTERM')
  t.equal((await p.exited).code, 0)
})

t.test('rolling upgrade: a service role that may not migrate ingests when only later migrations are pending, and stops with the instruction otherwise', async (t) => {
  const world = await setupWorld(t)
  const url = await serviceLogin(t, world)
  await declarePersistorTopology(world)

  // A schema from before 0007: the new version's migrations 0007 to 0016 are pending.
  await world.sql.query('DELETE FROM schema_migration WHERE version >= 7')
  const p = startPersistor(world.flags(['--database-url', url.toString(), '--no-history-projection']))
  t.teardown(() => p.kill('SIGKILL'))
  const warned = await p.waitFor((l) => typeof l.msg === 'string' && l.msg.startsWith('this role may not apply the pending migrations'), 'the warning')
  t.same(warned['pending'], ['0007_history_in_database', '0008_retention_watermark', '0009_prune_in_steps', '0010_pruned_through', '0011_resource_project_slots', '0012_writer_appends_without_ids', '0013_latest_change_index', '0014_prune_counts_snapshots_of_this_log', '0015_drop_superseded_change_index', '0016_resource_project_changes'], 'names what is pending')
  await p.waitFor(isConsuming, 'consuming')
  await publishMany(world, 100, (seq) => v2Body(message({ seq })))
  await eventually('ingesting', async () => (await rowCount(world)) === 100)
  p.kill('SIGTERM')
  t.equal((await p.exited).code, 0)

  // Without the event table's own migration, nothing can be ingested: stop, saying what to do.
  await world.sql.query('DELETE FROM schema_migration')
  const q = startPersistor(world.flags(['--database-url', url.toString(), '--no-history-projection']))
  t.teardown(() => q.kill('SIGKILL'))
  const exit = await q.exited
  t.equal(exit.code, 1)
  t.match(q.output(), /migrations 0001_event, .* are pending and this role may not apply them \(.*permission denied.*\): run `vitrage-persistor migrate` as the schema owner first/)
  t.notOk(q.lines.some((l) => l.msg === 'consuming'), 'never consumed')

  // A database that does not exist (a typo in the URL), for a role that may not create one: said
  // as such, by run and by migrate (review 56: "migrations ... are pending", then migrate failed
  // the same way without naming the database).
  const typo = new URL(url)
  typo.pathname = `/${world.db.name}_typo`
  const r = startPersistor(world.flags(['--database-url', typo.toString(), '--no-history-projection']))
  t.teardown(() => r.kill('SIGKILL'))
  t.equal((await r.exited).code, 1)
  t.match(r.output(), new RegExp(`database \\"${world.db.name}_typo\\" does not exist, and this role may not create it \\(permission denied to create database\\): check the database URL`))
  t.notMatch(r.output(), /are pending/)
  const migrate = await cli(['migrate', '--database-url', typo.toString()])
  t.equal(migrate.code, 1)
  t.match(migrate.err, `database "${world.db.name}_typo" does not exist, and this role may not create it`)
})

t.test('the checkpoint commands work as the service role; prune needs the schema owner and says so', async (t) => {
  const world = await setupWorld(t)
  const url = await serviceLogin(t, world)
  await world.sql.query(`INSERT INTO event (message_id, event_type, collector_timestamp, payload) SELECT gen_random_uuid(), 'e', now(), '{}' FROM generate_series(1, 50)`)
  await world.sql.query(`INSERT INTO projection_checkpoint (name, position) VALUES ('mirror', 10)`)
  const asService = ['--database-url', url.toString()]

  const listed = await cli(['checkpoint', 'list', ...asService, '--format', 'json'])
  t.equal(listed.code, 0, listed.err)
  t.match(JSON.parse(listed.out), { head: 50, checkpoints: [{ name: 'mirror', position: 10 }] })
  // set takes the advisory lock event_prune takes (migration 0009): no privilege needed, unlike
  // a row lock on event_retention, which the role may only read.
  const moved = await cli(['checkpoint', 'set', 'mirror', '--position', '30', ...asService])
  t.same([moved.code, moved.err, JSON.parse(moved.out || 'null')], [0, '', { name: 'mirror', from: 10, to: 30 }])
  const removed = await cli(['checkpoint', 'remove', 'mirror', ...asService])
  t.same([removed.code, removed.err, JSON.parse(removed.out || 'null')], [0, '', { name: 'mirror', removed: true, was: 30 }])

  const client = await world.sql.connect()
  await saveSnapshot(client, { kind: 'graph', eventId: 40, format: 'test/1', data: new TextEncoder().encode('s') })
  client.release()
  const pruned = await cli(['prune', ...asService])
  t.equal(pruned.code, 1)
  t.match(pruned.err, /permission denied.*; prune runs as the schema's owner \(the role that ran migrate\), not as the service role/)
  t.equal(await rowCount(world), 50, 'nothing deleted')
})
