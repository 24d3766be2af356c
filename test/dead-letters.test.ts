import { deflateSync } from 'node:zlib'
import { dropDeadLetters } from '@vitrage-persistor/ingest'
import { connectTestBroker, eventually, freePort } from '@vitrage-persistor/testing'
import * as E from 'fp-ts/lib/Either.js'
import t from 'tap'
import { cli } from './support/cli.js'
import { message, OSLO_PROPERTIES, v2Body, v2BodyWithPayloadText } from './support/messages.js'
import { startFreezableProxy } from './support/freezable-proxy.js'
import { isConsuming, startPersistor, stopAndTime } from './support/persistor-process.js'
import { settledDepth } from './support/rabbitmqctl.js'
import { declarePersistorTopology, metricValue, rowCount, setupWorld, type World } from './support/setup.js'

interface Letter {
  readonly position: number
  readonly reason: string
  readonly messageId: string | null
  readonly originalExchange: string | null
  readonly originalRoutingKey: string | null
  readonly requeued: number
  readonly detail: string | null
}
interface Listing {
  readonly queue: string
  readonly depth: number
  readonly scanned: number
  readonly byReason: Record<string, number>
  readonly letters: Letter[]
}

const names = (world: World): string[] => ['--amqp-url', world.broker.url, '--exchange', world.names.exchange, '--topic', world.names.topic, '--queue', world.names.queue]

const list = async (world: World, extra: readonly string[] = []): Promise<Listing> => {
  const r = await cli(['dead-letters', 'list', ...names(world), '--format', 'json', ...extra])
  if (r.code !== 0) throw new Error(`dead-letters list exited ${r.code}: ${r.err}`)
  return JSON.parse(r.out) as Listing
}

const storedIds = async (world: World): Promise<string[]> =>
  (await world.sql.query<{ message_id: string }>('SELECT message_id::text FROM event ORDER BY id')).rows.map((r) => r.message_id)

t.test('dead letters are listed without being consumed, and requeued ones are stored once their cause is fixed', async (t) => {
  const world = await setupWorld(t)
  const first = startPersistor(world.flags(['--max-message-bytes', '2000', '--batch-size', '4']))
  t.teardown(() => first.kill('SIGKILL'))
  await first.waitFor(isConsuming, 'consuming')

  const good1 = message({ n: 1 })
  const big1 = message({ blob: 'x'.repeat(3000) })
  const good2 = message({ n: 2 })
  const big2 = message({ blob: 'y'.repeat(3000) })
  for (const body of [v2Body(good1), v2Body(big1), Buffer.from('not json at all'), v2Body(good2), v2Body(big2)]) {
    await world.broker.publish(world.names.exchange, world.names.routingKey, body, OSLO_PROPERTIES)
  }
  await eventually('three dead letters', async () => (await world.broker.depth(world.names.deadQueue)) === 3)
  await eventually('two stored', async () => (await rowCount(world)) === 2)

  const listed = await list(world)
  t.equal(listed.queue, world.names.deadQueue)
  t.equal(listed.depth, 3)
  t.same(listed.byReason, { 'body-too-large': 2, 'invalid-json': 1 })
  t.same(
    listed.letters.map((l) => [l.position, l.reason, l.messageId]),
    [
      [1, 'body-too-large', big1['message_id']],
      [2, 'invalid-json', null],
      [3, 'body-too-large', big2['message_id']],
    ],
    'in queue order, a too-large letter named by its message id',
  )
  t.equal(listed.letters[0]?.originalExchange, world.names.exchange)
  t.equal(listed.letters[0]?.originalRoutingKey, world.names.routingKey)
  t.match(listed.letters[0]?.detail, /limit is 2000/)
  t.same(await list(world), listed, 'listing again finds the same letters in the same order: listing removed nothing')
  t.equal(await world.broker.depth(world.names.deadQueue), 3)

  const filtered = await list(world, ['--reason', 'invalid-json'])
  t.same(filtered.letters.map((l) => l.position), [2], '--reason selects')
  const limited = await list(world, ['--limit', '1'])
  t.same([limited.scanned, limited.letters.length], [1, 1], '--limit stops the scan')

  const table = await cli(['dead-letters', 'list', ...names(world), '--format', 'table'])
  t.equal(table.code, 0)
  t.match(table.out, /^position\s+dead_lettered_at\s+reason/)
  t.match(table.out, new RegExp(`${world.names.deadQueue}: 3 dead letters; 3 read \\(body-too-large 2, invalid-json 1\\), 3 shown`))

  // The cause is fixed: the persistor restarted with a higher limit.
  first.kill('SIGTERM')
  await first.exited
  const port = await freePort()
  const second = startPersistor(world.flags(['--max-message-bytes', '1048576', '--batch-size', '4', '--http-port', String(port)]))
  t.teardown(() => second.kill('SIGKILL'))
  await second.waitFor(isConsuming, 'consuming')
  await eventually('the letters waiting show in /metrics', async () =>
    metricValue(await (await fetch(`http://127.0.0.1:${port}/metrics`)).text(), 'vitrage_persistor_dead_letter_queue_depth') === 3,
  )

  const requeued = await cli(['dead-letters', 'requeue', ...names(world), '--reason', 'body-too-large'])
  t.equal(requeued.code, 0, requeued.err)
  t.same(JSON.parse(requeued.out), {
    from: world.names.deadQueue,
    to: world.names.queue,
    depth: 3,
    scanned: 3,
    requeued: 2,
    byReason: { 'body-too-large': 2 },
    skipped: 1,
  })
  await eventually('the requeued letters stored', async () => (await rowCount(world)) === 4)
  t.same(await storedIds(world), [good1, good2, big1, big2].map((m) => m['message_id']), 'stored after what was stored before, in their dead-letter order')
  const left = await list(world)
  t.same(left.letters.map((l) => [l.position, l.reason]), [[1, 'invalid-json']], 'the letter not selected stayed')

  // Requeued again without a fix, a bad message comes back with its count and its first origin.
  const again = await cli(['dead-letters', 'requeue', ...names(world)])
  t.equal(again.code, 0, again.err)
  t.equal((JSON.parse(again.out) as { requeued: number }).requeued, 1)
  await eventually('back in the dead-letter queue', async () => (await world.broker.depth(world.names.deadQueue)) === 1)
  const back = await list(world)
  t.same(
    back.letters.map((l) => [l.reason, l.requeued, l.originalExchange, l.originalRoutingKey]),
    [['invalid-json', 1, world.names.exchange, world.names.routingKey]],
    'it names the exchange and key it first came through, not the default exchange it was requeued through',
  )
  t.equal(await rowCount(world), 4, 'nothing stored twice')
  second.kill('SIGTERM')
  t.same(await second.exited, { code: 0, signal: null })
})

t.test('drop deletes the letters it names, by reason or message_id, and keeps the others in their order; it refuses to drop unnamed ones', async (t) => {
  const world = await setupWorld(t)
  const p = startPersistor(world.flags(['--max-message-bytes', '2000', '--batch-size', '4']))
  t.teardown(() => p.kill('SIGKILL'))
  await p.waitFor(isConsuming, 'consuming')
  const big = [1, 2, 3].map((n) => message({ n, blob: 'x'.repeat(3000) }))
  for (const body of [v2Body(big[0]!), Buffer.from('not json 1'), v2Body(big[1]!), Buffer.from('not json 2'), v2Body(big[2]!)]) {
    await world.broker.publish(world.names.exchange, world.names.routingKey, body, OSLO_PROPERTIES)
  }
  await eventually('five dead letters', async () => (await world.broker.depth(world.names.deadQueue)) === 5)
  p.kill('SIGTERM')
  await p.exited

  for (const [args, expected] of [
    [[], /drop deletes letters for good: name them with --reason or --message-id \(repeatable\), or --all/],
    [['--all', '--reason', 'invalid-json'], /--all cannot be combined with --reason or --message-id/],
    [['--reason', 'nope'], /--reason: "nope" is not a dead-letter reason/],
  ] as const) {
    const r = await cli(['dead-letters', 'drop', ...names(world), ...args])
    t.equal(r.code, 2, `drop ${args.join(' ')}: exit 2`)
    t.match(r.err, expected)
  }
  t.equal(await world.broker.depth(world.names.deadQueue), 5, 'a refused drop touched nothing')

  const byReason = await cli(['dead-letters', 'drop', ...names(world), '--reason', 'invalid-json'])
  t.equal(byReason.code, 0, byReason.err)
  t.same(JSON.parse(byReason.out), { from: world.names.deadQueue, depth: 5, scanned: 5, dropped: 2, byReason: { 'invalid-json': 2 }, skipped: 3 })
  t.same((await list(world)).letters.map((l) => [l.reason, l.messageId]), big.map((m) => ['body-too-large', m['message_id']]), 'the others, in their order')

  const byId = await cli(['dead-letters', 'drop', ...names(world), '--message-id', String(big[1]!['message_id'])])
  t.equal(byId.code, 0, byId.err)
  t.match(JSON.parse(byId.out), { dropped: 1, skipped: 2 })
  t.same((await list(world)).letters.map((l) => l.messageId), [big[0]!['message_id'], big[2]!['message_id']])
  const listedById = await list(world, ['--message-id', String(big[2]!['message_id'])])
  t.same(listedById.letters.map((l) => l.position), [2], 'list selects by message_id too')

  // A compressed letter (kombu_compression), too large once decompressed: named by a listing, so
  // found by --message-id too (review 59: the walk did not decompress, matched nothing, exit 0).
  const zipped = message({ blob: 'z'.repeat(5000) })
  const p2 = startPersistor(world.flags(['--max-message-bytes', '2000']))
  t.teardown(() => p2.kill('SIGKILL'))
  await p2.waitFor(isConsuming, 'consuming')
  await world.broker.publish(world.names.exchange, world.names.routingKey, deflateSync(v2Body(zipped)), { ...OSLO_PROPERTIES, headers: { compression: 'application/x-gzip' } })
  await eventually('the compressed letter', async () => (await world.broker.depth(world.names.deadQueue)) === 3)
  p2.kill('SIGTERM')
  await p2.exited
  t.match((await list(world)).letters.at(-1), { reason: 'body-too-large', messageId: zipped['message_id'] }, 'listed by its message_id')
  const missing = '00000000-0000-4000-8000-00000000dead'
  const compressed = await cli(['dead-letters', 'drop', ...names(world), '--message-id', String(zipped['message_id']), '--message-id', missing])
  t.equal(compressed.code, 1, 'one of the ids named no letter')
  t.match(JSON.parse(compressed.out), { dropped: 1, skipped: 2, notFound: [missing] })
  t.match(compressed.err, `no dead letter has message_id ${missing} in ${world.names.deadQueue}`)

  const everything = await cli(['dead-letters', 'drop', ...names(world), '--all'])
  t.equal(everything.code, 0, everything.err)
  t.match(JSON.parse(everything.out), { dropped: 2, skipped: 0 })
  t.equal(await world.broker.depth(world.names.deadQueue), 0)
  t.equal(await rowCount(world), 0, 'nothing stored: dropped, not requeued')
})

t.test('drop --all walks the letters there when it started: letters dead-lettered meanwhile stay (nobody has seen them)', async (t) => {
  const world = await setupWorld(t)
  await declarePersistorTopology(world)
  const letter = (n: number): Promise<void> => world.broker.publish('', world.names.deadQueue, Buffer.from(`not json ${n}`), { headers: { 'x-persistor-error': 'invalid-json' } })
  for (let n = 0; n < 50; n++) await letter(n)
  await eventually('50 letters', async () => (await world.broker.depth(world.names.deadQueue)) === 50)
  let arrived = false
  const r = await dropDeadLetters({
    amqpUrl: world.broker.url,
    deadLetterQueue: world.names.deadQueue,
    limit: Number.MAX_SAFE_INTEGER,
    maxInFlight: 10,
    onProgress: (p) => {
      // Once the drop is under way, 20 more arrive (a running persistor dead-lettering).
      if (p.scanned === 10 && !arrived) {
        arrived = true
        for (let n = 100; n < 120; n++) void letter(n)
      }
    },
  })
  t.ok(arrived)
  t.match(r, E.right({ depth: 50, scanned: 50, dropped: 50, skipped: 0 }), 'the 50 there at the start (before: 70, and with letters arriving faster than it walked, it never ended)')
  await eventually('the 20 that arrived meanwhile are still there', async () => (await world.broker.depth(world.names.deadQueue)) === 20)
  t.same((await list(world)).letters.map((l) => l.position), Array.from({ length: 20 }, (_, i) => i + 1))
})

t.test('one walk of a dead-letter queue at a time: another list, requeue or drop meanwhile is refused, touching nothing', async (t) => {
  const world = await setupWorld(t)
  await declarePersistorTopology(world)
  for (let n = 0; n < 5; n++) await world.broker.publish('', world.names.deadQueue, Buffer.from(`not json ${n}`), { headers: { 'x-persistor-error': 'invalid-json' } })
  await eventually('5 letters', async () => (await world.broker.depth(world.names.deadQueue)) === 5)
  // A walk in progress holds the lock (a queue exclusive to its connection).
  const holder = await connectTestBroker(world.broker.url)
  t.teardown(() => holder.close())
  await holder.channel.assertQueue(`${world.names.deadQueue}.walk`, { exclusive: true, durable: false, autoDelete: true })
  for (const command of [['drop', '--all'], ['requeue'], ['list']]) {
    const r = await cli(['dead-letters', ...command, ...names(world)])
    t.equal(r.code, 1, `${command[0]} refused`)
    t.match(r.err, /another dead-letters list, requeue or drop is walking .*: run one at a time/)
  }
  t.equal(await world.broker.depth(world.names.deadQueue), 5, 'nothing touched')
  await holder.close()
  const r = await cli(['dead-letters', 'drop', '--all', ...names(world)])
  t.equal(r.code, 0, r.err)
  t.equal(await world.broker.depth(world.names.deadQueue), 0, 'once the other walk ended')
})

t.test('requeue refuses when the persistor queue is missing and leaves the dead letters in place', async (t) => {
  const world = await setupWorld(t)
  await declarePersistorTopology(world)
  await world.broker.publish('', world.names.deadQueue, v2BodyWithPayloadText('{}'), { ...OSLO_PROPERTIES, headers: { 'x-persistor-error': 'database-rejected' } })
  const ch = await world.broker.connection.createChannel()
  await ch.deleteQueue(world.names.queue)
  await ch.close()

  const r = await cli(['dead-letters', 'requeue', ...names(world)])
  t.equal(r.code, 1)
  t.match(r.err, new RegExp(`the persistor's queue "${world.names.queue}" does not exist`))
  t.notMatch(r.err, /guest:guest/, 'the password is not printed')
  t.equal(await world.broker.depth(world.names.deadQueue), 1, 'the dead letter stayed')

  const refused = await cli(['dead-letters', 'list', ...names(world), '--amqp-url', 'amqp://guest:n0t-the-password@127.0.0.1:5672/'])
  t.equal(refused.code, 1)
  t.match(refused.err, /cannot connect to the broker/)
  t.notMatch(refused.err, /n0t-the-password/, 'a refused password is not printed')

  const other = await cli(['dead-letters', 'list', ...names(world).slice(0, -1), `${world.names.queue}_other`])
  t.equal(other.code, 1)
  t.match(other.err, /there is no dead-letter queue .*_other\.dead/)
})

t.test('a bad flag says what is wrong and touches nothing', async (t) => {
  const world = await setupWorld(t)
  for (const [args, expected] of [
    [['--limit', '0'], /--limit: must be a positive integer/],
    [['--reason', 'nope'], /--reason: "nope" is not a dead-letter reason; one of body-too-large, .*broker:expired/],
  ] as const) {
    const r = await cli(['dead-letters', 'list', ...names(world), ...args])
    t.equal(r.code, 2, args.join(' '))
    t.match(r.err, expected)
  }
  const r = await cli(['dead-letters', 'requeue', ...names(world), '--max-in-flight', 'x'])
  t.equal(r.code, 2)
  t.match(r.err, /--max-in-flight: must be a positive integer/)
})

t.test('a requeue stopped midway loses nothing: every letter is either requeued once or still a dead letter, in order', async (t) => {
  const { requeueDeadLetters } = await import('@vitrage-persistor/ingest')
  const world = await setupWorld(t)
  await declarePersistorTopology(world)
  const ids: string[] = []
  for (let i = 0; i < 300; i++) {
    const m = message({ i })
    ids.push(m['message_id'] as string)
    world.broker.channel.publish('', world.names.deadQueue, v2Body(m), { ...OSLO_PROPERTIES, headers: { 'x-persistor-error': i % 3 === 0 ? 'invalid-field' : 'database-rejected' } })
  }
  await world.broker.channel.waitForConfirms()
  let progress = 0
  const stop = new AbortController()
  const r = await requeueDeadLetters({
    amqpUrl: world.broker.url,
    deadLetterQueue: world.names.deadQueue,
    targetQueue: world.names.queue,
    reasons: ['database-rejected'],
    limit: 1_000,
    maxInFlight: 16,
    onProgress: () => {
      if (++progress >= 50) stop.abort()
    },
    signal: stop.signal,
  })
  if (r._tag === 'Left') throw new Error(r.left.message)
  t.equal(r.right.stopped, true)
  t.ok(r.right.requeued + r.right.skipped >= 50 && r.right.requeued < 200, `stopped early (${r.right.requeued} of 200 selected requeued)`)
  const copies = await world.broker.drain(world.names.queue)
  const dead = await world.broker.drain(world.names.deadQueue)
  const idOf = (m: { content: Buffer }): string => (JSON.parse((JSON.parse(m.content.toString()) as Record<string, string>)['oslo.message'] as string) as { message_id: string }).message_id
  t.equal(copies.length, r.right.requeued, 'every confirmed copy is in the persistor queue')
  t.same(
    [...copies.map(idOf), ...dead.map(idOf)].sort(),
    [...ids].sort(),
    'each letter exactly once: requeued or still dead',
  )
  // Read letters not selected went to the tail, behind those not read yet; each group in order.
  const read = ids.slice(0, r.right.scanned)
  t.same(dead.map(idOf), [...ids.slice(r.right.scanned), ...read.filter((_, i) => i % 3 === 0)], 'the ones left keep their order')
  t.equal(r.right.skipped, read.filter((_, i) => i % 3 === 0).length)
  t.ok(copies.every((m) => m.properties.headers?.['x-persistor-requeued'] === 1 && m.properties.headers?.['x-persistor-error'] === undefined))
})

t.test('a listing reads at most 1,000 letters, and puts every one back', async (t) => {
  const world = await setupWorld(t)
  await declarePersistorTopology(world)
  for (let i = 0; i < 1_500; i++) {
    world.broker.channel.publish('', world.names.deadQueue, v2Body(message({ i })), { ...OSLO_PROPERTIES, headers: { 'x-persistor-error': 'invalid-field' } })
  }
  await world.broker.channel.waitForConfirms()
  const none = await list(world, ['--reason', 'invalid-json', '--limit', '1000'])
  t.same([none.depth, none.scanned, none.letters.length], [1_500, 1_000, 0])
  await eventually('all 1,500 ready again', async () => (await world.broker.depth(world.names.deadQueue)) === 1_500)
  const over = await cli(['dead-letters', 'list', ...names(world), '--limit', '1001'])
  t.equal(over.code, 2)
  t.match(over.err, /--limit: at most 1000/)
})

t.test('a user the broker does not let read the dead letters gets its reason, not a retry', async (t) => {
  const { execFile } = await import('node:child_process')
  const { promisify } = await import('node:util')
  const rabbitmqctl = (...args: string[]): Promise<unknown> => promisify(execFile)('rabbitmqctl', ['-q', ...args])
  const world = await setupWorld(t)
  await declarePersistorTopology(world)
  const user = `${world.names.queue}_user`
  await rabbitmqctl('add_user', user, 'no-read-pw')
  t.teardown(() => rabbitmqctl('delete_user', user).catch(() => {}))
  await rabbitmqctl('set_permissions', '-p', '/', user, '^$', '^$', '^$')
  const url = world.broker.url.replace(/\/\/[^@]*@/, `//${user}:no-read-pw@`)
  const r = await cli(['dead-letters', 'list', ...names(world), '--amqp-url', url])
  t.equal(r.code, 1)
  t.match(r.err, /403 \(ACCESS-REFUSED\).*access to queue/)
  t.notMatch(r.err, /no-read-pw/)
  const { inspectDeadLetters } = await import('@vitrage-persistor/ingest')
  const lib = await inspectDeadLetters({ amqpUrl: url, deadLetterQueue: world.names.deadQueue, limit: 10 })
  t.match(lib, { _tag: 'Left', left: { kind: 'fatal', code: 'access-refused' } }, 'fatal for the library: retrying does not help')
  // A wrong password is refused at the handshake, before any queue: the same (it was transient).
  const wrongPassword = world.broker.url.replace(/\/\/[^@]*@/, `//${user}:not-the-password@`)
  const login = await inspectDeadLetters({ amqpUrl: wrongPassword, deadLetterQueue: world.names.deadQueue, limit: 10 })
  t.match(login, { _tag: 'Left', left: { kind: 'fatal', code: 'access-refused', message: /cannot connect to the broker: .*403 \(ACCESS-REFUSED\)/ } }, 'a login refused: fatal')
})

t.test('letters whose headers cannot be encoded again do not stop a requeue: selected, they go with the headers dropped; not, they stay', async (t) => {
  const { requeueDeadLetters } = await import('@vitrage-persistor/ingest')
  const world = await setupWorld(t)
  await declarePersistorTopology(world)
  // Just under amqplib's 64 KiB table: encodable as published, not with the requeue's headers added.
  const big = { 'x-persistor-error': 'invalid-json', padding: 'h'.repeat(65_470) }
  const bigOther = { 'x-persistor-error': 'invalid-field', padding: 'h'.repeat(65_470) }
  const bodies = ['a', 'big-selected', 'b', 'big-other', 'c']
  for (const [i, body] of bodies.entries()) {
    const headers = body === 'big-selected' ? big : body === 'big-other' ? bigOther : { 'x-persistor-error': i === 2 ? 'invalid-field' : 'invalid-json' }
    world.broker.channel.publish('', world.names.deadQueue, Buffer.from(body), { ...OSLO_PROPERTIES, headers })
  }
  await world.broker.channel.waitForConfirms()
  for (let run = 0; run < 2; run++) {
    const r = await requeueDeadLetters({ amqpUrl: world.broker.url, deadLetterQueue: world.names.deadQueue, targetQueue: world.names.queue, reasons: ['invalid-json'], limit: 100, maxInFlight: 10 })
    if (r._tag === 'Left') throw new Error(`run ${run}: ${r.left.message}`)
    t.same([r.right.requeued, r.right.skipped], run === 0 ? [3, 1] : [0, 1], `run ${run}: counts (the big letter not selected held, not moved)`)
  }
  const copies = await world.broker.drain(world.names.queue)
  t.same(copies.map((m) => m.content.toString()), ['a', 'big-selected', 'c'], 'each selected letter requeued once, in order')
  t.equal(copies[1]?.properties.headers?.['x-persistor-original-headers-dropped'], true)
  t.equal(copies[1]?.properties.headers?.['padding'], undefined)
  const left = await world.broker.drain(world.names.deadQueue)
  t.same(left.map((m) => m.content.toString()).sort(), ['b', 'big-other'], 'the letters not selected are still there, once each')
})

t.test('a requeue that fails midway settles every confirmed copy: the letters removed are exactly those requeued', async (t) => {
  const { requeueDeadLetters } = await import('@vitrage-persistor/ingest')
  const world = await setupWorld(t)
  await declarePersistorTopology(world)
  for (let i = 0; i < 2_000; i++) world.broker.channel.publish('', world.names.deadQueue, Buffer.from(`m${i}`), { ...OSLO_PROPERTIES, headers: { 'x-persistor-error': 'invalid-json' } })
  await world.broker.channel.waitForConfirms()
  let progress = 0
  let deleted: Promise<unknown> | undefined
  const r = await requeueDeadLetters({
    amqpUrl: world.broker.url,
    deadLetterQueue: world.names.deadQueue,
    targetQueue: world.names.queue,
    limit: 10_000,
    maxInFlight: 200,
    // The persistor's queue deleted by an operator while it runs: later copies come back unroutable.
    onProgress: () => {
      if (++progress === 300) deleted = world.broker.channel.deleteQueue(world.names.queue)
    },
  })
  await deleted
  t.match(r, { _tag: 'Left', left: { kind: 'fatal', code: 'unroutable' } })
  const requeued = r._tag === 'Left' ? r.left.requeued : -1
  t.ok(requeued >= 300 && requeued < 2_000, `${requeued} requeued before it stopped`)
  t.equal(await settledDepth(world.names.deadQueue), 2_000 - requeued, 'every letter not counted as requeued is still a dead letter, and no other')
})

t.test('when the broker starts refusing copies, the letters removed are exactly the copies it took', async (t) => {
  const { requeueDeadLetters } = await import('@vitrage-persistor/ingest')
  const world = await setupWorld(t)
  await declarePersistorTopology(world)
  // A target that takes 300 messages, then nacks publishes (reject-publish): a refusal mid-run.
  const target = `${world.names.queue}_bounded`
  world.names.queues.push(target)
  await world.broker.channel.assertQueue(target, { durable: true, arguments: { 'x-max-length': 300, 'x-overflow': 'reject-publish' } })
  for (let i = 0; i < 2_000; i++) world.broker.channel.publish('', world.names.deadQueue, Buffer.from(`m${i}`), { ...OSLO_PROPERTIES, headers: { 'x-persistor-error': 'invalid-json' } })
  await world.broker.channel.waitForConfirms()
  const r = await requeueDeadLetters({ amqpUrl: world.broker.url, deadLetterQueue: world.names.deadQueue, targetQueue: target, limit: 10_000, maxInFlight: 200 })
  t.match(r, { _tag: 'Left', left: { message: /the broker refused a copy/ } })
  t.equal(r._tag === 'Left' ? r.left.requeued : -1, 300, 'the 300 the target took are counted')
  t.equal(await world.broker.depth(target), 300)
  t.equal(await settledDepth(world.names.deadQueue), 1_700, 'and removed from the dead letters; all the others are still there')
})

t.test('a dead letter whose headers the persistor must drop keeps the requeue marks, so a requeue still knows its own copy', async (t) => {
  const world = await setupWorld(t)
  const p = startPersistor(world.flags())
  t.teardown(() => p.kill('SIGKILL'))
  await p.waitFor(isConsuming, 'consuming')
  const run = '6f1c2a8e-5d43-4c51-9d7e-0a4f0e7f3b11'
  // As a requeued copy arrives: near 64 KiB of headers, which the dead letter's own cannot join.
  const headers = { padding: 'h'.repeat(65_300), 'x-persistor-requeued': 1, 'x-persistor-requeue-run': run }
  await world.broker.publish('', world.names.queue, Buffer.from('still not json'), { ...OSLO_PROPERTIES, headers })
  await eventually('dead-lettered', async () => (await world.broker.depth(world.names.deadQueue)) === 1)
  const [letter] = await world.broker.drain(world.names.deadQueue)
  t.match(letter?.properties.headers, {
    'x-persistor-error': 'invalid-json',
    'x-persistor-original-headers-dropped': true,
    'x-persistor-requeued': 1,
    'x-persistor-requeue-run': run,
  })
  t.equal(letter?.properties.headers?.['padding'], undefined)
  p.kill('SIGTERM')
  t.equal((await p.exited).code, 0)
})

t.test('a bad message whose headers hold a table with a \'!\' key (amqplib\'s type marker) is dead-lettered without them; run keeps consuming, and a requeue passes it', async (t) => {
  const world = await setupWorld(t)
  const p = startPersistor(world.flags())
  t.teardown(() => p.kill('SIGKILL'))
  await p.waitFor(isConsuming, 'consuming')
  // On the wire a nested table {'!': 'bogus', value: 1}; encoding it again, amqplib reads '!' as a
  // type name and throws a TypeError, which stopped run (exit 70) at every start.
  const trapdoor = { evil: { '!': 'object', value: { '!': 'bogus', value: 1 } } }
  // The same marker naming 'long' with a value that is no number: a SyntaxError from BigInt (review 52).
  const notANumber = { evil: { '!': 'object', value: { '!': 'long', value: 'abc' } } }
  // As a requeued copy whose origin headers are long: kept, cut to what encodes, when the rest is dropped.
  const longOrigin = { ...trapdoor, 'x-persistor-requeued': 1, 'x-persistor-original-exchange': 'x'.repeat(20_000), 'x-persistor-original-routing-key': 'k'.repeat(20_000) }
  for (const headers of [trapdoor, notANumber, longOrigin]) await world.broker.publish('', world.names.queue, Buffer.from('not json at all'), { ...OSLO_PROPERTIES, headers })
  await world.broker.publish(world.names.exchange, world.names.routingKey, v2Body(message({ after: 1 })), OSLO_PROPERTIES)
  await eventually('dead-lettered, and the next one stored', async () => (await world.broker.depth(world.names.deadQueue)) === 3 && (await rowCount(world)) === 1)
  p.assertAlive()
  const { requeueDeadLetters } = await import('@vitrage-persistor/ingest')
  const letters = await world.broker.drain(world.names.deadQueue)
  for (const letter of letters) {
    t.match(letter.properties.headers, { 'x-persistor-error': 'invalid-json', 'x-persistor-original-headers-dropped': true })
    t.equal(letter.properties.headers?.['evil'], undefined)
  }
  t.equal(letters[2]?.properties.headers?.['x-persistor-original-exchange'], 'x'.repeat(255), 'origin cut to 255 bytes')
  // The same headers on a letter a requeue walks past (not selected): left in place, not a crash;
  // on one it selects: sent back without them.
  await world.broker.publish('', world.names.deadQueue, Buffer.from('x'), { ...OSLO_PROPERTIES, headers: { ...trapdoor, 'x-persistor-error': 'invalid-json' } })
  await world.broker.publish('', world.names.deadQueue, v2Body(message({ again: 1 })), { ...OSLO_PROPERTIES, headers: { ...notANumber, 'x-persistor-error': 'database-rejected' } })
  const r = await requeueDeadLetters({ amqpUrl: world.broker.url, deadLetterQueue: world.names.deadQueue, targetQueue: world.names.queue, reasons: ['database-rejected'], limit: 10, maxInFlight: 10 })
  t.match(r, { _tag: 'Right', right: { requeued: 1 } })
  await eventually('the requeued one stored', async () => (await rowCount(world)) === 2)
  t.equal(await settledDepth(world.names.deadQueue), 1, 'the other letter stays')
  p.kill('SIGTERM')
  t.equal((await p.exited).code, 0)
})

for (const stall of ['stallAtConnect', 'stallAtFirstChannel'] as const) {
  t.test(`a stop does not wait for a broker that stopped answering ${stall === 'stallAtConnect' ? 'while the requeue connects' : 'right after the requeue connected'}; the letters stay`, async (t) => {
    const world = await setupWorld(t)
    await declarePersistorTopology(world)
    for (let i = 0; i < 5; i++) world.broker.channel.publish('', world.names.deadQueue, v2Body(message({ i })), { ...OSLO_PROPERTIES, headers: { 'x-persistor-error': 'database-rejected' } })
    await world.broker.channel.waitForConfirms()
    const proxy = await startFreezableProxy(world.broker.url, { [stall]: true })
    t.teardown(proxy.close)
    const p = startPersistor(['dead-letters', 'requeue', ...names(world), '--amqp-url', proxy.url])
    t.teardown(() => p.kill('SIGKILL'))
    // Accepted, then nothing (the AMQP handshake, or the channel it opens to check the queues, is never answered).
    await proxy.stalled()
    const { exit, took } = await stopAndTime(p)
    t.same(exit, { code: 1, signal: null })
    // Before: it waited for the broker until the heartbeat gave up, ~3 minutes; the connect, until
    // its 10 s timeout (the process held open by its socket). The bound is well below both; that
    // the connecting socket was dropped, not waited for, is what the absence of bin.ts's "handles
    // still open" (said 5 s after the command ended) shows.
    t.ok(took < 7_000, `exited ${took} ms after SIGTERM`)
    t.match(p.output(), /stopped by SIGTERM; 0 requeued, the rest left in/)
    t.notMatch(p.output(), /"depth"/, 'no depth it did not read')
    t.notMatch(p.output(), /handles still open/, 'nothing held the process open after the command ended')
    t.equal(await settledDepth(world.names.deadQueue), 5, 'every letter is still a dead letter')
  })
}

t.test('a requeue whose broker stops answering midway, stopped twice, says how many letters may be in both queues; none is lost', async (t) => {
  const world = await setupWorld(t)
  await declarePersistorTopology(world)
  const ids: string[] = []
  for (let i = 0; i < 3_000; i++) {
    const m = message({ i })
    ids.push(m['message_id'] as string)
    world.broker.channel.publish('', world.names.deadQueue, v2Body(m), { ...OSLO_PROPERTIES, headers: { 'x-persistor-error': 'database-rejected' } })
  }
  await world.broker.channel.waitForConfirms()
  const proxy = await startFreezableProxy(world.broker.url)
  t.teardown(proxy.close)
  const p = startPersistor(['dead-letters', 'requeue', ...names(world), '--amqp-url', proxy.url, '--max-in-flight', '200'])
  t.teardown(() => p.kill('SIGKILL'))
  await eventually('copies arriving', async () => {
    p.assertAlive()
    return (await world.broker.depth(world.names.queue)) >= 300
  })
  proxy.freeze()
  p.kill('SIGTERM')
  await eventually('stopping', () => /stopping \(SIGTERM\): reading no more letters/.test(p.output()))
  const again = Date.now()
  p.kill('SIGTERM')
  const exit = await p.exited
  t.same(exit, { code: 1, signal: null })
  // The second signal ends the wait for confirms (30 s each); closing is bounded at 2 s + 2 s.
  t.ok(Date.now() - again < 7_000, `exited ${Date.now() - again} ms after the second SIGTERM`)
  const said = /(\d+) requeued before that; (?:(\d+) more copies were sent but not confirmed: they may have reached \S+ all the same, and their letters stay in [^\s;]+)?(?:; )?(the broker did not confirm the last acks)?/.exec(p.output())
  t.ok(said, p.output().slice(-800))
  const unconfirmed = Number(said?.[2] ?? 0)
  const requeued = Number(said?.[1])
  t.ok(unconfirmed <= 200, `${unconfirmed} unconfirmed copies, at most --max-in-flight`)
  // Frozen, the broker cannot have confirmed the channel's close: the acks are in doubt, and said to be.
  t.ok(requeued > 0 && said?.[3] !== undefined, 'the acks in doubt are said')
  // Thawed, the path passes the close: what the requeue held unacked goes back to the dead letters.
  proxy.thaw()
  await settledDepth(world.names.deadQueue)
  const idOf = (m: { content: Buffer }): string => (JSON.parse((JSON.parse(m.content.toString()) as Record<string, string>)['oslo.message'] as string) as { message_id: string }).message_id
  const copies = new Set((await world.broker.drain(world.names.queue)).map(idOf))
  const dead = new Set((await world.broker.drain(world.names.deadQueue)).map(idOf))
  t.same([...new Set([...copies, ...dead])].sort(), [...ids].sort(), 'every letter is still somewhere')
  const inBoth = [...copies].filter((id) => dead.has(id)).length
  const bound = unconfirmed + (said?.[3] !== undefined ? requeued : 0)
  t.ok(inBoth <= bound, `${inBoth} letters in both queues, at most the ${bound} said`)
})
