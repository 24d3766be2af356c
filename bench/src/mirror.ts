/**
 * `pnpm bench mirror [--events 100000] [--page 500]`
 *
 * Against the EventStoreDB test server (packages/mirror-eventstore/test-server) on its own worker
 * thread, as a real server would have its own process, with the real client and protocol
 * (BatchAppend). Each phase runs in its own process with a fresh server, so one phase's heap
 * does not tax the other's garbage collector:
 * (baseline) the client alone appending the same events (read from PostgreSQL beforehand) in
 * appends of `page` at exact revisions, one after the other;
 * (a) the mirror reading them from PostgreSQL, appending, and moving its checkpoint.
 */
import { spawnSync } from 'node:child_process'
import { randomUUID } from 'node:crypto'
import { fileURLToPath } from 'node:url'
import { EventStoreDBClient, jsonEvent, NO_STREAM, type AppendExpectedRevision } from '@eventstore/db-client'
import { EventStoreMirror } from '@vitrage-persistor/mirror-eventstore'
import { PgEventStore, schemaTemplate } from '@vitrage-persistor/store-postgres'
import { createTestDatabase } from '@vitrage-persistor/testing'
import * as E from 'fp-ts/lib/Either.js'
import { ThreadedTestEventStore } from '../../packages/mirror-eventstore/test-server/thread.js'
import { argValue, fmt, loadBodies, machine, rate, timed } from './common.js'
import { makeBodies } from './messages.js'

const SELF = fileURLToPath(import.meta.url)

/** One phase, in this (child) process; prints its rate as a JSON line. */
const phase = async (name: string, url: string, page: number): Promise<void> => {
  const store = new PgEventStore({ connectionString: url, maxConnections: 2, applicationName: `bench mirror ${name}` })
  const server = await ThreadedTestEventStore.start()
  try {
    const head = await store.headId()()
    if (E.isLeft(head)) throw new Error(head.left.message)
    const events = head.right
    if (name === 'baseline') {
      const all = await store.readPage(0, events)()
      if (E.isLeft(all)) throw new Error(all.left.message)
      const client = EventStoreDBClient.connectionString(server.connectionString)
      await client.appendToStream('warm-up', jsonEvent({ type: 'x', data: {} }))
      const [, ms] = await timed(async () => {
        let revision: AppendExpectedRevision = NO_STREAM
        for (let i = 0; i < all.right.length; i += page) {
          const chunk = all.right.slice(i, i + page).map((e) => jsonEvent({ id: randomUUID(), type: e.eventType, data: e.payload, metadata: { id: e.id } }))
          revision = (await client.appendToStream('baseline', chunk, { expectedRevision: revision })).nextExpectedRevision
        }
      })
      await client.dispose()
      process.stdout.write(`${JSON.stringify({ rate: rate(events, ms) })}\n`)
    } else {
      const mirror = new EventStoreMirror({ reader: store, checkpoints: store }, { url: server.connectionString, pageSize: page })
      const [r, ms] = await timed(() => mirror.catchUp())
      await mirror.close()
      const mirrored = await server.streamLength('vitrage-events')
      if (E.isLeft(r) || mirrored !== events) throw new Error(`mirror stopped: ${JSON.stringify(r)} (${mirrored} mirrored)`)
      process.stdout.write(`${JSON.stringify({ rate: rate(events, ms) })}\n`)
    }
  } finally {
    await server.close()
    await store.close()
  }
}

const runPhase = (name: string, url: string, page: number): number => {
  const r = spawnSync(process.execPath, ['--import', 'tsx', '--conditions=vitrage-source', SELF, '--phase', name, url, String(page)], { encoding: 'utf8' })
  if (r.status !== 0) throw new Error(`phase ${name} failed: ${r.stderr}`)
  return (JSON.parse(r.stdout.trim().split('\n').at(-1) as string) as { rate: number }).rate
}

export const benchMirror = async (args: readonly string[]): Promise<void> => {
  const events = argValue(args, '--events', 100_000)
  const page = argValue(args, '--page', 500)
  const db = await createTestDatabase(schemaTemplate)
  try {
    console.log(`machine: ${JSON.stringify(machine())}`)
    const body = makeBodies()
    const batches = function* (): Generator<Buffer[]> {
      for (let i = 0; i < events; i += 5_000) yield Array.from({ length: Math.min(5_000, events - i) }, (_, k) => body(i + k))
    }
    await loadBodies(db.url, batches())
    console.log(`${fmt(events)} events (fixture-shaped payloads) in PostgreSQL; appends of ${page}`)
    const baseRate = runPhase('baseline', db.url, page)
    console.log(`(baseline) client alone: ${fmt(baseRate)} events/s`)
    const mirrorRate = runPhase('mirror', db.url, page)
    console.log(`(a) mirror (read, append, checkpoint): ${fmt(mirrorRate)} events/s, ${((mirrorRate / baseRate) * 100).toFixed(0)}% of the client alone`)
    console.log(JSON.stringify({ bench: 'mirror', events, page, baseRate, mirrorRate }))
  } finally {
    await db.drop()
  }
}

if (process.argv[2] === '--phase') {
  await phase(process.argv[3] as string, process.argv[4] as string, Number(process.argv[5]))
}
