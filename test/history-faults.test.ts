import { eventually, freePort } from '@vitrage-persistor/testing'
import t, { type Test } from 'tap'
import { cli } from './support/cli.js'
import { historyStream } from '@vitrage-persistor/testing'
import { isConsuming, startPersistor } from './support/persistor-process.js'
import { declarePersistorTopology, metricValue, publishMany, rowCount, setupWorld, type World } from './support/setup.js'

const ALARMS = 3_000

/** Everything the history projection wrote, without event ids (which depend on arrival order). */
const tables = async (world: World): Promise<unknown> => ({
  alarms: (await world.sql.query(`SELECT vitrage_id, start_timestamp, end_timestamp, name, vitrage_operational_severity, vitrage_resource_project_id, payload
    FROM history_alarm ORDER BY vitrage_id`)).rows,
  changes: (await world.sql.query('SELECT message_id, vitrage_id, at, severity FROM history_change ORDER BY message_id')).rows,
  edges: (await world.sql.query(`SELECT source_id, target_id, label, start_timestamp, end_timestamp, payload FROM history_edge
    ORDER BY source_id, target_id, label, start_timestamp NULLS FIRST`)).rows,
})

const ingestOnly = async (t: Test, world: World, bodies: readonly Buffer[]): Promise<void> => {
  await declarePersistorTopology(world)
  await publishMany(world, bodies.length, (i) => bodies[i] as Buffer)
  const p = startPersistor(world.flags(['--no-history-projection']))
  t.teardown(() => p.kill('SIGKILL'))
  await p.waitFor(isConsuming, 'consuming')
  await eventually('stored', async () => (await rowCount(world)) === bodies.length, { timeoutMs: 120_000 })
  p.kill('SIGTERM')
  await p.exited
}

t.test('the runner killed at random moments, restarted, ends as a clean rebuild; shuffled delivery too', async (t) => {
  const bodies = historyStream(ALARMS)
  t.comment(`${bodies.length} alarm-history events`)
  const world = await setupWorld(t)
  await ingestOnly(t, world, bodies)
  const head = Number((await world.sql.query('SELECT max(id) AS m FROM event')).rows[0].m)
  const checkpoint = async (): Promise<number> => Number((await world.sql.query(`SELECT coalesce((SELECT position FROM projection_checkpoint WHERE name = 'history'), 0) AS p`)).rows[0].p)

  const positions: number[] = []
  // Each runner is killed once the checkpoint has passed its own threshold (spread over the first
  // three quarters of the log, jittered): mid-page at varied points, never after the end.
  for (let kill = 0; kill < 4; kill++) {
    const threshold = Math.floor(head * (0.05 + kill * 0.17 + Math.random() * 0.12))
    const runner = startPersistor(['project', 'history', '--follow', '--page-size', '20', '--database-url', world.db.url])
    t.teardown(() => runner.kill('SIGKILL'))
    await eventually(
      `the checkpoint to pass ${threshold}`,
      async () => {
        runner.assertAlive()
        return (await checkpoint()) > threshold
      },
      { intervalMs: 2 },
    )
    runner.kill('SIGKILL')
    await runner.exited
    positions.push(await checkpoint())
  }
  t.comment(`checkpoints after each kill: ${positions.join(', ')} of ${head}`)
  t.ok((positions.at(-1) ?? head) < head, 'killed before the end')
  const last = await cli(['project', 'history', '--database-url', world.db.url])
  t.equal(last.code, 0, last.err)
  t.equal(await checkpoint(), head)
  const afterKills = await tables(world)

  const rebuilt = await cli(['project', 'history', '--rebuild', '--database-url', world.db.url])
  t.equal(rebuilt.code, 0, rebuilt.err)
  t.same(await tables(world), afterKills, 'identical to a clean rebuild')

  const again = await cli(['project', 'history', '--database-url', world.db.url])
  t.equal(again.code, 0)
  t.same(await tables(world), afterKills, 'running again changes nothing')

  // Partitions killed mid-way: their checkpoints stay; three partitions, then one, finish the job.
  const reset = startPersistor(['project', 'history', '--rebuild', '--page-size', '20', '--partitions', '2', '--follow', '--database-url', world.db.url])
  t.teardown(() => reset.kill('SIGKILL'))
  const partitionRows = async (): Promise<number> =>
    Number((await world.sql.query(`SELECT count(*) AS n FROM projection_checkpoint WHERE name LIKE 'history/%' AND position > 0`)).rows[0].n)
  await eventually('partitions progress', async () => {
    reset.assertAlive()
    return (await partitionRows()) === 2
  })
  reset.kill('SIGKILL')
  await reset.exited
  t.ok((await checkpoint()) < head, 'killed before the common checkpoint reached the head')
  const three = await cli(['project', 'history', '--partitions', '3', '--database-url', world.db.url])
  t.equal(three.code, 0, three.err)
  t.same(await tables(world), afterKills, 'partitions killed and resumed under another count: identical to a clean rebuild')
  t.equal(await checkpoint(), head)
  t.equal(await partitionRows(), 0, 'no partition checkpoint left behind')

  const shuffledWorld = await setupWorld(t)
  let seed = 5
  const rnd = (): number => (seed = (seed * 16807) % 2147483647) / 2147483647
  await ingestOnly(t, shuffledWorld, [...bodies].sort(() => rnd() - 0.5))
  const projected = await cli(['project', 'history', '--database-url', shuffledWorld.db.url])
  t.equal(projected.code, 0, projected.err)
  t.same(await tables(shuffledWorld), afterKills, 'the same tables from a shuffled delivery')

  // Following, it says so, serves the history metrics `run` has when it runs the projection
  // (the history alerts watch this one too), and says where it stopped.
  const port = await freePort()
  const following = startPersistor(['project', 'history', '--follow', '--http-port', String(port), '--database-url', shuffledWorld.db.url])
  t.teardown(() => following.kill('SIGKILL'))
  await following.waitFor((l) => l.msg === 'history projection following the log', 'the projection to say it follows')
  const shuffledHead = Number((await shuffledWorld.sql.query<{ id: string }>('SELECT max(id) AS id FROM event')).rows[0]?.id)
  const page = await eventually('the history metrics', async () => {
    const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
    return metricValue(text, 'vitrage_persistor_history_position') === shuffledHead && text
  })
  t.equal(metricValue(page, 'vitrage_persistor_history_lag_events'), 0)
  t.equal((await fetch(`http://127.0.0.1:${port}/readyz`)).status, 200)
  t.ok(following.lines.some((l) => l.msg === 'http endpoint listening'), 'listening, as asked')
  // The store's own warnings reach its log (its store had no logger, as follow's had not).
  await shuffledWorld.sql.query(`SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'vitrage-persistor project history listen'`)
  await following.waitFor((l) => l.msg === 'append listener connection lost', 'the listener warning')
  following.kill('SIGTERM')
  t.equal((await following.exited).code, 0)
  // Not asked: no endpoint (it had none before, and must not take the port of a run beside it).
  const quiet = startPersistor(['project', 'history', '--follow', '--database-url', shuffledWorld.db.url])
  t.teardown(() => quiet.kill('SIGKILL'))
  await quiet.waitFor((l) => l.msg === 'history projection following the log', 'the projection to follow')
  t.notOk(quiet.lines.some((l) => l.msg === 'http endpoint listening'), 'no endpoint unless asked')
  quiet.kill('SIGTERM')
  t.equal((await quiet.exited).code, 0)
  const stopped = following.lines.find((l) => l.msg === 'history projection stopped')
  t.match(stopped, { signal: 'SIGTERM' }, 'says it stopped, and why')
})
