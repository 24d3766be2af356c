/**
 * Append throughput of the real client against the test server, client and server in one process:
 * 10,000 JSON events of about `bytes` bytes in appends of 500, each at the exact expected revision
 * as the mirror appends; one unreported warm-up run per path, then `runs` measured runs.
 * Run: node --import tsx test-server/throughput.ts [runs=5] [bytes=1000]
 */
import { EventStoreDBClient, jsonEvent } from '@eventstore/db-client'
import { TestEventStore } from './server.js'

const EVENTS = 10_000
const BATCH = 500
const runs = Number(process.argv[2] ?? 5)
const bytes = Number(process.argv[3] ?? 1000)

// Shaped like a Vitrage alarm; the default 1 KB is the size of an event-log row (design §10).
const payload = (n: number) => ({
  seq: n,
  event_type: 'Alarm.activate',
  payload: { name: 'cpu.util.high', vitrage_id: `a5b1c2d3-${n}`, severity: 'CRITICAL', resource_id: 'host-17',
    state: 'Active', update_timestamp: '2026-11-25 14:37:33.821020', details: 'x'.repeat(Math.max(0, bytes - 230)) },
})

const measure = async (batchAppend: boolean): Promise<number> => {
  const server = await TestEventStore.start({ batchAppend })
  const client = EventStoreDBClient.connectionString(server.connectionString)
  try {
    const batches = Array.from({ length: EVENTS / BATCH }, (_, b) =>
      Array.from({ length: BATCH }, (_, i) => jsonEvent({ type: 'vitrage', data: payload(b * BATCH + i) })))
    const started = process.hrtime.bigint()
    let expectedRevision: bigint | 'no_stream' = 'no_stream'
    for (const batch of batches) {
      expectedRevision = (await client.appendToStream('log', batch, { expectedRevision })).nextExpectedRevision
    }
    const seconds = Number(process.hrtime.bigint() - started) / 1e9
    const stored = server.streams().get('log')?.length
    if (stored !== EVENTS) throw new Error(`stored ${String(stored)} events, expected ${EVENTS}`)
    const calls = server.calls()
    if ((batchAppend ? calls.append : calls.batchAppend) !== 0) throw new Error('the client took the other path')
    return EVENTS / seconds
  } finally {
    await client.dispose()
    await server.close()
  }
}

for (const [name, batchAppend] of [['Streams.BatchAppend', true], ['Streams.Append', false]] as const) {
  await measure(batchAppend) // Not reported: the first run pays for JIT compilation.
  const rates: number[] = []
  for (let run = 0; run < runs; run += 1) rates.push(await measure(batchAppend))
  const sorted = [...rates].sort((a, b) => a - b)
  const fmt = (r: number | undefined) => Math.round(r ?? 0).toLocaleString('en-US')
  const median = sorted[Math.floor(runs / 2)]
  console.log(`${name}: ${fmt(sorted[0])}-${fmt(sorted.at(-1))} events/s (median ${fmt(median)}, ` +
    `runs: ${rates.map(fmt).join(', ')})`)
}
