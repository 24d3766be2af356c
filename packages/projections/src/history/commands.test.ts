import type { StoredEvent } from '@vitrage-persistor/core'
import * as E from 'fp-ts/lib/Either.js'
import t from 'tap'
import { historyCommand } from './commands.js'
import { END_OPEN_PUBLISHER, endOpenEvents } from './end-open.js'

let id = 0
const event = (eventType: string, payload: Record<string, unknown>): StoredEvent => ({
  id: ++id,
  messageId: `00000000-0000-4000-8000-${String(id).padStart(12, '0')}`,
  eventType,
  publisherId: 'vitrage.graph',
  priority: 'INFO',
  collectorTimestamp: '2026-01-01T00:00:00.000000Z',
  persistedAt: '2026-01-01T00:00:00.000000Z',
  payload,
})

t.test('alarm events carry Vitrage update_timestamp in either of its forms, as UTC', async (t) => {
  const a = historyCommand(event('vitrage.alarm.activate', { vitrage_id: 'x', update_timestamp: '2024-01-01T00:00:08Z', name: 'CPU', vitrage_operational_severity: 'CRITICAL' }))
  t.match(a, E.right({ kind: 'activate-alarm', vitrageId: 'x', at: '2024-01-01T00:00:08.000000Z', attributes: { name: 'CPU', operationalSeverity: 'CRITICAL', resourceProjectId: null } }))
  const d = historyCommand(event('vitrage.alarm.deactivate', { vitrage_id: 'x', update_timestamp: '2024-01-01 00:03:45.356815' }))
  t.match(d, E.right({ kind: 'deactivate-alarm', at: '2024-01-01T00:03:45.356815Z' }))
})

t.test('alarm.change is change-severity, alarm.change_project_id change-project (at the collector time without update_timestamp), causal_relationship.activate activate-edge', async (t) => {
  t.match(historyCommand(event('vitrage.alarm.change', { vitrage_id: 'x', update_timestamp: '2024-01-01T00:00:09Z', vitrage_operational_severity: 'WARNING' })), E.right({ kind: 'change-severity', severity: 'WARNING' }))
  t.match(historyCommand(event('vitrage.alarm.change_project_id', { vitrage_id: 'x', vitrage_resource_project_id: 'p' })), E.right({ kind: 'change-project', resourceProjectId: 'p', at: '2026-01-01T00:00:00.000000Z' }), 'no update_timestamp: the collector time orders it')
  t.match(historyCommand(event('vitrage.causal_relationship.activate', { source_id: 's', target_id: 'd', relationship_type: 'causes', update_timestamp: '2024-01-01T00:00:08Z' })), E.right({ kind: 'activate-edge', source: 's', target: 'd', label: 'causes' }))
})

t.test('other event types are not history; malformed history events are anomalies, not throws', async (t) => {
  t.equal(historyCommand(event('vitrage.graph.change', { is_vertex: true, payload: {} })), undefined)
  t.match(historyCommand(event('vitrage.alarm.activate', { update_timestamp: '2024-01-01T00:00:08Z' })), E.left({ problem: /vitrage_id/ }))
  t.match(historyCommand(event('vitrage.alarm.deactivate', { vitrage_id: 'x' })), E.left({ problem: /update_timestamp/ }))
  t.match(historyCommand(event('vitrage.alarm.deactivate', { vitrage_id: 'x', update_timestamp: 'soon' })), E.left({ problem: /update_timestamp/ }))
  t.match(historyCommand(event('vitrage.causal_relationship.deactivate', { source_id: 's', update_timestamp: '2024-01-01T00:00:08Z' })), E.left({ problem: /target_id/ }))
  t.match(historyCommand(event('vitrage.alarm.change', { vitrage_id: 'x', update_timestamp: '2024-01-01T00:00:08Z' })), E.left({ problem: /severity/ }))
})

t.test('end-open events are deactivations in the forms Vitrage publishes, stamped with the restart time', async (t) => {
  let n = 0
  const events = endOpenEvents({ alarms: ['a1'], edges: [{ source: 'a1', target: 'a2', label: 'causes' }] }, '2024-01-01T00:30:00.000000Z', () => `00000000-0000-4000-8000-${String(++n).padStart(12, '0')}`)
  t.equal(events.length, 2)
  const commands = events.map((m) => {
    t.equal(m.publisherId, END_OPEN_PUBLISHER)
    t.equal(m.collectorTimestamp, '2024-01-01T00:30:00.000000Z')
    t.same(JSON.parse(m.messageText).payload, JSON.parse(m.payloadText), 'the message holds the payload')
    return historyCommand(event(m.eventType, JSON.parse(m.payloadText) as Record<string, unknown>))
  })
  t.match(commands, [
    E.right({ kind: 'deactivate-alarm', vitrageId: 'a1', at: '2024-01-01T00:30:00.000000Z' }),
    E.right({ kind: 'deactivate-edge', source: 'a1', target: 'a2', label: 'causes', at: '2024-01-01T00:30:00.000000Z' }),
  ])
})
