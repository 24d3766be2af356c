import * as E from 'fp-ts/lib/Either.js'
import t from 'tap'
import { canonicalJson, fromCanonical, toCanonical } from './canonical.js'
import { compareCodePoints, type Json, pyJson, pyJsonWrite, pyNumber, pyString } from './json.js'
import { EntityGraph } from './model.js'

const build = (): EntityGraph => {
  const g = new EntityGraph()
  g.updateVertex('b', { z: 1, a: null, '10': 'ten', '9': 'nine', nested: { y: [1, { b: 2, a: 1 }], x: {} } })
  g.updateVertex('a', {})
  g.updateEdge('b', 'a', 'on', { relationship_type: 'on' })
  g.updateEdge('a', 'b', 'on', {})
  g.updateEdge('a', 'b', 'contains', { relationship_type: 'contains' })
  return g
}

t.test('canonical object: vertices by id, edges by (source, target, label)', async (t) => {
  const c = toCanonical(build())
  t.strictSame(
    c.vertices.map((v) => v.id),
    ['a', 'b'],
  )
  t.strictSame(
    c.edges.map((e) => [e.source, e.target, e.label]),
    [
      ['a', 'b', 'contains'],
      ['a', 'b', 'on'],
      ['b', 'a', 'on'],
    ],
  )
})

t.test('pretty text: Python json.dumps(sort_keys=True, indent=1), keys sorted as strings at every depth', async (t) => {
  const expected = `{
 "edges": [
  {
   "label": "contains",
   "properties": {
    "relationship_type": "contains"
   },
   "source": "a",
   "target": "b"
  },
  {
   "label": "on",
   "properties": {},
   "source": "a",
   "target": "b"
  },
  {
   "label": "on",
   "properties": {
    "relationship_type": "on"
   },
   "source": "b",
   "target": "a"
  }
 ],
 "vertices": [
  {
   "id": "a",
   "properties": {}
  },
  {
   "id": "b",
   "properties": {
    "10": "ten",
    "9": "nine",
    "a": null,
    "nested": {
     "x": {},
     "y": [
      1,
      {
       "a": 1,
       "b": 2
      }
     ]
    },
    "z": 1
   }
  }
 ]
}
`
  t.equal(canonicalJson(build()), expected)
})

t.test('compact text: no whitespace, same order', async (t) => {
  t.equal(
    canonicalJson(build(), 'compact'),
    '{"edges":[{"label":"contains","properties":{"relationship_type":"contains"},"source":"a","target":"b"},' +
      '{"label":"on","properties":{},"source":"a","target":"b"},' +
      '{"label":"on","properties":{"relationship_type":"on"},"source":"b","target":"a"}],' +
      '"vertices":[{"id":"a","properties":{}},{"id":"b","properties":{"10":"ten","9":"nine","a":null,' +
      '"nested":{"x":{},"y":[1,{"a":1,"b":2}]},"z":1}}]}',
  )
})

t.test('the same state gives the same bytes, whatever the order it was built in', async (t) => {
  const g1 = new EntityGraph()
  g1.updateVertex('x', { b: 1, a: 2 })
  g1.updateVertex('y', { c: 3 })
  g1.updateEdge('x', 'y', 'on', { q: 1, p: 2 })
  const g2 = new EntityGraph()
  g2.updateEdge('x', 'y', 'on', { p: 2, q: 1 })
  g2.updateVertex('y', { c: 3 })
  g2.updateVertex('x', { a: 2, b: 1 })
  t.equal(canonicalJson(g1), canonicalJson(g2))
  t.equal(canonicalJson(g1, 'compact'), canonicalJson(g2, 'compact'))
})

t.test('strings sort by code point, as Python sorts them', async (t) => {
  const astral = '\u{1F600}' // UTF-16 D83D DE00: below U+E000 by code unit, above it by code point
  const ids = ['\uE000', astral, 'b', 'B', 'ab', 'a', '']
  t.strictSame([...ids].sort(compareCodePoints), ['', 'B', 'a', 'ab', 'b', '\uE000', astral])
  const g = new EntityGraph()
  for (const id of ids.filter((i) => i !== '')) g.updateVertex(id, {})
  t.strictSame(
    toCanonical(g).vertices.map((v) => v.id),
    ['B', 'a', 'ab', 'b', '\uE000', astral],
  )
})

t.test('Python escaping (ensure_ascii) and numbers', async (t) => {
  t.equal(pyString('plain'), '"plain"')
  t.equal(pyString('é\u{1F600}\u007f"\\\n\t\u0001'), '"\\u00e9\\ud83d\\ude00\\u007f\\"\\\\\\n\\t\\u0001"')
  t.equal(pyString('\ud800'), '"\\ud800"', 'a lone surrogate')
  t.equal(pyNumber(0), '0')
  t.equal(pyNumber(-0), '0')
  t.equal(pyNumber(-17), '-17')
  t.equal(pyNumber(0.5), '0.5')
  t.equal(pyNumber(0.0001), '0.0001')
  t.equal(pyNumber(0.00001), '1e-05')
  t.equal(pyNumber(-1.5e-7), '-1.5e-07')
  t.equal(pyNumber(5e-324), '5e-324')
  t.equal(pyNumber(12345678901234567000), '12345678901234567000')
  t.equal(pyNumber(1e21), '1000000000000000000000', 'integers stay digits, as Python ints do')
  t.equal(pyJson({ é: ['x'] }), '{"\\u00e9":["x"]}')
})

t.test('fromCanonical reads back what canonicalJson wrote, in both formats and as an object', async (t) => {
  const g = build()
  for (const input of [canonicalJson(g), canonicalJson(g, 'compact'), JSON.parse(canonicalJson(g)) as never]) {
    const r = fromCanonical(input)
    if (E.isLeft(r)) return void t.fail(r.left)
    t.equal(canonicalJson(r.right), canonicalJson(g))
  }
})

t.test('fromCanonical copies the properties of an object it is given (it adopts only what it parsed)', async (t) => {
  const doc = { vertices: [{ id: 'a', properties: { n: 1 } }], edges: [{ source: 'a', target: 'b', label: 'on', properties: { n: 1 } }] }
  const r = fromCanonical(doc)
  if (E.isLeft(r)) return void t.fail(r.left)
  doc.vertices[0]!.properties.n = 2
  doc.edges[0]!.properties.n = 2
  t.equal(r.right.vertex('a')?.properties['n'], 1)
  t.equal(r.right.edge('a', 'b', 'on')?.properties['n'], 1)
  r.right.updateVertex('a', { n: 3 })
  t.equal(doc.vertices[0]!.properties.n, 2, 'and the graph does not write into the caller\'s maps')
})

t.test('fromCanonical: an edge endpoint that is not listed becomes an empty vertex', async (t) => {
  const r = fromCanonical({ vertices: [], edges: [{ source: 's', target: 't', label: 'on', properties: { p: null } }] })
  if (E.isLeft(r)) return void t.fail(r.left)
  t.strictSame(toCanonical(r.right), {
    vertices: [
      { id: 's', properties: {} },
      { id: 't', properties: {} },
    ],
    edges: [{ source: 's', target: 't', label: 'on', properties: { p: null } }],
  })
})

t.test('fromCanonical rejects what is not a canonical graph', async (t) => {
  const bad: [unknown, RegExp][] = [
    ['{', /not JSON/],
    ['[]', /is an object/],
    [{ vertices: [] }, /"edges" must be an array/],
    [{ vertices: {}, edges: [] }, /"vertices" must be an array/],
    [{ vertices: [1], edges: [] }, /vertices\[0\] must be an object/],
    [{ vertices: [{ id: '', properties: {} }], edges: [] }, /vertices\[0\]\.id/],
    [{ vertices: [{ id: 3, properties: {} }], edges: [] }, /vertices\[0\]\.id/],
    [{ vertices: [{ id: 'a' }], edges: [] }, /vertices\[0\]\.properties/],
    [{ vertices: [{ id: 'a', properties: [] }], edges: [] }, /vertices\[0\]\.properties/],
    [
      {
        vertices: [
          { id: 'a', properties: {} },
          { id: 'a', properties: {} },
        ],
        edges: [],
      },
      /duplicate vertex "a"/,
    ],
    [{ vertices: [], edges: [{ source: 'a', target: 'b', properties: {} }] }, /edges\[0\]: source, target and label/],
    [{ vertices: [], edges: [{ source: 'a', target: 'b', label: 'on', properties: null }] }, /edges\[0\]\.properties/],
    [
      {
        vertices: [],
        edges: [
          { source: 'a', target: 'b', label: 'on', properties: {} },
          { source: 'a', target: 'b', label: 'on', properties: {} },
        ],
      },
      /edges\[1\]: duplicate edge/,
    ],
  ]
  for (const [input, reason] of bad) {
    const r = fromCanonical(input as never)
    t.ok(E.isLeft(r), JSON.stringify(input))
    if (E.isLeft(r)) t.match(r.left, reason)
  }
})

t.test('the fast writer and the reference writer agree', async (t) => {
  const values: Json[] = [
    null,
    [],
    {},
    [[], {}, [{}]],
    { b: { '2': [1, { z: 'é', '10': null }], '10': true }, a: [{ toString: 's', constructor: 1, length: 2 }, {}] },
    { x: 'tab\t \u007f \u{1F600} \ud800 \uE000', y: -0, z: 12345678901234567000, w: 0.5 },
    { valueOf: 'v', hasOwnProperty: null, isPrototypeOf: [] },
    { __proto__: null, a: 1 } as unknown as Json, // an object with no prototype
    // These take the reference writer inside pyJson: the result must still be right.
    JSON.parse('{"__proto__": {"a": 1}, "b": 2}') as Json,
    { tiny: 1e-5, big: 1e21 },
  ]
  for (const v of values) {
    for (const indent of [undefined, 1, 2]) t.equal(pyJson(v, indent), pyJsonWrite(v, indent), `${JSON.stringify(v)} indent ${indent}`)
  }
  t.equal(pyJson(JSON.parse('{"__proto__": {"a": 1}, "b": 2}') as Json), '{"__proto__":{"a":1},"b":2}')
  t.equal(pyJson({ tiny: 1e-5, big: 1e21 }), '{"big":1000000000000000000000,"tiny":1e-05}')
  t.equal(pyJson({ x: 'é' }, 1), '{\n "x": "\\u00e9"\n}')
})
