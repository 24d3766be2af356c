/**
 * Applying alarm-history commands (core/history.ts) to the tables of migration 0004, set-based:
 * one statement per kind of command for a whole page of events, so the projection keeps up with
 * tens of thousands of events per second. Each statement is idempotent and commutative:
 * - alarms: start is the earliest activation, end the latest deactivation, attributes come from
 *   the earliest activation; vitrage_resource_project_id is the latest change_project_id at or
 *   after the start, else the earliest activation's (migration 0011);
 * - changes: one row per message_id; project changes one per event (migration 0016);
 * - edges: every activation/deactivation is kept (deduplicated); the intervals are the view
 *   `history_edge` over them (migration 0006, core's edgeIntervals rule), so nothing to rewrite.
 * The checkpoint moves in the same transaction, compare-and-set, so two runners cannot both
 * apply a page.
 */
import type { HistoryCommand } from '@vitrage-persistor/core'
import type pg from 'pg'
import { ACTIVATION_ATTRIBUTES, HAS_PROJECT_CHANGES } from './history-queries.js'
import { moveCheckpoint, PARTITION_OF, RETENTION_LOCK_SHARED } from './checkpoints.js'

type Client = pg.PoolClient | pg.Client

type Of<K extends HistoryCommand['kind']> = Extract<HistoryCommand, { kind: K }>

const byKind = <K extends HistoryCommand['kind']>(commands: readonly HistoryCommand[], kind: K): Array<Of<K>> =>
  commands.filter((c): c is Of<K> => c.kind === kind)

/** Within one statement a row may be written once: keep, per key, the command `better` prefers. */
const onePerKey = <T>(items: readonly T[], key: (t: T) => string, better: (a: T, b: T) => boolean): T[] => {
  const chosen = new Map<string, T>()
  for (const item of items) {
    const k = key(item)
    const current = chosen.get(k)
    if (current === undefined || better(item, current)) chosen.set(k, item)
  }
  return [...chosen.values()]
}

// An activation replaces the row's attributes when it is earlier than the one the row holds, or
// as early and an earlier event: then the result does not depend on which arrived first.
const FRESHER_START = `EXCLUDED.start_timestamp IS NOT NULL AND (h.start_timestamp IS NULL OR EXCLUDED.start_timestamp < h.start_timestamp
    OR (EXCLUDED.start_timestamp = h.start_timestamp AND EXCLUDED.activation_event_id < h.activation_event_id))`
const fromActivation = (column: string): string => `${column} = CASE WHEN ${FRESHER_START} THEN EXCLUDED.${column} ELSE h.${column} END`

/** The alarm upsert's target (history-range.ts feeds it from a SELECT, applyCommands from arrays). */
export const ALARM_INSERT = `INSERT INTO history_alarm AS h (vitrage_id, start_timestamp, end_timestamp, name, vitrage_type, vitrage_aggregated_severity,
  vitrage_operational_severity, project_id, vitrage_resource_type, vitrage_resource_id,
  activation_resource_project_id, resource_project_change, resource_project_change_at, resource_project_change_event_id, payload, activation_event_id)`

// The latest change_project_id replaces the row's: later in time, or as late and a later event
// (Vitrage applies each in turn, in arrival order). The project queries read is derived from this
// slot and the activation's (migration 0011).
const CHANGE_WINS = `EXCLUDED.resource_project_change_at IS NOT NULL AND (h.resource_project_change_at IS NULL
    OR (EXCLUDED.resource_project_change_at, EXCLUDED.resource_project_change_event_id) > (h.resource_project_change_at, coalesce(h.resource_project_change_event_id, 0)))`
const fromChange = (column: string): string => `${column} = CASE WHEN ${CHANGE_WINS} THEN EXCLUDED.${column} ELSE h.${column} END`

/**
 * How an alarm's row for some events merges with what the table holds: every column commutatively,
 * so rows may come in any order; NULL means "not in these events".
 */
export const ALARM_MERGE = `ON CONFLICT (vitrage_id) DO UPDATE SET
  start_timestamp = least(h.start_timestamp, EXCLUDED.start_timestamp),
  end_timestamp = greatest(h.end_timestamp, EXCLUDED.end_timestamp),
  ${[...ACTIVATION_ATTRIBUTES, 'activation_resource_project_id', 'payload', 'activation_event_id'].map(fromActivation).join(',\n  ')},
  ${['resource_project_change', 'resource_project_change_at', 'resource_project_change_event_id'].map(fromChange).join(',\n  ')}`

// One upsert per alarm per page: its earliest activation, latest deactivation and latest
// project change folded together (a short-lived alarm then costs one row version, not two).
// (Measured: the payloads as a jsonb[] array literal cost a third of jsonb_to_recordset's.)
const ALARM_SQL = `
${ALARM_INSERT}
SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[],
  $9::text[], $10::text[], $11::text[], $12::text[], $13::timestamptz[], $14::bigint[], $15::jsonb[], $16::bigint[])
${ALARM_MERGE}`

// Every project change, for the project as of a time (migration 0016).
const PROJECT_CHANGE_SQL = `
INSERT INTO history_project_change (event_id, vitrage_id, at, project)
SELECT * FROM unnest($1::bigint[], $2::text[], $3::timestamptz[], $4::text[])
ON CONFLICT (event_id) DO NOTHING`

const CHANGE_SQL = `
INSERT INTO history_change (message_id, vitrage_id, at, severity, payload, event_id)
SELECT * FROM unnest($1::uuid[], $2::text[], $3::timestamptz[], $4::text[], $5::jsonb[], $6::bigint[])
ON CONFLICT (message_id) DO NOTHING`

/**
 * Edge events are deduplicated on (edge, kind, time); of two at the same instant the earlier
 * event's is kept, whichever arrives first. A statement must not write a key twice (DO UPDATE
 * refuses to), so each writer passes one row per key, the earliest event's.
 */
export const EDGE_EVENT_MERGE = `ON CONFLICT (source_id, target_id, label, kind, at) DO UPDATE
  SET event_id = EXCLUDED.event_id, payload = EXCLUDED.payload WHERE EXCLUDED.event_id < history_edge_event.event_id`

const EDGE_EVENT_SQL = `
INSERT INTO history_edge_event (source_id, target_id, label, kind, at, event_id, payload)
SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::char[], $5::timestamptz[], $6::bigint[], $7::jsonb[])
${EDGE_EVENT_MERGE}`

const json = (v: unknown): string | null => (v === undefined || v === null ? null : JSON.stringify(v))

interface FoldedAlarm {
  readonly vitrageId: string
  /** The earliest activation of the page (the first seen on equal times). */
  activation: Of<'activate-alarm'> | undefined
  /** The latest deactivation time of the page. */
  end: string | null
  /** The latest change_project_id of the page (on equal times the later event). */
  projectChange: Of<'change-project'> | undefined
}

/** A page's alarm commands, one entry per alarm (pure). */
export const foldAlarms = (commands: readonly HistoryCommand[]): FoldedAlarm[] => {
  const alarms = new Map<string, FoldedAlarm>()
  const of = (vitrageId: string): FoldedAlarm => {
    let a = alarms.get(vitrageId)
    if (a === undefined) {
      a = { vitrageId, activation: undefined, end: null, projectChange: undefined }
      alarms.set(vitrageId, a)
    }
    return a
  }
  for (const c of commands) {
    if (c.kind === 'activate-alarm') {
      const a = of(c.vitrageId)
      if (a.activation === undefined || c.at < a.activation.at || (c.at === a.activation.at && c.eventId < a.activation.eventId)) a.activation = c
    } else if (c.kind === 'deactivate-alarm') {
      const a = of(c.vitrageId)
      if (a.end === null || c.at > a.end) a.end = c.at
    } else if (c.kind === 'change-project') {
      const a = of(c.vitrageId)
      const held = a.projectChange
      if (held === undefined || c.at > held.at || (c.at === held.at && c.eventId > held.eventId)) a.projectChange = c
    }
  }
  return [...alarms.values()]
}

/**
 * Applies `commands` and moves checkpoint `name` from `expected` to `position`, in one
 * transaction on `client`.
 */
export const applyHistory = async (client: Client, name: string, commands: readonly HistoryCommand[], expected: number, position: number): Promise<void> => {
  await client.query('BEGIN')
  try {
    const { rows } = await client.query<{ pc: boolean }>(`SELECT ${lockHistory('exclusive')}, ${HAS_PROJECT_CHANGES} AS pc`, [name])
    await moveCheckpoint(client, name, expected, position)
    await applyCommands(client, commands, rows[0]?.pc === true)
    await client.query('COMMIT')
  } catch (e) {
    await client.query('ROLLBACK').catch(() => {})
    throw e
  }
}

/**
 * The transaction lock of the writers of history checkpoint $1 (an SQL expression): a
 * partition's transaction takes it shared, any other writer exclusive, first thing. Partitions
 * write disjoint rows, but a runner without partitions (the one in `run`) writes everyone's: the
 * lock keeps it from interleaving its row locks with theirs in another order (deadlocks, retried
 * but wasted). The key's first half is the event table's append lock (migration 0001).
 */
export const lockHistory = (mode: 'shared' | 'exclusive'): string =>
  `pg_advisory_xact_lock${mode === 'shared' ? '_shared' : ''}(1986622578, hashtext('history:' || $1))`

/**
 * Applies `commands` in the caller's transaction (no checkpoint); `withProjectChanges`: the schema
 * has history_project_change (HAS_PROJECT_CHANGES).
 */
export const applyCommands = async (client: Client, commands: readonly HistoryCommand[], withProjectChanges: boolean): Promise<void> => {
  const alarms = foldAlarms(commands)
  if (alarms.length > 0) {
    await client.query(ALARM_SQL, [
      alarms.map((a) => a.vitrageId),
      alarms.map((a) => a.activation?.at ?? null),
      alarms.map((a) => a.end),
      alarms.map((a) => a.activation?.attributes.name ?? null),
      alarms.map((a) => a.activation?.attributes.vitrageType ?? null),
      alarms.map((a) => a.activation?.attributes.aggregatedSeverity ?? null),
      alarms.map((a) => a.activation?.attributes.operationalSeverity ?? null),
      alarms.map((a) => a.activation?.attributes.projectId ?? null),
      alarms.map((a) => a.activation?.attributes.resourceType ?? null),
      alarms.map((a) => a.activation?.attributes.resourceId ?? null),
      alarms.map((a) => a.activation?.attributes.resourceProjectId ?? null),
      alarms.map((a) => a.projectChange?.resourceProjectId ?? null),
      alarms.map((a) => a.projectChange?.at ?? null),
      alarms.map((a) => a.projectChange?.eventId ?? null),
      alarms.map((a) => (a.activation ? json(a.activation.payload) : null)),
      alarms.map((a) => a.activation?.eventId ?? null),
    ])
  }
  const projectChanges = onePerKey(byKind(commands, 'change-project'), (c) => String(c.eventId), () => false)
  if (withProjectChanges && projectChanges.length > 0) {
    await client.query(PROJECT_CHANGE_SQL, [
      projectChanges.map((c) => c.eventId),
      projectChanges.map((c) => c.vitrageId),
      projectChanges.map((c) => c.at),
      projectChanges.map((c) => c.resourceProjectId),
    ])
  }
  const changes = onePerKey(byKind(commands, 'change-severity'), (c) => c.messageId, () => false)
  if (changes.length > 0) {
    await client.query(CHANGE_SQL, [
      changes.map((c) => c.messageId),
      changes.map((c) => c.vitrageId),
      changes.map((c) => c.at),
      changes.map((c) => c.severity),
      changes.map((c) => json(c.payload)),
      changes.map((c) => c.eventId),
    ])
  }
  await applyEdges(client, commands)
}

const applyEdges = async (client: Client, commands: readonly HistoryCommand[]): Promise<void> => {
  // Commands come in event order: the first of a key is the earliest event's.
  const points = onePerKey(
    commands.filter((c): c is Of<'activate-edge'> | Of<'deactivate-edge'> => c.kind === 'activate-edge' || c.kind === 'deactivate-edge'),
    (c) => `${c.source}\u0000${c.target}\u0000${c.label}\u0000${c.kind}\u0000${c.at}`,
    () => false,
  )
  if (points.length === 0) return
  await client.query(EDGE_EVENT_SQL, [
    points.map((c) => c.source),
    points.map((c) => c.target),
    points.map((c) => c.label),
    points.map((c) => (c.kind === 'activate-edge' ? 'a' : 'd')),
    points.map((c) => c.at),
    points.map((c) => c.eventId),
    points.map((c) => (c.kind === 'activate-edge' ? json(c.payload) : null)),
  ])
}

/**
 * Empties the history tables and resets the checkpoint and its partitions' (a rebuild from the
 * log follows), or with `retire` removes them. A reset is refused ({prunedBelow}, nothing
 * changed) once events were pruned: the rebuild could not replay them. The check runs under the
 * retention lock (shared; see RETENTION_LOCK_SHARED) at READ COMMITTED, so a prune running
 * meanwhile either committed first and is seen, or waits and then counts the checkpoint at 0.
 */
export const resetHistory = async (client: Client, name: string, options: { readonly retire?: boolean } = {}): Promise<{ readonly prunedBelow: number } | undefined> => {
  await client.query('BEGIN ISOLATION LEVEL READ COMMITTED')
  try {
    // The writers' lock first, as every writer takes it: TRUNCATE locks its tables one by one, and
    // a writer running meanwhile could hold one of them while waiting for another (a deadlock).
    await client.query(`SELECT ${lockHistory('exclusive')}`, [name])
    if (options.retire !== true) {
      await client.query(`SELECT ${RETENTION_LOCK_SHARED}`)
      const prunedBelow = Number((await client.query<{ p: string }>('SELECT pruned_below AS p FROM event_retention')).rows[0]?.p ?? 1)
      if (prunedBelow > 1) {
        await client.query('ROLLBACK')
        return { prunedBelow }
      }
    }
    const { rows } = await client.query<{ pc: boolean }>(`SELECT ${HAS_PROJECT_CHANGES} AS pc`)
    await client.query(`TRUNCATE history_alarm, history_change, history_edge_event${rows[0]?.pc === true ? ', history_project_change' : ''}`)
    // Retired: no checkpoint at all, so retention no longer waits for the projection; reset: from 0.
    if (options.retire === true) await client.query('DELETE FROM projection_checkpoint WHERE name = $1', [name])
    else {
      await client.query(`INSERT INTO projection_checkpoint (name, position) VALUES ($1, 0)
      ON CONFLICT (name) DO UPDATE SET position = 0, updated_at = now()`, [name])
    }
    // Partition checkpoints (runner.ts) start again from the common one.
    await client.query(`DELETE FROM projection_checkpoint WHERE ${PARTITION_OF}`, [name])
    await client.query('COMMIT')
    return undefined
  } catch (e) {
    await client.query('ROLLBACK').catch(() => {})
    throw e
  }
}
