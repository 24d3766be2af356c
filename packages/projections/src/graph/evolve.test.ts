import { EventTypes, type StoredEvent } from '@vitrage-persistor/core'
import t from 'tap'
import { type CanonicalGraph, toCanonical } from './canonical.js'
import { evolve, replayGraph } from './evolve.js'
import { EntityGraph, RECENT_ANOMALIES } from './model.js'

// Every expected graph below was also checked against Vitrage 9.0.0's own
// GraphPersistency.do_replay_events into NXGraph (see vitrage-differential.test.ts).

let nextId = 1
const stored = (eventType: string, payload: unknown): StoredEvent => ({
  id: nextId++,
  messageId: `00000000-0000-4000-8000-${String(nextId).padStart(12, '0')}`,
  eventType,
  publisherId: 'vitrage.graph',
  priority: 'INFO',
  collectorTimestamp: '2024-01-01T00:00:00.000000Z',
  persistedAt: '2024-01-01T00:00:00.000000Z',
  payload: payload as Record<string, unknown>,
})
const vertex = (afterImage: Record<string, unknown>): StoredEvent =>
  stored(EventTypes.graphChange, { is_vertex: true, payload: afterImage })
const edge = (afterImage: Record<string, unknown>): StoredEvent =>
  stored(EventTypes.graphChange, { is_vertex: false, payload: afterImage })
const graphOf = (...events: StoredEvent[]): CanonicalGraph => toCanonical(replayGraph(events))

t.test('a null on first insert is kept (vertex and edge)', async (t) => {
  t.strictSame(
    graphOf(
      vertex({ vertex_id: 'a', state: null, name: 'a' }),
      vertex({ vertex_id: 'b', name: 'b' }),
      edge({ source_id: 'a', target_id: 'b', label: 'on', relationship_type: 'on', update_timestamp: null }),
    ),
    {
      vertices: [
        { id: 'a', properties: { state: null, name: 'a' } },
        { id: 'b', properties: { name: 'b' } },
      ],
      edges: [{ source: 'a', target: 'b', label: 'on', properties: { relationship_type: 'on', update_timestamp: null } }],
    },
  )
})

t.test('a null on update deletes the key (vertex and edge); keys not mentioned stay', async (t) => {
  t.strictSame(
    graphOf(
      vertex({ vertex_id: 'a', state: 'ok', name: 'a', project_id: 'p1' }),
      vertex({ vertex_id: 'a', state: null, name: 'a2', never_set: null }),
      edge({ source_id: 'a', target_id: 'a', label: 'on', relationship_type: 'on', update_timestamp: 't1' }),
      edge({ source_id: 'a', target_id: 'a', label: 'on', update_timestamp: null }),
    ),
    {
      vertices: [{ id: 'a', properties: { name: 'a2', project_id: 'p1' } }],
      edges: [{ source: 'a', target: 'a', label: 'on', properties: { relationship_type: 'on' } }],
    },
  )
})

t.test('an edge to unknown vertices creates them with no properties', async (t) => {
  const g = replayGraph([edge({ source_id: 'x', target_id: 'y', label: 'contains', relationship_type: 'contains' })])
  t.strictSame(toCanonical(g), {
    vertices: [
      { id: 'x', properties: {} },
      { id: 'y', properties: {} },
    ],
    edges: [{ source: 'x', target: 'y', label: 'contains', properties: { relationship_type: 'contains' } }],
  })
  t.equal(g.vertexCount, 2)
  t.equal(g.edgeCount, 1)
})

t.test('a vertex with an empty property map is replaced as on insert: its nulls are kept', async (t) => {
  // The placeholder from an edge, then its first real after-image.
  t.strictSame(
    graphOf(
      edge({ source_id: 'x', target_id: 'y', label: 'on', relationship_type: 'on' }),
      vertex({ vertex_id: 'y', name: 'y', project_id: null }),
    ).vertices,
    [
      { id: 'x', properties: {} },
      { id: 'y', properties: { name: 'y', project_id: null } },
    ],
  )
  // A vertex inserted with no properties at all.
  t.strictSame(graphOf(vertex({ vertex_id: 'c' }), vertex({ vertex_id: 'c', a: null, b: 1 })).vertices, [
    { id: 'c', properties: { a: null, b: 1 } },
  ])
  // A vertex emptied by deletions counts as empty too: Python's `not {}` is True.
  t.strictSame(
    graphOf(
      vertex({ vertex_id: 'e', a: 1 }),
      vertex({ vertex_id: 'e', a: null }),
      vertex({ vertex_id: 'e', a: null, b: 2 }),
    ).vertices,
    [{ id: 'e', properties: { a: null, b: 2 } }],
  )
  // The same rule for edges.
  t.strictSame(
    graphOf(
      edge({ source_id: 'x', target_id: 'y', label: 'on', p: 1 }),
      edge({ source_id: 'x', target_id: 'y', label: 'on', p: null }),
      edge({ source_id: 'x', target_id: 'y', label: 'on', p: null }),
    ).edges,
    [{ source: 'x', target: 'y', label: 'on', properties: { p: null } }],
  )
})

t.test('re-activation of a deleted vertex: vitrage_is_deleted true, then false', async (t) => {
  const g = replayGraph([
    vertex({ vertex_id: 'i', vitrage_type: 'nova.instance', state: 'ACTIVE', vitrage_is_deleted: false }),
    vertex({ vertex_id: 'i', vitrage_type: 'nova.instance', state: 'DELETED', vitrage_is_deleted: true, update_timestamp: 't2' }),
  ])
  t.strictSame(g.vertex('i')?.properties, {
    vitrage_type: 'nova.instance',
    state: 'DELETED',
    vitrage_is_deleted: true,
    update_timestamp: 't2',
  })
  evolve(g, vertex({ vertex_id: 'i', vitrage_type: 'nova.instance', state: 'ACTIVE', vitrage_is_deleted: false }))
  // The vertex was never removed; the update is a merge, so update_timestamp survives.
  t.strictSame(toCanonical(g).vertices, [
    {
      id: 'i',
      properties: { vitrage_type: 'nova.instance', state: 'ACTIVE', vitrage_is_deleted: false, update_timestamp: 't2' },
    },
  ])
})

t.test('relationship_type stays an edge property; source_id, target_id and label do not', async (t) => {
  const g = replayGraph([edge({ source_id: 's', target_id: 't', label: 'causes', relationship_type: 'causes', vitrage_is_deleted: false })])
  t.strictSame(g.edge('s', 't', 'causes')?.properties, { relationship_type: 'causes', vitrage_is_deleted: false })
  // Only the identity keys go: a vertex_id inside an edge after-image is an ordinary property.
  evolve(g, edge({ source_id: 's', target_id: 't', label: 'on', vertex_id: 'odd' }))
  t.strictSame(g.edge('s', 't', 'on')?.properties, { vertex_id: 'odd' })
  evolve(g, vertex({ vertex_id: 's', source_id: 'kept', label: 'kept' }))
  t.strictSame(g.vertex('s')?.properties, { source_id: 'kept', label: 'kept' })
})

t.test('a directed multigraph: one edge per (source, target, label)', async (t) => {
  const g = replayGraph([
    edge({ source_id: 'a', target_id: 'b', label: 'on', n: 1 }),
    edge({ source_id: 'a', target_id: 'b', label: 'causes', n: 2 }),
    edge({ source_id: 'b', target_id: 'a', label: 'on', n: 3 }),
    edge({ source_id: 'a', target_id: 'b', label: 'on', n: 4 }),
  ])
  t.equal(g.edgeCount, 3)
  t.strictSame(
    toCanonical(g).edges.map((e) => [e.source, e.target, e.label, e.properties['n']]),
    [
      ['a', 'b', 'causes', 2],
      ['a', 'b', 'on', 4],
      ['b', 'a', 'on', 3],
    ],
  )
})

t.test('other event types leave the graph unchanged', async (t) => {
  const g = replayGraph([vertex({ vertex_id: 'a', n: 1 })])
  const before = JSON.stringify(toCanonical(g))
  for (const type of [
    EventTypes.alarmActivate,
    EventTypes.alarmDeactivate,
    EventTypes.alarmChange,
    EventTypes.alarmChangeProjectId,
    EventTypes.causalActivate,
    EventTypes.causalDeactivate,
    'nova.instance.update',
    'vitrage.graph.change.v2',
  ]) {
    // Payloads shaped like graph changes, to show the type alone decides.
    t.equal(evolve(g, stored(type, { is_vertex: true, payload: { vertex_id: 'a', n: 2 } })), g)
    t.equal(evolve(g, stored(type, { vertex_id: 'z', vitrage_id: 'z', source_id: 'a', target_id: 'b' })), g)
  }
  t.equal(JSON.stringify(toCanonical(g)), before)
  t.equal(g.anomalyCount, 0)
})

t.test('malformed graph changes are skipped and counted, never thrown', async (t) => {
  const g = replayGraph([vertex({ vertex_id: 'a', n: 1 }), edge({ source_id: 'a', target_id: 'b', label: 'on' })])
  const before = JSON.stringify(toCanonical(g))
  const cases: [unknown, string][] = [
    [null, 'invalid-payload'],
    [[1, 2], 'invalid-payload'],
    [{ payload: { vertex_id: 'a', n: 2 } }, 'invalid-is-vertex'],
    [{ is_vertex: 'true', payload: { vertex_id: 'a', n: 2 } }, 'invalid-is-vertex'],
    [{ is_vertex: 1, payload: { vertex_id: 'a', n: 2 } }, 'invalid-is-vertex'],
    [{ is_vertex: true }, 'invalid-after-image'],
    [{ is_vertex: true, payload: null }, 'invalid-after-image'],
    [{ is_vertex: true, payload: [{ vertex_id: 'a' }] }, 'invalid-after-image'],
    [{ is_vertex: true, payload: 'a' }, 'invalid-after-image'],
    [{ is_vertex: true, payload: {} }, 'invalid-vertex-id'],
    [{ is_vertex: true, payload: { n: 2 } }, 'invalid-vertex-id'],
    [{ is_vertex: true, payload: { vertex_id: '', n: 2 } }, 'invalid-vertex-id'],
    [{ is_vertex: true, payload: { vertex_id: null, n: 2 } }, 'invalid-vertex-id'],
    [{ is_vertex: true, payload: { vertex_id: 7, n: 2 } }, 'invalid-vertex-id'],
    [{ is_vertex: false, payload: { vertex_id: 'a', n: 2 } }, 'invalid-edge-key'],
    [{ is_vertex: false, payload: { source_id: 'a', target_id: 'b' } }, 'invalid-edge-key'],
    [{ is_vertex: false, payload: { source_id: 'a', label: 'on' } }, 'invalid-edge-key'],
    [{ is_vertex: false, payload: { target_id: 'b', label: 'on' } }, 'invalid-edge-key'],
    [{ is_vertex: false, payload: { source_id: 'a', target_id: 'b', label: '' } }, 'invalid-edge-key'],
    [{ is_vertex: false, payload: { source_id: ['a'], target_id: 'b', label: 'on' } }, 'invalid-edge-key'],
  ]
  for (const [payload, reason] of cases) {
    const e = stored(EventTypes.graphChange, payload)
    let result: EntityGraph | undefined
    t.doesNotThrow(() => {
      result = evolve(g, e)
    })
    t.equal(result, g)
    t.match(g.recentAnomalies.at(-1), { eventId: e.id, messageId: e.messageId, reason }, JSON.stringify(payload))
  }
  t.equal(g.anomalyCount, cases.length)
  t.equal(JSON.stringify(toCanonical(g)), before, 'the graph is unchanged')
  // The next good event still applies.
  evolve(g, vertex({ vertex_id: 'a', n: 3 }))
  t.equal(g.vertex('a')?.properties['n'], 3)
})

t.test('the anomaly count is exact, the detail list bounded', async (t) => {
  const g = new EntityGraph()
  for (let i = 0; i < RECENT_ANOMALIES + 50; i++) evolve(g, stored(EventTypes.graphChange, { is_vertex: true, payload: {} }))
  t.equal(g.anomalyCount, RECENT_ANOMALIES + 50)
  t.equal(g.recentAnomalies.length, RECENT_ANOMALIES)
  t.equal(g.vertexCount, 0)
})

t.test('evolve mutates and returns the same graph, and never modifies the event', async (t) => {
  const g = new EntityGraph()
  const e1 = vertex({ vertex_id: 'a', tags: ['x'], n: 1, gone: 'soon' })
  const e2 = vertex({ vertex_id: 'a', n: null, gone: null, m: 2 })
  const e3 = edge({ source_id: 'a', target_id: 'b', label: 'on', relationship_type: 'on' })
  const copies = [e1, e2, e3].map((e) => JSON.stringify(e))
  t.equal(evolve(g, e1), g)
  t.equal(evolve(evolve(g, e2), e3), g)
  t.strictSame(
    [e1, e2, e3].map((e) => JSON.stringify(e)),
    copies,
  )
  t.strictSame(g.vertex('a')?.properties, { tags: ['x'], m: 2 })
})

t.test('a __proto__ key is an ordinary property', async (t) => {
  const afterImage = JSON.parse('{"vertex_id": "p", "__proto__": {"polluted": true}, "n": 1}') as Record<string, unknown>
  const g = replayGraph([vertex(afterImage), vertex(JSON.parse('{"vertex_id": "p", "__proto__": null}') as Record<string, unknown>)])
  const props = g.vertex('p')?.properties ?? {}
  t.strictSame(Object.keys(props), ['n'])
  t.equal(Object.getPrototypeOf(props), Object.prototype)
  const g2 = replayGraph([vertex(afterImage)])
  const p2 = g2.vertex('p')?.properties ?? {}
  t.strictSame(Object.keys(p2).sort(), ['__proto__', 'n'])
  t.strictSame(Object.getOwnPropertyDescriptor(p2, '__proto__')?.value, { polluted: true })
  t.equal(({} as Record<string, unknown>)['polluted'], undefined)
})
