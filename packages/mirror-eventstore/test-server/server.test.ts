import { randomUUID } from 'node:crypto'
import {
  BACKWARDS, END, EventStoreDBClient, START, StreamNotFoundError, WrongExpectedVersionError, binaryEvent, jsonEvent,
} from '@eventstore/db-client'
import type { AppendExpectedRevision, EventData, ReadRevision, ResolvedEvent } from '@eventstore/db-client'
import { status } from '@grpc/grpc-js'
import t, { type Test } from 'tap'
import { TestEventStore } from './server.js'
import type { TestEventStoreOptions } from './server.js'

const connect = async (t: Test, options: TestEventStoreOptions = {}) => {
  const server = await TestEventStore.start(options)
  const client = EventStoreDBClient.connectionString(server.connectionString)
  t.teardown(async () => {
    await client.dispose()
    await server.close()
  })
  return { server, client }
}

const events = (n: number, from = 0): EventData[] =>
  Array.from({ length: n }, (_, i) => jsonEvent({ type: 'counted', data: { n: from + i } }))

const read = async (client: EventStoreDBClient, stream: string,
  options: { fromRevision?: ReadRevision, direction?: 'forwards' | 'backwards', maxCount?: number } = {}) => {
  const out: ResolvedEvent[] = []
  for await (const resolved of client.readStream(stream, options)) out.push(resolved)
  return out.map((r) => r.event)
}

const revisionsOf = async (client: EventStoreDBClient, stream: string, options: Parameters<typeof read>[2]) =>
  (await read(client, stream, options)).map((e) => e?.revision)

const wrongVersion = (t: Test, error: unknown, expected: AppendExpectedRevision, actual: bigint | 'no_stream') => {
  t.type(error, WrongExpectedVersionError)
  if (error instanceof WrongExpectedVersionError) {
    t.equal(error.streamName, 's')
    t.equal(error.expectedVersion, expected)
    t.equal(error.actualVersion, actual)
  }
}

const appendError = async (client: EventStoreDBClient, data: EventData[], expectedRevision: AppendExpectedRevision) =>
  client.appendToStream('s', data, { expectedRevision }).then(() => undefined, (error: unknown) => error)

for (const [path, options] of [['BatchAppend', { batchAppend: true }], ['Append', { batchAppend: false }]] as const) {
  t.test(`${path} path`, async (t) => {
    t.test('the client takes this path and appends', async (t) => {
      const { server, client } = await connect(t, options)
      const result = await client.appendToStream('s', events(3), { expectedRevision: 'no_stream' })
      t.same(result, { success: true, nextExpectedRevision: 2n, position: { commit: 2n, prepare: 2n } })
      const calls = server.calls()
      t.equal(calls.getSupportedMethods, 1)
      t.equal(path === 'BatchAppend' ? calls.batchAppend : calls.append, 1)
      t.equal(path === 'BatchAppend' ? calls.append : calls.batchAppend, 0)
      t.same(server.streams().get('s')?.map((e) => [e.revision, e.position]), [[0n, 0n], [1n, 1n], [2n, 2n]])
    })

    t.test('expected revisions that hold', async (t) => {
      const { server, client } = await connect(t, options)
      t.equal((await client.appendToStream('s', events(1), { expectedRevision: 'no_stream' })).nextExpectedRevision, 0n)
      t.equal((await client.appendToStream('s', events(2), { expectedRevision: 0n })).nextExpectedRevision, 2n)
      t.equal((await client.appendToStream('s', events(1), { expectedRevision: 'stream_exists' }))
        .nextExpectedRevision, 3n)
      t.equal((await client.appendToStream('s', events(1), { expectedRevision: 'any' })).nextExpectedRevision, 4n)
      t.equal((await client.appendToStream('t', events(1), { expectedRevision: 'any' })).nextExpectedRevision, 0n)
      t.equal(server.streams().get('s')?.length, 5)
    })

    t.test('expected revisions that fail raise WrongExpectedVersionError', async (t) => {
      const { server, client } = await connect(t, options)
      wrongVersion(t, await appendError(client, events(1), 'stream_exists'), 'stream_exists', 'no_stream')
      wrongVersion(t, await appendError(client, events(1), 0n), 0n, 'no_stream')
      await client.appendToStream('s', events(2), { expectedRevision: 'no_stream' })
      wrongVersion(t, await appendError(client, events(1), 'no_stream'), 'no_stream', 1n)
      wrongVersion(t, await appendError(client, events(1), 0n), 0n, 1n)
      wrongVersion(t, await appendError(client, events(1), 5n), 5n, 1n)
      t.equal(server.streams().get('s')?.length, 2, 'nothing written by the failed appends')
    })

    t.test('concurrent appends, each split over several messages, do not mix', async (t) => {
      const { server, client } = await connect(t, options)
      // A tiny batchAppendSize makes the client send one BatchAppend message per event, so the
      // messages of the three appends interleave on the one BatchAppend call.
      const names = ['a', 'b', 'c']
      const written = names.map(() => events(20))
      await Promise.all(names.map((name, i) =>
        client.appendToStream(name, written[i] ?? [], { expectedRevision: 'no_stream', batchAppendSize: 64 })))
      for (const [i, name] of names.entries()) {
        t.same(server.streams().get(name)?.map((e) => e.id), written[i]?.map((e) => e.id), name)
      }
      t.same((await read(client, 'b', { maxCount: 1 }))[0]?.data, { n: 0 })
    })

    t.test('a retry of the same event ids at the same expected revision is idempotent', async (t) => {
      const { server, client } = await connect(t, options)
      const batch = events(3)
      await client.appendToStream('s', batch, { expectedRevision: 'no_stream' })
      await client.appendToStream('s', events(2, 3), { expectedRevision: 2n })
      const retry = await client.appendToStream('s', batch, { expectedRevision: 'no_stream' })
      t.same(retry, { success: true, nextExpectedRevision: 2n, position: { commit: 2n, prepare: 2n } },
        'answers with the revision and position of the batch already written')
      t.equal((await client.appendToStream('s', batch, { expectedRevision: 'any' })).nextExpectedRevision, 2n)
      t.equal(server.streams().get('s')?.length, 5, 'no duplicates')
      const [, second, third] = batch
      if (second === undefined || third === undefined) throw new Error('three events')
      wrongVersion(t, await appendError(client, [second, third], 'no_stream'), 'no_stream', 4n)
      wrongVersion(t, await appendError(client, [second, ...events(1)], 'any'), 'any', 4n)
      t.equal(server.streams().get('s')?.length, 5)
    })

    t.test('an append whose acknowledgement is lost is stored although the client sees UNAVAILABLE; its retry with the same events and expected revision succeeds and writes nothing', async (t) => {
      const { server, client } = await connect(t, options)
      await client.appendToStream('s', events(1), { expectedRevision: 'no_stream' })
      const batch = events(2, 1)
      server.failNextAppends(1, 'after-write')
      const error = await appendError(client, batch, 0n)
      t.equal((error as { code?: number }).code, status.UNAVAILABLE)
      t.equal(server.streams().get('s')?.length, 3, 'stored although the client saw a failure')
      t.equal((await client.appendToStream('s', batch, { expectedRevision: 0n })).nextExpectedRevision, 2n)
      t.equal(server.streams().get('s')?.length, 3, 'the retry wrote nothing')
    })

    t.test('a failure before the write stores nothing', async (t) => {
      const { server, client } = await connect(t, options)
      server.failNextAppends(1)
      t.equal(((await appendError(client, events(1), 'no_stream')) as { code?: number }).code, status.UNAVAILABLE)
      t.equal(server.streams().size, 0)
      t.equal((await client.appendToStream('s', events(1), { expectedRevision: 'no_stream' })).nextExpectedRevision, 0n)
    })

    t.test('refuse(true) makes appends fail as unavailable, refuse(false) lets them through', async (t) => {
      const { server, client } = await connect(t, options)
      await client.appendToStream('s', events(1))
      server.refuse(true)
      for (let i = 0; i < 3; i += 1) {
        t.equal(((await appendError(client, events(1), 'any')) as { code?: number }).code, status.UNAVAILABLE)
      }
      server.refuse(false)
      t.equal((await client.appendToStream('s', events(1), { expectedRevision: 0n })).nextExpectedRevision, 1n)
      t.equal(server.streams().get('s')?.length, 2)
    })
  })
}

t.test('readStream forwards and backwards, from start, end and a revision, with maxCount', async (t) => {
  const { client } = await connect(t)
  await client.appendToStream('s', events(10), { expectedRevision: 'no_stream' })
  t.same(await revisionsOf(client, 's', {}), [0n, 1n, 2n, 3n, 4n, 5n, 6n, 7n, 8n, 9n])
  t.same(await revisionsOf(client, 's', { fromRevision: START, maxCount: 3 }), [0n, 1n, 2n])
  t.same(await revisionsOf(client, 's', { fromRevision: 7n, maxCount: 5 }), [7n, 8n, 9n])
  t.same(await revisionsOf(client, 's', { fromRevision: END }), [])
  t.same(await revisionsOf(client, 's', { fromRevision: 10n }), [])
  t.same(await revisionsOf(client, 's', { direction: BACKWARDS, fromRevision: END, maxCount: 3 }), [9n, 8n, 7n])
  t.same(await revisionsOf(client, 's', { direction: BACKWARDS, fromRevision: 2n }), [2n, 1n, 0n])
  t.same(await revisionsOf(client, 's', { direction: BACKWARDS, fromRevision: 99n, maxCount: 1 }), [9n])
  t.same(await revisionsOf(client, 's', { direction: BACKWARDS, fromRevision: START }), [0n])
  t.same((await read(client, 's', { fromRevision: 4n, maxCount: 2 })).map((e) => e?.data), [{ n: 4 }, { n: 5 }])
})

t.test('reading a missing stream raises StreamNotFoundError', async (t) => {
  const { server, client } = await connect(t)
  await client.appendToStream('other', events(1))
  const error = await read(client, 'missing').then(() => undefined, (e: unknown) => e)
  t.type(error, StreamNotFoundError)
  t.equal((error as StreamNotFoundError).streamName, 'missing')
  t.equal(server.calls().read, 1)
})

t.test('ids, types, data and metadata round-trip', async (t) => {
  const { server, client } = await connect(t)
  const before = Date.now()
  const id = randomUUID()
  const bytes = Uint8Array.from([0, 1, 2, 254, 255])
  const written = [
    jsonEvent({ id, type: 'alarm.raised', data: { name: 'cpu', nested: [1, 'ü', null] }, metadata: { trace: 'x' } }),
    binaryEvent({ type: 'raw', data: bytes, metadata: Uint8Array.from([9, 8]) }),
    jsonEvent({ type: 'bare', data: {} }),
  ]
  await client.appendToStream('s', written, { expectedRevision: 'no_stream' })
  const [json, binary, bare] = await read(client, 's')
  t.equal(json?.id, id)
  t.same(await read(client, 's').then((es) => es.map((e) => e?.id)), written.map((e) => e.id))
  t.match(json, { streamId: 's', type: 'alarm.raised', isJson: true, revision: 0n })
  t.same(json?.data, { name: 'cpu', nested: [1, 'ü', null] })
  t.same(json?.metadata, { trace: 'x' })
  t.match(binary, { type: 'raw', isJson: false })
  t.same(binary?.data, bytes)
  t.same(binary?.metadata, Uint8Array.from([9, 8]))
  t.equal(bare?.metadata, undefined, 'no custom metadata reads back as undefined')
  const created = json?.created.getTime() ?? 0
  t.ok(created >= before - 1 && created <= Date.now(), 'created is now, in milliseconds on the client')
  const stored = server.streams().get('s')?.[0]
  t.equal(stored?.contentType, 'application/json')
  t.equal(typeof stored?.created, 'bigint')
  t.ok((stored?.created ?? 0n) >= BigInt(before) * 10_000n, 'stored in 100 ns ticks since 1970')
  t.equal(Buffer.from(stored?.data ?? []).toString('utf8'), JSON.stringify({ name: 'cpu', nested: [1, 'ü', null] }))
})

t.test('upper-case ids are stored and read back in lower case, as .NET prints a Guid', async (t) => {
  const { client } = await connect(t)
  const id = randomUUID()
  await client.appendToStream('s', jsonEvent({ id: id.toUpperCase(), type: 'x', data: {} }))
  t.equal((await read(client, 's'))[0]?.id, id)
})

t.test('positions are global across streams; close is idempotent', async (t) => {
  const server = await TestEventStore.start()
  const client = EventStoreDBClient.connectionString(server.connectionString)
  await client.appendToStream('a', events(2))
  await client.appendToStream('b', events(1))
  await client.appendToStream('a', events(1))
  t.same(server.streams().get('a')?.map((e) => e.position), [0n, 1n, 3n])
  t.same(server.streams().get('b')?.map((e) => e.position), [2n])
  t.match(server.connectionString, /^esdb:\/\/127\.0\.0\.1:\d+\?tls=false$/)
  await client.dispose()
  await server.close()
  await server.close()
})
