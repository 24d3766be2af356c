import { readFileSync } from 'node:fs'
import { gzipSync } from 'node:zlib'
import * as E from 'fp-ts/lib/Either.js'
import t from 'tap'
import { canonicalJson, fromCanonical } from './canonical.js'
import type { Json, Properties } from './json.js'
import { EntityGraph } from './model.js'
import { decodeGraphSnapshot, encodeGraphSnapshot, GRAPH_SNAPSHOT_FORMAT, GRAPH_SNAPSHOT_FORMAT_CANONICAL } from './replay.js'
import { COLUMNAR_VERSION, decodeColumnar, encodeColumnar } from './snapshot-codec.js'

const fixtureGraph = (): EntityGraph => {
  const text = readFileSync(new URL('../../../../test/fixtures/vitrage-seed7-400.graph.json', import.meta.url), 'utf8')
  const g = fromCanonical(text)
  if (E.isLeft(g)) throw new Error(g.left)
  return g.right
}

/** Bytes in the columnar layout, from a header and rows (for inputs the encoder would not write). */
const layout = (header: unknown[], vertexRows: number[], edgeRows: number[], tweak?: (b: Buffer) => Buffer): Buffer => {
  const h = Buffer.from(JSON.stringify([header[0], header[1], header[2], vertexRows.length, header[3], edgeRows.length]))
  const rowsAt = (4 + h.length + 3) & ~3
  const b = Buffer.alloc(rowsAt + 4 * (vertexRows.length + edgeRows.length))
  b.writeUInt32LE(h.length, 0)
  h.copy(b, 4)
  ;[...vertexRows, ...edgeRows].forEach((x, i) => b.writeInt32LE(x, rowsAt + 4 * i))
  return tweak ? tweak(b) : b
}

/** The JSON header of columnar bytes. */
const headerOf = (b: Buffer): unknown[] => JSON.parse(b.subarray(4, 4 + b.readUInt32LE(0)).toString('utf8')) as unknown[]

const roundTrip = (g: EntityGraph): EntityGraph => {
  const back = decodeColumnar(encodeColumnar(g))
  if (E.isLeft(back)) throw new Error(back.left)
  return back.right
}

/** Keys and values a property map can hold that a careless codec gets wrong. */
const ODD_KEYS = ['__proto__', 'constructor', 'toString', '"});process.exit(1);({"', 'back\\slash', 'line\u2028sep', '10', '9', '', 'é', '\u{1F600}']
const ODD_VALUES: Json[] = [null, true, false, 0, -1, 0.5, 1e-7, 12345678901234567000, '', 'ACTIVE', 'tab\t"quote"', '\ud800', [], {}, [1, [2, { a: null }]], { nested: { deep: ['x'] } }]

const randomGraph = (seed: number): EntityGraph => {
  let s = seed
  const rnd = (n: number): number => {
    s = (s * 16807) % 2147483647
    return s % n
  }
  const pick = <T>(xs: readonly T[]): T => xs[rnd(xs.length)] as T
  const props = (): Properties => {
    const o: Properties = {}
    const keys = ['name', 'state', 'vitrage_type', ...ODD_KEYS]
    for (let i = rnd(6); i > 0; i--) {
      const k = pick(keys)
      Object.defineProperty(o, k, { value: pick(ODD_VALUES), writable: true, enumerable: true, configurable: true })
    }
    return o
  }
  const g = new EntityGraph()
  const ids = Array.from({ length: 12 }, (_, i) => pick([`v${i}`, `vé${i}`, `"v${i}"`, `v\u{1F600}${i}`]))
  for (let i = 0; i < 40; i++) {
    if (rnd(3) > 0) g.updateVertex(pick(ids), props())
    else g.updateEdge(pick(ids), pick([...ids, 'not-listed']), pick(['on', 'contains', 'causes']), props())
  }
  return g
}

t.test('columnar snapshot of the fixture graph decodes to the same canonical graph', async (t) => {
  const g = fixtureGraph()
  const bytes = encodeColumnar(g)
  t.ok(bytes.length < canonicalJson(g, 'compact').length / 1.5, `columnar ${bytes.length} bytes, canonical ${canonicalJson(g, 'compact').length}`)
  t.equal(canonicalJson(roundTrip(g)), canonicalJson(g))
})

t.test('random graphs with odd keys, values and ids round-trip exactly (canonical form)', async (t) => {
  for (let seed = 1; seed <= 300; seed++) {
    const g = randomGraph(seed)
    const back = roundTrip(g)
    if (canonicalJson(back) !== canonicalJson(g)) t.fail(`seed ${seed}`)
    t.equal(back.vertexCount, g.vertexCount)
  }
  t.pass('300 graphs')
})

// 100 maps of one shape: past the point where a shape's maps come from a compiled literal.
const MANY = 100

t.test('a __proto__ key is an own property and the prototype is untouched', async (t) => {
  const g = new EntityGraph()
  for (let i = 0; i < MANY; i++) g.updateVertex(`v${i}`, JSON.parse(`{"__proto__": {"polluted": true}, "name": "x${i}"}`) as Record<string, unknown>)
  const back = roundTrip(g)
  for (const id of ['v0', `v${MANY - 1}`]) {
    const p = back.vertex(id)?.properties as Properties
    t.ok(Object.hasOwn(p, '__proto__'), id)
    t.strictSame(Object.getOwnPropertyDescriptor(p, '__proto__')?.value, { polluted: true })
    t.equal(Object.getPrototypeOf(p), Object.prototype)
  }
  t.equal(({} as Record<string, unknown>)['polluted'], undefined)
  t.equal(canonicalJson(back), canonicalJson(g))
})

t.test('a key shaped like code stays a key, in the compiled literal too', async (t) => {
  const g = new EntityGraph()
  const key = '"});globalThis.pwned=1;({"'
  for (let i = 0; i < MANY; i++) g.updateVertex(`v${i}`, { [key]: i, 'x\\': 2, 'y\u2028': 3, constructor: 'c', 'z`${1}`': 4, '10': 'ten' })
  const back = roundTrip(g)
  const p = back.vertex(`v${MANY - 1}`)?.properties as Properties
  t.strictSame(Object.keys(p).sort(), [key, 'x\\', 'y\u2028', 'constructor', 'z`${1}`', '10'].sort())
  t.equal(p[key], MANY - 1)
  t.equal((globalThis as { pwned?: number }).pwned, undefined)
  t.equal(canonicalJson(back), canonicalJson(g))
})

t.test('equal values are written once and shared after decoding', async (t) => {
  const g = new EntityGraph()
  for (const id of ['a', 'b', 'c']) g.updateVertex(id, { state: 'ACTIVE', tags: ['x', { y: 1 }] })
  t.equal(JSON.stringify(headerOf(encodeColumnar(g))).split('"ACTIVE"').length - 1, 1, 'one copy in the bytes')
  const back = roundTrip(g)
  t.equal(back.vertex('a')?.properties['tags'], back.vertex('c')?.properties['tags'], 'one object in memory')
})

t.test('the same state gives the same bytes, whatever the order it was built in', async (t) => {
  const g1 = new EntityGraph()
  g1.updateVertex('x', { b: 1, a: 2 })
  g1.updateVertex('y', { a: 3, b: 'z' })
  g1.updateEdge('x', 'y', 'on', { q: 1, p: 2 })
  const g2 = new EntityGraph()
  g2.updateEdge('x', 'y', 'on', { p: 2, q: 1 })
  g2.updateVertex('y', { b: 'z', a: 3 })
  g2.updateVertex('x', { a: 2, b: 1 })
  t.ok(encodeColumnar(g1).equals(encodeColumnar(g2)))
  t.equal((headerOf(encodeColumnar(g1))[2] as unknown[]).length, 1, 'both insertion orders of one key set share a shape')
})

t.test('decodeColumnar refuses what it did not write, with a reason, and never throws', async (t) => {
  const good = encodeColumnar(randomGraph(7))
  const h = headerOf(good)
  const header = [h[0], h[1], h[2], h[4]]
  const variant = (i: number, v: unknown): Buffer => layout(header.map((x, j) => (j === i ? v : x)), [], [])
  const V = COLUMNAR_VERSION
  const cases: Array<[string, Buffer, RegExp]> = [
    ['empty', Buffer.alloc(0), /cut short: no header length/],
    ['a header longer than the bytes', good.subarray(0, 20), /cut short: a header of/],
    ['a header that is not JSON', layout([V], [], [], (b) => (b.fill(0x7b, 4, 8), b)), /header not JSON/],
    ['another version', variant(0, 3), /columnar version 3/],
    ['values not an array', variant(1, {}), /values must be an array/],
    ['a shape that is not a list of strings', variant(2, [[1]]), /vertex shapes\[0\]/],
    ['a shape repeating a key', variant(2, [['a', 'a']]), /repeats a key/],
    ['rows missing at the end', good.subarray(0, good.length - 4), /bytes, the header announces/],
    ['bytes past the rows', Buffer.concat([good, Buffer.alloc(4)]), /bytes, the header announces/],
    ['an id index past the values', layout([V, ['a'], [[]], []], [1, 0], []), /vertex row at 0: the id must be a non-empty string/],
    ['a value index past the values', layout([V, ['a'], [['k']], []], [0, 0, 1], []), /vertex row at 0: a value index out of range/],
    ['a negative value index', layout([V, ['a'], [], [['k']]], [], [0, 0, 0, 0, -1]), /edge row at 0: a value index out of range/],
    ['an unknown shape', layout([V, ['a'], [[]], []], [0, 0], [0, 0, 0, 0]), /edge row at 0: no shape/],
    ['a row cut short', layout([V, ['a', 'b'], [['k']], []], [0, 0], []), /cut short/],
    ['an empty id', layout([V, [''], [[]], []], [0, 0], []), /id must be a non-empty string/],
    ['a numeric id', layout([V, [5], [[]], []], [0, 0], []), /id must be a non-empty string/],
    ['a duplicate vertex', layout([V, ['a'], [[]], []], [0, 0, 0, 0], []), /duplicate vertex "a"/],
    ['a duplicate edge', layout([V, ['a'], [], [[]]], [], [0, 0, 0, 0, 0, 0, 0, 0]), /duplicate edge/],
  ]
  for (const [what, bytes, reason] of cases) {
    const r = decodeColumnar(bytes)
    t.ok(E.isLeft(r) && reason.test(r.left), `${what}: ${E.isLeft(r) ? r.left : 'accepted'}`)
  }
})

t.test('more edge shapes than values: shape numbers are not value indexes', async (t) => {
  const g = new EntityGraph()
  g.updateEdge('a', 'a', 'l', {})
  g.updateEdge('a', 'b', 'l', { x: 'a' })
  g.updateEdge('b', 'a', 'l', { y: 'a' })
  g.updateEdge('b', 'b', 'l', { z: 'a' })
  t.equal(canonicalJson(roundTrip(g)), canonicalJson(g))
})

t.test('nested objects: the same bytes whatever their key order, and one value', async (t) => {
  const g1 = new EntityGraph()
  g1.updateVertex('v', { p: { a: 1, b: [{ d: 1, c: 2 }], '10': 0, '9': 0 } })
  g1.updateVertex('w', { p: { b: [{ c: 2, d: 1 }], a: 1, '9': 0, '10': 0 } })
  const g2 = new EntityGraph()
  g2.updateVertex('v', { p: { '9': 0, b: [{ c: 2, d: 1 }], '10': 0, a: 1 } })
  g2.updateVertex('w', { p: { a: 1, '10': 0, b: [{ d: 1, c: 2 }], '9': 0 } })
  t.ok(encodeColumnar(g1).equals(encodeColumnar(g2)))
  t.equal((headerOf(encodeColumnar(g1))[1] as unknown[]).filter((v) => typeof v === 'object' && v !== null).length, 1, 'one value for both maps')
  t.equal(canonicalJson(roundTrip(g1)), canonicalJson(g1))
})

t.test('rows are read wherever the bytes sit (an unaligned buffer is copied, not misread)', async (t) => {
  const g = fixtureGraph()
  const bytes = encodeColumnar(g)
  for (const shift of [1, 2, 3]) {
    const shifted = Buffer.alloc(bytes.length + shift)
    bytes.copy(shifted, shift)
    const back = decodeColumnar(shifted.subarray(shift))
    t.ok(E.isRight(back) && canonicalJson(back.right) === canonicalJson(g), `offset ${shift}`)
  }
})

t.test('snapshots are written columnar; both formats are read; others are refused', async (t) => {
  const g = fixtureGraph()
  const encoded = await encodeGraphSnapshot(g, 42)
  if (E.isLeft(encoded)) throw new Error(encoded.left)
  const written = encoded.right
  t.equal(written.format, GRAPH_SNAPSHOT_FORMAT)
  const meta = { id: 1, kind: written.kind, eventId: 42, collectorTimestamp: null, createdAt: '2026-11-30T00:00:00Z', stats: written.stats ?? {}, bytes: written.data.byteLength }
  const fromColumnar = await decodeGraphSnapshot({ ...meta, format: written.format, data: written.data })
  t.ok(E.isRight(fromColumnar) && canonicalJson(fromColumnar.right) === canonicalJson(g), 'columnar')
  // A snapshot written by the previous version: compact canonical JSON, gzip.
  const old = gzipSync(Buffer.from(canonicalJson(g, 'compact'), 'utf8'))
  const fromCanonicalSnapshot = await decodeGraphSnapshot({ ...meta, format: GRAPH_SNAPSHOT_FORMAT_CANONICAL, data: old })
  t.ok(E.isRight(fromCanonicalSnapshot) && canonicalJson(fromCanonicalSnapshot.right) === canonicalJson(g), 'canonical (format 1)')
  const unknown = await decodeGraphSnapshot({ ...meta, format: 'msgpack/9', data: old })
  t.ok(E.isLeft(unknown) && /has format msgpack\/9; this version reads columnar\+gzip\/2 and canonical-json\+gzip\/1/.test(unknown.left.message), 'unknown format refused')
  const corrupt = await decodeGraphSnapshot({ ...meta, format: GRAPH_SNAPSHOT_FORMAT, data: gzipSync(Buffer.from('[2]')) })
  t.ok(E.isLeft(corrupt) && /snapshot 1: cut short/.test(corrupt.left.message), 'corrupt snapshot refused')
  const notGzip = await decodeGraphSnapshot({ ...meta, format: GRAPH_SNAPSHOT_FORMAT, data: written.data.subarray(0, 100) })
  t.ok(E.isLeft(notGzip) && /snapshot 1: not gzip: /.test(notGzip.left.message), 'truncated gzip refused, not thrown')
})

t.test('a number JSON cannot carry (jsonb 1e400 read as Infinity) is no snapshot, in either format, instead of a wrong one', async (t) => {
  for (const where of ['top', 'nested'] as const) {
    const g = fixtureGraph()
    g.updateVertex('h', { size: where === 'top' ? Number.POSITIVE_INFINITY : [1, { x: Number.NEGATIVE_INFINITY }] })
    for (const format of [GRAPH_SNAPSHOT_FORMAT, GRAPH_SNAPSHOT_FORMAT_CANONICAL] as const) {
      const r = await encodeGraphSnapshot(g, 7, format)
      t.ok(E.isLeft(r) && /no snapshot at event 7: a property holds -?Infinity, which a snapshot cannot carry/.test(r.left), `${where}, ${format}`)
    }
  }
})

t.test('a property nested past the stack (stored before deep payloads were refused) gives no snapshot, said; it does not throw', async (t) => {
  const g = new EntityGraph()
  g.updateVertex('v', JSON.parse(`{"deep": ${'['.repeat(20_000)}${']'.repeat(20_000)}}`) as Record<string, unknown>)
  for (const format of [GRAPH_SNAPSHOT_FORMAT, GRAPH_SNAPSHOT_FORMAT_CANONICAL] as const) {
    t.match(await encodeGraphSnapshot(g, 7, format), E.left(/^no snapshot at event 7: a property nests too deep to encode/), format)
  }
})
