/**
 * Ports: what projections and other readers need from the event log, independent of where it
 * is stored. `store-postgres` implements them; tests may implement them over arrays.
 */
import type * as TE from 'fp-ts/lib/TaskEither.js'
import type { StoredEvent } from './event.js'
import type { Failure } from './failure.js'

export interface ReadPageOptions {
  /** Only these event types (all when absent). */
  readonly eventTypes?: readonly string[]
  /** Stop after this id (inclusive). */
  readonly toId?: number
}

export interface EventLogReader {
  /** Up to `limit` events with id > `afterId`, in id order. Never skips a committed event. */
  readonly readPage: (afterId: number, limit: number, options?: ReadPageOptions) => TE.TaskEither<Failure, StoredEvent[]>
  /** The highest stored id (0 when the log is empty). */
  readonly headId: () => TE.TaskEither<Failure, number>
}
