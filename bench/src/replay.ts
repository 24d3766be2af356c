/**
 * `pnpm bench replay [--changes 1000000] [--vertices 100000] [--tail 100000]`
 *
 * A history of N graph changes over V vertices (after-images shaped like the fixtures: ~15
 * properties, one change in seven an edge), loaded into a fresh database. Then, each in its own
 * process so peak RSS belongs to one phase:
 *  (a) raw read: stream every payload through the store's reader (binary COPY) and JSON-parse
 *      it, nothing else (the baseline);
 *  (b) replay: the same reads applied to an empty graph;
 *  (c) takeover: a standby loads the newest snapshot (taken `tail` events before the head) and
 *      replays the tail.
 */
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { EventTypes } from '@vitrage-persistor/core'
import { encodeGraphSnapshot, EntityGraph, graphAt, replayInto } from '@vitrage-persistor/projections'
import { PgEventStore, schemaTemplate } from '@vitrage-persistor/store-postgres'
import { createTestDatabase } from '@vitrage-persistor/testing'
import * as E from 'fp-ts/lib/Either.js'
import { argValue, fmt, loadBodies, machine, rate, timed } from './common.js'

const SELF = fileURLToPath(import.meta.url)

/** Deterministic graph changes in batches of 5000 (vertex after-images and edges). */
function* graphChanges(changes: number, vertices: number): Generator<Buffer[]> {
  let seed = 17
  const rnd = (): number => (seed = (seed * 16807) % 2147483647) / 2147483647
  const vid = (i: number): string => `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`
  const types = ['nova.instance', 'nova.host', 'neutron.port', 'cinder.volume', 'nagios']
  let batch: Buffer[] = []
  for (let i = 0; i < changes; i++) {
    const v = i < vertices ? i : Math.floor(rnd() * vertices)
    const isVertex = i < vertices || rnd() > 1 / 7
    const after = isVertex
      ? {
          id: `res-${v}`, vertex_id: vid(v), vitrage_id: vid(v), name: `resource-${v}`, state: rnd() > 0.1 ? 'ACTIVE' : 'ERROR',
          vitrage_type: types[v % types.length], vitrage_category: v % 5 === 4 ? 'ALARM' : 'RESOURCE', vitrage_is_deleted: rnd() < 0.02,
          vitrage_is_placeholder: false, update_timestamp: `2024-01-01T00:${String(Math.floor(i / 60000) % 60).padStart(2, '0')}:00Z`,
          vitrage_sample_timestamp: '2024-01-01T00:00:00Z', vitrage_aggregated_state: 'ACTIVE', vitrage_operational_state: 'OK',
          vitrage_datasource_name: types[v % types.length], project_id: `p${v % 40}`, host: `host-${v % 500}`, is_real_vitrage_id: true,
          vitrage_cached_id: `c${v}`, ...(rnd() < 0.05 ? { rawtext: null } : {}),
        }
      : { source_id: vid(v), target_id: vid(Math.floor(rnd() * vertices)), label: 'contains', relationship_type: 'contains', vitrage_is_deleted: false, update_timestamp: '2024-01-01T00:00:00Z' }
    const message = {
      message_id: `${String(i).padStart(8, '0')}-0000-4000-8000-000000000000`, publisher_id: 'vitrage.graph', event_type: EventTypes.graphChange,
      priority: 'INFO', payload: { is_vertex: isVertex, payload: after }, timestamp: '2024-01-01 00:00:00.000001',
    }
    batch.push(Buffer.from(JSON.stringify({ 'oslo.version': '2.0', 'oslo.message': JSON.stringify(message) })))
    if (batch.length === 5000) {
      yield batch
      batch = []
    }
  }
  if (batch.length > 0) yield batch
}

const store = (url: string): PgEventStore => new PgEventStore({ connectionString: url, maxConnections: 2, applicationName: 'bench replay' })

/** One phase, in this (child) process; prints a JSON line. */
const phase = async (name: string, url: string, tail: number): Promise<void> => {
  const s = store(url)
  const head = await s.headId()()
  if (E.isLeft(head)) throw new Error(head.left.message)
  const out: Record<string, unknown> = { phase: name }
  if (name === 'raw') {
    // The same streamed read as replay, without applying anything: payloads are JSON-parsed by the reader.
    const [n, ms] = await timed(async () => {
      const r = await s.streamRange(0, head.right, { eventTypes: [EventTypes.graphChange] }, () => {})()
      if (E.isLeft(r)) throw new Error(r.left.message)
      return r.right
    })
    Object.assign(out, { events: n, ms, rate: rate(n, ms) })
  } else if (name === 'replay') {
    const graph = new EntityGraph()
    const [r, ms] = await timed(() => replayInto(s, graph, { fromId: 0, toId: head.right }))
    if (E.isLeft(r)) throw new Error(r.left.message)
    ;(globalThis as { gc?: () => void }).gc?.()
    Object.assign(out, { events: head.right, ms, rate: rate(head.right, ms), vertices: graph.vertexCount, edges: graph.edgeCount, heapMiB: Math.round(process.memoryUsage().heapUsed / 2 ** 20) })
  } else if (name === 'snapshot') {
    const r = await graphAt({ reader: s, snapshots: s, clock: s }, { eventId: head.right - tail }, { useSnapshots: false })
    if (E.isLeft(r)) throw new Error(r.left.message)
    const [encoded, encodeMs] = await timed(() => encodeGraphSnapshot(r.right.graph, r.right.position))
    if (E.isLeft(encoded)) throw new Error(encoded.left)
    const snap = encoded.right
    const saved = await s.saveSnapshot(snap)()
    if (E.isLeft(saved)) throw new Error(saved.left.message)
    Object.assign(out, { eventId: r.right.position, bytes: snap.data.byteLength, encodeMs })
  } else if (name === 'takeover') {
    const [r, ms] = await timed(() => graphAt({ reader: s, snapshots: s, clock: s }, 'head'))
    if (E.isLeft(r)) throw new Error(r.left.message)
    Object.assign(out, { ms, fromSnapshot: r.right.snapshot?.eventId, position: r.right.position, vertices: r.right.graph.vertexCount })
  }
  await s.close()
  out['peakRssMiB'] = Math.round(Number(/VmHWM:\s+(\d+)/.exec(await import('node:fs').then((f) => f.readFileSync('/proc/self/status', 'utf8')))?.[1]) / 1024)
  process.stdout.write(`${JSON.stringify(out)}\n`)
}

const runPhase = (name: string, url: string, tail: number): Record<string, number> => {
  const r = spawnSync(process.execPath, ['--expose-gc', '--import', 'tsx', '--conditions=vitrage-source', SELF, '--phase', name, url, String(tail)], { encoding: 'utf8', maxBuffer: 1 << 24 })
  if (r.status !== 0) throw new Error(`phase ${name} failed: ${r.stderr}`)
  return JSON.parse(r.stdout.trim().split('\n').at(-1) as string) as Record<string, number>
}

export const benchReplay = async (args: readonly string[]): Promise<void> => {
  const changes = argValue(args, '--changes', 1_000_000)
  const vertices = argValue(args, '--vertices', 100_000)
  const tail = argValue(args, '--tail', 100_000)
  const db = await createTestDatabase(schemaTemplate)
  try {
    console.log(`machine: ${JSON.stringify(machine())}`)
    const [loaded, loadMs] = await timed(() => loadBodies(db.url, graphChanges(changes, vertices)))
    console.log(`loaded ${fmt(loaded)} graph changes over ${fmt(vertices)} vertices in ${(loadMs / 1000).toFixed(1)} s`)
    const raw = runPhase('raw', db.url, tail)
    console.log(`(a) raw read (streamed + JSON.parse): ${fmt(raw['rate'] ?? 0)} events/s, peak RSS ${raw['peakRssMiB']} MiB`)
    const replay = runPhase('replay', db.url, tail)
    console.log(`(b) replay into the graph: ${fmt(replay['rate'] ?? 0)} events/s (${fmt(replay['vertices'] ?? 0)} vertices, ${fmt(replay['edges'] ?? 0)} edges), heap ${replay['heapMiB']} MiB, peak RSS ${replay['peakRssMiB']} MiB`)
    console.log(`ratio (b)/(a): ${((replay['rate'] ?? 0) / (raw['rate'] ?? 1)).toFixed(2)}`)
    const snap = runPhase('snapshot', db.url, tail)
    console.log(`snapshot at event ${fmt(snap['eventId'] ?? 0)}: ${fmt(snap['bytes'] ?? 0)} bytes compressed, encoded in ${Math.round(snap['encodeMs'] ?? 0)} ms`)
    const takeover = runPhase('takeover', db.url, tail)
    console.log(`(c) takeover (newest snapshot + ${fmt(tail)}-event tail): ${((takeover['ms'] ?? 0) / 1000).toFixed(2)} s, peak RSS ${takeover['peakRssMiB']} MiB`)
    console.log(JSON.stringify({ bench: 'replay', changes, vertices, tail, raw, replay, snapshot: snap, takeover }))
  } finally {
    await db.drop()
  }
}

if (process.argv[2] === '--phase') {
  await phase(process.argv[3] as string, process.argv[4] as string, Number(process.argv[5]))
}
