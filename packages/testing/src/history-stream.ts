/**
 * Alarm-history traffic with the shapes Vitrage emits (see test/fixtures): alarms on hosts that
 * cause alarms on instances, severity changes, project changes, deactivations. Deterministic for
 * a seed. Returns oslo.messaging v2 bodies in the order Vitrage would publish them.
 */
/** A v2 envelope around a message object. */
const v2Body = (msg: Record<string, unknown>): Buffer => Buffer.from(JSON.stringify({ 'oslo.version': '2.0', 'oslo.message': JSON.stringify(msg) }))

const uuid = (rnd: () => number): string => {
  const h = Array.from({ length: 32 }, () => Math.floor(rnd() * 16).toString(16)).join('')
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-4${h.slice(13, 16)}-8${h.slice(17, 20)}-${h.slice(20, 32)}`
}

export const historyStream = (alarms: number, seed = 7): Buffer[] => {
  let s = seed
  const rnd = (): number => {
    s = (s * 16807) % 2147483647
    return s / 2147483647
  }
  const ts = (second: number, style: 'z' | 'naive'): string => {
    const d = new Date(Date.UTC(2024, 0, 1) + second * 1000 + (style === 'naive' ? Math.floor(rnd() * 999) : 0))
    return style === 'z' ? `${d.toISOString().slice(0, 19)}Z` : d.toISOString().replace('T', ' ').replace('Z', '000')
  }
  const out: Buffer[] = []
  const emit = (eventType: string, payload: Record<string, unknown>): void => {
    out.push(v2Body({ message_id: uuid(rnd), publisher_id: 'vitrage.graph', event_type: eventType, priority: 'INFO', payload, timestamp: ts(0, 'naive').slice(0, 26), _unique_id: uuid(rnd).replaceAll('-', '') }))
  }
  let clock = 0
  for (let i = 0; i < alarms; i++) {
    clock += 1 + Math.floor(rnd() * 5)
    const cause = { vitrage_id: uuid(rnd), name: ['CPU utilization', 'Memory utilization', 'Disk IO'][i % 3], vitrage_type: 'nagios', vitrage_category: 'ALARM', vitrage_resource_type: 'nova.host', vitrage_resource_id: uuid(rnd), vitrage_operational_severity: 'WARNING', vitrage_aggregated_severity: 'WARNING', state: 'Active' }
    emit('vitrage.alarm.activate', { ...cause, update_timestamp: ts(clock, 'z') })
    const effects = Array.from({ length: Math.floor(rnd() * 3) }, () => ({ vitrage_id: uuid(rnd), name: 'Instance affected by host problem', vitrage_type: 'vitrage', vitrage_category: 'ALARM', vitrage_resource_type: 'nova.instance', vitrage_resource_id: uuid(rnd), vitrage_resource_project_id: `p${i % 4}`, vitrage_operational_severity: 'WARNING', state: 'Active' }))
    for (const e of effects) {
      emit('vitrage.alarm.activate', { ...e, update_timestamp: ts(clock, 'z') })
      emit('vitrage.causal_relationship.activate', { relationship_type: 'causes', vitrage_is_deleted: false, source_id: cause.vitrage_id, target_id: e.vitrage_id, update_timestamp: ts(clock, 'z') })
    }
    if (rnd() < 0.3) emit('vitrage.alarm.change', { ...cause, vitrage_operational_severity: 'CRITICAL', update_timestamp: ts(clock + 1, 'z') })
    if (effects[0] && rnd() < 0.2) emit('vitrage.alarm.change_project_id', { ...effects[0], vitrage_resource_project_id: 'moved', update_timestamp: ts(clock + 1, 'z') })
    if (rnd() < 0.7) {
      const end = clock + 2 + Math.floor(rnd() * 20)
      for (const e of effects) {
        emit('vitrage.causal_relationship.deactivate', { relationship_type: 'causes', vitrage_is_deleted: true, source_id: cause.vitrage_id, target_id: e.vitrage_id, update_timestamp: ts(end, 'naive') })
        emit('vitrage.alarm.deactivate', { ...e, state: 'Inactive', update_timestamp: ts(end, 'z') })
      }
      emit('vitrage.alarm.deactivate', { ...cause, state: 'Inactive', vitrage_operational_severity: 'OK', update_timestamp: ts(end, 'z') })
      // Sometimes the same edge is activated again later: a second interval.
      if (effects[0] && rnd() < 0.3) {
        emit('vitrage.causal_relationship.activate', { relationship_type: 'causes', vitrage_is_deleted: false, source_id: cause.vitrage_id, target_id: effects[0].vitrage_id, update_timestamp: ts(end + 5, 'z') })
      }
    }
  }
  return out
}
