import { randomUUID } from 'node:crypto'
import { type DecodedMessage, decodeMessage } from '@vitrage-persistor/core'
import { appendBatch, prepareEvent } from '@vitrage-persistor/store-postgres'
import * as E from 'fp-ts/lib/Either.js'
import t, { type Test } from 'tap'
import { cli } from './support/cli.js'
import { rawFixtures } from './support/fixtures.js'
import { startPersistor } from './support/persistor-process.js'
import { setupWorld, type World } from './support/setup.js'

interface Listed {
  readonly id: number
  readonly message_id: string
  readonly event_type: string
  readonly collector_timestamp: string
  readonly payload: Record<string, unknown>
}

const decoded = rawFixtures().map((m) => (decodeMessage(Buffer.from(m.body), { maxMessageBytes: 1 << 20 }) as E.Right<DecodedMessage>).right)

/** Appends `n` events of the captured traffic (from its `from`-th message), each under a fresh message id. */
const append = async (world: World, n: number, from = 0): Promise<void> => {
  const client = await world.sql.connect()
  try {
    await appendBatch(client, Array.from({ length: n }, (_, i) => prepareEvent({ ...(decoded[(from + i) % decoded.length] as DecodedMessage), messageId: randomUUID() })))
  } finally {
    client.release()
  }
}

const events = async (world: World, ...args: string[]): Promise<{ code: number; listed: Listed[]; err: string }> => {
  const r = await cli(['events', '--database-url', world.db.url, '--format', 'json', ...args])
  return { code: r.code, listed: r.out.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Listed), err: r.err }
}

const ids = (rows: readonly { id: number }[]): number[] => rows.map((r) => r.id)
const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i)

const storedIds = async (world: World, where: string, values: unknown[] = []): Promise<number[]> =>
  (await world.sql.query<{ id: string }>(`SELECT id FROM event WHERE ${where} ORDER BY id`, values)).rows.map((r) => Number(r.id))

const worldWith = async (t: Test, n: number): Promise<World> => {
  const world = await setupWorld(t)
  await append(world, n)
  return world
}

t.test('events lists the newest by default, a range by id with what is left, and one type', async (t) => {
  const world = await worldWith(t, 400)
  const newest = await events(world)
  t.equal(newest.code, 0)
  t.same(ids(newest.listed), range(301, 400), 'the newest 100, in id order')
  const stored = (await world.sql.query<{ payload: unknown; message_id: string }>('SELECT payload, message_id::text FROM event WHERE id = 400')).rows[0]
  t.same(newest.listed.at(-1)?.payload, stored?.payload, 'the payload as stored')
  t.equal(newest.listed.at(-1)?.message_id, stored?.message_id)

  const page = await events(world, '--from-id', '5', '--limit', '3')
  t.same(ids(page.listed), [5, 6, 7])
  t.match(page.err, /more events after 7 \(--from-id 8\); at most 3 listed/, 'says where the rest starts')
  const all = await events(world, '--from-id', '1', '--limit', '1000')
  t.same(ids(all.listed), range(1, 400), 'past a page (500 rows a read) and the end of the log')
  t.equal(all.err, '', 'nothing more to say')

  const changes = await events(world, '--event-type', 'vitrage.graph.change', '--limit', '5')
  t.same(ids(changes.listed), (await storedIds(world, "event_type = 'vitrage.graph.change'")).slice(-5), 'the newest 5 of the type')
  const upTo = await events(world, '--to-id', '50', '--limit', '2')
  t.same(ids(upTo.listed), [49, 50], 'the newest up to --to-id')
})

t.test('events --since/--until are log positions: the events that take the graph at T1 to the graph at T2', async (t) => {
  const world = await worldWith(t, 400)
  const times = (await world.sql.query<{ t: string }>(`SELECT to_char(collector_timestamp AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"') AS t FROM event WHERE id IN (100, 300) ORDER BY id`)).rows.map((r) => r.t)
  const [t1, t2] = times as [string, string]
  const position = async (at: string): Promise<number> =>
    Number((await world.sql.query<{ id: string }>('SELECT COALESCE(max(id), 0) AS id FROM event WHERE collector_timestamp <= $1', [at])).rows[0]?.id)
  const listed = await events(world, '--since', t1, '--until', t2, '--limit', '1000')
  t.equal(listed.code, 0)
  t.same(ids(listed.listed), range((await position(t1)) + 1, await position(t2)))
  const graph = async (at: string): Promise<string> => (await cli(['graph', '--database-url', world.db.url, '--at', at])).out
  t.not(await graph(t1), await graph(t2), 'the graph changed in between')

  // One more stored late with the earliest time (a dead letter requeued hours later): the position
  // at both times is now its id, so the range is empty, and said to be.
  await append(world, 1, 0)
  const late = await events(world, '--since', t1, '--until', t2)
  t.same(late.listed, [])
  t.match(late.err, /no event after the log's position at --since \(event 401\) up to its position at --until \(event 401\); positions go by id, so an event stored late with an earlier time/)
})

t.test('events --message-id finds the event stored for a message; bad flags say what is wrong', async (t) => {
  const world = await worldWith(t, 10)
  const stored = (await world.sql.query<{ message_id: string }>('SELECT message_id::text FROM event WHERE id = 7')).rows[0]?.message_id as string
  const found = await events(world, '--message-id', stored.toUpperCase())
  t.same(ids(found.listed), [7], 'found, whatever the case of the UUID')
  const missing = await events(world, '--message-id', randomUUID())
  t.equal(missing.code, 1)
  t.match(missing.err, /no event is stored for message/)
  for (const [args, reason] of [
    [['--message-id', 'nope'], /--message-id: a message id is a UUID/],
    [['--message-id', stored, '--limit', '3'], /names one event/],
    [['--from-id', '-1'], /--from-id: /],
    [['--from-id', '9', '--to-id', '3'], /--to-id \(3\) is below --from-id \(9\)/],
    [['--from-id', '1', '--since', '2024-01-01'], /--from-id or --since, not both/],
    [['--since', 'yesterday'], /--since:/],
    [['--follow', '--to-id', '5'], /--follow goes on past the head/],
  ] as const) {
    const r = await events(world, ...args)
    t.equal(r.code, 2, args.join(' '))
    t.match(r.err, reason)
  }
  const fromZero = await events(world, '--from-id', '0', '--to-id', '2')
  t.equal(fromZero.code, 0, '--from-id 0 is the start, as replay takes it')
  t.same(ids(fromZero.listed), [1, 2])
  const table = await cli(['events', '--database-url', world.db.url, '--format', 'table', '--limit', '2'])
  t.match(table.out, /^ *id {2}collector_timestamp +event_type +message_id +payload\n/, 'a table with a header')
  t.equal(table.out.split('\n').filter((l) => l !== '').length, 3)
})

t.test('events --follow prints what is stored after it started, and ends on SIGTERM with exit 0', async (t) => {
  const world = await worldWith(t, 20)
  const p = startPersistor(['events', '--database-url', world.db.url, '--format', 'json', '--limit', '5', '--follow'])
  t.teardown(() => p.kill('SIGKILL'))
  await p.waitFor((l) => (l as unknown as Listed).id === 20, 'the newest 5 listed')
  await append(world, 30, 20)
  await p.waitFor((l) => (l as unknown as Listed).id === 50, 'the appended events, woken by their commit')
  const signalled = Date.now()
  p.kill('SIGTERM')
  t.equal((await p.exited).code, 0)
  const took = Date.now() - signalled
  t.ok(took < 3_000, `exited ${took} ms after SIGTERM (its 5 s poll timer does not hold it)`)
  t.same(ids(p.lines as unknown as Listed[]), range(16, 50), 'each once, in id order')
})

t.test('events to a reader that goes away (| head) ends quietly, exit 0', async (t) => {
  const world = await worldWith(t, 400)
  const p = startPersistor(['events', '--database-url', world.db.url, '--format', 'json', '--from-id', '1', '--limit', '400', '--follow'])
  t.teardown(() => p.kill('SIGKILL'))
  await p.waitFor((l) => (l as unknown as Listed).id === 1, 'the first event')
  p.child.stdout?.destroy()
  // The next writes fail with EPIPE: the listing's, or the follow's on the next commit.
  await append(world, 5)
  t.same(await p.exited, { code: 0, signal: null })
  t.notMatch(p.output(), /EPIPE|Error|at /, 'no stack trace')
})

t.test('events whose notices go to a reader that went away (2>&1 | head) ends quietly, exit 0', async (t) => {
  const world = await worldWith(t, 400)
  // 400 stored, 100 listed: the notice of what follows goes to stderr after the rows.
  const p = startPersistor(['events', '--database-url', world.db.url, '--format', 'table', '--from-id', '1'])
  t.teardown(() => p.kill('SIGKILL'))
  p.child.stdout?.destroy()
  p.child.stderr?.destroy()
  // Before: the notice's EPIPE on stderr ended it as a defect, exit 70.
  t.same(await p.exited, { code: 0, signal: null })
})
