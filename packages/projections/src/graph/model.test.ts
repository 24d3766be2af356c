import t from 'tap'
import { EntityGraph } from './model.js'
import { summarize } from './summary.js'

const sample = (): EntityGraph => {
  const g = new EntityGraph()
  g.updateVertex('zone', { vitrage_type: 'nova.zone', vitrage_category: 'RESOURCE', name: 'z' })
  g.updateVertex('h1', { vitrage_type: 'nova.host', vitrage_category: 'RESOURCE', name: 'h1', tags: ['a', 'b'] })
  g.updateVertex('h2', { vitrage_type: 'nova.host', vitrage_category: 'RESOURCE', name: 'h2', vitrage_is_deleted: true })
  g.updateVertex('al', { vitrage_type: 'nagios', vitrage_category: 'ALARM', project_id: null })
  g.updateEdge('zone', 'h1', 'contains', { relationship_type: 'contains' })
  g.updateEdge('zone', 'h2', 'contains', { relationship_type: 'contains', vitrage_is_deleted: true })
  g.updateEdge('al', 'h1', 'on', { relationship_type: 'on' })
  g.updateEdge('al', 'h1', 'causes', { relationship_type: 'causes' })
  g.updateEdge('h1', 'ghost', 'attached', { relationship_type: 'attached' })
  return g
}

t.test('counts include a vertex created by an edge (with no properties); lookups return the stored properties, undefined for an unknown vertex, and edges only in their direction and label', async (t) => {
  const g = sample()
  t.equal(g.vertexCount, 5)
  t.equal(g.edgeCount, 5)
  t.ok(g.hasVertex('ghost'))
  t.equal(g.vertex('ghost')?.id, 'ghost')
  t.strictSame(g.vertex('ghost')?.properties, {}, 'created by an edge, with no properties')
  t.strictSame(g.vertex('h1')?.properties, { vitrage_type: 'nova.host', vitrage_category: 'RESOURCE', name: 'h1', tags: ['a', 'b'] })
  t.equal(g.vertex('nope'), undefined)
  t.strictSame(g.edge('al', 'h1', 'on')?.properties, { relationship_type: 'on' })
  t.equal(g.edge('h1', 'al', 'on'), undefined, 'edges are directed')
  t.equal(g.edge('al', 'h1', 'attached'), undefined)
})

t.test("outEdges and inEdges list a vertex's edges in the order added (deleted ones too), none for an unknown vertex; neighbours: out then in, each once, or one direction", async (t) => {
  const g = sample()
  const keyOf = (e: { source: string; target: string; label: string }): string => `${e.source}-${e.label}->${e.target}`
  t.strictSame(g.outEdges('zone').map(keyOf), ['zone-contains->h1', 'zone-contains->h2'])
  t.strictSame(g.inEdges('h1').map(keyOf), ['zone-contains->h1', 'al-on->h1', 'al-causes->h1'])
  t.strictSame(g.outEdges('h2'), [])
  t.strictSame(g.inEdges('nope'), [])
  t.strictSame(g.neighbours('h1'), ['ghost', 'zone', 'al'], 'both directions, each once')
  t.strictSame(g.neighbours('h1', 'out'), ['ghost'])
  t.strictSame(g.neighbours('h1', 'in'), ['zone', 'al'])
  t.strictSame(g.neighbours('nope'), [])
})

t.test('vertices by property values', async (t) => {
  const g = sample()
  const ids = (m: Record<string, unknown>): string[] =>
    g
      .findVertices(m as never)
      .map((v) => v.id)
      .sort()
  t.strictSame(ids({ vitrage_type: 'nova.host' }), ['h1', 'h2'])
  t.strictSame(ids({ vitrage_type: 'nova.host', vitrage_is_deleted: true }), ['h2'])
  t.strictSame(ids({ vitrage_category: 'ALARM' }), ['al'])
  t.strictSame(ids({ project_id: null }), ['al'], 'a stored null matches; an absent key does not')
  t.strictSame(ids({ tags: ['a', 'b'] }), ['h1'], 'lists compare by value')
  t.strictSame(ids({ tags: ['b', 'a'] }), [])
  t.strictSame(ids({ toString: null }), [], 'inherited members are not properties')
  t.strictSame(ids({}), ['al', 'ghost', 'h1', 'h2', 'zone'])
})

t.test('a self-loop is one edge, out of and into the same vertex', async (t) => {
  const g = new EntityGraph()
  g.updateEdge('a', 'a', 'on', {})
  t.equal(g.vertexCount, 1)
  t.equal(g.edgeCount, 1)
  t.equal(g.outEdges('a').length, 1)
  t.equal(g.inEdges('a').length, 1)
  t.strictSame(g.neighbours('a'), ['a'])
})

t.test('edge keys cannot collide whatever the ids contain', async (t) => {
  const g = new EntityGraph()
  g.updateEdge('a', 'bc', 'd', { n: 1 })
  g.updateEdge('ab', 'c', 'd', { n: 2 })
  g.updateEdge('a', 'b', 'cd', { n: 3 })
  g.updateEdge('a\u0000b', 'c', 'd', { n: 4 })
  g.updateEdge('a', '\u0000bc', 'd', { n: 5 })
  t.equal(g.edgeCount, 5)
  t.equal(g.edge('a', 'b', 'cd')?.properties['n'], 3)
})

t.test('updates read the given map and never keep it', async (t) => {
  const g = new EntityGraph()
  const props: Record<string, unknown> = { a: 1 }
  g.updateVertex('v', props)
  props['a'] = 2
  props['b'] = 3
  t.strictSame(g.vertex('v')?.properties, { a: 1 })
  g.updateVertex('v', { vertex_id: 'x', a: 4 })
  t.strictSame(g.vertex('v')?.properties, { a: 4, vertex_id: 'x' }, 'identity keys are skipped only for after-images')
  g.updateVertex('w', { vertex_id: 'w', a: 5 }, true)
  t.strictSame(g.vertex('w')?.properties, { a: 5 })
})

t.test('a merge writes every changed value, -0 over 0 included, and keeps equal ones', async (t) => {
  const g = new EntityGraph()
  const list = [1]
  g.updateVertex('v', { n: 0, s: 'same', l: list, gone: 'x' })
  g.updateVertex('v', { n: -0, s: 'same', l: [1], gone: null })
  const p = g.vertex('v')?.properties ?? {}
  t.ok(Object.is(p['n'], -0), '-0 replaced 0')
  t.equal(p['s'], 'same')
  t.not(p['l'], list, 'a list is replaced, equal or not (compared by identity)')
  t.strictSame(Object.keys(p).sort(), ['l', 'n', 's'], 'null still deletes')
})

t.test('summary: counts by type, category and label', async (t) => {
  t.strictSame(summarize(sample()), {
    vertices: 5,
    edges: 5,
    verticesByType: { nagios: 1, 'nova.host': 2, 'nova.zone': 1 },
    verticesWithoutType: 1,
    verticesByCategory: { ALARM: 1, RESOURCE: 3 },
    verticesWithoutCategory: 1,
    edgesByLabel: { attached: 1, causes: 1, contains: 2, on: 1 },
    deletedVertices: 1,
    deletedEdges: 1,
  })
  t.strictSame(summarize(new EntityGraph()), {
    vertices: 0,
    edges: 0,
    verticesByType: {},
    verticesWithoutType: 0,
    verticesByCategory: {},
    verticesWithoutCategory: 0,
    edgesByLabel: {},
    deletedVertices: 0,
    deletedEdges: 0,
  })
})

t.test('summary keys are data, whatever their text', async (t) => {
  const g = new EntityGraph()
  g.updateVertex('p', { vitrage_type: '__proto__', vitrage_category: 7 })
  const s = summarize(g)
  t.strictSame(Object.keys(s.verticesByType), ['__proto__'])
  t.equal(Object.getOwnPropertyDescriptor(s.verticesByType, '__proto__')?.value, 1)
  t.equal(s.verticesWithoutCategory, 1, 'a non-string category is not a category')
})

t.test('edges of hubs (past the scan limit) and of small vertices agree with a plain (source, target, label) map', async (t) => {
  let seed = 11
  const rnd = (n: number): number => (seed = (seed * 16807) % 2147483647) % n
  const g = new EntityGraph()
  const reference = new Map<string, Record<string, unknown>>()
  const order: string[] = []
  // Few sources (hubs with up to ~40 targets), labels repeating between one source and target.
  const ids = Array.from({ length: 40 }, (_, i) => (i % 7 === 0 ? `hub${i}` : `v${i}`))
  for (let i = 0; i < 3000; i++) {
    const s = ids[rnd(5)] as string
    const tg = ids[rnd(ids.length)] as string
    const l = ['contains', 'on', 'attached'][rnd(3)] as string
    const props = rnd(4) === 0 ? {} : { n: i, gone: rnd(3) === 0 ? null : 'x' }
    const key = JSON.stringify([s, tg, l])
    g.updateEdge(s, tg, l, props)
    const before = reference.get(key)
    if (before === undefined) {
      reference.set(key, { ...props })
      order.push(key)
    } else if (Object.keys(before).length === 0) reference.set(key, { ...props })
    else {
      for (const [k, v] of Object.entries(props)) {
        if (v === null) delete before[k]
        else before[k] = v
      }
    }
  }
  t.equal(g.edgeCount, reference.size)
  t.strictSame([...g.edges()].map((e) => JSON.stringify([e.source, e.target, e.label])), order, 'insertion order')
  let mismatches = 0
  for (const s of ids) {
    for (const tg of ids) {
      for (const l of ['contains', 'on', 'attached', 'causes']) {
        const want = reference.get(JSON.stringify([s, tg, l]))
        const got = g.edge(s, tg, l)
        if ((want === undefined) !== (got === undefined) || (want !== undefined && JSON.stringify(got?.properties) !== JSON.stringify(want))) mismatches++
      }
    }
  }
  t.equal(mismatches, 0, `${ids.length ** 2 * 4} lookups`)
  t.ok((g.outEdges('v1').length > 8) || (g.outEdges('hub0').length > 8), 'some source is past the scan limit')
  t.equal(g.adoptEdge('hub0', g.outEdges('hub0')[0]?.target as string, g.outEdges('hub0')[0]?.label as string, {}), false, 'adoptEdge refuses an existing hub edge')
})
