import t from 'tap'
import { cli } from './support/cli.js'
import { message, OSLO_PROPERTIES, v2Body } from './support/messages.js'
import { isConsuming, startPersistor } from './support/persistor-process.js'
import { rowCount, setupWorld, type World } from './support/setup.js'
import { createEmptyDatabase, eventually } from '@vitrage-persistor/testing'

interface Status {
  readonly database: {
    readonly ok: boolean
    readonly events: { readonly head: number; readonly newest: { readonly id: number } | null }
    readonly checkpoints: Array<{ readonly name: string; readonly behind: number }>
    readonly pendingMigrations: string[]
  }
  readonly broker: { readonly ok: boolean; readonly consumers?: number; readonly ready?: number; readonly deadLetters?: number; readonly osloQueue?: unknown }
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
  // Behind by a few events is not a problem (exit 0 already): waited for, as it is what is checked.
  const healthy = await eventually('healthy, the history caught up', async () => {
    const s = await status(world)
    return s.code === 0 && s.status.database.checkpoints.every((c) => c.behind === 0) && s
  })
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
  t.same(dead.status.broker.osloQueue, { name: `${world.names.topic}.info` }, "oslo's queue: it does not exist here (nothing oslo-like published)")

  // oslo's publisher declares its own queue (and binds it): it fills while nothing reads it.
  const osloQueue = `${world.names.topic}.info`
  await world.broker.channel.assertQueue(osloQueue, { durable: false, autoDelete: false })
  // Deleted here, not with broker.cleanup (which closes the broker: the world's own cleanup then
  // left its queues and exchanges behind).
  t.teardown(() => world.broker.channel.deleteQueue(osloQueue).then(() => undefined, () => undefined))
  // Straight into it (through the exchange it would reach the persistor's queue as well).
  await world.broker.publish('', osloQueue, v2Body(message({ i: 9 })), OSLO_PROPERTIES)
  const withOslo = await status(world)
  t.same(withOslo.status.broker.osloQueue, { name: osloQueue, ready: 1, consumers: 0 })
  const osloTable = await cli([...args(world), '--format', 'table'])
  t.match(osloTable.out, new RegExp(`^oslo's queue\\s+${osloQueue.replaceAll('.', '\\.')}: 1 ready, 0 consumers \\(nothing reads it: cap it with a policy`, 'm'))

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

t.test('status on a database without the schema names the pending migrations, not only the missing table', async (t) => {
  const empty = await createEmptyDatabase()
  t.teardown(() => empty.drop())
  const r = await cli(['status', '--database-url', empty.url, '--no-broker', '--format', 'json'])
  t.equal(r.code, 1)
  const s = JSON.parse(r.out) as { database: { ok: boolean; pendingMigrations: string[] }; problems: string[] }
  t.equal(s.database.ok, false)
  t.match(s.database.pendingMigrations[0], /^0001_/)
  t.match(s.problems[0], /^migrations pending: 0001_event, .* \(run `vitrage-persistor migrate`\)$/)
})

t.test('status against a server that accepts the connection and never answers ends, saying so', async (t) => {
  const net = await import('node:net')
  const sockets = new Set<import('node:net').Socket>()
  const silent = net.createServer((socket) => {
    sockets.add(socket)
    socket.on('error', () => {})
  })
  await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve))
  t.teardown(() => {
    for (const s of sockets) s.destroy()
    silent.close()
  })
  const port = (silent.address() as import('node:net').AddressInfo).port
  const r = await cli(['status', '--database-url', `postgres://root:pw@127.0.0.1:${port}/db`, '--no-broker', '--format', 'json'])
  t.equal(r.code, 1)
  t.match((JSON.parse(r.out) as { problems: string[] }).problems[0], /^database: .*timeout/)
})

t.test('many stale checkpoints are counted, not listed one by one', async (t) => {
  const world = await setupWorld(t)
  await world.sql.query(`INSERT INTO event (message_id, event_type, collector_timestamp, payload) VALUES (gen_random_uuid(), 'x', now(), '{}')`)
  await world.sql.query(
    `INSERT INTO projection_checkpoint (name, position, updated_at) SELECT 'reader-' || i, 0, now() - interval '1 hour' FROM generate_series(1, 1000) i`,
  )
  const r = await cli(['status', '--database-url', world.db.url, '--no-broker', '--format', 'table'])
  t.equal(r.code, 1)
  t.equal(r.out.split('\n').filter((l) => l.startsWith('checkpoint ')).length, 20, 'the table shows 20')
  t.match(r.out, /and 980 more checkpoints \(--format json lists them all\)/)
  t.match(r.out, /997 more checkpoints are behind and have not moved for 10 min/)
  const json = await cli(['status', '--database-url', world.db.url, '--no-broker', '--format', 'json'])
  t.equal((JSON.parse(json.out) as { database: { checkpoints: unknown[] } }).database.checkpoints.length, 1000)
})
