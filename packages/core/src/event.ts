/** The stored event (design §4) as readers see it. */
export interface StoredEvent {
  /** Position in the log; readers follow by id and never skip. */
  readonly id: number
  readonly messageId: string
  readonly eventType: string
  readonly publisherId: string | null
  readonly priority: string | null
  /** Canonical UTC ISO text with microseconds. */
  readonly collectorTimestamp: string
  readonly persistedAt: string
  /** The notification payload (a JSON object). */
  readonly payload: Record<string, unknown>
}

/**
 * An event with its payload as the stored JSON text, not parsed: for passing it on exactly and
 * without a parse and a re-serialization (republishing, mirroring).
 */
export type RawEvent = Omit<StoredEvent, 'payload'> & { readonly payloadText: string }

/** What replay needs of an event (streamed reads carry only this). */
export type LogEntry = Pick<StoredEvent, 'id' | 'messageId' | 'eventType' | 'payload'>

/** Event types Vitrage publishes on the persistor topic (design §3). */
export const EventTypes = {
  graphChange: 'vitrage.graph.change',
  alarmActivate: 'vitrage.alarm.activate',
  alarmDeactivate: 'vitrage.alarm.deactivate',
  alarmChange: 'vitrage.alarm.change',
  alarmChangeProjectId: 'vitrage.alarm.change_project_id',
  causalActivate: 'vitrage.causal_relationship.activate',
  causalDeactivate: 'vitrage.causal_relationship.deactivate',
} as const
