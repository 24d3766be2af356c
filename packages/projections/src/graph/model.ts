/**
 * The entity graph: Vitrage's `NXGraph` (a networkx `MultiDiGraph`) as a plain Map-based model.
 *
 * Model decision: Map-based, not graphology. Measured with model.bench.ts (1,000,000 synthetic
 * graph changes over 100,000 vertices, ~16 properties each, 15% edges, some nulls; Node 20, 2
 * shared cores; best of 3 runs, figures in /tmp/research/graph-model-bench.md):
 *
 *   model                          events/s (wall)  events/CPU-s  heap after GC   bytes/element
 *   this Map model                         369,600       358,100      131.3 MB             669
 *   graphology MultiDirectedGraph          293,500       279,900      144.1 MB             735
 *   Map model, Map property maps           302,600       287,600      186.2 MB             949
 *
 * (Measured when this model found edges through a graph-wide map keyed by a (source, target,
 * label) string; it now finds them from the source's out-edges, see SCAN_LIMIT: ~10% less heap.)
 *
 * Both meet the 150,000 events/s target and both grow linearly (half the graph gives the same
 * bytes per element), but graphology is ~20% slower and ~10% bigger, and
 * buys nothing replay needs: its node and edge keys are strings too, a (source, target, label)
 * key still has to be built by hand, its per-node `in`/`out` neighbour dictionaries and degree
 * counters cost memory on every vertex, its merge methods copy attributes with Object.assign
 * (which mishandles a `__proto__` key), and it emits events on every mutation. Its algorithms
 * library would be the reason to pick it; none is needed here (BFS for RCA is a few lines over
 * outEdges/inEdges). Property maps are plain objects rather than Maps: vertices of one type
 * share a hidden class, so they take ~30% less memory and are faster.
 *
 * Shape: a directed multigraph. A vertex is identified by its id; an edge by
 * (source, target, label), so two vertices may be joined by several edges with different labels
 * (networkx uses the label as the multi-edge key). Properties are JSON values, `null` included.
 *
 * The update methods mirror `NXGraph.update_vertex` / `update_edge` (Vitrage 9.0.0,
 * graph/driver/networkx_graph.py:177-216); `evolve` (evolve.ts) decodes events into them.
 * Nothing in this model ever removes a vertex or an edge: replay never does (design §5).
 *
 * Ownership: objects returned by the query methods are the graph's own records, typed
 * read-only; do not mutate them (a copy would cost an allocation per call). Property maps
 * handed to `updateVertex`/`updateEdge` are read, never kept: the graph stores its own copies
 * (nested lists and objects are shared, so treat events as immutable). `adoptVertex` and
 * `adoptEdge` are the exception: they keep the map given, for decoders that own it.
 */
import { compareCodePoints, type Json, jsonEqual, type Properties } from './json.js'
import { copyProperties, isEmpty, mergeProperties } from './properties.js'

export interface GraphVertex {
  readonly id: string
  readonly properties: Readonly<Properties>
}

export interface GraphEdge {
  readonly source: string
  readonly target: string
  readonly label: string
  readonly properties: Readonly<Properties>
}

export type Direction = 'out' | 'in' | 'both'

/** A `vitrage.graph.change` event that replay skipped (Vitrage would have raised). */
export interface GraphAnomaly {
  readonly eventId: number
  readonly messageId: string
  readonly reason: GraphAnomalyReason
  readonly detail: string
}

export type GraphAnomalyReason = 'invalid-payload' | 'invalid-is-vertex' | 'invalid-after-image' | 'invalid-vertex-id' | 'invalid-edge-key'

/**
 * The write side shared by every model (the benchmark plugs other models in here).
 *
 * `properties` is read, never kept or modified (lists and objects inside it are shared, not
 * copied). With `afterImage` true it is a whole Vitrage after-image and its identity keys are
 * not properties: `vertex_id` for a vertex; `source_id`, `target_id` and `label` for an edge.
 */
export interface GraphWriter {
  /** `NXGraph.update_vertex(Vertex(id, properties))`. */
  updateVertex(id: string, properties: Readonly<Record<string, unknown>>, afterImage?: boolean): void
  /** `NXGraph.update_edge(Edge(source, target, label, properties))`. */
  updateEdge(source: string, target: string, label: string, properties: Readonly<Record<string, unknown>>, afterImage?: boolean): void
}

class VertexRecord implements GraphVertex {
  readonly id: string
  properties: Properties
  out: EdgeRecord[] | undefined
  in: EdgeRecord[] | undefined
  /** Out-edges by target, built once `out` outgrows a scan (a host holding many instances). */
  outByTarget: Map<string, EdgeRecord[]> | undefined
  constructor(id: string, properties: Properties) {
    this.id = id
    this.properties = properties
    this.out = undefined
    this.in = undefined
    this.outByTarget = undefined
  }
}

class EdgeRecord implements GraphEdge {
  readonly source: string
  readonly target: string
  readonly label: string
  properties: Properties
  constructor(source: string, target: string, label: string, properties: Properties) {
    this.source = source
    this.target = target
    this.label = label
    this.properties = properties
  }
}

/**
 * An edge is found from its source's out-edges: scanned while they are few, through
 * `outByTarget` beyond SCAN_LIMIT. A graph-wide map keyed by a (source, target, label) string
 * cost a string built, hashed and kept per edge: 250-300 ms of the 400 ms a 100,000-vertex
 * snapshot spent adding its 128,000 edges, and ~16 MB.
 */
const SCAN_LIMIT = 8

const indexByTarget = (index: Map<string, EdgeRecord[]>, e: EdgeRecord): void => {
  const same = index.get(e.target)
  if (same === undefined) index.set(e.target, [e])
  else same.push(e)
}

const findEdge = (source: VertexRecord | undefined, target: string, label: string): EdgeRecord | undefined => {
  if (source === undefined || source.out === undefined) return undefined
  const candidates = source.outByTarget === undefined ? source.out : source.outByTarget.get(target)
  if (candidates === undefined) return undefined
  for (const e of candidates) if (e.target === target && e.label === label) return e
  return undefined
}


/** How many skipped events the graph remembers in detail (the count is exact). */
export const RECENT_ANOMALIES = 100

export class EntityGraph implements GraphWriter {
  readonly #vertices = new Map<string, VertexRecord>()
  /** Every edge in insertion order (edges are never removed). */
  readonly #edges: EdgeRecord[] = []
  #anomalyCount = 0
  readonly #anomalies: GraphAnomaly[] = []

  get vertexCount(): number {
    return this.#vertices.size
  }

  get edgeCount(): number {
    return this.#edges.length
  }

  hasVertex(id: string): boolean {
    return this.#vertices.has(id)
  }

  vertex(id: string): GraphVertex | undefined {
    return this.#vertices.get(id)
  }

  edge(source: string, target: string, label: string): GraphEdge | undefined {
    return findEdge(this.#vertices.get(source), target, label)
  }

  /** Every vertex, in insertion order (not sorted; see toCanonical for the sorted form). */
  vertices(): IterableIterator<GraphVertex> {
    return this.#vertices.values()
  }

  /** Every edge, in insertion order. */
  edges(): IterableIterator<GraphEdge> {
    return this.#edges.values()
  }

  /** Edges leaving `id` (empty when the vertex is unknown), in insertion order. */
  outEdges(id: string): readonly GraphEdge[] {
    return this.#vertices.get(id)?.out ?? []
  }

  /** Edges entering `id` (empty when the vertex is unknown), in insertion order. */
  inEdges(id: string): readonly GraphEdge[] {
    return this.#vertices.get(id)?.in ?? []
  }

  /** Ids of the vertices adjacent to `id` in that direction, each once, in edge order. */
  neighbours(id: string, direction: Direction = 'both'): string[] {
    const v = this.#vertices.get(id)
    if (v === undefined) return []
    const seen = new Set<string>()
    if (direction !== 'in') for (const e of v.out ?? []) seen.add(e.target)
    if (direction !== 'out') for (const e of v.in ?? []) seen.add(e.source)
    return [...seen]
  }

  /**
   * Vertices having every given property with an equal value (structural equality for lists and
   * objects). `{k: null}` matches a stored null, not an absent key. A scan: O(vertices).
   */
  findVertices(match: Readonly<Record<string, Json>>): GraphVertex[] {
    const keys = Object.keys(match)
    const found: GraphVertex[] = []
    for (const v of this.#vertices.values()) {
      const p = v.properties
      let ok = true
      for (const k of keys) {
        if (!Object.hasOwn(p, k) || !jsonEqual(p[k], match[k])) {
          ok = false
          break
        }
      }
      if (ok) found.push(v)
    }
    return found
  }

  /** Vertex ids sorted by code point (Python's order). */
  sortedVertexIds(): string[] {
    return [...this.#vertices.keys()].sort(compareCodePoints)
  }

  /** Events replay skipped (see evolve); the exact count, the latest RECENT_ANOMALIES in detail. */
  get anomalyCount(): number {
    return this.#anomalyCount
  }

  get recentAnomalies(): readonly GraphAnomaly[] {
    return this.#anomalies
  }

  recordAnomaly(a: GraphAnomaly): void {
    this.#anomalyCount++
    this.#anomalies.push(a)
    if (this.#anomalies.length > RECENT_ANOMALIES) this.#anomalies.shift()
  }

  /**
   * `NXGraph.update_vertex`: an absent vertex, or one whose property map is empty (Python's
   * `not {}`), gets all the properties, nulls kept (networkx `add_node` updates `{}`); otherwise
   * every key is overwritten and then every key whose new value is null is deleted.
   */
  updateVertex(id: string, properties: Readonly<Record<string, unknown>>, afterImage = false): void {
    const identity = afterImage ? 'vertex' : 'none'
    const v = this.#vertices.get(id)
    if (v === undefined) {
      this.#vertices.set(id, new VertexRecord(id, copyProperties(properties, identity)))
    } else if (isEmpty(v.properties)) {
      v.properties = copyProperties(properties, identity)
    } else {
      mergeProperties(v.properties, properties, identity)
    }
  }

  /**
   * `NXGraph.update_edge`: the same rule as updateVertex (there is no overwrite flag); an
   * unknown endpoint is created with no properties (networkx `add_edge`).
   */
  updateEdge(source: string, target: string, label: string, properties: Readonly<Record<string, unknown>>, afterImage = false): void {
    const identity = afterImage ? 'edge' : 'none'
    const e = findEdge(this.#vertices.get(source), target, label)
    if (e === undefined) {
      this.#addEdge(source, target, label, copyProperties(properties, identity))
    } else if (isEmpty(e.properties)) {
      e.properties = copyProperties(properties, identity)
    } else {
      mergeProperties(e.properties, properties, identity)
    }
  }

  /**
   * Adds a vertex that is not in the graph, taking `properties` as its own map (no copy): for
   * decoders that hold a freshly parsed map nobody else references (a snapshot). False, and
   * nothing changed, when the vertex exists.
   */
  adoptVertex(id: string, properties: Properties): boolean {
    if (this.#vertices.has(id)) return false
    this.#vertices.set(id, new VertexRecord(id, properties))
    return true
  }

  /** adoptVertex for an edge: missing endpoints are created empty; false when the edge exists. */
  adoptEdge(source: string, target: string, label: string, properties: Properties): boolean {
    if (findEdge(this.#vertices.get(source), target, label) !== undefined) return false
    this.#addEdge(source, target, label, properties)
    return true
  }

  /** A new edge (not in the graph) and its endpoints' adjacency; endpoints created empty if missing. */
  #addEdge(source: string, target: string, label: string, properties: Properties): void {
    const s = this.#vertexOrEmpty(source)
    const t = this.#vertexOrEmpty(target)
    const created = new EdgeRecord(source, target, label, properties)
    this.#edges.push(created)
    if (s.out === undefined) s.out = [created]
    else s.out.push(created)
    if (s.outByTarget !== undefined) indexByTarget(s.outByTarget, created)
    else if (s.out.length > SCAN_LIMIT) {
      s.outByTarget = new Map()
      for (const e of s.out) indexByTarget(s.outByTarget, e)
    }
    if (t.in === undefined) t.in = [created]
    else t.in.push(created)
  }

  /** networkx add_edge creates a missing endpoint with an empty attribute dict. */
  #vertexOrEmpty(id: string): VertexRecord {
    let v = this.#vertices.get(id)
    if (v === undefined) {
      v = new VertexRecord(id, {})
      this.#vertices.set(id, v)
    }
    return v
  }
}
