/**
 * What Vitrage does to its own history when vitrage-graph starts without a graph snapshot
 * (entity_graph/graph_init.py `_start_from_scratch` -> history_facade.disable_alarms_in_history):
 * every alarm and causal edge still open is ended at that moment. It writes its database directly
 * and sends no notification, so nothing of it reaches the persistor's topic; alarms open then would
 * stay active here for ever (the graph rediscovers them under new vitrage_ids).
 *
 * An operator records it instead, as compensating events appended to the log: one
 * `vitrage.alarm.deactivate` per open alarm and one `vitrage.causal_relationship.deactivate` per
 * open causal edge, in the forms Vitrage itself publishes, stamped with the restart time. They go
 * through the projection like any deactivation (a rebuild gives the same tables, the mirror
 * copies them) and say where they come from: publisher `vitrage-persistor`, and a
 * `vitrage_persistor_reason` in the payload. Pure: the caller supplies the ids and appends.
 */
import { type DecodedMessage, EventTypes } from '@vitrage-persistor/core'

export interface OpenHistory {
  readonly alarms: readonly string[]
  readonly edges: ReadonlyArray<{ readonly source: string; readonly target: string; readonly label: string }>
}

export const END_OPEN_PUBLISHER = 'vitrage-persistor'
export const END_OPEN_REASON = 'vitrage-graph started without a snapshot (history end-open)'

/** The deactivation events that end everything in `open` at `at` (canonical UTC text). */
export const endOpenEvents = (open: OpenHistory, at: string, newId: () => string): DecodedMessage[] => {
  const event = (eventType: string, payload: Record<string, unknown>): DecodedMessage => {
    const messageId = newId()
    const payloadText = JSON.stringify({ ...payload, update_timestamp: at, vitrage_persistor_reason: END_OPEN_REASON })
    const messageText = JSON.stringify({ message_id: messageId, publisher_id: END_OPEN_PUBLISHER, event_type: eventType, priority: 'INFO', payload: JSON.parse(payloadText), timestamp: at })
    return { messageId, eventType, publisherId: END_OPEN_PUBLISHER, priority: 'INFO', collectorTimestamp: at, messageText, payloadText, envelopeVersion: 2 }
  }
  return [
    ...open.alarms.map((vitrageId) => event(EventTypes.alarmDeactivate, { vitrage_id: vitrageId })),
    ...open.edges.map((e) => event(EventTypes.causalDeactivate, { source_id: e.source, target_id: e.target, relationship_type: e.label })),
  ]
}
