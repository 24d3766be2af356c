/**
 * Ports: what projections and other readers need from the event log, independent of where it
 * is stored. `store-postgres` implements them; tests may implement them over arrays.
 */
import type * as TE from 'fp-ts/lib/TaskEither.js'
import type { LogEntry, RawEvent, StoredEvent } from './event.js'
import type { Failure } from './failure.js'

export interface ReadPageOptions {
  /** Only these event types (all when absent). */
  readonly eventTypes?: readonly string[]
  /** Stop after this id (inclusive). */
  readonly toId?: number
}

export interface StreamRangeOptions extends Pick<ReadPageOptions, 'eventTypes'> {
  readonly onThrough?: (id: number) => void
}

export interface EventLogReader {
  /** Up to `limit` events with id > `afterId`, in id order. Never skips a committed event. */
  readonly readPage: (afterId: number, limit: number, options?: ReadPageOptions) => TE.TaskEither<Failure, StoredEvent[]>
  /** As readPage, with the payloads as stored JSON text (optional: readers that pass payloads on use it when offered). */
  readonly readRawPage?: (afterId: number, limit: number, options?: ReadPageOptions) => TE.TaskEither<Failure, RawEvent[]>
  /** The highest stored id (0 when the log is empty). */
  readonly headId: () => TE.TaskEither<Failure, number>
  /**
   * The head and the message_id of the event at `position`, read together. A reader that keeps
   * its position in memory checks with it that the event it stopped at is still the one it
   * applied: a database restored from a backup, or failed over to a replica that had not
   * received the newest events, hands the lost ids out again to other events. Optional.
   */
  readonly tip?: (position: number) => TE.TaskEither<Failure, LogTip>
  /**
   * Every event with an id below this was deleted by retention (1 when nothing was). Readers
   * that rebuild state from a starting point check it: a replay across a pruned range would
   * build from part of the log. Optional: a log without retention never prunes.
   */
  readonly prunedBelow?: () => TE.TaskEither<Failure, number>
  /**
   * readRawPage and prunedBelow as of one snapshot of the log: whether events after `afterId`
   * had been pruned when the page was read, exactly (a reader that reads the two apart cannot
   * tell a prune before its read from one after it). Optional.
   */
  readonly readRawPageWithWatermark?: (
    afterId: number,
    limit: number,
    options?: ReadPageOptions,
  ) => TE.TaskEither<Failure, { readonly events: RawEvent[]; readonly prunedBelow: number }>
  /**
   * Optional fast path for long reads: every event in (afterId, toId] (of the given types), in id
   * order, handed to `onEntry` as it streams in (memory stays bounded). Resolves with the count.
   * `onThrough(id)`, where given, says that every event up to `id` has been handed over (the
   * read moves on also where none of the given types is stored).
   */
  readonly streamRange?: (afterId: number, toId: number, options: StreamRangeOptions, onEntry: (entry: LogEntry) => void) => TE.TaskEither<Failure, number>
}

/** The newest event of the log and the one at a reader's position (message ids: null when absent). */
export interface LogTip {
  /** The highest stored id (0 when the log is empty). */
  readonly head: number
  readonly headMessageId: string | null
  readonly messageIdAtPosition: string | null
}

/** A stored projection snapshot (the data is opaque to the store). */
export interface SnapshotMeta {
  readonly id: number
  /** Which projection ('graph'). */
  readonly kind: string
  /** The state includes every event up to and including this id. */
  readonly eventId: number
  /** collector_timestamp of that event, when known. */
  readonly collectorTimestamp: string | null
  /** Encoding of `data`, so a reader can refuse a layout it does not know. */
  readonly format: string
  readonly stats: Readonly<Record<string, unknown>>
  readonly createdAt: string
  readonly bytes: number
}

export interface Snapshot extends SnapshotMeta {
  readonly data: Uint8Array
}

export interface NewSnapshot {
  readonly kind: string
  readonly eventId: number
  readonly format: string
  readonly data: Uint8Array
  readonly stats?: Readonly<Record<string, unknown>>
  /**
   * The message_id of the log's event `eventId` when the state was built. Given, the snapshot is
   * saved only while that event is still in the log (else `rejected`, code `not-in-log`): a
   * follower whose database was restored or failed over under it must not save a state the log
   * does not hold, which graphs at later points would start from.
   */
  readonly eventMessageId?: string
}

export interface SnapshotStore {
  readonly saveSnapshot: (snapshot: NewSnapshot) => TE.TaskEither<Failure, SnapshotMeta>
  /** The newest snapshot of `kind` at or before `eventId` (any when absent), or undefined. */
  readonly latestSnapshot: (kind: string, atOrBeforeEventId?: number) => TE.TaskEither<Failure, Snapshot | undefined>
  readonly listSnapshots: (kind: string) => TE.TaskEither<Failure, SnapshotMeta[]>
  /** Deletes all but the newest `keep` snapshots of `kind`; returns how many were deleted. */
  readonly retainSnapshots: (kind: string, keep: number) => TE.TaskEither<Failure, number>
}

/** Positions in the log by time. */
export interface LogClock {
  /** Id of the last event (in id order) whose collector_timestamp is <= `timestamp`; 0 if none. */
  readonly lastEventAtOrBefore: (timestamp: string) => TE.TaskEither<Failure, number>
}

/** Wake-ups when events are appended (at most one per committed batch; may coalesce). */
export interface AppendSignal {
  /**
   * Calls `onAppend` after each committed append, once after every (re)connection since
   * appends may have been missed meanwhile, and once when the source closes (so a reader reads,
   * learns it, and stops). The returned handle's close is idempotent.
   */
  readonly onAppend: (listener: () => void) => { readonly close: () => Promise<void> }
}

/** Checkpoints of the log's readers (the mirror, for instance). */
export interface CheckpointStore {
  /** The last event id reader `name` has fully processed (0 when new). */
  readonly checkpoint: (name: string) => TE.TaskEither<Failure, number>
  /** Compare-and-set from `from` to `to`; a conflict is `rejected` with code 'checkpoint-conflict'. */
  readonly moveCheckpoint: (name: string, from: number, to: number) => TE.TaskEither<Failure, void>
}
