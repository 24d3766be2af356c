/**
 * Alarm history (design §6): the six alarm-history event types become commands on the history
 * tables. Pure: the store applies them (store-postgres/src/history.ts), the runner feeds them.
 *
 * Every command is idempotent and order-tolerant, so a redelivered or replayed event changes
 * nothing and events that overtook each other converge to the same tables:
 * - an alarm is keyed by vitrage_id and has one interval; activation fills start and
 *   attributes (a row created earlier by its deactivation keeps its end), a second activation
 *   is ignored (as in Vitrage);
 * - a causal edge is keyed by (source, target, label, start): it may be activated again after
 *   it ended; a deactivation ends the latest open interval that started at or before it, or
 *   waits (as an interval with unknown start) for its activation;
 * - a severity change is keyed by the event's message_id;
 * - a project change applies if it is newer than what the row holds.
 * Times are the payload's update_timestamp, as Vitrage's persistor uses them.
 */
import { type AlarmAttributes, EventTypes, type HistoryAnomaly, type HistoryCommand, parseTimestamp, type StoredEvent } from '@vitrage-persistor/core'
import * as E from 'fp-ts/lib/Either.js'

export const HISTORY_EVENT_TYPES: readonly string[] = [
  EventTypes.alarmActivate,
  EventTypes.alarmDeactivate,
  EventTypes.alarmChange,
  EventTypes.alarmChangeProjectId,
  EventTypes.causalActivate,
  EventTypes.causalDeactivate,
]

const str = (v: unknown): string | null => (typeof v === 'string' ? v : v === undefined || v === null ? null : String(v))

const attributes = (p: Record<string, unknown>): AlarmAttributes => ({
  name: str(p['name']),
  vitrageType: str(p['vitrage_type']),
  aggregatedSeverity: str(p['vitrage_aggregated_severity']),
  operationalSeverity: str(p['vitrage_operational_severity']),
  projectId: str(p['project_id']),
  resourceType: str(p['vitrage_resource_type']),
  resourceId: str(p['vitrage_resource_id']),
  resourceProjectId: str(p['vitrage_resource_project_id']),
})

/**
 * The command for one stored event; undefined for event types history does not use; an anomaly
 * when a history event lacks what its command needs.
 */
export const historyCommand = (event: StoredEvent): E.Either<HistoryAnomaly, HistoryCommand> | undefined => {
  if (!HISTORY_EVENT_TYPES.includes(event.eventType)) return undefined
  const p = event.payload
  const anomaly = (problem: string): E.Either<HistoryAnomaly, HistoryCommand> => E.left({ eventId: event.id, eventType: event.eventType, problem })
  const time = (): E.Either<string, string> => {
    const raw = p['update_timestamp']
    if (typeof raw !== 'string') return E.left('payload has no update_timestamp')
    return E.map((t: { iso: string }) => t.iso)(E.mapLeft((e: string) => `update_timestamp: ${e}`)(parseTimestamp(raw)))
  }
  const eventId = event.id

  if (event.eventType === EventTypes.causalActivate || event.eventType === EventTypes.causalDeactivate) {
    const source = str(p['source_id'])
    const target = str(p['target_id'])
    const label = str(p['relationship_type'])
    if (source === null || target === null || label === null) return anomaly('edge payload needs source_id, target_id and relationship_type')
    const at = time()
    if (E.isLeft(at)) return anomaly(at.left)
    return E.right(
      event.eventType === EventTypes.causalActivate
        ? { kind: 'activate-edge', eventId, source, target, label, at: at.right, payload: p }
        : { kind: 'deactivate-edge', eventId, source, target, label, at: at.right },
    )
  }

  const vitrageId = str(p['vitrage_id'])
  if (vitrageId === null) return anomaly('alarm payload has no vitrage_id')
  if (event.eventType === EventTypes.alarmChangeProjectId) {
    // Vitrage applies this without a time; ours orders it by update_timestamp when present and
    // otherwise by the event's collector time.
    const at = time()
    return E.right({ kind: 'change-project', eventId, vitrageId, at: E.isRight(at) ? at.right : event.collectorTimestamp, resourceProjectId: str(p['vitrage_resource_project_id']) })
  }
  const at = time()
  if (E.isLeft(at)) return anomaly(at.left)
  switch (event.eventType) {
    case EventTypes.alarmActivate:
      return E.right({ kind: 'activate-alarm', eventId, vitrageId, at: at.right, attributes: attributes(p), payload: p })
    case EventTypes.alarmDeactivate:
      return E.right({ kind: 'deactivate-alarm', eventId, vitrageId, at: at.right })
    default: {
      const severity = str(p['vitrage_operational_severity'])
      if (severity === null) return anomaly('alarm change has no vitrage_operational_severity')
      return E.right({ kind: 'change-severity', eventId, messageId: event.messageId, vitrageId, at: at.right, severity, payload: p })
    }
  }
}
