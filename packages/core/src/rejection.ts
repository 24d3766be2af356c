/**
 * Why a message was not stored. Every reason is a stable, machine-readable code: it becomes the
 * `x-persistor-error` header on the dead-lettered message and the `reason` label of the
 * dead-letter counter, so the set is closed and documented (docs/event-format.md).
 */
export const REJECTION_REASONS = [
  'body-too-large',
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
] as const

export type RejectionReason = (typeof REJECTION_REASONS)[number]

export interface Rejection {
  readonly reason: RejectionReason
  /** One line for an operator; never contains message content beyond a short excerpt. */
  readonly detail: string
}

export const rejection = (reason: RejectionReason, detail: string): Rejection => ({ reason, detail })
