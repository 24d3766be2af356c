/**
 * The graph snapshot's bytes (before gzip): a columnar, dictionary-coded form that a standby
 * decodes quickly (pure; gzip and the store live in replay.ts).
 *
 *   uint32 LE  n: byte length of the header
 *   n bytes    header, JSON (UTF-8): [2, values, vertexShapes, vertexRowCount, edgeShapes, edgeRowCount]
 *   0-3 bytes  zero padding to a multiple of 4
 *   int32 LE   vertexRows (vertexRowCount of them), then edgeRows (edgeRowCount)
 *
 * `values` holds every distinct JSON value of the graph once (ids, labels, property values);
 * rows refer to them by index. A shape is the list of a property map's keys, sorted by code
 * point; vertices of one Vitrage type nearly all share one, so keys are written once per shape.
 * Rows are flat: for each vertex `id, shape, value...` (one value per key of the shape, in its
 * order); for each edge `source, target, label, shape, value...`. Vertices are sorted by id and
 * edges by (source, target, label), as in the canonical form, and values are numbered in that
 * order, so one graph state always gives the same bytes.
 *
 * Why not the canonical JSON (format 1, still read): taking over from a 100,000-vertex snapshot
 * spent 1.5 s of its 3.8 s inflating, decoding and parsing 84 MB of canonical text and building
 * the maps, most of it allocating and then garbage-collecting one string per value. Here the
 * same graph is 7.7 MB of JSON (400,000 distinct values for ~2.2 million property slots) and
 * 2.7 million integers read in place (as JSON text they took 150 of the 210 ms of parsing and a
 * 2.7-million-element array); equal values are one string shared by every map that holds them
 * (a smaller graph too), and a map is built from its shape's object literal.
 */
import * as E from 'fp-ts/lib/Either.js'
import { toCanonical } from './canonical.js'
import { compareCodePoints, isNonEmptyString, type Json, type Properties, setOwn } from './json.js'
import { EntityGraph } from './model.js'

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

/**
 * A copy of a list or object with every object's keys inserted in code-point order, so that
 * JSON.stringify writes one text for one value whatever order its keys were set in
 * (integer-like keys still come first, in numeric order, as JavaScript enumerates them).
 */
/**
 * A number JSON cannot carry: JavaScript reads jsonb's 1e400 as Infinity, which JSON.stringify
 * would write as null (a snapshot that silently differs from the graph). Thrown by the encoder,
 * turned into a value by captureGraphSnapshot (replay.ts).
 */
export class UnencodableNumber extends Error {
  override readonly name = 'UnencodableNumber'
}

const sortedKeys = (v: Json): Json => {
  if (typeof v === 'number' && !Number.isFinite(v)) throw new UnencodableNumber(`a property holds ${String(v)}, which a snapshot cannot carry`)
  if (typeof v !== 'object' || v === null) return v
  if (Array.isArray(v)) return (v as readonly Json[]).map(sortedKeys)
  const o = v as Readonly<Properties>
  const out: Properties = {}
  for (const k of Object.keys(o).sort(compareCodePoints)) setOwn(out, k, sortedKeys(o[k] as Json))
  return out
}

/** Numbers every distinct value once: strings by content, other values by their key-sorted JSON text. */
class ValueTable {
  readonly values: Json[] = []
  readonly #strings = new Map<string, number>()
  readonly #others = new Map<string, number>()

  ref(v: Json): number {
    if (typeof v === 'string') {
      let i = this.#strings.get(v)
      if (i === undefined) {
        i = this.values.push(v) - 1
        this.#strings.set(v, i)
      }
      return i
    }
    const sorted = sortedKeys(v)
    const key = JSON.stringify(sorted)
    let i = this.#others.get(key)
    if (i === undefined) {
      i = this.values.push(sorted) - 1
      this.#others.set(key, i)
    }
    return i
  }
}

/** The columnar bytes of `graph`, in canonical order. Values go through JSON.stringify (a -0 is written as 0, as in the canonical form). */
export const encodeColumnar = (graph: EntityGraph): Buffer => {
  const canonical = toCanonical(graph)
  const values = new ValueTable()
  const pushRow = (rows: number[], table: ShapeTable, properties: Readonly<Properties>): void => {
    const shape = shapeOf(table, properties)
    rows.push(shape)
    for (const k of table.shapes[shape] as string[]) rows.push(values.ref(properties[k] as Json))
  }
  const vertexShapes = newShapeTable()
  const vertexRows: number[] = []
  for (const v of canonical.vertices) {
    vertexRows.push(values.ref(v.id))
    pushRow(vertexRows, vertexShapes, v.properties)
  }
  const edgeShapes = newShapeTable()
  const edgeRows: number[] = []
  for (const e of canonical.edges) {
    edgeRows.push(values.ref(e.source), values.ref(e.target), values.ref(e.label))
    pushRow(edgeRows, edgeShapes, e.properties)
  }
  const header = Buffer.from(JSON.stringify([COLUMNAR_VERSION, values.values, vertexShapes.shapes, vertexRows.length, edgeShapes.shapes, edgeRows.length]), 'utf8')
  const rowsAt = align4(4 + header.length)
  const out = Buffer.alloc(rowsAt + 4 * (vertexRows.length + edgeRows.length))
  out.writeUInt32LE(header.length, 0)
  header.copy(out, 4)
  let at = rowsAt
  for (const x of vertexRows) at = out.writeInt32LE(x, at)
  for (const x of edgeRows) at = out.writeInt32LE(x, at)
  return out
}

const align4 = (n: number): number => (n + 3) & ~3

/** `count` little-endian int32s at `at` (a view when the platform is little-endian and `at` is aligned). */
const int32s = (bytes: Uint8Array, at: number, count: number): Int32Array => {
  if (LITTLE_ENDIAN && (bytes.byteOffset + at) % 4 === 0) return new Int32Array(bytes.buffer, bytes.byteOffset + at, count)
  const view = new DataView(bytes.buffer, bytes.byteOffset + at, 4 * count)
  const out = new Int32Array(count)
  for (let i = 0; i < count; i++) out[i] = view.getInt32(4 * i, true)
  return out
}

const LITTLE_ENDIAN = new Uint8Array(new Uint32Array([1]).buffer)[0] === 1

type Rows = ArrayLike<number>
type Build = (values: readonly Json[], rows: Rows, at: number) => Properties

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

  build(shape: number, values: readonly Json[], rows: Rows, at: number): Properties {
    if (++(this.#uses[shape] as number) === LITERAL_AFTER) {
      const keys = this.shapes[shape] as readonly string[]
      if (!keys.includes('__proto__')) {
        const fields = keys.map((k, j) => `${JSON.stringify(k)}: values[rows[at + ${j}]]`).join(', ')
        try {
          this.#built[shape] = new Function('values', 'rows', 'at', `return {${fields}}`) as Build
        } catch {
          // Code generation disallowed (node --disallow-code-generation-from-strings): stay key by key.
        }
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

/** Whether rows[from, to) are all indexes into a table of `size` values. */
const indexes = (rows: Int32Array, from: number, to: number, size: number): boolean => {
  for (let i = from; i < to; i++) {
    const x = rows[i] as number
    if (x < 0 || x >= size) return false
  }
  return true
}

const isCount = (v: unknown): v is number => typeof v === 'number' && Number.isInteger(v) && v >= 0

/**
 * A graph from its columnar bytes, or a one-line reason (cut short, not JSON, wrong version or
 * layout, a row cut short, an id that is not a non-empty string, a duplicate vertex or edge).
 * The maps are the graph's own; equal values are shared between them (values are never mutated).
 */
export const decodeColumnar = (bytes: Uint8Array): E.Either<string, EntityGraph> => {
  if (bytes.byteLength < 4) return E.left('cut short: no header length')
  const headerLength = new DataView(bytes.buffer, bytes.byteOffset, 4).getUint32(0, true)
  if (4 + headerLength > bytes.byteLength) return E.left(`cut short: a header of ${headerLength} bytes in ${bytes.byteLength}`)
  let doc: unknown
  try {
    doc = JSON.parse(Buffer.from(bytes.buffer, bytes.byteOffset + 4, headerLength).toString('utf8'))
  } catch (e) {
    return E.left(`header not JSON: ${e instanceof Error ? e.message : String(e)}`)
  }
  if (!Array.isArray(doc) || doc.length !== 6) return E.left('the header is an array of six items')
  if (doc[0] !== COLUMNAR_VERSION) return E.left(`columnar version ${JSON.stringify(doc[0])}, this version reads ${COLUMNAR_VERSION}`)
  const values: unknown = doc[1]
  if (!Array.isArray(values)) return E.left('values must be an array')
  const table = values as Json[]
  const vertexShapes = readShapes(doc[2], 'vertex shapes')
  if (E.isLeft(vertexShapes)) return vertexShapes
  const edgeShapes = readShapes(doc[4], 'edge shapes')
  if (E.isLeft(edgeShapes)) return edgeShapes
  const [vertexCount, edgeCount]: unknown[] = [doc[3], doc[5]]
  if (!isCount(vertexCount) || !isCount(edgeCount)) return E.left('row counts must be non-negative integers')
  const rowsAt = align4(4 + headerLength)
  const size = rowsAt + 4 * (vertexCount + edgeCount)
  if (bytes.byteLength !== size) return E.left(`${bytes.byteLength} bytes, the header announces ${size}`)
  const graph = new EntityGraph()
  const vr = int32s(bytes, rowsAt, vertexCount)
  const vertexBuild = new Builders(vertexShapes.right)
  for (let p = 0; p < vr.length; ) {
    const at = p
    const id = table[vr[p] as number]
    const shape = vr[p + 1]
    const keys = shape === undefined ? undefined : vertexShapes.right[shape]
    if (!isNonEmptyString(id)) return E.left(`vertex row at ${at}: the id must be a non-empty string`)
    if (keys === undefined) return E.left(`vertex row at ${at}: no shape ${String(shape)}`)
    p += 2
    if (p + keys.length > vr.length) return E.left(`vertex row at ${at}: cut short`)
    if (!indexes(vr, p, p + keys.length, table.length)) return E.left(`vertex row at ${at}: a value index out of range`)
    if (!graph.adoptVertex(id, vertexBuild.build(shape as number, table, vr, p))) return E.left(`duplicate vertex ${JSON.stringify(id)}`)
    p += keys.length
  }
  const er = int32s(bytes, rowsAt + 4 * vertexCount, edgeCount)
  const edgeBuild = new Builders(edgeShapes.right)
  for (let p = 0; p < er.length; ) {
    const at = p
    const source = table[er[p] as number]
    const target = table[er[p + 1] as number]
    const label = table[er[p + 2] as number]
    const shape = er[p + 3]
    const keys = shape === undefined ? undefined : edgeShapes.right[shape]
    if (!isNonEmptyString(source) || !isNonEmptyString(target) || !isNonEmptyString(label)) return E.left(`edge row at ${at}: source, target and label must be non-empty strings`)
    if (keys === undefined) return E.left(`edge row at ${at}: no shape ${String(shape)}`)
    p += 4
    if (p + keys.length > er.length) return E.left(`edge row at ${at}: cut short`)
    if (!indexes(er, p, p + keys.length, table.length)) return E.left(`edge row at ${at}: a value index out of range`)
    if (!graph.adoptEdge(source, target, label, edgeBuild.build(shape as number, table, er, p))) {
      return E.left(`duplicate edge ${JSON.stringify([source, target, label])}`)
    }
    p += keys.length
  }
  return E.right(graph)
}
