/**
 * `pnpm bench mirror [--events 20000] [--page 500]`
 *
 * Against the in-process EventStoreDB test server (packages/mirror-eventstore/test-server), with
 * the real client and protocol (BatchAppend): (baseline) the client alone appending the same
 * events in batches of `page` at exact revisions, then the mirror reading them from PostgreSQL
 * and appending them (checkpoint moves included). Each run gets a fresh server.
 */
import { randomUUID } from 'node:crypto'
import { EventStoreDBClient, jsonEvent, NO_STREAM, type AppendExpectedRevision } from '@eventstore/db-client'
import { EventStoreMirror } from '@vitrage-persistor/mirror-eventstore'
import { PgEventStore, schemaTemplate } from '@vitrage-persistor/store-postgres'
import { createTestDatabase } from '@vitrage-persistor/testing'
import * as E from 'fp-ts/lib/Either.js'
import { TestEventStore } from '../../packages/mirror-eventstore/test-server/server.js'
import { argValue, fmt, loadBodies, machine, rate, timed } from './common.js'
import { makeBodies } from './messages.js'

export const benchMirror = async (args: readonly string[]): Promise<void> => {
  const events = argValue(args, '--events', 20_000)
  const page = argValue(args, '--page', 500)
  const db = await createTestDatabase(schemaTemplate)
  const store = new PgEventStore({ connectionString: db.url, maxConnections: 2, applicationName: 'bench mirror' })
  try {
    console.log(`machine: ${JSON.stringify(machine())}`)
    const body = makeBodies()
    const batches = function* (): Generator<Buffer[]> {
      for (let i = 0; i < events; i += 5_000) yield Array.from({ length: Math.min(5_000, events - i) }, (_, k) => body(i + k))
    }
    await loadBodies(db.url, batches())
    const all = await store.readPage(0, events)()
    if (E.isLeft(all)) throw new Error(all.left.message)
    console.log(`${fmt(events)} events (fixture-shaped payloads) in PostgreSQL; appends of ${page}`)

    const baselineServer = await TestEventStore.start()
    const client = EventStoreDBClient.connectionString(baselineServer.connectionString)
    await client.appendToStream('warm-up', jsonEvent({ type: 'x', data: {} }))
    const [, baseMs] = await timed(async () => {
      let revision: AppendExpectedRevision = NO_STREAM
      for (let i = 0; i < all.right.length; i += page) {
        const chunk = all.right.slice(i, i + page).map((e) => jsonEvent({ id: randomUUID(), type: e.eventType, data: e.payload, metadata: { id: e.id } }))
        revision = (await client.appendToStream('baseline', chunk, { expectedRevision: revision })).nextExpectedRevision
      }
    })
    await client.dispose()
    await baselineServer.close()
    const baseRate = rate(events, baseMs)
    console.log(`(baseline) client alone: ${fmt(baseRate)} events/s`)

    const server = await TestEventStore.start()
    const mirror = new EventStoreMirror({ reader: store, checkpoints: store }, { url: server.connectionString, pageSize: page })
    const [r, ms] = await timed(() => mirror.catchUp())
    await mirror.close()
    const mirrored = server.streams().get('vitrage-events')?.length ?? 0
    await server.close()
    if (E.isLeft(r) || mirrored !== events) throw new Error(`mirror stopped: ${JSON.stringify(r)} (${mirrored} mirrored)`)
    const mirrorRate = rate(events, ms)
    console.log(`(a) mirror (read, append, checkpoint): ${fmt(mirrorRate)} events/s, ${((mirrorRate / baseRate) * 100).toFixed(0)}% of the client alone`)
    console.log(JSON.stringify({ bench: 'mirror', events, page, baseRate, mirrorRate }))
  } finally {
    await store.close()
    await db.drop()
  }
}
