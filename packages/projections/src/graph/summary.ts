/**
 * Counts that describe an entity graph at a glance (CLI output, logs, health checks).
 */
import { compareCodePoints } from './json.js'
import type { EntityGraph } from './model.js'

export interface GraphSummary {
  readonly vertices: number
  readonly edges: number
  /** Vertices by their string `vitrage_type`, keys sorted. */
  readonly verticesByType: Readonly<Record<string, number>>
  /** Vertices with no `vitrage_type`, or a non-string one (e.g. placeholders created by an edge). */
  readonly verticesWithoutType: number
  /** Vertices by their string `vitrage_category` (RESOURCE, ALARM), keys sorted. */
  readonly verticesByCategory: Readonly<Record<string, number>>
  readonly verticesWithoutCategory: number
  /** Edges by label (the edge key), keys sorted. */
  readonly edgesByLabel: Readonly<Record<string, number>>
  /** Vertices and edges whose `vitrage_is_deleted` is true: replay never removes anything. */
  readonly deletedVertices: number
  readonly deletedEdges: number
}

const bump = (m: Map<string, number>, k: string): void => {
  m.set(k, (m.get(k) ?? 0) + 1)
}

/** Object.fromEntries defines own properties, so a key such as `__proto__` is kept as data. */
const sorted = (m: Map<string, number>): Record<string, number> =>
  Object.fromEntries([...m].sort(([a], [b]) => compareCodePoints(a, b)))

export const summarize = (graph: EntityGraph): GraphSummary => {
  const byType = new Map<string, number>()
  const byCategory = new Map<string, number>()
  const byLabel = new Map<string, number>()
  let withoutType = 0
  let withoutCategory = 0
  let deletedVertices = 0
  let deletedEdges = 0
  for (const v of graph.vertices()) {
    const p = v.properties
    const type = Object.hasOwn(p, 'vitrage_type') ? p['vitrage_type'] : undefined
    const category = Object.hasOwn(p, 'vitrage_category') ? p['vitrage_category'] : undefined
    if (typeof type === 'string') bump(byType, type)
    else withoutType++
    if (typeof category === 'string') bump(byCategory, category)
    else withoutCategory++
    if (p['vitrage_is_deleted'] === true) deletedVertices++
  }
  for (const e of graph.edges()) {
    bump(byLabel, e.label)
    if (e.properties['vitrage_is_deleted'] === true) deletedEdges++
  }
  return {
    vertices: graph.vertexCount,
    edges: graph.edgeCount,
    verticesByType: sorted(byType),
    verticesWithoutType: withoutType,
    verticesByCategory: sorted(byCategory),
    verticesWithoutCategory: withoutCategory,
    edgesByLabel: sorted(byLabel),
    deletedVertices,
    deletedEdges,
  }
}
