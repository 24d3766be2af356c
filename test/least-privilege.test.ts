import { databaseUrl, eventually, TEST_DATABASE_URL, uniqueName } from '@vitrage-persistor/testing'
import { type DecodedMessage, decodeMessage } from '@vitrage-persistor/core'
import { appendBatch, prepareEvent } from '@vitrage-persistor/store-postgres'
import type * as E from 'fp-ts/lib/Either.js'
import pg from 'pg'
import t from 'tap'
import { message, v2Body } from './support/messages.js'
import { isConsuming, startPersistor } from './support/persistor-process.js'
import { declarePersistorTopology, publishMany, rowCount, setupWorld, storedSeqs } from './support/setup.js'

t.test('the persistor runs as a login in vitrage_persistor_writer; that role cannot UPDATE', async (t) => {
  const world = await setupWorld(t)
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
  p.kill('SIGTERM')
  t.equal((await p.exited).code, 0)
})
