/**
 * Alarm-history commands (design §6) and the store port that applies them. The commands are
 * produced by projections (from events) and applied by a store (store-postgres), so their
 * shape lives here, below both.
 */
import type * as TE from 'fp-ts/lib/TaskEither.js'
import type { StoredEvent } from './event.js'
import type { Failure } from './failure.js'

export interface AlarmAttributes {
  readonly name: string | null
  readonly vitrageType: string | null
  readonly aggregatedSeverity: string | null
  readonly operationalSeverity: string | null
  readonly projectId: string | null
  readonly resourceType: string | null
  readonly resourceId: string | null
  readonly resourceProjectId: string | null
}

export type HistoryCommand =
  | { readonly kind: 'activate-alarm'; readonly eventId: number; readonly vitrageId: string; readonly at: string; readonly attributes: AlarmAttributes; readonly payload: Record<string, unknown> }
  | { readonly kind: 'deactivate-alarm'; readonly eventId: number; readonly vitrageId: string; readonly at: string }
  | { readonly kind: 'change-severity'; readonly eventId: number; readonly messageId: string; readonly vitrageId: string; readonly at: string; readonly severity: string; readonly payload: Record<string, unknown> }
  | { readonly kind: 'change-project'; readonly eventId: number; readonly vitrageId: string; readonly at: string; readonly resourceProjectId: string | null }
  | { readonly kind: 'activate-edge'; readonly eventId: number; readonly source: string; readonly target: string; readonly label: string; readonly at: string; readonly payload: Record<string, unknown> }
  | { readonly kind: 'deactivate-edge'; readonly eventId: number; readonly source: string; readonly target: string; readonly label: string; readonly at: string }

/** Why an event could not become a command; the runner counts and logs these, and moves on. */
export interface HistoryAnomaly {
  readonly eventId: number
  readonly eventType: string
  readonly problem: string
}

export interface HistoryStore {
  /** The checkpoint `name`: the last event id whose commands are applied (0 when new). */
  readonly historyCheckpoint: (name: string) => TE.TaskEither<Failure, number>
  /**
   * Applies the commands and moves checkpoint `name` from `from` to `to`, in one transaction, so
   * a crash leaves either both or neither. If the checkpoint is no longer at `from` (another
   * runner moved it) nothing is applied and the failure is `rejected` with code 'checkpoint-conflict'.
   */
  readonly applyHistory: (name: string, commands: readonly HistoryCommand[], from: number, to: number) => TE.TaskEither<Failure, void>
  /**
   * Applies the history events with ids in (`from`, `to`] and moves checkpoint `name` from `from`
   * to `to`, in one transaction (conflicts as for applyHistory). The store derives the rows of the
   * events it can itself; it hands the others to `commandsFor` (synchronous, called inside the
   * transaction), and applies the commands it returns in the same transaction. With `partition`,
   * only that partition's events, and the checkpoint moved is the partition's
   * (partitionCheckpoint), which resumeHistoryPartition must have created.
   */
  readonly applyHistoryRange: (
    name: string,
    from: number,
    to: number,
    commandsFor: (events: readonly StoredEvent[]) => readonly HistoryCommand[],
    partition?: HistoryPartition,
  ) => TE.TaskEither<Failure, HistoryRangeResult>
  /**
   * Where `partition` of checkpoint `name` resumes: its checkpoint, first raised to `name`'s (and
   * created at it when absent), since everything up to `name`'s is applied in every partition.
   */
  readonly resumeHistoryPartition: (name: string, partition: HistoryPartition) => TE.TaskEither<Failure, number>
  /**
   * Advances checkpoint `name` to the lowest of its `of` partitions' checkpoints (never backwards;
   * an absent one counts as `name`'s; `of` 0: it stays) and drops the partition checkpoints, of
   * any partition count, it has reached. Writes nothing when nothing changes. Returns the
   * checkpoint.
   */
  readonly settleHistoryPartitions: (name: string, of: number) => TE.TaskEither<Failure, number>
  /** Empties the history tables and resets checkpoint `name` to 0 (for a rebuild from the log); refused (`rejected`, code `pruned`, nothing changed) once events were pruned. */
  readonly resetHistory: (name: string) => TE.TaskEither<Failure, void>
}

/**
 * Partition `index` (from 0) of `of`: the history events whose rows belong to it (an alarm's by
 * its vitrage_id, an edge's by its key), so partitions write disjoint rows and can be applied
 * concurrently, each with its own checkpoint (partitionCheckpoint).
 */
export interface HistoryPartition {
  readonly index: number
  readonly of: number
}

/** The checkpoint of `partition` of checkpoint `name`: `history/1of2` for the first of two. */
export const partitionCheckpoint = (name: string, partition: HistoryPartition): string => `${name}/${partition.index + 1}of${partition.of}`

export interface HistoryRangeResult {
  /** History events with ids in the range. */
  readonly events: number
  /** Of those, the ones handed to `commandsFor`. */
  readonly handedOver: number
}

/** One activation ('a') or deactivation ('d') of a causal edge. */
export interface EdgeEventPoint {
  readonly kind: 'a' | 'd'
  /** Canonical UTC ISO text (fixed width, so it sorts as text). */
  readonly at: string
  readonly payload?: unknown
}

export interface EdgeInterval {
  /** null: deactivated with no known activation before it. */
  readonly start: string | null
  /** null: still active. */
  readonly end: string | null
  /** The activation's payload. */
  readonly payload: unknown
}

/**
 * The intervals of one edge from all its activations and deactivations, whatever order they
 * arrived in: walk them in time order (an activation before a deactivation at the same
 * instant); an activation opens an interval unless one is open; a deactivation closes the open
 * one. With none open, a deactivation before anything else stands alone as an interval of
 * unknown start (its activation is missing); one after a closed interval repeats a deactivation
 * (Vitrage sends them again) and changes nothing: an interval of unknown start there would make
 * the edge active at every earlier moment, before it existed.
 */
export const edgeIntervals = (points: readonly EdgeEventPoint[]): EdgeInterval[] => {
  const sorted = [...points].sort((x, y) => (x.at < y.at ? -1 : x.at > y.at ? 1 : x.kind === y.kind ? 0 : x.kind === 'a' ? -1 : 1))
  const out: EdgeInterval[] = []
  let open: EdgeEventPoint | undefined
  for (const p of sorted) {
    if (p.kind === 'a') {
      open ??= p
    } else if (open !== undefined) {
      out.push({ start: open.at, end: p.at, payload: open.payload ?? null })
      open = undefined
    } else if (out.length === 0) {
      out.push({ start: null, end: p.at, payload: null })
    }
  }
  if (open !== undefined) out.push({ start: open.at, end: null, payload: open.payload ?? null })
  return out
}

/** An alarm as history queries report it (Vitrage's API shape). */
export interface AlarmRecord {
  readonly vitrage_id: string
  readonly start_timestamp: string
  readonly end_timestamp: string | null
  readonly name: string | null
  readonly vitrage_type: string | null
  readonly vitrage_aggregated_severity: string | null
  /** Current severity; 'OK' once ended. */
  readonly vitrage_operational_severity: string | null
  readonly project_id: string | null
  readonly vitrage_resource_type: string | null
  readonly vitrage_resource_id: string | null
  readonly vitrage_resource_project_id: string | null
  /** 'Active' or 'Inactive'. */
  readonly state: string
  /** The payload at activation. */
  readonly payload: Record<string, unknown> | null
}

/** A causal edge interval as history queries report it. */
export interface CausalEdge {
  readonly source_id: string
  readonly target_id: string
  readonly label: string
  readonly start_timestamp: string | null
  readonly end_timestamp: string | null
  readonly payload: Record<string, unknown> | null
}

/** What the RCA walk reads. */
export interface HistoryReader {
  /** `causes` edges leaving (forward) or entering (backward) any of `ids`; only those active at `at` when given. */
  readonly causalEdges: (ids: readonly string[], direction: 'forward' | 'backward', at?: string) => TE.TaskEither<Failure, CausalEdge[]>
  /** Alarms by vitrage_id; only those active at `at` when given. */
  readonly alarmsById: (ids: readonly string[], at?: string) => TE.TaskEither<Failure, AlarmRecord[]>
}
