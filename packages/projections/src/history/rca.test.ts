import type { AlarmRecord, CausalEdge, HistoryReader } from '@vitrage-persistor/core'
import * as E from 'fp-ts/lib/Either.js'
import * as TE from 'fp-ts/lib/TaskEither.js'
import t from 'tap'
import { rca } from './rca.js'

const alarm = (id: string, active: boolean): AlarmRecord => ({
  vitrage_id: id,
  start_timestamp: '2024-01-01T00:00:00.000000Z',
  end_timestamp: active ? null : '2024-01-01T00:01:00.000000Z',
  name: id,
  vitrage_type: 'nagios',
  vitrage_aggregated_severity: 'CRITICAL',
  vitrage_operational_severity: active ? 'CRITICAL' : 'OK',
  project_id: null,
  vitrage_resource_type: null,
  vitrage_resource_id: null,
  vitrage_resource_project_id: null,
  state: active ? 'Active' : 'Inactive',
  payload: null,
})
const edge = (source: string, target: string): CausalEdge => ({ source_id: source, target_id: target, label: 'causes', start_timestamp: '2024-01-01T00:00:00.000000Z', end_timestamp: null, payload: null })

// In memory, as the store answers at a time T: every edge is active; B is not.
const alarms = [alarm('A', true), alarm('B', false), alarm('C', true), alarm('D', true)]
const edges = [edge('A', 'B'), edge('B', 'C'), edge('D', 'A')]
const reader = (activeOnly: boolean): HistoryReader => ({
  causalEdges: (ids, direction) => TE.right(edges.filter((e) => ids.includes(direction === 'forward' ? e.source_id : e.target_id))),
  alarmsById: (ids) => TE.right(alarms.filter((a) => ids.includes(a.vitrage_id) && (!activeOnly || a.state === 'Active'))),
})

t.test('at a time, an alarm not active then cuts the walk: nothing beyond it stands unconnected', async (t) => {
  const r = await rca(reader(true), 'A', { at: '2024-01-01T00:02:00Z' })
  t.ok(E.isRight(r))
  if (E.isLeft(r)) return
  t.same(r.right.nodes.map((n) => n.id), ['A', 'D'], 'C, reached only through B, is left out with B')
  t.same(r.right.links.map((l) => [r.right.nodes[l.source]?.id, r.right.nodes[l.target]?.id]), [['D', 'A']])
  t.equal(r.right.nodes[r.right.inspected_index]?.id, 'A')
})

t.test('over all history every alarm is in, linked', async (t) => {
  const r = await rca(reader(false), 'A')
  t.ok(E.isRight(r))
  if (E.isLeft(r)) return
  t.same(r.right.nodes.map((n) => n.id), ['A', 'D', 'B', 'C'])
  t.same(r.right.links.map((l) => [r.right.nodes[l.source]?.id, r.right.nodes[l.target]?.id]), [['D', 'A'], ['A', 'B'], ['B', 'C']])
})

t.test('a depth that is not a whole number of 0 or more is refused, not walked as one level', async (t) => {
  for (const depth of [-1, Number.NaN, 1.5]) {
    await t.rejects(rca(reader(false), 'A', { depth }), { name: 'TypeError', message: /rca: depth must be an integer >= 0/ }, `depth ${depth}`)
  }
  const none = await rca(reader(false), 'A', { depth: 0 })
  t.same(E.isRight(none) && none.right.nodes.map((n) => n.id), ['A'], 'depth 0: the alarm alone')
})
