/**
 * Failures of the outside world, classified once where they are caught (the driver adapters)
 * so that callers decide by kind, never by inspecting driver error codes again:
 * - `transient`: the operation may succeed if retried (connection lost, server shutting down,
 *   too many connections, serialization failure). Callers retry with backoff and do not ack.
 * - `rejected`: the server refused this input (data exception, constraint, limit). Retrying the
 *   same input fails again; callers isolate and dead-letter it.
 * - `fatal`: configuration or schema is wrong (authentication, missing table, permission).
 *   Retrying does not help until an operator acts; the service reports not-ready and keeps
 *   retrying slowly rather than dropping or acking anything.
 */
export type FailureKind = 'transient' | 'rejected' | 'fatal'

export interface Failure {
  readonly kind: FailureKind
  /** Scrubbed, single-line description. */
  readonly message: string
  /** SQLSTATE, AMQP reply code or errno, when the driver gave one. */
  readonly code?: string | undefined
}

export const failure = (kind: FailureKind, message: string, code?: string): Failure => ({ kind, message, code })

export const isRetryable = (f: Failure): boolean => f.kind !== 'rejected'

/**
 * The code of the failure a closed store answers with. Readers that loop until closed (the
 * catch-up loop, the graph follower) stop on it instead of retrying for ever: their owner closed
 * the store under them (a shutdown whose bounded wait for them ran out).
 */
export const STORE_CLOSED = 'store-closed'

/**
 * The code of the failure a snapshot save answers when its event is no longer in the log (the
 * database was restored or failed over under the projection that built it; or pruned).
 */
export const NOT_IN_LOG = 'not-in-log'
