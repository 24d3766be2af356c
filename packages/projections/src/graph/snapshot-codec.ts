/**
 * The graph snapshot's text: a columnar, dictionary-coded JSON form that a standby decodes
 * quickly (pure; gzip and the store live in replay.ts).
 *
 *   [2, values, vertexShapes, vertexRows, edgeShapes, edgeRows]
 *
 * `values` holds every distinct JSON value of the graph once (ids, labels, property values);
 * rows refer to them by index. A shape is the list of a property map's keys, sorted by code
 * point; vertices of one Vitrage type nearly all share one, so keys are written once per shape.
 * `vertexRows` is flat, integers only: for each vertex `id, shape, value...` (one value per key
 * of the shape, in its order); `edgeRows` likewise with `source, target, label` in front.
 * Vertices are sorted by id and edges by (source, target, label), as in the canonical form, and
 * values are numbered in that order, so one graph state always gives the same text.
 *
 * Why not the canonical JSON (format 1, still read): taking over from a 100,000-vertex snapshot
 * spent 1.5 s of its 3.8 s inflating, decoding and parsing 84 MB of canonical text and building
 * the maps, most of it allocating and then garbage-collecting one string per value. This form
 * of the same graph is 30 MB (400,000 distinct values for 2.2 million slots), equal values are
 * one string shared by every map that holds them (a smaller graph too), and a map is built
 * from its shape's object literal. Text to graph (parse, maps, adjacency): ~1.2 s -> ~0.8 s.
 */
import * as E from 'fp-ts/lib/Either.js'
import { compareCodePoints, type Json, type Properties, setOwn } from './json.js'
import { EntityGraph, type GraphEdge, type GraphVertex } from './model.js'

export const COLUMNAR_VERSION = 2

interface ShapeTable {
  readonly shapes: string[][]
  /** Key list as inserted (JSON text) -> shape index; two insertion orders of one key set share a shape. */
  readonly byInsertion: Map<string, number>
  readonly bySorted: Map<string, number>
}

const newShapeTable = (): ShapeTable => ({ shapes: [], byInsertion: new Map(), bySorted: new Map() })

const shapeOf = (table: ShapeTable, properties: Readonly<Properties>): number => {
  const keys = Object.keys(properties)
  const signature = JSON.stringify(keys)
  let index = table.byInsertion.get(signature)
  if (index !== undefined) return index
  keys.sort(compareCodePoints)
  const sorted = JSON.stringify(keys)
  index = table.bySorted.get(sorted)
  if (index === undefined) {
    index = table.shapes.length
    table.shapes.push(keys)
    table.bySorted.set(sorted, index)
  }
  table.byInsertion.set(signature, index)
  return index
}

/** Numbers every distinct value once; strings by content, other values by their JSON text. */
class ValueTable {
  readonly values: Json[] = []
  readonly #strings = new Map<string, number>()
  readonly #others = new Map<string, number>()

  ref(v: Json): number {
    const map = typeof v === 'string' ? this.#strings : this.#others
    const key = typeof v === 'string' ? v : JSON.stringify(v)
    let i = map.get(key)
    if (i === undefined) {
      i = this.values.length
      this.values.push(v)
      map.set(key, i)
    }
    return i
  }
}

const compareEdges = (a: GraphEdge, b: GraphEdge): number =>
  compareCodePoints(a.source, b.source) || compareCodePoints(a.target, b.target) || compareCodePoints(a.label, b.label)

/** The columnar text of `graph`. Values go through JSON.stringify (a -0 is written as 0, as in the canonical form). */
export const encodeColumnar = (graph: EntityGraph): string => {
  const values = new ValueTable()
  const pushRow = (rows: number[], table: ShapeTable, properties: Readonly<Properties>): void => {
    const shape = shapeOf(table, properties)
    rows.push(shape)
    for (const k of table.shapes[shape] as string[]) rows.push(values.ref(properties[k] as Json))
  }
  const vertexShapes = newShapeTable()
  const vertexRows: number[] = []
  for (const id of graph.sortedVertexIds()) {
    vertexRows.push(values.ref(id))
    pushRow(vertexRows, vertexShapes, (graph.vertex(id) as GraphVertex).properties)
  }
  const edgeShapes = newShapeTable()
  const edgeRows: number[] = []
  for (const e of [...graph.edges()].sort(compareEdges)) {
    edgeRows.push(values.ref(e.source), values.ref(e.target), values.ref(e.label))
    pushRow(edgeRows, edgeShapes, e.properties)
  }
  return JSON.stringify([COLUMNAR_VERSION, values.values, vertexShapes.shapes, vertexRows, edgeShapes.shapes, edgeRows])
}

type Build = (values: readonly Json[], rows: readonly number[], at: number) => Properties

const byKey = (keys: readonly string[]): Build => (values, rows, at) => {
  const o: Properties = {}
  for (let j = 0; j < keys.length; j++) setOwn(o, keys[j] as string, values[rows[at + j] as number] as Json)
  return o
}

/**
 * Builds one shape's map from `rows[at...]`. A shape used often gets a function returning an
 * object literal with its keys written out: the literal's hidden class comes from a
 * boilerplate, about 40% faster than assigning key by key. Compiling one costs tens of
 * microseconds, so a shape is compiled only at its LITERAL_AFTER-th map (a graph whose maps all
 * differ pays nothing). The keys are embedded as JSON string literals, which are valid
 * JavaScript string literals, so no key can break out of its quotes; a literal `"__proto__": v`
 * would set the prototype instead of an own key, so a shape holding that key stays key by key.
 */
const LITERAL_AFTER = 32

class Builders {
  readonly #built: Build[]
  readonly #uses: number[]
  constructor(private readonly shapes: readonly (readonly string[])[]) {
    this.#built = shapes.map(byKey)
    this.#uses = shapes.map(() => 0)
  }

  build(shape: number, values: readonly Json[], rows: readonly number[], at: number): Properties {
    if (++(this.#uses[shape] as number) === LITERAL_AFTER) {
      const keys = this.shapes[shape] as readonly string[]
      if (!keys.includes('__proto__')) {
        const fields = keys.map((k, j) => `${JSON.stringify(k)}: values[rows[at + ${j}]]`).join(', ')
        this.#built[shape] = new Function('values', 'rows', 'at', `return {${fields}}`) as Build
      }
    }
    return (this.#built[shape] as Build)(values, rows, at)
  }
}

const readShapes = (value: unknown, what: string): E.Either<string, string[][]> => {
  if (!Array.isArray(value)) return E.left(`${what} must be an array`)
  for (const [i, keys] of (value as unknown[]).entries()) {
    if (!Array.isArray(keys) || !keys.every((k) => typeof k === 'string')) return E.left(`${what}[${i}] must be an array of strings`)
    if (new Set(keys).size !== keys.length) return E.left(`${what}[${i}] repeats a key`)
  }
  return E.right(value as string[][])
}

/** Rows hold only indexes into `values` (and shape numbers, checked where read). */
const readRows = (value: unknown, what: string, values: number): E.Either<string, number[]> => {
  if (!Array.isArray(value)) return E.left(`${what} must be an array`)
  for (let i = 0; i < value.length; i++) {
    const x: unknown = value[i]
    if (typeof x !== 'number' || !Number.isInteger(x) || x < 0 || x >= values) return E.left(`${what}[${i}] is not a value index`)
  }
  return E.right(value as number[])
}

const isId = (v: unknown): v is string => typeof v === 'string' && v.length > 0

/**
 * A graph from its columnar text, or a one-line reason (not JSON, wrong version or layout, a
 * row cut short, an id that is not a non-empty string, a duplicate vertex or edge). The maps
 * are the graph's own; equal values are shared between them (values are never mutated).
 */
export const decodeColumnar = (text: string): E.Either<string, EntityGraph> => {
  let doc: unknown
  try {
    doc = JSON.parse(text)
  } catch (e) {
    return E.left(`not JSON: ${e instanceof Error ? e.message : String(e)}`)
  }
  if (!Array.isArray(doc) || doc.length !== 6) return E.left('a columnar snapshot is an array of six items')
  if (doc[0] !== COLUMNAR_VERSION) return E.left(`columnar version ${JSON.stringify(doc[0])}, this version reads ${COLUMNAR_VERSION}`)
  const values: unknown = doc[1]
  if (!Array.isArray(values)) return E.left('values must be an array')
  const table = values as Json[]
  const vertexShapes = readShapes(doc[2], 'vertex shapes')
  if (E.isLeft(vertexShapes)) return vertexShapes
  const vertexRows = readRows(doc[3], 'vertex rows', table.length)
  if (E.isLeft(vertexRows)) return vertexRows
  const edgeShapes = readShapes(doc[4], 'edge shapes')
  if (E.isLeft(edgeShapes)) return edgeShapes
  const edgeRows = readRows(doc[5], 'edge rows', table.length)
  if (E.isLeft(edgeRows)) return edgeRows
  const graph = new EntityGraph()
  const vr = vertexRows.right
  const vertexBuild = new Builders(vertexShapes.right)
  for (let p = 0; p < vr.length; ) {
    const at = p
    const id = table[vr[p] as number]
    const shape = vr[p + 1]
    const keys = shape === undefined ? undefined : vertexShapes.right[shape]
    if (!isId(id)) return E.left(`vertex row at ${at}: the id must be a non-empty string`)
    if (keys === undefined) return E.left(`vertex row at ${at}: no shape ${String(shape)}`)
    p += 2
    if (p + keys.length > vr.length) return E.left(`vertex row at ${at}: cut short`)
    if (!graph.adoptVertex(id, vertexBuild.build(shape as number, table, vr, p))) return E.left(`duplicate vertex ${JSON.stringify(id)}`)
    p += keys.length
  }
  const er = edgeRows.right
  const edgeBuild = new Builders(edgeShapes.right)
  for (let p = 0; p < er.length; ) {
    const at = p
    const source = table[er[p] as number]
    const target = table[er[p + 1] as number]
    const label = table[er[p + 2] as number]
    const shape = er[p + 3]
    const keys = shape === undefined ? undefined : edgeShapes.right[shape]
    if (!isId(source) || !isId(target) || !isId(label)) return E.left(`edge row at ${at}: source, target and label must be non-empty strings`)
    if (keys === undefined) return E.left(`edge row at ${at}: no shape ${String(shape)}`)
    p += 4
    if (p + keys.length > er.length) return E.left(`edge row at ${at}: cut short`)
    if (!graph.adoptEdge(source, target, label, edgeBuild.build(shape as number, table, er, p))) {
      return E.left(`duplicate edge ${JSON.stringify([source, target, label])}`)
    }
    p += keys.length
  }
  return E.right(graph)
}
