import t from 'tap'
import { cli } from './support/cli.js'
import { message, OSLO_PROPERTIES, v2Body } from './support/messages.js'
import { isConsuming, startPersistor } from './support/persistor-process.js'
import { rowCount, setupWorld, type World } from './support/setup.js'
import { eventually } from '@vitrage-persistor/testing'

interface Status {
  readonly database: {
    readonly ok: boolean
    readonly events: { readonly head: number; readonly newest: { readonly id: number } | null }
    readonly checkpoints: Array<{ readonly name: string; readonly behind: number }>
    readonly pendingMigrations: string[]
  }
  readonly broker: { readonly ok: boolean; readonly consumers?: number; readonly ready?: number; readonly deadLetters?: number }
  readonly problems: string[]
}

const args = (world: World): string[] => [
  'status',
  '--database-url',
  world.db.url,
  '--amqp-url',
  world.broker.url,
  '--exchange',
  world.names.exchange,
  '--topic',
  world.names.topic,
  '--queue',
  world.names.queue,
]

const status = async (world: World, extra: readonly string[] = []): Promise<{ code: number; status: Status; err: string }> => {
  const r = await cli([...args(world), '--format', 'json', ...extra])
  return { code: r.code, status: JSON.parse(r.out) as Status, err: r.err }
}

t.test('status shows the log, its readers and the queues, and names what needs an operator', async (t) => {
  const world = await setupWorld(t)
  const p = startPersistor(world.flags())
  t.teardown(() => p.kill('SIGKILL'))
  await p.waitFor(isConsuming, 'consuming')
  for (let i = 0; i < 3; i++) await world.broker.publish(world.names.exchange, world.names.routingKey, v2Body(message({ i })), OSLO_PROPERTIES)
  await eventually('stored', async () => (await rowCount(world)) === 3)

  // The history checkpoint of `run` has caught up too: nothing needs an operator.
  await eventually('healthy', async () => (await status(world)).code === 0)
  const healthy = await status(world)
  t.same(healthy.status.problems, [])
  t.equal(healthy.status.database.events.head, 3)
  t.equal(healthy.status.database.events.newest?.id, 3)
  t.same(healthy.status.database.pendingMigrations, [])
  t.same(healthy.status.database.checkpoints.map((c) => [c.name, c.behind]), [['history', 0]])
  t.same([healthy.status.broker.consumers, healthy.status.broker.ready, healthy.status.broker.deadLetters], [1, 0, 0])

  await world.broker.publish(world.names.exchange, world.names.routingKey, Buffer.from('not json'), OSLO_PROPERTIES)
  await eventually('dead-lettered', async () => (await world.broker.depth(world.names.deadQueue)) === 1)
  const dead = await status(world)
  t.equal(dead.code, 1)
  t.same(dead.status.problems, [`1 dead letters in ${world.names.deadQueue} (\`vitrage-persistor dead-letters list\`)`])

  const table = await cli([...args(world), '--format', 'table'])
  t.equal(table.code, 1)
  t.match(table.out, /^schema\s+up to date$/m)
  t.match(table.out, /^events\s+ids 1 to 3; the newest stored \d+ s ago/m)
  t.match(table.out, new RegExp(`^queue\\s+${world.names.queue}: 0 ready, 1 consumer$`, 'm'))
  t.match(table.out, /^problems\s+1 dead letters in/m)

  p.kill('SIGTERM')
  await p.exited
  // A reader that stopped an hour ago, behind the head.
  await world.sql.query("UPDATE projection_checkpoint SET position = 1, updated_at = now() - interval '1 hour' WHERE name = 'history'")
  const stopped = await status(world)
  t.equal(stopped.code, 1)
  t.same(stopped.status.problems, [
    'checkpoint history is 2 events behind and has not moved for 60 min (its reader stopped? it holds back prune)',
    `nothing consumes ${world.names.queue} (is \`vitrage-persistor run\` up?)`,
    `1 dead letters in ${world.names.deadQueue} (\`vitrage-persistor dead-letters list\`)`,
  ])
})

t.test('status says what it cannot read, and prints no password', async (t) => {
  const world = await setupWorld(t)
  const missing = world.db.url.replace(/\/([^/?]+)(\?|$)/, '/$1_missing$2')
  const r = await cli(['status', '--database-url', missing, '--amqp-url', 'amqp://guest:n0t-the-password@127.0.0.1:5672/', '--format', 'json'])
  t.equal(r.code, 1)
  const s = JSON.parse(r.out) as { database: { ok: boolean; error: string }; broker: { ok: boolean; error: string }; problems: string[] }
  t.equal(s.database.ok, false)
  t.match(s.database.error, /does not exist/)
  t.equal(s.broker.ok, false)
  t.match(s.broker.error, /cannot connect to the broker/)
  t.notMatch(r.out + r.err, /n0t-the-password/)
  const dbOnly = await cli(['status', '--database-url', world.db.url, '--no-broker', '--format', 'json'])
  t.equal(dbOnly.code, 0, 'the database alone, healthy (an empty log)')
  t.notMatch(dbOnly.out, /"broker"/)
})
