/**
 * Why a message was not stored. Every reason is a stable, machine-readable code: it becomes the
 * `x-persistor-error` header on the dead-lettered message and the `reason` label of the
 * dead-letter counter, so the set is closed and documented (docs/event-format.md).
 */
export const REJECTION_REASONS = [
  'body-too-large',
  'unsupported-compression',
  'invalid-compression',
  'invalid-utf8',
  'invalid-json',
  'invalid-envelope',
  'invalid-message-json',
  'missing-event-type',
  'invalid-event-type',
  'missing-message-id',
  'invalid-message-id',
  'invalid-field',
  'invalid-payload',
  'invalid-timestamp',
  'unsupported-json',
  'database-rejected',
  'message-id-conflict',
  'pruned-history',
] as const

export type RejectionReason = (typeof REJECTION_REASONS)[number]

export interface Rejection {
  readonly reason: RejectionReason
  /** One line for an operator; never contains message content beyond a short excerpt. */
  readonly detail: string
}

export const rejection = (reason: RejectionReason, detail: string): Rejection => ({ reason, detail })

/**
 * A message at or before the newest collector_timestamp a prune deleted (`prunedThrough`, canonical
 * UTC text as the store writes it; null while nothing was pruned): its message_id can no longer
 * be recognised, so it may be a redelivery of a pruned event, and where it belongs in the log is
 * gone either way. Stored, it would follow newer history (pure).
 */
export const pastPrunedHistory = (collectorTimestamp: string, prunedThrough: string | null): Rejection | undefined =>
  prunedThrough !== null && collectorTimestamp <= prunedThrough
    ? rejection(
        'pruned-history',
        `collector_timestamp ${collectorTimestamp} is at or before the pruned part of the log (through ${prunedThrough}): a redelivery of a pruned event, or a message whose place in the log was pruned`,
      )
    : undefined
