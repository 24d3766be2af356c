/**
 * Canonical form of an entity graph (design §5), used for CLI output, tests and snapshots:
 *
 *   {"vertices": [{"id", "properties"}] sorted by id,
 *    "edges": [{"source", "target", "label", "properties"}] sorted by (source, target, label)}
 *
 * Strings sort by Unicode code point, as Python sorts them.
 *
 * Text forms (both byte-stable: the same graph state always gives the same bytes):
 * - `pretty` (default): exactly Python's `json.dumps(canonical, sort_keys=True, indent=1)` plus a
 *   final newline, i.e. byte-identical to the fixtures that Vitrage-side tooling wrote
 *   (test/fixtures/*.graph.json); see json.ts for escaping and numbers. One-space indent was
 *   chosen over two because it is what the reference output uses, so `diff` works.
 * - `compact`: the same JSON with no whitespace at all; the snapshot form (compression is done by
 *   whoever stores it). `fromCanonical` reads both.
 *
 * In every form all object keys are sorted, so the top level reads `edges` before `vertices`.
 */
import * as E from 'fp-ts/lib/Either.js'
import { compareCodePoints, isNonEmptyString, isPlainObject, type Json, type Properties, pyJson } from './json.js'
import { EntityGraph, type GraphEdge } from './model.js'
import { copyProperties } from './properties.js'

export interface CanonicalVertex {
  readonly id: string
  readonly properties: Readonly<Properties>
}

export interface CanonicalEdge {
  readonly source: string
  readonly target: string
  readonly label: string
  readonly properties: Readonly<Properties>
}

export interface CanonicalGraph {
  readonly vertices: readonly CanonicalVertex[]
  readonly edges: readonly CanonicalEdge[]
}

export type CanonicalFormat = 'pretty' | 'compact'

const compareEdges = (a: GraphEdge, b: GraphEdge): number =>
  compareCodePoints(a.source, b.source) || compareCodePoints(a.target, b.target) || compareCodePoints(a.label, b.label)

/**
 * The canonical object (sorted vertices and edges). Property maps are the graph's own objects,
 * not copies: read it, serialize it, or compare it, but do not mutate it.
 */
export const toCanonical = (graph: EntityGraph): CanonicalGraph => {
  const vertices: CanonicalVertex[] = []
  for (const id of graph.sortedVertexIds()) {
    const v = graph.vertex(id)
    if (v !== undefined) vertices.push({ id, properties: v.properties })
  }
  const edges = [...graph.edges()].sort(compareEdges).map(
    (e): CanonicalEdge => ({ source: e.source, target: e.target, label: e.label, properties: e.properties }),
  )
  return { vertices, edges }
}

/** Canonical JSON text of the graph; `pretty` by default, `compact` for snapshots. */
export const canonicalJson = (graph: EntityGraph, format: CanonicalFormat = 'pretty'): string => {
  const c = toCanonical(graph) as unknown as Json
  return format === 'pretty' ? `${pyJson(c, 1)}\n` : pyJson(c)
}

const describe = (v: unknown): string => (v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v)

/**
 * A graph from its canonical form (the object, or its JSON text in either format). Left with a
 * one-line reason when the input is not a canonical graph: wrong shape, an id or label that is
 * not a non-empty string, or a duplicate vertex or edge. Lenient where Vitrage is: an edge whose
 * endpoint is not listed creates that vertex with no properties. Order of the lists does not
 * matter. Property maps are copied (nested lists and objects are shared with the input).
 */
export const fromCanonical = (input: string | CanonicalGraph): E.Either<string, EntityGraph> => {
  let doc: unknown = input
  // Maps parsed here have no other owner: the graph takes them as they are instead of copying
  // them key by key (takeover from a 100,000-vertex snapshot: ~5 s -> ~4 s on a slow day of the
  // benchmark machine). A caller's object is copied.
  const owned = typeof input === 'string'
  if (typeof input === 'string') {
    try {
      doc = JSON.parse(input)
    } catch (e) {
      return E.left(`not JSON: ${e instanceof Error ? e.message : String(e)}`)
    }
  }
  if (!isPlainObject(doc)) return E.left(`a canonical graph is an object, got ${describe(doc)}`)
  const { vertices, edges } = doc
  if (!Array.isArray(vertices)) return E.left(`"vertices" must be an array, got ${describe(vertices)}`)
  if (!Array.isArray(edges)) return E.left(`"edges" must be an array, got ${describe(edges)}`)
  const graph = new EntityGraph()
  for (const [i, v] of (vertices as unknown[]).entries()) {
    if (!isPlainObject(v)) return E.left(`vertices[${i}] must be an object, got ${describe(v)}`)
    if (!isNonEmptyString(v['id'])) return E.left(`vertices[${i}].id must be a non-empty string`)
    if (!isPlainObject(v['properties'])) return E.left(`vertices[${i}].properties must be an object`)
    const properties = v['properties']
    if (!graph.adoptVertex(v['id'], owned ? (properties as Properties) : copyProperties(properties, 'none'))) {
      return E.left(`vertices[${i}]: duplicate vertex ${JSON.stringify(v['id'])}`)
    }
  }
  for (const [i, e] of (edges as unknown[]).entries()) {
    if (!isPlainObject(e)) return E.left(`edges[${i}] must be an object, got ${describe(e)}`)
    const { source, target, label, properties } = e
    if (!isNonEmptyString(source) || !isNonEmptyString(target) || !isNonEmptyString(label)) return E.left(`edges[${i}]: source, target and label must be non-empty strings`)
    if (!isPlainObject(properties)) return E.left(`edges[${i}].properties must be an object`)
    if (!graph.adoptEdge(source, target, label, owned ? (properties as Properties) : copyProperties(properties, 'none'))) {
      return E.left(`edges[${i}]: duplicate edge ${JSON.stringify([source, target, label])}`)
    }
  }
  return E.right(graph)
}
