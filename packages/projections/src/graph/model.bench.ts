/**
 * Benchmark of the entity-graph models (not a test). Replays synthetic `vitrage.graph.change`
 * events shaped like test/fixtures (vertex after-images with ~15 properties over a fixed set of
 * vertices, some edges, some null-valued properties) through `applyEvent` into each model and
 * reports events/s (time spent applying only) and heap used after GC.
 *
 *   cd packages/projections
 *   node --expose-gc --import tsx --conditions=vitrage-source src/graph/model.bench.ts \
 *     [--sizes 50000:500000,100000:1000000] [--variants map,graphology,map-of-maps,decode-only] [--runs 1]
 *
 * Each measurement runs in its own process so models do not share a heap or JIT state. Events
 * are generated page by page (10,000 at a time, from JSON text, as a reader would hand them
 * over); generation is not timed, and a page is dropped before the next one is made, so the
 * heap figure is the graph (plus the process baseline measured before it, which is subtracted).
 */
import { spawnSync } from 'node:child_process'
import { fileURLToPath } from 'node:url'
import { EventTypes, type StoredEvent } from '@vitrage-persistor/core'
import { MultiDirectedGraph } from 'graphology'
import { prng } from '@vitrage-persistor/testing'
import { canonicalJson, fromCanonical } from './canonical.js'
import { applyEvent } from './evolve.js'
import type { Json, Properties } from './json.js'
import { copyProperties, isEmpty, mergeProperties } from './properties.js'
import { EntityGraph, type GraphWriter } from './model.js'

// ---------------------------------------------------------------------------------------------
// Models under test

const edgeKey = (s: string, t: string, l: string): string => `${s.length},${t.length}:${s}${t}${l}`

/** graphology MultiDirectedGraph: node key = vertex id, edge key = (source, target, label). */
class GraphologyModel implements GraphWriter {
  readonly g = new MultiDirectedGraph<Properties, Properties>({ allowSelfLoops: true })

  updateVertex(id: string, properties: Readonly<Record<string, unknown>>, afterImage = false): void {
    const g = this.g
    const identity = afterImage ? 'vertex' : 'none'
    if (!g.hasNode(id)) {
      g.addNode(id, copyProperties(properties, identity))
      return
    }
    const current = g.getNodeAttributes(id)
    if (isEmpty(current)) g.replaceNodeAttributes(id, copyProperties(properties, identity))
    else mergeProperties(current, properties, identity)
  }

  updateEdge(source: string, target: string, label: string, properties: Readonly<Record<string, unknown>>, afterImage = false): void {
    const g = this.g
    const identity = afterImage ? 'edge' : 'none'
    const key = edgeKey(source, target, label)
    if (!g.hasEdge(key)) {
      g.mergeEdgeWithKey(key, source, target, copyProperties(properties, identity)) // creates missing endpoints with {}
      return
    }
    const current = g.getEdgeAttributes(key)
    if (isEmpty(current)) g.replaceEdgeAttributes(key, copyProperties(properties, identity))
    else mergeProperties(current, properties, identity)
  }

  get vertexCount(): number {
    return this.g.order
  }

  get edgeCount(): number {
    return this.g.size
  }
}

/** Like EntityGraph but every property map is a Map (no prototype concerns, more memory?). */
interface MVertex {
  readonly id: string
  props: Map<string, Json>
  out: MEdge[] | undefined
  in: MEdge[] | undefined
}
interface MEdge {
  readonly source: string
  readonly target: string
  readonly label: string
  props: Map<string, Json>
}
class MapOfMapsModel implements GraphWriter {
  readonly vertices = new Map<string, MVertex>()
  readonly edges = new Map<string, MEdge>()

  static #skip(k: string, identity: 'vertex' | 'edge' | 'none'): boolean {
    return identity === 'vertex' ? k === 'vertex_id' : identity === 'edge' && (k === 'source_id' || k === 'target_id' || k === 'label')
  }

  static #copy(source: Readonly<Record<string, unknown>>, identity: 'vertex' | 'edge' | 'none'): Map<string, Json> {
    const m = new Map<string, Json>()
    for (const k of Object.keys(source)) if (!MapOfMapsModel.#skip(k, identity)) m.set(k, source[k] as Json)
    return m
  }

  static #merge(current: Map<string, Json>, source: Readonly<Record<string, unknown>>, identity: 'vertex' | 'edge' | 'none'): void {
    for (const k of Object.keys(source)) {
      if (MapOfMapsModel.#skip(k, identity)) continue
      const v = source[k] as Json
      if (v !== null) current.set(k, v)
      else current.delete(k)
    }
  }

  updateVertex(id: string, properties: Readonly<Record<string, unknown>>, afterImage = false): void {
    const identity = afterImage ? 'vertex' : 'none'
    const v = this.vertices.get(id)
    if (v === undefined) this.vertices.set(id, { id, props: MapOfMapsModel.#copy(properties, identity), out: undefined, in: undefined })
    else if (v.props.size === 0) v.props = MapOfMapsModel.#copy(properties, identity)
    else MapOfMapsModel.#merge(v.props, properties, identity)
  }

  updateEdge(source: string, target: string, label: string, properties: Readonly<Record<string, unknown>>, afterImage = false): void {
    const identity = afterImage ? 'edge' : 'none'
    const key = edgeKey(source, target, label)
    const e = this.edges.get(key)
    if (e === undefined) {
      const created: MEdge = { source, target, label, props: MapOfMapsModel.#copy(properties, identity) }
      this.edges.set(key, created)
      const s = this.#vertex(source)
      const t = this.#vertex(target)
      ;(s.out ??= []).push(created)
      ;(t.in ??= []).push(created)
    } else if (e.props.size === 0) e.props = MapOfMapsModel.#copy(properties, identity)
    else MapOfMapsModel.#merge(e.props, properties, identity)
  }

  #vertex(id: string): MVertex {
    let v = this.vertices.get(id)
    if (v === undefined) {
      v = { id, props: new Map(), out: undefined, in: undefined }
      this.vertices.set(id, v)
    }
    return v
  }

  get vertexCount(): number {
    return this.vertices.size
  }

  get edgeCount(): number {
    return this.edges.size
  }
}

/** Decoding only (no copy, no graph): the floor any model adds to. */
class DecodeOnly implements GraphWriter {
  n = 0
  updateVertex(): void {
    this.n++
  }
  updateEdge(): void {
    this.n++
  }
  readonly vertexCount = 0
  readonly edgeCount = 0
}

type Model = GraphWriter & { readonly vertexCount: number; readonly edgeCount: number }

const VARIANTS: Record<string, () => Model> = {
  map: () => new EntityGraph(),
  graphology: () => new GraphologyModel(),
  'map-of-maps': () => new MapOfMapsModel(),
  'decode-only': () => new DecodeOnly(),
}

// ---------------------------------------------------------------------------------------------
// Synthetic events, shaped like the fixture's (Vitrage 9.0.0 after-images)


const hex = (n: number, width: number): string => (n >>> 0).toString(16).padStart(width, '0').slice(-width)
const uuid = (i: number): string =>
  `${hex(i * 2654435761, 8)}-${hex(i, 4)}-4${hex(i >>> 4, 3)}-8${hex(i * 40503, 3)}-${hex(i * 97, 4)}${hex(i * 31337, 8)}`

const TYPES = [
  { type: 'nova.instance', category: 'RESOURCE', weight: 50 },
  { type: 'neutron.port', category: 'RESOURCE', weight: 20 },
  { type: 'cinder.volume', category: 'RESOURCE', weight: 12 },
  { type: 'nova.host', category: 'RESOURCE', weight: 5 },
  { type: 'neutron.network', category: 'RESOURCE', weight: 3 },
  { type: 'nagios', category: 'ALARM', weight: 7 },
  { type: 'vitrage', category: 'ALARM', weight: 3 },
] as const
const typeOf = (i: number): (typeof TYPES)[number] => {
  let r = (i * 2654435761) % 100
  for (const t of TYPES) {
    if (r < t.weight) return t
    r -= t.weight
  }
  return TYPES[0]
}
const STATES = ['ACTIVE', 'available', 'SHUTOFF', 'ERROR'] as const
const LABELS = ['contains', 'attached', 'on', 'causes'] as const

const timestamp = (n: number): string => {
  const s = 1704067200 + Math.floor(n / 50)
  return `${new Date(s * 1000).toISOString().slice(0, 19).replace('T', ' ')}.${String((n * 7919) % 1000000).padStart(6, '0')}`
}

const vertexAfterImage = (i: number, n: number, r: () => number): Record<string, unknown> => {
  const t = typeOf(i)
  const id = uuid(i)
  const deleted = r() < 0.03
  const p: Record<string, unknown> = {
    id: `${t.type}-${i}`,
    name: `${t.type}-${i}`,
    state: STATES[Math.floor(r() * STATES.length)],
    vitrage_type: t.type,
    vitrage_category: t.category,
    vitrage_is_deleted: deleted,
    vitrage_is_placeholder: false,
    update_timestamp: timestamp(n),
    vitrage_sample_timestamp: timestamp(n),
    vitrage_id: id,
    vitrage_cached_id: hex(i * 7, 8) + hex(i * 13, 8) + hex(i * 17, 8) + hex(i * 19, 8),
    is_real_vitrage_id: true,
    vitrage_aggregated_state: deleted ? 'DELETED' : 'AVAILABLE',
    vitrage_operational_state: 'OK',
    vitrage_datasource_name: t.type,
    project_id: r() < 0.03 ? null : `project-${i % 50}`,
  }
  if (t.category === 'ALARM') {
    p['severity'] = r() < 0.5 ? 'WARNING' : 'CRITICAL'
    p['vitrage_operational_severity'] = p['severity']
    p['vitrage_aggregated_severity'] = p['severity']
    p['vitrage_resource_id'] = uuid(i ^ 1)
    p['vitrage_resource_type'] = 'nova.host'
    p['vitrage_resource_project_id'] = r() < 0.05 ? null : `project-${i % 50}`
  }
  p['vertex_id'] = id
  return p
}

const edgeAfterImage = (vertices: number, n: number, r: () => number): Record<string, unknown> => {
  const s = Math.floor(r() * vertices)
  const k = Math.floor(r() * 2)
  const target = (s * 7 + 1 + k * 13) % vertices
  const label = LABELS[(s + k) % LABELS.length] as string
  const p: Record<string, unknown> = { relationship_type: label, vitrage_is_deleted: r() < 0.05 }
  if (r() < 0.3) p['update_timestamp'] = r() < 0.1 ? null : timestamp(n)
  p['source_id'] = uuid(s)
  p['target_id'] = uuid(target)
  p['label'] = label
  return p
}

/** Events n..n+count-1 as a reader would return them: parsed from their JSON text. */
const page = (r: () => number, vertices: number, n: number, count: number): StoredEvent[] => {
  const out: StoredEvent[] = []
  for (let j = 0; j < count; j++) {
    const id = n + j + 1
    const isVertex = r() < 0.85
    const afterImage = isVertex ? vertexAfterImage(Math.floor(r() * vertices), id, r) : edgeAfterImage(vertices, id, r)
    const text = JSON.stringify({ is_vertex: isVertex, payload: afterImage })
    out.push({
      id,
      messageId: `00000000-0000-4000-8000-${String(id).padStart(12, '0')}`,
      eventType: EventTypes.graphChange,
      publisherId: 'vitrage.graph',
      priority: 'INFO',
      collectorTimestamp: '2024-01-01T00:00:00.000000Z',
      persistedAt: '2024-01-01T00:00:00.000000Z',
      payload: JSON.parse(text) as Record<string, unknown>,
    })
  }
  return out
}

// ---------------------------------------------------------------------------------------------
// Measurement

interface Result {
  variant: string
  vertices: number
  events: number
  /** Events over wall-clock time spent applying them. */
  eventsPerSecond: number
  /** Events over process CPU time (all threads, GC helpers included) spent applying them. */
  eventsPerCpuSecond: number
  heapBytes: number
  graphVertices: number
  graphEdges: number
  /** For the chosen model: snapshot write (compact canonical JSON) and load, pretty text. */
  snapshot?: { compactMs: number; compactBytes: number; loadMs: number; prettyMs: number }
}

const snapshotTimes = (graph: EntityGraph): NonNullable<Result['snapshot']> => {
  let t0 = performance.now()
  const compact = canonicalJson(graph, 'compact')
  const compactMs = performance.now() - t0
  t0 = performance.now()
  const loaded = fromCanonical(compact)
  const loadMs = performance.now() - t0
  if (loaded._tag === 'Left' || loaded.right.vertexCount !== graph.vertexCount) throw new Error('snapshot did not load back')
  t0 = performance.now()
  canonicalJson(graph)
  const prettyMs = performance.now() - t0
  return { compactMs: Math.round(compactMs), compactBytes: Buffer.byteLength(compact), loadMs: Math.round(loadMs), prettyMs: Math.round(prettyMs) }
}

const gc = (): void => {
  const g = (globalThis as { gc?: () => void }).gc
  if (g === undefined) throw new Error('run node with --expose-gc')
  g()
  g()
}

const measure = (variant: string, vertices: number, events: number): Result => {
  const make = VARIANTS[variant]
  if (make === undefined) throw new Error(`unknown variant ${variant}`)
  const PAGE = 10_000
  const r = prng(7)
  gc()
  const base = process.memoryUsage().heapUsed
  const model = make()
  let elapsed = 0
  let cpu = 0
  for (let n = 0; n < events; n += PAGE) {
    let batch: StoredEvent[] | undefined = page(r, vertices, n, Math.min(PAGE, events - n))
    const c0 = process.cpuUsage()
    const t0 = performance.now()
    for (const e of batch) applyEvent(model, e)
    elapsed += performance.now() - t0
    const c = process.cpuUsage(c0)
    cpu += (c.user + c.system) / 1000
    batch = undefined
  }
  gc()
  const heapBytes = process.memoryUsage().heapUsed - base
  return {
    ...(model instanceof EntityGraph ? { snapshot: snapshotTimes(model) } : {}),
    variant,
    vertices,
    events,
    eventsPerSecond: Math.round(events / (elapsed / 1000)),
    eventsPerCpuSecond: Math.round(events / (cpu / 1000)),
    heapBytes,
    graphVertices: model.vertexCount,
    graphEdges: model.edgeCount,
  }
}

const argValue = (name: string, fallback: string): string => {
  const i = process.argv.indexOf(name)
  return i >= 0 ? (process.argv[i + 1] ?? fallback) : fallback
}

const main = (): void => {
  if (process.argv.includes('--child')) {
    const result = measure(argValue('--variant', 'map'), Number(argValue('--vertices', '100000')), Number(argValue('--events', '1000000')))
    process.stdout.write(`${JSON.stringify(result)}\n`)
    return
  }
  const sizes = argValue('--sizes', '50000:500000,100000:1000000')
    .split(',')
    .map((s) => s.split(':').map(Number) as [number, number])
  const variants = argValue('--variants', 'map,graphology,map-of-maps,decode-only').split(',')
  const runs = Number(argValue('--runs', '1'))
  const self = fileURLToPath(import.meta.url)
  console.log(`node ${process.version}, ${runs} run(s) each: best wall-clock events/s, best events per CPU-second, heap of the best run\n`)
  console.log('| model | vertices | events | events/s (wall) | events/CPU-s | heap after GC (MB) | bytes per vertex+edge | graph vertices | graph edges |')
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|')
  const snapshots: string[] = []
  for (const [vertices, events] of sizes) {
    for (const variant of variants) {
      let best: Result | undefined
      let bestCpu = 0
      for (let i = 0; i < runs; i++) {
        const child = spawnSync(
          process.execPath,
          ['--expose-gc', '--import', 'tsx', '--conditions=vitrage-source', self, '--child', '--variant', variant, '--vertices', String(vertices), '--events', String(events)],
          { encoding: 'utf8', maxBuffer: 1 << 24 },
        )
        if (child.status !== 0) throw new Error(`${variant}: ${child.stderr}`)
        const r = JSON.parse(child.stdout.trim().split('\n').at(-1) as string) as Result
        if (best === undefined || r.eventsPerSecond > best.eventsPerSecond) best = r
        bestCpu = Math.max(bestCpu, r.eventsPerCpuSecond)
      }
      if (best === undefined) continue
      if (best.snapshot !== undefined) {
        const s = best.snapshot
        snapshots.push(
          `| ${variant} | ${best.graphVertices.toLocaleString('en')} | ${best.graphEdges.toLocaleString('en')} | ${s.compactMs} | ${(s.compactBytes / 2 ** 20).toFixed(1)} | ${s.loadMs} | ${s.prettyMs} |`,
        )
      }
      const elements = best.graphVertices + best.graphEdges
      console.log(
        `| ${variant} | ${vertices.toLocaleString('en')} | ${events.toLocaleString('en')} | ${best.eventsPerSecond.toLocaleString('en')} | ${bestCpu.toLocaleString('en')} | ${(best.heapBytes / 2 ** 20).toFixed(1)} | ${elements > 0 ? Math.round(best.heapBytes / elements) : '-'} | ${best.graphVertices.toLocaleString('en')} | ${best.graphEdges.toLocaleString('en')} |`,
      )
    }
  }
  if (snapshots.length > 0) {
    console.log('\nSnapshot of the replayed graph (best run): canonical JSON written and read back\n')
    console.log('| model | vertices | edges | compact write (ms) | compact size (MB) | fromCanonical (ms) | pretty write (ms) |')
    console.log('|---|---:|---:|---:|---:|---:|---:|')
    for (const line of snapshots) console.log(line)
  }
}

main()
