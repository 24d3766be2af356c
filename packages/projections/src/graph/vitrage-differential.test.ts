/**
 * Differential test against the reference: random well-formed event sequences replayed by
 * Vitrage 9.0.0's own `GraphPersistency.do_replay_events` into a fresh `NXGraph` (run by
 * /usr/bin/python3) must give byte-identical canonical JSON. Skipped, saying so, where the
 * `python3-vitrage` package is not installed.
 */
import { spawnSync } from 'node:child_process'
import { EventTypes, type StoredEvent } from '@vitrage-persistor/core'
import { prng } from '@vitrage-persistor/testing'
import t from 'tap'
import { canonicalJson } from './canonical.js'
import { replayGraph } from './evolve.js'

const PYTHON = '/usr/bin/python3'

const ORACLE = `
import json, sys
from vitrage.entity_graph.graph_persistency import GraphPersistency
from vitrage.graph.driver.networkx_graph import NXGraph
from vitrage.storage.sqlalchemy import models

def replay(rows):
    class Events:
        def get_replay_events(self, event_id):
            return [models.Event(event_id=i + 1, is_vertex=r['is_vertex'], payload=r['payload'])
                    for i, r in enumerate(rows)]
    class Db:
        events = Events()
    g = NXGraph()
    try:
        GraphPersistency.do_replay_events(Db(), g, 0)
    except Exception as e:
        return {'error': type(e).__name__}
    nodes = sorted(g._g.nodes(data=True), key=lambda n: n[0])
    edges = sorted(g._g.edges(keys=True, data=True), key=lambda e: e[:3])
    doc = {'vertices': [{'id': n, 'properties': d} for n, d in nodes],
           'edges': [{'source': s, 'target': t, 'label': k, 'properties': d} for s, t, k, d in edges]}
    return {'text': json.dumps(doc, sort_keys=True, indent=1) + '\\n'}

print(json.dumps([replay(rows) for rows in json.load(sys.stdin)]))
`

const probe = spawnSync(PYTHON, ['-c', 'import vitrage.entity_graph.graph_persistency, vitrage.graph.driver.networkx_graph'], {
  encoding: 'utf8',
})
const skip = probe.error !== undefined || probe.status !== 0 ? `${PYTHON} with python3-vitrage is not available` : false

type Row = { is_vertex: boolean; payload: Record<string, unknown> }
type Verdict = { text?: string; error?: string }

const oracle = (sequences: Row[][]): Verdict[] => {
  const r = spawnSync(PYTHON, ['-c', ORACLE], { input: JSON.stringify(sequences), encoding: 'utf8', maxBuffer: 1 << 28 })
  if (r.status !== 0) throw new Error(`oracle failed: ${r.stderr}`)
  return JSON.parse(r.stdout) as Verdict[]
}

const toEvents = (rows: Row[]): StoredEvent[] =>
  rows.map((payload, i) => ({
    id: i + 1,
    messageId: `00000000-0000-4000-8000-${String(i).padStart(12, '0')}`,
    eventType: EventTypes.graphChange,
    publisherId: 'vitrage.graph',
    priority: 'INFO',
    collectorTimestamp: '2024-01-01T00:00:00.000000Z',
    persistedAt: '2024-01-01T00:00:00.000000Z',
    // Both sides read the same JSON text, as both would read it from a database.
    payload: JSON.parse(JSON.stringify(payload)) as Record<string, unknown>,
  }))


// Ids and keys chosen to stress ordering: code point vs UTF-16 (astral vs U+E000+), integer-like
// keys (which JavaScript objects enumerate first), case, non-ASCII escaping.
const IDS = ['a', 'B', 'b', 'v10', 'v9', 'é', '\u{1F600}', '\uE000x', 'zone-0']
const LABELS = ['on', 'contains', 'causes', '\u{1F600}', '\uFB01']
const KEYS = ['state', 'vitrage_is_deleted', 'relationship_type', '10', '9', 'ü', 'z', 'name', 'vertex_id_x']
const VALUES: unknown[] = [
  null,
  null,
  null,
  'ok',
  'Ünïcode \u{1F600}',
  'tab\tnew\nline "q" \\ \u007f',
  true,
  false,
  0,
  -17,
  12345678901234567000,
  0.5,
  -3.25,
  [],
  [1, 'x', null],
  {},
  { b: null, a: [{ '2': 1, '10': 2 }] },
]

const PY_NUMBERS: unknown[] = [1.5e-7, 0.00012]

const pick = <T>(r: () => number, xs: readonly T[]): T => xs[Math.floor(r() * xs.length)] as T

const randomRows = (seed: number, n: number): Row[] => {
  const r = prng(seed)
  const rows: Row[] = []
  for (let i = 0; i < n; i++) {
    const props: Record<string, unknown> = {}
    const count = Math.floor(r() * 4) // 0..3 properties, so empty maps happen often
    // Odd seeds also use numbers JavaScript prints differently from Python (pyJson's slow path).
    for (let j = 0; j < count; j++) props[pick(r, KEYS)] = pick(r, seed % 2 === 1 ? [...VALUES, ...PY_NUMBERS] : VALUES)
    if (r() < 0.6) rows.push({ is_vertex: true, payload: { ...props, vertex_id: pick(r, IDS) } })
    else rows.push({ is_vertex: false, payload: { ...props, source_id: pick(r, IDS), target_id: pick(r, IDS), label: pick(r, LABELS) } })
  }
  return rows
}

t.test('random sequences: byte-identical to Vitrage replay', { skip }, async (t) => {
  const sequences = Array.from({ length: 400 }, (_, seed) => randomRows(seed, 5 + (seed % 40)))
  const verdicts = oracle(sequences)
  const mismatches: number[] = []
  sequences.forEach((rows, seed) => {
    const v = verdicts[seed]
    if (v?.text === undefined) return void mismatches.push(seed)
    if (canonicalJson(replayGraph(toEvents(rows))) !== v.text) mismatches.push(seed)
  })
  t.strictSame(mismatches, [], 'seeds whose replay differs')
})

t.test('the hand-written edge cases agree with Vitrage', { skip }, async (t) => {
  const cases: Row[][] = [
    // null kept on insert, deleted on update, empty map replaced as on insert
    [
      { is_vertex: true, payload: { vertex_id: 'a', x: null, y: 1 } },
      { is_vertex: true, payload: { vertex_id: 'a', y: null, z: null } },
      { is_vertex: true, payload: { vertex_id: 'a', x: null } },
      { is_vertex: true, payload: { vertex_id: 'a', x: null, w: 5 } },
    ],
    // edge to unknown vertices, then the placeholder's first after-image
    [
      { is_vertex: false, payload: { source_id: 'x', target_id: 'y', label: 'on', relationship_type: 'on', p: null } },
      { is_vertex: true, payload: { vertex_id: 'y', name: 'y', project_id: null } },
      { is_vertex: false, payload: { source_id: 'x', target_id: 'y', label: 'on', p: 3 } },
      { is_vertex: false, payload: { source_id: 'x', target_id: 'y', label: 'on', p: null, relationship_type: null } },
      { is_vertex: false, payload: { source_id: 'x', target_id: 'y', label: 'on', p: null } },
    ],
    // re-activation
    [
      { is_vertex: true, payload: { vertex_id: 'i', state: 'ACTIVE', vitrage_is_deleted: false } },
      { is_vertex: true, payload: { vertex_id: 'i', state: 'DELETED', vitrage_is_deleted: true, update_timestamp: 't2' } },
      { is_vertex: true, payload: { vertex_id: 'i', state: 'ACTIVE', vitrage_is_deleted: false } },
    ],
  ]
  const verdicts = oracle(cases)
  cases.forEach((rows, i) => t.equal(canonicalJson(replayGraph(toEvents(rows))), verdicts[i]?.text, `case ${i}`))
})

t.test('what we skip as malformed, Vitrage raises on (and stops its replay)', { skip }, async (t) => {
  const malformed: Row['payload'][] = [
    {},
    { n: 1 },
    { vertex_id: '' },
    { vertex_id: null },
  ]
  const malformedEdges: Row['payload'][] = [
    { source_id: 'a', target_id: 'b' },
    { source_id: 'a', label: 'on' },
    { target_id: 'b', label: 'on' },
    { source_id: 'a', target_id: 'b', label: '' },
    { source_id: 'a', target_id: '', label: 'on' },
  ]
  const cases: Row[][] = [
    ...malformed.map((payload) => [{ is_vertex: true, payload }]),
    ...malformedEdges.map((payload) => [{ is_vertex: false, payload }]),
  ]
  const verdicts = oracle(cases)
  verdicts.forEach((v, i) => t.ok(v.error, `${JSON.stringify(cases[i])} -> ${v.error ?? 'accepted'}`))
  for (const rows of cases) {
    const g = replayGraph(toEvents(rows))
    t.equal(g.anomalyCount, 1)
    t.equal(g.vertexCount, 0)
  }
})
